"""Exact deduplication on normalised text."""

from __future__ import annotations

from typing import ClassVar, Literal

import polars as pl
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

from curate.pipeline import Context, Stage
from curate.schema import text_for
from curate.stages._keep import KeepRule, keep_columns, rank_expr


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
    row it duplicates.  Global stage: reads only ``id`` and the text.
    """

    name: ClassVar[str] = "exact_dedup"
    kind: ClassVar = "global"
    paper: ClassVar[str] = "Lee et al. 2022, Deduplicating Training Data Makes Language Models Better"

    on: Literal["prompt", "response", "full"] = "prompt"
    lowercase: bool = True
    strip_punctuation: bool = False
    keep: KeepRule = "first"

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
        ranked = keys.sort(rank_expr(self.keep, names))
        winners = ranked.unique(subset=["_h1", "_h2"], keep="first", maintain_order=True)
        kept_ids = winners.select("id")
        losers = keys.join(winners.select("_h1", "_h2", pl.col("id").alias("_dup_of")), on=["_h1", "_h2"]).filter(
            pl.col("id") != pl.col("_dup_of")
        )
        ctx.note("duplicates", losers.height)
        ctx.note("groups_with_duplicates", losers.get_column("_dup_of").n_unique())
        ctx.quarantine(
            lf.join(losers.lazy().select("id", "_dup_of"), on="id", how="inner", maintain_order="left"),
            pl.concat_str([pl.lit(f"exact duplicate ({self.on}) of "), pl.col("_dup_of")]),
        )
        return lf.join(kept_ids.lazy(), on="id", how="semi", maintain_order="left")
