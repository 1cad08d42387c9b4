"""The Ray data plane: stages whose shape allows it run where the data is, and rows never pass through the driver.

A stage's input is the previous stage's ``data.parquet`` in the run directory (a path every node can read: a
local folder on one machine, a shared mount on a cluster).  The driver cuts it into :class:`Block` s, row ranges
of that file read from its Parquet metadata (never its rows), and sends tasks that name blocks; each task reads
its block, does its work and writes its output and quarantine as part files into the stage's scratch folder; a
last task concatenates the parts into the stage's ``data.parquet`` and ``quarantine.parquet``.  What comes back
to the driver is small: counts, notes, paths.  By shape (:mod:`curate.execution`):

- ``row``: one task per block runs the stage on the block (:func:`run_row_block`).
- ``shuffle`` with a keyed form (:class:`curate.execution.KeyedStage`): one task per block computes the keys of
  its rows (the row's position in the whole input, ``_pos``, included) and writes them hash-partitioned on the
  stage's ``shuffle_on`` column, one file per (partition, block); one task per partition reads its files (every
  copy of a key is there) and decides (:meth:`decide`), writing the removed rows; one task per block reads the
  removed rows of its range and finishes (quarantine with reasons, the rest kept).  Each partition decides as the
  whole input would, so the output and the quarantine are the local run's, in the input's order.

Resume: a block's parts are written atomically and its ``stats-NNNNN.json`` last, under a scratch folder keyed by
the input's stage folder (itself keyed by the chain's content) and the stage's fingerprint; a killed run redoes
only the blocks without a stats file.  Tasks that die with their node are retried by Ray (``max_retries``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import xxhash

from curate import checkpoint, faults
from curate.execution import KeyedStage, PlaneStage, Resources
from curate.pipeline import QUARANTINE_SCHEMA, Context, Stage

log = logging.getLogger("curate")

#: Rows per block: the unit of a row-local task and of the keyed steps.  Large enough that a task's overhead
#: (tens of milliseconds) is small next to its work, small enough that a worker holds a block easily.
BLOCK_ROWS = 100_000
#: Largest hash partition of a keyed step, in rows: an input of more than (cluster CPUs x this) rows gets more
#: partitions than CPUs, so one task stays a small share of a worker's memory (MinHash's node step holds about
#: 1.3 KB per node: ~330 MB per task here).
PARTITION_ROWS = 250_000

#: ``run(fn, items, resources) -> [fn(item), ...]`` in order: the plane's one way to get work done.
RunFn = Callable[[Callable[[Any], Any], Sequence[Any], Resources], list[Any]]


@dataclass(frozen=True)
class Block:
    """Rows ``offset .. offset + rows`` of one Parquet file: what a task reads, named by the driver."""

    index: int
    path: str
    offset: int
    rows: int

    def scan(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.path).slice(self.offset, self.rows)


def parquet_rows(path: Path) -> int:
    """Rows of a Parquet file, from its footer (no row is read)."""
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def blocks_of(path: Path, rows_per_block: int = BLOCK_ROWS) -> list[Block]:
    total = parquet_rows(path)
    return [Block(i, str(path), offset, min(rows_per_block, total - offset))
            for i, offset in enumerate(range(0, total, rows_per_block))]


@dataclass(frozen=True)
class WorkerContext:
    """What a task needs to build the :class:`Context` its stage runs with: the run's cache folder (model and
    signature shards are shared with the driver and other workers), seed, batch size, the stage's label and
    the model specs (as a registry that loads each model once per worker process)."""

    cache_dir: str
    seed: int
    batch_size: int
    label: str
    models: Any = None

    def context(self) -> Context:
        extra = {"models": self.models} if self.models is not None else {}
        return Context(cache_dir=Path(self.cache_dir), seed=self.seed, batch_size=self.batch_size,
                       stage_label=self.label, trusted_ids=True, **extra)


# -- tasks (top-level, picklable; each reads and writes files and returns only small values) ------------------


def _write_part(data: pl.LazyFrame, quarantine: list[pl.LazyFrame], folder: Path, index: int) -> None:
    """The block's output and quarantine, in one pass over the block (shared subplans run once)."""
    data_path, q_path = folder / f"data-{index:05d}.parquet", folder / f"quarantine-{index:05d}.parquet"
    data_tmp, q_tmp = checkpoint.tmp_path_for(data_path), checkpoint.tmp_path_for(q_path)
    q_frame = pl.concat(quarantine, how="vertical") if quarantine else pl.LazyFrame(schema=QUARANTINE_SCHEMA)
    with checkpoint.writing(folder, data_tmp, q_tmp):
        pl.collect_all([data.sink_parquet(data_tmp, lazy=True, maintain_order=True),
                        q_frame.sink_parquet(q_tmp, lazy=True, maintain_order=True)])
    checkpoint.commit(data_tmp, data_path)
    checkpoint.commit(q_tmp, q_path)


