"""The shard cache: batch and row results of model and signature work, on disk, keyed by content (docs/architecture.md).

One of the three parts of a :class:`curate.pipeline.Context` (with the recorder, :mod:`curate.recorder`, and the
compute, :mod:`curate.compute`).  :meth:`ShardCache.map_batches` and :meth:`ShardCache.map_rows` write each
finished batch as a Parquet shard keyed by (the stage's cache key, the batch's ids), so a killed run resumes at
the first missing shard and a re-run does no work twice; where the work happens is the compute's business.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import xxhash

from curate import checkpoint, faults
from curate.recorder import Recorder

log = logging.getLogger("curate")

#: ``compute(batches, fn)``: ``fn`` of each batch, in order, wherever the compute runs it.
BatchCompute = Callable[[Iterable[pl.DataFrame], Callable[[pl.DataFrame], pl.DataFrame]], Iterator[pl.DataFrame]]


@dataclass(frozen=True)
class ShardJob:
    """What one call of the cache needs from the rest of the context: where its figures go, what runs the
    batches, the default batch size, and whether to show progress bars."""

    recorder: Recorder
    compute: BatchCompute
    batch_size: int = 1024
    progress: bool = False


@dataclass
class ShardCache:
    """Shards under ``cache_dir / "shards" / KEY``, one folder per stage cache key."""

    cache_dir: Path

    def _shard_dir(self, key: str, recorder: Recorder) -> Path:
        """The shard folder of ``key``, recorded in the stage's notes so ``curate gc`` knows it is in use."""
        shard_dir = self.cache_dir / "shards" / key[:32]
        shard_dir.mkdir(parents=True, exist_ok=True)
        used = recorder.stats.get(recorder.stage_label, {}).get("shard_dirs", [])
        recorder.note("shard_dirs", sorted({*used, shard_dir.name}))
        return shard_dir

    def map_batches(
        self,
        lf: pl.LazyFrame,
        fn: Callable[[pl.DataFrame], pl.DataFrame],
        key: str,
        *,
        batch_size: int | None = None,
        columns: Sequence[str] | None = None,
        desc: str | None = None,
        job: ShardJob,
    ) -> pl.LazyFrame:
        """Run ``fn`` over ``lf`` in batches, caching each batch's result as a Parquet shard.

        The cache is keyed by content.  When the input has unique ``id``s and ``fn`` returns one row per
        input id (every model and signature stage does), results are reused per row, as in :meth:`map_rows`:
        only the ids with no cached result for ``key`` are batched and passed to ``fn``, so a re-run on an
        input that grew by N rows costs N rows of model work wherever they sit (the scheduled refresh of
        docs/architecture.md).  On an empty cache the batches are the input's fixed-size batches in order.
        A row's result must not depend on its batch (model stages seed each row from its id), so a refresh
        gives what a fresh run gives.
        Otherwise (no ``id``, repeated ids, or an ``fn`` that changes the row set) each batch's result is
        a shard named by the hash of the batch's ids.  Either way a killed run recomputes only unfinished
        shards (published by rename).  Returns the results in input order.  ``columns`` limits what ``fn``
        receives (and what the result holds).
        """
        size = batch_size or job.batch_size
        source = lf.select(columns) if columns is not None else lf
        if "id" in source.collect_schema().names() and _ids_unique(source):
            try:
                return self._map_per_row(source, fn, key, size, desc, job, strict=False)
            except _NotOneToOne:
                log.info("%s: results are not one row per id; caching whole batches", job.recorder.stage_label)
        return self._map_per_batch(source, fn, key, size, desc, job)

    def _map_per_batch(
        self, source: pl.LazyFrame, fn: Callable[[pl.DataFrame], pl.DataFrame], key: str, size: int,
        desc: str | None, job: ShardJob,
    ) -> pl.LazyFrame:
        shard_dir = self._shard_dir(key, job.recorder) / "by-batch"
        shard_dir.mkdir(exist_ok=True)
        paths: list[Path] = []
        pending: list[Path] = []
        reused = 0

        def needed() -> Iterator[pl.DataFrame]:
            nonlocal reused
            for batch in _iter_batches(source, size, progress=job.progress, desc=desc or job.recorder.stage_label):
                ids = batch.get_column("id") if "id" in batch.columns else batch.hash_rows().cast(pl.String)
                path = shard_dir / f"{_ids_hash(ids.to_list())}.parquet"
                paths.append(path)
                if path.exists():
                    reused += 1
                else:
                    pending.append(path)
                    yield batch

        computed = 0
        for result in job.compute(needed(), fn):
            checkpoint.write_parquet_atomic(result, pending.pop(0))
            faults.shard_written()
            computed += 1
        job.recorder.count("batches_computed", computed)
        job.recorder.count("batches_cached", reused)
        if not paths:
            return pl.LazyFrame(schema=fn(source.head(0).collect()).schema)
        return pl.scan_parquet(paths)

    def _map_per_row(
        self, source: pl.LazyFrame, fn: Callable[[pl.DataFrame], pl.DataFrame], key: str, size: int,
        desc: str | None, job: ShardJob, *, strict: bool,
    ) -> pl.LazyFrame:
        shard_dir = self._shard_dir(key, job.recorder)
        existing = sorted(shard_dir.glob("*.parquet"))
        todo = source
        shards_used = 0
        if existing:
            done = pl.scan_parquet(existing, include_file_paths="_shard").select("id", "_shard")
            todo = source.join(done.select("id"), on="id", how="anti", maintain_order="left")
            shards_used = int(done.join(source.select("id"), on="id", how="semi").select(
                pl.col("_shard").n_unique()).collect().item())
        computed = batches = 0
        batch_iter = _iter_batches(todo, size, progress=job.progress, desc=desc or job.recorder.stage_label)
        pending: list[pl.DataFrame] = []
        written: list[Path] = []
        in_order = True

        def remember(stream: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
            for batch in stream:
                pending.append(batch)
                yield batch

        for result in job.compute(remember(batch_iter), fn):
            batch = pending.pop(0)
            if "id" not in result.columns or result.height != batch.height or not (
                result.get_column("id").sort().equals(batch.get_column("id").sort())
            ):
                if strict:
                    raise RuntimeError(f"{job.recorder.stage_label}: map_rows needs one output row per input id")
                raise _NotOneToOne
            in_order = in_order and result.get_column("id").equals(batch.get_column("id"))
            written.append(shard_dir / f"{_ids_hash(batch.get_column('id').to_list())}.parquet")
            checkpoint.write_parquet_atomic(result, written[-1])
            faults.shard_written()
            computed += batch.height
            batches += 1
        total = int(source.select(pl.len()).collect().item())
        job.recorder.count("rows_computed", computed)
        job.recorder.count("rows_cached", total - computed)
        job.recorder.count("batches_computed", batches)
        job.recorder.count("batches_cached", shards_used)
        if not existing and written and in_order:
            return pl.scan_parquet(written)  # every row computed now, in input order: a plain (streaming) scan
        shards = sorted(shard_dir.glob("*.parquet"))
        if not shards:
            return pl.LazyFrame(schema=fn(source.head(0).collect()).schema)
        results = pl.scan_parquet(shards)
        if results.select(pl.col("id").is_duplicated().any()).collect().item():
            # Shards written before results were reused per row may repeat an id: the first (in shard-name
            # order) wins, deterministically.
            results = results.unique("id", keep="first", maintain_order=True)
        return source.select("id").join(results, on="id", how="inner", maintain_order="left")

    def map_rows(
        self,
        lf: pl.LazyFrame,
        fn: Callable[[pl.DataFrame], pl.DataFrame],
        key: str,
        *,
        batch_size: int | None = None,
        columns: Sequence[str] | None = None,
        desc: str | None = None,
        job: ShardJob,
    ) -> pl.LazyFrame:
        """Like :meth:`map_batches`, cached per row: for work whose output has exactly one row per input ``id``.

        Only the ids without a cached result for ``key`` are batched and passed to ``fn``, wherever they
        sit in the input: a refreshed input that gained N rows costs N rows of work, even when the new
        rows are in the middle.  ``fn`` must return one row per input row, with the same ``id``; anything
        else is a bug in the stage and raises.  Returns the results in input order.
        """
        size = batch_size or job.batch_size
        source = lf.select(columns) if columns is not None else lf
        return self._map_per_row(source, fn, key, size, desc, job, strict=True)



class _NotOneToOne(Exception):
    """``fn`` of :meth:`Context.map_batches` changed the row set: fall back to whole-batch shards."""


def _ids_hash(ids: list[str]) -> str:
    return xxhash.xxh3_128_hexdigest("\n".join(ids).encode())


def _ids_unique(lf: pl.LazyFrame) -> bool:
    return bool(lf.select(pl.col("id").n_unique() == pl.len()).collect().item())

def _iter_batches(lf: pl.LazyFrame, size: int, *, progress: bool, desc: str) -> Iterator[pl.DataFrame]:
    """Fixed-size, deterministic batches of ``lf`` (the same input always yields the same batches)."""
    from curate.progress import iter_batches  # bars, progress events, requests inside a batch

    yield from iter_batches(lf, size, bar=progress, desc=desc, cut=_fixed_batches)


def _fixed_batches(lf: pl.LazyFrame, size: int) -> Iterator[pl.DataFrame]:
    pending: list[pl.DataFrame] = []
    pending_rows = 0
    for chunk in lf.collect_batches(chunk_size=size, maintain_order=True):
        pending.append(chunk)
        pending_rows += chunk.height
        while pending_rows >= size:
            merged = pl.concat(pending, rechunk=False)
            yield merged.slice(0, size)
            rest = merged.slice(size)
            pending = [rest] if rest.height else []
            pending_rows = rest.height
    if pending_rows:
        yield pl.concat(pending)
