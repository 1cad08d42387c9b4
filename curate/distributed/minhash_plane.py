"""The keyed form of ``minhash_dedup`` on the data plane (:mod:`curate.distributed.plane`): rows never pass
through the driver, and the kept rows and the quarantine are those of the stage's ``apply``.

1. Per block, on a worker: the signatures (through the worker's context and the run's shard cache, so a local
   run's signatures are reused and the other way round), written as a signature part with each row's position
   in the whole input, ``id``, the text length and the keep rule's columns.
2. :func:`curate.dedup.minhash_keyed.keyed_clusters`: band buckets by hash partition, verified edges, connected
   components by large-star / small-star rounds; the clustered rows come back as one file per part.
3. Per part: the members with their ranking columns, scattered by cluster; per cluster partition the keep
   decision (:func:`curate.stages._keep.rank_expr`, as ``apply`` ranks), the losers with their winner's
   position; :func:`~curate.dedup.minhash_keyed.pair_jaccard` gives each loser's estimate to its winner (the
   similarity in the quarantine reason).
4. Per block: its losers quarantined with the reason ``apply`` writes, the rest kept (block order = input order).

Only ``scope: global`` has this form (the prompt scopes regroup clusters by prompt); other scopes run on the driver.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from curate import checkpoint
from curate.dedup.minhash_keyed import KeyedSpec, keyed_clusters, pair_jaccard
from curate.distributed.plane import Block, WorkerContext, run_block
from curate.schema import text_for
from curate.stages._keep import keep_columns, rank_expr, warn_removed

if TYPE_CHECKING:
    from curate.distributed.plane import Plane
    from curate.pipeline import Context
    from curate.stages.minhash_dedup import MinHashDedup


#: The losers of a cluster partition: the row, its position, the kept row's id and the pair ``pair_jaccard`` reads.
LOSERS_SCHEMA = {"id": pl.String, "_pos": pl.Int64, "_dup_of": pl.String, "_a": pl.Int64, "_b": pl.Int64}


@dataclass(frozen=True)
class _Signatures:
    stage: MinHashDedup
    table: str
    folder: str
    worker: WorkerContext

    def __call__(self, block: Block) -> dict[str, Any]:
        out = Path(self.folder) / "sig" / f"b{block.index:05d}.parquet"
        done = out.with_suffix(".json")
        if done.exists():
            return json.loads(done.read_text())
        ctx = self.worker.context()
        try:
            lf = block.scan()
            source = lf.select("id", text_for(self.table, self.stage.on).alias("_text"))
            shards = ctx.map_batches(source, self.stage._signature_batch, self.stage.signature_key(),
                                     batch_size=self.stage.batch_size, desc=self.stage.name)
            signed = shards.collect()
            extra = lf.select(keep_columns(self.stage.keep)).collect()
            part = pl.concat([signed, extra], how="horizontal").with_columns(
                pl.int_range(block.offset, block.offset + signed.height, dtype=pl.Int64).alias("_pos"),
                pl.col("_len").alias("_text_len"),
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.write_parquet_atomic(part, out)
            stats = {"notes": ctx.stats.get(ctx.stage_label, {})}
            checkpoint.write_json_atomic(stats, done)
            return stats
        finally:
            ctx.close()


@dataclass(frozen=True)
class _Members:
    """Per part: the clustered rows with ``id`` and the ranking columns, scattered by cluster."""

    stage: MinHashDedup
    folder: str
    partitions: int

    def __call__(self, item: tuple[int, str, str]) -> int:
        index, labels, sig_part = item
        clustered = pl.read_parquet(labels)
        columns = ["_pos", "id", "_text_len", *keep_columns(self.stage.keep)]
        members = clustered.join(pl.read_parquet(sig_part, columns=columns), on="_pos", how="left")
        members = members.with_columns((pl.col("_cluster").hash(seed=11) % self.partitions).alias("_part"))
        for part in range(self.partitions):
            path = Path(self.folder) / "members" / f"p{part:04d}" / f"b{index:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.write_parquet_atomic(members.filter(pl.col("_part") == part).drop("_part"), path)
        return clustered.height


@dataclass(frozen=True)
class _Decide:
    """Per cluster partition: each cluster's best row by the keep rule; the others are its losers."""

    stage: MinHashDedup
    names: list[str]
    folder: str

    def __call__(self, part: int) -> tuple[str, int, int]:
        files = sorted((Path(self.folder) / "members" / f"p{part:04d}").glob("b*.parquet"))
        path = Path(self.folder) / "losers" / f"p{part:04d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not files:
            checkpoint.write_parquet_atomic(pl.DataFrame(schema=LOSERS_SCHEMA), path)
            return str(path), 0, 0
        members = pl.read_parquet(files).with_columns(pl.col("_pos").cast(pl.Int64))
        ranked = members.sort(rank_expr(self.stage.keep, self.names))
        winners = ranked.unique("_cluster", keep="first", maintain_order=True).select(
            "_cluster", pl.col("id").alias("_dup_of"), pl.col("_pos").alias("_wpos"))
        losers = (members.join(winners, on="_cluster").filter(pl.col("_pos") != pl.col("_wpos"))
                  .select("id", "_pos", "_dup_of", pl.col("_pos").alias("_a"), pl.col("_wpos").alias("_b"))
                  .sort("_pos"))
        checkpoint.write_parquet_atomic(losers, path)
        return str(path), winners.height, losers.height