def _block_done(folder: Path, index: int) -> Path:
    return folder / f"stats-{index:05d}.json"


def _finish_part(data: pl.LazyFrame, ctx: Context, folder: Path, index: int) -> dict[str, Any]:
    _write_part(data, ctx.take_quarantine(), folder, index)
    stats = {"notes": ctx.stats.get(ctx.stage_label, {})}
    checkpoint.write_json_atomic(stats, _block_done(folder, index))
    return stats


def run_block(folder: Path, block: Block, worker: WorkerContext,
              work: Callable[[pl.LazyFrame, Context], pl.LazyFrame]) -> dict[str, Any]:
    """``work`` on one block, written as the block's parts with its notes; a block whose stats file exists was
    written by an earlier attempt (a retried task, a resumed run) and is not redone."""
    folder.mkdir(parents=True, exist_ok=True)
    done = _block_done(folder, block.index)
    if done.exists():
        return json.loads(done.read_text())
    ctx = worker.context()
    try:
        return _finish_part(work(block.scan(), ctx), ctx, folder, block.index)
    finally:
        ctx.close()


@dataclass(frozen=True)
class RowBlock:
    """A ``row`` stage on one block."""

    stage: Stage
    folder: str
    worker: WorkerContext

    def __call__(self, block: Block) -> dict[str, Any]:
        return run_block(Path(self.folder), block, self.worker, self.stage)


@dataclass(frozen=True)
class KeysBlock:
    """Step 1 of a keyed stage: a block's keys, hash-partitioned into ``keys/pNNNN/bNNNNN.parquet``."""

    stage: Stage
    table: str
    folder: str
    partitions: int

    def __call__(self, block: Block) -> int:
        assert isinstance(self.stage, KeyedStage)
        root = Path(self.folder) / "keys"
        marker = root / f"done-{block.index:05d}"
        if marker.exists():
            return int(marker.read_text())
        on = self.stage.shuffle_on
        keys = (self.stage.shuffle_keys(block.scan(), self.table)
                .with_row_index("_pos", offset=block.offset)
                .with_columns((pl.col(on).hash(seed=7) % self.partitions).alias("_part"))
                .collect())
        for (part,), frame in keys.partition_by("_part", as_dict=True, include_key=False).items():
            path = root / f"p{int(part):04d}" / f"b{block.index:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.write_parquet_atomic(frame, path)
        root.mkdir(parents=True, exist_ok=True)
        tmp = checkpoint.tmp_path_for(marker)
        tmp.write_text(str(keys.height))
        checkpoint.commit(tmp, marker)
        return keys.height


@dataclass(frozen=True)
class DecidePartition:
    """Step 2: the decision over one partition's keys; the removed rows go to ``removed/pNNNN.parquet``."""

    stage: Stage
    names: list[str]
    folder: str

    def __call__(self, part: int) -> tuple[int, int]:
        assert isinstance(self.stage, KeyedStage)
        out = Path(self.folder) / "removed" / f"p{part:04d}.parquet"
        files = sorted((Path(self.folder) / "keys" / f"p{part:04d}").glob("b*.parquet"))
        if out.exists():
            removed = pl.read_parquet(out)
        else:
            keys = pl.read_parquet(files) if files else None
            removed = (self.stage.decide(keys, self.names) if keys is not None and keys.height
                       else pl.DataFrame(schema={"id": pl.String, "_dup_of": pl.String, "_pos": pl.UInt32}))
            out.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.write_parquet_atomic(removed, out)
        return removed.height, removed.get_column("_dup_of").n_unique()


@dataclass(frozen=True)
class FinishBlock:
    """Step 3: one block without the rows the decisions removed (those quarantined with their reasons)."""

    stage: Stage
    folder: str
    worker: WorkerContext

    def __call__(self, block: Block) -> dict[str, Any]:
        assert isinstance(self.stage, KeyedStage)
        stage = self.stage
        removed = (pl.scan_parquet(sorted((Path(self.folder) / "removed").glob("p*.parquet")))
                   .filter(pl.col("_pos").is_between(block.offset, block.offset + block.rows, closed="left"))
                   .sort("_pos"))
        return run_block(Path(self.folder) / "parts", block, self.worker,
                         lambda lf, ctx: stage.finish(lf, removed, ctx))


