"""Exact deduplication on normalised text."""

from __future__ import annotations

from typing import ClassVar, Literal

import polars as pl
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from curate.contract import Needs
from curate.execution import Shape
from curate.pipeline import Context, Stage
from curate.schema import text_for
from curate.stages._keep import WARN_SHARE, KeepRule, keep_columns, keep_needs, rank_expr, warn_removed


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
    text.  Shuffle stage: on Ray the keys are computed per block on the workers, hash-partitioned on ``_h1`` and
    decided one partition per task (:mod:`curate.distributed.plane`); the output is the local one.
    """

    name: ClassVar[str] = "exact_dedup"
    kind: ClassVar = "global"
    shape: ClassVar[Shape] = "shuffle"
    paper: ClassVar[str] = "Lee et al. 2022, Deduplicating Training Data Makes Language Models Better"

    on: Literal["prompt", "response", "full"] = "prompt"
    lowercase: bool = True
    strip_punctuation: bool = False
    keep: KeepRule = "first"
    warn_share: float = Field(WARN_SHARE, ge=0.0, le=1.0)

    #: The keyed form (:class:`curate.execution.KeyedStage`): every copy of a text has the same ``_h1``.
    shuffle_on: ClassVar[str] = "_h1"

    def requires(self, table: str) -> list[Needs]:
        return keep_needs(self.keep)

    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        """The single-process form: every key in one partition."""
        names = lf.collect_schema().names()
        keys = self.shuffle_keys(lf, self.table_of(lf)).with_row_index("_pos").collect()
        removed = self.decide(keys, names)
        self.record(ctx, removed=removed.height, groups=removed.get_column("_dup_of").n_unique(), total=keys.height)
        return self.finish(lf, removed.lazy(), ctx)

    def shuffle_keys(self, lf: pl.LazyFrame, table: str) -> pl.LazyFrame:
        """``id``, the keep rule's columns and two independent 64-bit hashes of the normalised text (128 bits of
        key without holding the texts)."""
        text = normalise(text_for(table, self.on), lowercase=self.lowercase, strip_punctuation=self.strip_punctuation)
        return lf.select(
            "id",
            *keep_columns(self.keep),
            text.hash(seed=1).alias("_h1"),
            text.hash(seed=2).alias("_h2"),
            text.str.len_chars().alias("_text_len"),
        )

    def decide(self, keys: pl.DataFrame, names: list[str]) -> pl.DataFrame:
        """The removed rows (``id``, ``_dup_of`` = the kept id, ``_pos``) among ``keys``: one row per key, the best
        by the keep rule, is kept.  Each group reads only its own rows, so a partition holding every copy of its
        keys decides as the whole input would."""
        rank = rank_expr(self.keep, names)
        winners = keys.sort(rank).unique(subset=["_h1", "_h2"], keep="first", maintain_order=True)
        losers = keys.join(winners.select("_h1", "_h2", pl.col("id").alias("_dup_of")), on=["_h1", "_h2"]).filter(
            pl.col("id") != pl.col("_dup_of")
        )
        return losers.select("id", "_dup_of", "_pos")

    def record(self, ctx: Context, *, removed: int, groups: int, total: int) -> None:
        """The stage's figures, from the decision's totals (summed over partitions by a distributed run)."""
        ctx.note("duplicates", removed)
        ctx.note("groups_with_duplicates", groups)
        warn_removed(ctx, removed, total, self.warn_share, "check the text ('on') and the input")

    def finish(self, lf: pl.LazyFrame, removed: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        ctx.quarantine(
            lf.join(removed.select("id", "_dup_of"), on="id", how="inner", maintain_order="left"),
            pl.concat_str([pl.lit(f"exact duplicate ({self.on}) of "), pl.col("_dup_of")]),
            "exact_duplicate", duplicate_of=pl.col("_dup_of"),
        )
        return lf.join(removed.select("id"), on="id", how="anti", maintain_order="left")