@dataclass(frozen=True)
class _Finish:
    """Per block: its losers quarantined as ``drop_cluster_losers`` words them, the rest kept."""

    losers: tuple[str, ...]
    jaccard: tuple[str, ...]
    folder: str
    worker: WorkerContext

    def __call__(self, block: Block) -> dict[str, Any]:
        return run_block(Path(self.folder) / "parts", block, self.worker, self._finish(block))

    def _finish(self, block: Block) -> Callable[[pl.LazyFrame, Context], pl.LazyFrame]:
        in_block = pl.col("_pos").is_between(block.offset, block.offset + block.rows, closed="left")
        losers = pl.scan_parquet(list(self.losers)).filter(in_block).select("id", "_pos", "_dup_of").collect()
        sims = (pl.scan_parquet(list(self.jaccard)).filter(pl.col("_a").is_between(
            block.offset, block.offset + block.rows, closed="left")).select(pl.col("_a").alias("_pos"), "_jaccard")
            .collect())
        losers = losers.join(sims, on="_pos", how="left").sort("_pos")
        losers = losers.with_columns(_sim=pl.Series(np.char.mod("%.2f", losers.get_column("_jaccard").to_numpy()),
                                                    dtype=pl.String))

        def finish(lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
            ctx.quarantine(
                lf.join(losers.lazy().select("id", "_dup_of", "_sim"), on="id", how="inner", maintain_order="left"),
                pl.format("near duplicate (minhash, jaccard {}) of {}", pl.col("_sim"), pl.col("_dup_of")),
                "near_duplicate", duplicate_of=pl.col("_dup_of"),
            )
            return lf.join(losers.lazy().select("id"), on="id", how="anti", maintain_order="left")

        return finish


def run_minhash(stage: MinHashDedup, plane: Plane, blocks: list[Block], folder: Path, ctx: Context, table: str,
                names: list[str]) -> Path:
    """Steps 1-4 of the module docstring; returns the folder of the stage's parts."""
    worker = plane.worker(ctx)
    resources = stage.worker_resources(ctx.models)
    bands, rows = stage.band_params()
    ctx.note("bands", bands)
    ctx.note("rows", rows)
    for stats in plane.run(_Signatures(stage, table, str(folder), worker), blocks, resources):
        plane.replay(ctx, stats["notes"])
    sig_parts = [folder / "sig" / f"b{b.index:05d}.parquet" for b in blocks]
    partitions = plane.partitions(sum(b.rows for b in blocks))

    def run(fn: Any, items: Any) -> list[Any]:
        return plane.run(fn, list(items), resources)

    labels, figures = keyed_clusters(sig_parts, KeyedSpec(bands=bands, rows=rows, threshold=stage.threshold,
                                                          verify=stage.verify, partitions=partitions),
                                     folder / "clusters", run)
    for key in ("candidate_pairs", "verified_pairs", "nodes", "cc_rounds", "clustered_rows"):
        ctx.note(key, figures[key])
    ctx.note("scope", "global")
    ctx.note("partitions", partitions)
    by_part = {int(p.stem): str(p) for p in labels}
    items = [(b.index, by_part[i], str(sig_parts[b.index])) for i, b in enumerate(blocks) if i in by_part]
    plane.run(_Members(stage, str(folder), partitions), items, resources)
    decided = plane.run(_Decide(stage, names, str(folder)), list(range(partitions)), resources)
    loser_files = tuple(path for path, _, _ in decided)
    jaccard = pair_jaccard(sig_parts, [Path(p) for p in loser_files], folder / "pairs", run)
    clusters, removed = sum(w for _, w, _ in decided), sum(n for _, _, n in decided)
    ctx.note("clusters", clusters)
    ctx.note("duplicates", removed)
    warn_removed(ctx, removed, sum(b.rows for b in blocks), stage.warn_share)
    finish = _Finish(loser_files, tuple(str(p) for p in jaccard), str(folder), worker)
    for stats in plane.run(finish, blocks, resources):
        plane.replay(ctx, stats["notes"])
    return folder / "parts"