@dataclass(frozen=True)
class Concat:
    """The last task of a stage: its parts, in block order, as ``data.parquet`` and ``quarantine.parquet``."""

    folder: str
    stage_dir: str
    blocks: int

    def __call__(self, kind: str) -> int:
        parts = [Path(self.folder) / f"{kind}-{i:05d}.parquet" for i in range(self.blocks)]
        dest = Path(self.stage_dir) / f"{kind}.parquet"
        tmp = checkpoint.tmp_path_for(dest)
        lf = pl.scan_parquet(parts) if parts else pl.LazyFrame(schema=QUARANTINE_SCHEMA)
        with checkpoint.writing(dest, tmp):
            lf.sink_parquet(tmp, maintain_order=True)
        checkpoint.commit(tmp, dest)
        return parquet_rows(dest)


# -- the driver's side -----------------------------------------------------------------------------------------


@dataclass
class Plane:
    """Runs ``row`` and keyed ``shuffle`` stages block by block through ``run`` (Ray tasks; in this process for
    tests), writing the stage folder's ``data.parquet`` / ``quarantine.parquet`` itself."""

    run: RunFn
    cpus: int = 1
    rows_per_block: int = BLOCK_ROWS
    scratch: list[Path] = field(default_factory=list)

    def handles(self, stage: Stage) -> bool:
        shape = stage.execution_shape()
        if shape == "row":
            return True
        if shape != "shuffle":
            return False
        if isinstance(stage, PlaneStage):
            return stage.has_plane_form()
        return isinstance(stage, KeyedStage)

    def worker(self, ctx: Context) -> WorkerContext:
        return WorkerContext(str(ctx.cache_dir), ctx.seed, ctx.batch_size, ctx.stage_label, ctx.models)

    def partitions(self, rows: int) -> int:
        """Hash partitions of a keyed step: one per CPU, more when a partition would pass ``PARTITION_ROWS``."""
        return max(self.cpus, math.ceil(rows / PARTITION_ROWS))

    @staticmethod
    def replay(ctx: Context, notes: dict[str, Any]) -> None:
        """A block's notes into the stage's: numbers add up (counts), shard folders are merged, anything else is
        the latest block's."""
        for key, value in notes.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                ctx.count(key, value)  # type: ignore[arg-type]
            elif key not in ("shard_dirs",):
                ctx.note(key, value)
            else:
                before = ctx.stats.get(ctx.stage_label, {}).get(key, [])
                ctx.note(key, sorted({*before, *value}))

    def run_stage(self, stage: Stage, source: Path, stage_dir: Path, ctx: Context, table: str) -> None:
        blocks = blocks_of(source, self.rows_per_block)
        # Keyed by the input (its stage folder is keyed by the chain's content), the stage and the block size: a
        # block's files are reused only for the same rows.
        key = xxhash.xxh3_64_hexdigest(f"{source.parent.name}|{stage.fingerprint()}|{self.rows_per_block}".encode())
        folder = ctx.cache_dir / "ray" / f"{ctx.stage_label}-{key}"
        folder.mkdir(parents=True, exist_ok=True)
        self.scratch.append(folder)
        worker = self.worker(ctx)
        resources = stage.worker_resources(ctx.models)
        names = pl.scan_parquet(source).collect_schema().names()
        ctx.note("blocks", len(blocks))
        if stage.execution_shape() == "row":
            parts = folder
            for stats in self.run(RowBlock(stage, str(parts), worker), blocks, resources):
                self.replay(ctx, stats["notes"])
        elif isinstance(stage, PlaneStage):
            parts = stage.run_on_plane(self, blocks, folder, ctx, table, names)
        else:
            assert isinstance(stage, KeyedStage)
            total = sum(b.rows for b in blocks)
            partitions = self.partitions(total)
            # Files of one partition count only: a run resumed on a cluster of another size partitions anew.
            keyed = folder / f"partitions-{partitions}"
            self.run(KeysBlock(stage, table, str(keyed), partitions), blocks, resources)
            decided = self.run(DecidePartition(stage, names, str(keyed)), list(range(partitions)), resources)
            ctx.note("partitions", partitions)
            stage.record(ctx, removed=sum(r for r, _ in decided), groups=sum(g for _, g in decided), total=total)
            parts = keyed / "parts"
            for stats in self.run(FinishBlock(stage, str(keyed), worker), blocks, resources):
                self.replay(ctx, stats["notes"])
        faults.reached(f"plane:{ctx.stage_label}")  # every block's parts written, the stage folder not yet
        self.run(Concat(str(parts), str(stage_dir), len(blocks)), ["data", "quarantine"], Resources())

    def close(self) -> None:
        import shutil

        for path in self.scratch:
            shutil.rmtree(path, ignore_errors=True)
        self.scratch.clear()


def run_here(fn: Callable[[Any], Any], items: Sequence[Any], resources: Resources) -> list[Any]:
    """The plane's ``run`` in this process (tests, and the local executor if it ever uses the plane)."""
    return [fn(item) for item in items]
