"""Exact deduplication on normalised text."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from curate.contract import Needs
from curate.pipeline import Context, Stage
from curate.schema import text_for
from curate.stages._keep import WARN_SHARE, KeepRule, keep_columns, keep_needs, rank_expr, warn_removed

#: Largest partition of the distributed form, in rows: an input of more than (cluster CPUs x this) rows gets
#: more partitions than CPUs, so one task's group-by stays a small share of a worker's memory.
PARTITION_ROWS = 1_000_000


def normalise(text: pl.Expr, *, lowercase: bool, strip_punctuation: bool) -> pl.Expr:
    """Unicode NFKC, optional case folding and punctuation removal, whitespace collapsed."""
    out = text.str.normalize("NFKC")
    if lowercase:
        out = out.str.to_lowercase()
    if strip_punctuation:
        out = out.str.replace_all(r"[\p{P}\p{S}]+", " ")
    return out.str.replace_all(r"\s+", " ").str.strip_chars()


@dataclass(config=ConfigDict(extra="forbid"))
class ExactDedup(Stage):
    """Drop rows whose normalised text equals an earlier row's (hash of NFKC, lower-cased, whitespace-collapsed
    text).  The cheap first pass before near-duplicate detection, as in every web-scale pipeline (e.g.
    CCNet, Wenzek et al. 2020; Lee et al. 2022, "Deduplicating Training Data Makes Language Models Better").

    ``on`` picks the text: ``prompt`` (the instruction, what Magpie and deita deduplicate), ``response`` or
    ``full``.  One row of each group is kept by ``keep``; every other goes to quarantine with the id of the
    row it duplicates.  Removing more than ``warn_share`` (default 10%) of the input logs a warning and notes
    it in the manifest and report (as the near-duplicate stages do).  Global stage: reads only ``id`` and the
    text.  On Ray the group decisions run as one task per hash partition of the keys (``ray_partitions`` in the
    notes); the output is the local one.
    """

    name: ClassVar[str] = "exact_dedup"
    kind: ClassVar = "global"
    paper: ClassVar[str] = "Lee et al. 2022, Deduplicating Training Data Makes Language Models Better"

    on: Literal["prompt", "response", "full"] = "prompt"
    lowercase: bool = True
    strip_punctuation: bool = False
    keep: KeepRule = "first"
    warn_share: float = Field(WARN_SHARE, ge=0.0, le=1.0)

    def requires(self, table: str) -> list[Needs]:
        return keep_needs(self.keep)

    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        table = self.table_of(lf)
        names = lf.collect_schema().names()
        text = normalise(text_for(table, self.on), lowercase=self.lowercase, strip_punctuation=self.strip_punctuation)
        # Two independent 64-bit hashes: 128 bits of key without holding the texts in memory.
        keys = (
            lf.select(
                "id",
                *keep_columns(self.keep),
                text.hash(seed=1).alias("_h1"),
                text.hash(seed=2).alias("_h2"),
                text.str.len_chars().alias("_text_len"),
            )
            .with_row_index("_pos")
            .collect()
        )
        rank = rank_expr(self.keep, names)
        if ctx.distributed:
            kept_ids, losers = _partitioned(keys, rank, ctx)
        else:
            kept_ids, losers = _decide(rank, keys)
        ctx.note("duplicates", losers.height)
        ctx.note("groups_with_duplicates", losers.get_column("_dup_of").n_unique())
        warn_removed(ctx, losers.height, keys.height, self.warn_share, "check the text ('on') and the input")
        ctx.quarantine(
            lf.join(losers.lazy().select("id", "_dup_of"), on="id", how="inner", maintain_order="left"),
            pl.concat_str([pl.lit(f"exact duplicate ({self.on}) of "), pl.col("_dup_of")]),
            "exact_duplicate", duplicate_of=pl.col("_dup_of"),
        )
        return lf.join(kept_ids.lazy(), on="id", how="semi", maintain_order="left")


def _decide(rank: list[pl.Expr], keys: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The kept ``id``s (one per key, the best by ``rank``) and the losers (``id``, ``_dup_of`` = the kept id)
    among ``keys``; the whole input locally, one partition (every copy of its keys) on a cluster."""
    winners = keys.sort(rank).unique(subset=["_h1", "_h2"], keep="first", maintain_order=True)
    losers = keys.join(winners.select("_h1", "_h2", pl.col("id").alias("_dup_of")), on=["_h1", "_h2"]).filter(
        pl.col("id") != pl.col("_dup_of")
    )
    return winners.select("id"), losers.select("id", "_dup_of")


def _partitioned(keys: pl.DataFrame, rank: list[pl.Expr], ctx: Context) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The distributed form (``ctx.distributed``, the Ray executor): the keys are hash-partitioned on ``_h1``
    (every copy of a text lands in one partition), one task per partition decides its groups with the local
    code, and the driver concatenates the kept ids and losers.  The result is the local one: each group's
    decision only reads that group's rows, ranked by the same keys (``_pos`` included)."""
    workers = max(1, int(getattr(ctx, "parallelism", 1)))
    count = max(workers, -(-keys.height // PARTITION_ROWS))
    parts = (
        keys.with_columns((pl.col("_h1") % count).alias("_part"))
        .partition_by("_part", maintain_order=True, include_key=False)
    )
    results = list(ctx.compute_shared(rank, parts, _decide, pack=_same, unpack=_same, name="partitions"))
    kept = pl.concat([k for k, _ in results]) if results else keys.select("id")
    losers = pl.concat([lo for _, lo in results]) if results else keys.select("id", pl.col("id").alias("_dup_of"))
    return kept, losers


def _same(value: Any) -> Any:
    return value
