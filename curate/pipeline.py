"""Stage protocol, Context and Pipeline: local execution over Polars LazyFrames (DESIGN.md section 4).

A stage is a dataclass of parameters with ``__call__(lf, ctx=None) -> LazyFrame``.  Three kinds:

- ``expression``: pure Polars expressions; the returned frame stays lazy.
- ``batch``: per-row work that is expensive (models, signatures).  The stage streams its input in fixed-size
  batches through :meth:`Context.map_batches`, which writes each finished batch as a Parquet shard keyed by
  (stage config hash, batch content hash) and returns a scan over the shards: a killed run resumes at the
  first missing shard.
- ``global``: decisions that need the whole column (dedup, selection).  The stage collects only the columns
  it needs (``id`` + text), decides, and returns a semi-join on ``id``.

Stages never drop rows silently: rejected rows go to :meth:`Context.quarantine` with a reason.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import polars as pl
import xxhash

from curate import checkpoint, faults
from curate.models import ModelRegistry
from curate.schema import detect_table

log = logging.getLogger("curate")

StageKind = Literal["expression", "batch", "global"]

#: Columns of every quarantine table.
QUARANTINE_SCHEMA = {"stage": pl.String, "reason": pl.String, "id": pl.String, "row": pl.String}


class Stage:
    """Base class of every stage.

    Subclasses are ``pydantic.dataclasses.dataclass`` (parameters validated on construction, from Python or
    YAML alike), set ``name``, ``kind`` and ``paper``, and implement :meth:`apply`.
    """

    name: ClassVar[str]
    kind: ClassVar[StageKind] = "expression"
    #: The paper (or tool) the stage follows; shown by ``curate stages``.
    paper: ClassVar[str] = ""
    #: Bump when the stage's output for the same parameters changes, so caches are not reused.
    version: ClassVar[int] = 1
    #: Names of parameters that hold model handles (``models:`` of the recipe); their specs join the cache key.
    model_params: ClassVar[tuple[str, ...]] = ()

    def models_used(self) -> list[str]:
        return [h for p in self.model_params if (h := getattr(self, p, None))]

    def cache_key_extra(self, ctx: Context) -> str:
        """Identity of anything besides parameters and models that the output depends on (e.g. the content
        of reference files a stage reads), so the runner recomputes the stage when it changes."""
        return ""

    def __call__(self, lf: pl.LazyFrame | pl.DataFrame, ctx: Context | None = None) -> pl.LazyFrame:
        ctx = ctx if ctx is not None else Context.ephemeral()
        if isinstance(lf, pl.DataFrame):
            lf = lf.lazy()
        with ctx.stage_scope(self):
            return self.apply(lf, ctx)

    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:  # pragma: no cover - abstract
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def fingerprint(self) -> str:
        """Hash of the stage name, version and parameters: the cache key of its work."""
        payload = json.dumps(
            {"stage": self.name, "version": self.version, "params": self.params()}, sort_keys=True, default=str
        )
        return xxhash.xxh3_128_hexdigest(payload.encode())

    @staticmethod
    def table_of(lf: pl.LazyFrame) -> str:
        return detect_table(lf.collect_schema())


@dataclass
class Context:
    """What a stage may use besides its input: the cache, the seed, the quarantine and progress output.

    ``Context.ephemeral()`` (what ``lf.pipe(stage)`` gets) caches in a temporary folder that lives as long
    as the context; the recipe runner passes one rooted in the run directory.
    """

    cache_dir: Path
    seed: int = 0
    batch_size: int = 1024
    progress: bool = False
    quarantined: list[tuple[str, pl.LazyFrame]] = field(default_factory=list)
    stage_label: str = "stage"
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: ModelRegistry = field(default_factory=ModelRegistry)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @classmethod
    def ephemeral(cls, **kwargs: Any) -> Context:
        tmp = tempfile.TemporaryDirectory(prefix="curate-")
        return cls(cache_dir=Path(tmp.name), _tmp=tmp, **kwargs)

    # -- stage bookkeeping -------------------------------------------------------------------------
    class _Scope:
        def __init__(self, ctx: Context, stage: Stage) -> None:
            self.ctx, self.stage, self.previous = ctx, stage, ctx.stage_label

        def __enter__(self) -> None:
            if self.ctx.stage_label in ("stage", ""):
                self.ctx.stage_label = self.stage.name

        def __exit__(self, *exc: object) -> None:
            self.ctx.stage_label = self.previous if self.previous not in ("stage", "") else "stage"

    def stage_scope(self, stage: Stage) -> Context._Scope:
        return Context._Scope(self, stage)

    def note(self, key: str, value: Any) -> None:
        """Record a figure of the current stage (counts, thresholds) for the manifest."""
        self.stats.setdefault(self.stage_label, {})[key] = value

    def count(self, key: str, n: int) -> None:
        """Add ``n`` to a counter of the current stage (a stage may call a batch helper more than once)."""
        notes = self.stats.setdefault(self.stage_label, {})
        notes[key] = notes.get(key, 0) + n

    # -- quarantine --------------------------------------------------------------------------------
    def quarantine(self, rejected: pl.LazyFrame, reason: pl.Expr | str) -> None:
        """Register rows a stage removes, with the reason, as ``stage, reason, id, row`` (row as JSON)."""
        reason_expr = pl.lit(reason) if isinstance(reason, str) else reason
        names = rejected.collect_schema().names()
        data_columns = [c for c in names if not c.startswith("_")]
        frame = rejected.select(
            pl.lit(self.stage_label).alias("stage"),
            reason_expr.cast(pl.String).alias("reason"),
            (pl.col("id") if "id" in names else pl.lit(None, dtype=pl.String)).alias("id"),
            pl.struct(data_columns).struct.json_encode().alias("row"),
        )
        self.quarantined.append((self.stage_label, frame))

    def take_quarantine(self) -> list[pl.LazyFrame]:
        frames = [frame for _, frame in self.quarantined]
        self.quarantined.clear()
        return frames

    def quarantine_frame(self) -> pl.DataFrame:
        """All rows quarantined so far in this context (notebook use)."""
        if not self.quarantined:
            return pl.DataFrame(schema=QUARANTINE_SCHEMA)
        return pl.concat([frame for _, frame in self.quarantined]).collect()

    # -- batch stages --------------------------------------------------------------------------------
    def _shard_dir(self, key: str) -> Path:
        """The shard folder of ``key``, recorded in the stage's notes so ``curate gc`` knows it is in use."""
        shard_dir = self.cache_dir / "shards" / key[:32]
        shard_dir.mkdir(parents=True, exist_ok=True)
        used = self.stats.get(self.stage_label, {}).get("shard_dirs", [])
        self.note("shard_dirs", sorted({*used, shard_dir.name}))
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
    ) -> pl.LazyFrame:
        """Run ``fn`` over ``lf`` in batches, caching each batch's result as a Parquet shard.

        The shard of a batch is named by ``key`` (the stage fingerprint) and the hash of the batch's ``id``s,
        so identical input batches are never computed twice, and a run killed mid-stage recomputes only the
        shards that were not finished (shards are published by rename).  Returns a scan over the shards,
        in input order.  ``columns`` limits what ``fn`` receives (and what the result holds).
        """
        size = batch_size or self.batch_size
        shard_dir = self._shard_dir(key)
        source = lf.select(columns) if columns is not None else lf
        paths: list[Path] = []
        computed = 0
        reused = 0
        for batch in _iter_batches(source, size, progress=self.progress, desc=desc or self.stage_label):
            ids = batch.get_column("id") if "id" in batch.columns else batch.hash_rows().cast(pl.String)
            batch_hash = xxhash.xxh3_128_hexdigest("\n".join(ids.to_list()).encode())
            path = shard_dir / f"{batch_hash}.parquet"
            if path.exists():
                reused += 1
            else:
                result = fn(batch)
                checkpoint.write_parquet_atomic(result, path)
                faults.shard_written()
                computed += 1
            paths.append(path)
        self.count("batches_computed", computed)
        self.count("batches_cached", reused)
        if not paths:
            return pl.LazyFrame(schema=fn(source.head(0).collect()).schema)
        return pl.scan_parquet(paths)

    def map_rows(
        self,
        lf: pl.LazyFrame,
        fn: Callable[[pl.DataFrame], pl.DataFrame],
        key: str,
        *,
        batch_size: int | None = None,
        columns: Sequence[str] | None = None,
        desc: str | None = None,
    ) -> pl.LazyFrame:
        """Like :meth:`map_batches`, cached per row: for work whose output has exactly one row per input ``id``.

        Only the ids without a cached result for ``key`` are batched and passed to ``fn``, wherever they
        sit in the input: a refreshed input that gained N rows costs N rows of work, even when the new
        rows are in the middle.  ``fn`` must return one row per input row, with the same ``id``; anything
        else is a bug in the stage and raises.  Returns the results in input order.
        """
        size = batch_size or self.batch_size
        shard_dir = self._shard_dir(key)
        source = lf.select(columns) if columns is not None else lf
        existing = sorted(shard_dir.glob("*.parquet"))
        todo = source
        if existing:
            done = pl.scan_parquet(existing).select("id")
            todo = source.join(done, on="id", how="anti", maintain_order="left")
        computed = batches = 0
        for batch in _iter_batches(todo, size, progress=self.progress, desc=desc or self.stage_label):
            result = fn(batch)
            if "id" not in result.columns or result.height != batch.height or not (
                result.get_column("id").sort().equals(batch.get_column("id").sort())
            ):
                raise RuntimeError(f"{self.stage_label}: map_rows needs one output row per input id")
            batch_hash = xxhash.xxh3_128_hexdigest("\n".join(batch.get_column("id").to_list()).encode())
            checkpoint.write_parquet_atomic(result, shard_dir / f"{batch_hash}.parquet")
            faults.shard_written()
            computed += batch.height
            batches += 1
        self.count("rows_computed", computed)
        self.count("batches_computed", batches)
        shards = sorted(shard_dir.glob("*.parquet"))
        if not shards:
            return pl.LazyFrame(schema=fn(source.head(0).collect()).schema)
        total = int(source.select(pl.len()).collect().item())
        self.count("rows_cached", total - computed)
        return source.select("id").join(pl.scan_parquet(shards), on="id", how="inner", maintain_order="left")

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _iter_batches(lf: pl.LazyFrame, size: int, *, progress: bool, desc: str) -> Iterator[pl.DataFrame]:
    """Fixed-size, deterministic batches of ``lf`` (the same input always yields the same batches)."""
    if not progress:
        yield from _fixed_batches(lf, size)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    total = int(lf.select(pl.len()).collect().item())
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(desc, total=total)
        for batch in _fixed_batches(lf, size):
            yield batch
            bar.advance(task, batch.height)


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


class Pipeline:
    """An ordered list of stages, applied lazily: ``Pipeline([Filter(), ExactDedup()]).run(lf)``."""

    def __init__(self, stages: Iterable[Stage]) -> None:
        self.stages = list(stages)

    def __call__(self, lf: pl.LazyFrame | pl.DataFrame, ctx: Context | None = None) -> pl.LazyFrame:
        return self.run(lf, ctx)

    def run(self, lf: pl.LazyFrame | pl.DataFrame, ctx: Context | None = None) -> pl.LazyFrame:
        ctx = ctx if ctx is not None else Context.ephemeral()
        out = lf.lazy() if isinstance(lf, pl.DataFrame) else lf
        for index, stage in enumerate(self.stages, start=1):
            ctx.stage_label = f"{index:02d}-{stage.name}"
            out = stage(out, ctx)
        ctx.stage_label = "stage"
        return out

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(s) for s in self.stages)
        return f"Pipeline([\n  {inner}\n])"


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
