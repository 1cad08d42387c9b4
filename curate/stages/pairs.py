"""Candidates -> preference pairs by judge score (DESIGN.md section 6, ``pairs``)."""

from __future__ import annotations

from typing import ClassVar, Literal

import polars as pl
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from curate.errors import InputDataError
from curate.pipeline import Context, Stage
from curate.schema import MESSAGES, conform


@dataclass(config=ConfigDict(extra="forbid"))
class Pairs(Stage):
    """Turn each candidates row (a prompt and scored responses) into at most one DPO preference pair.

    UltraFeedback (Cui et al. 2023) and its binarised form used by Zephyr (Tunstall et al. 2023) pair the
    best-rated response with a worse one: ``best_vs_worst`` takes the lowest-scored response (the widest
    margin, the clearest signal), ``best_vs_random`` a response drawn uniformly among those scored below the
    best by at least ``min_margin`` (Zephyr's choice: less easy negatives).  The draw is a hash of
    (row id, response position, ``seed``), so it is the same on every run and independent of batching.

    Rules: responses with a null score (unjudged, or the judge's output was unreadable) take no part; the
    best is the highest score (the first such response on ties), the worst the lowest (the last such on
    ties).  A pair needs ``best - rejected >= min_margin`` and never comes from equal scores.  Rows that
    give no pair go to quarantine with the reason, counted in the stage notes: ``single_response``,
    ``null_scores`` (fewer than two scored responses), ``all_tied`` (every scored response has the same
    score), ``below_margin``.

    Output columns (preference table, TRL conversational explicit-prompt format): ``prompt``, ``chosen``,
    ``rejected`` (each one assistant message), ``score_chosen``, ``score_rejected``, ``source``, the input's
    other metadata columns, ``parent_id`` (the candidates row id), ``chosen_model``, ``rejected_model``,
    ``score_margin``.
    """

    name: ClassVar[str] = "pairs"
    kind: ClassVar = "expression"
    paper: ClassVar[str] = "Cui et al. 2023, UltraFeedback; Tunstall et al. 2023, Zephyr (binarised pairs)"

    strategy: Literal["best_vs_worst", "best_vs_random"] = "best_vs_worst"
    min_margin: float = Field(0.0, ge=0.0)
    seed: int = Field(0, ge=0)

    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        table = self.table_of(lf)
        if table != "candidates":
            raise InputDataError(f"pairs needs a candidates table (prompt + responses), got a {table} table")
        lf = lf.with_row_index("_row")
        exploded = (
            lf.select("_row", "id", pl.col("responses"))
            .with_columns(pl.int_ranges(pl.col("responses").list.len()).alias("_k"))
            .explode(["responses", "_k"])
            .with_columns(
                pl.col("responses").struct.field("score").cast(pl.Float64).alias("_score"),
                pl.col("responses").struct.field("content").is_not_null().alias("_present"),
            )
        )
        scored = exploded.filter(pl.col("_score").is_not_null() & pl.col("_score").is_not_nan())
        best = (
            scored.sort(["_row", "_score", "_k"], descending=[False, True, False])
            .group_by("_row", maintain_order=True)
            .agg(
                pl.col("_k").first().alias("_best_k"),
                pl.col("_score").first().alias("_best"),
                pl.col("_score").min().alias("_worst"),
                pl.len().alias("_n_scored"),
            )
        )
        candidates = scored.join(best, on="_row").filter(
            (pl.col("_score") < pl.col("_best")) & (pl.col("_best") - pl.col("_score") >= self.min_margin)
        )
        if self.strategy == "best_vs_worst":
            ordered = candidates.sort(["_row", "_score", "_k"], descending=[False, False, True])
        else:
            draw = pl.concat_str([pl.col("id"), pl.col("_k").cast(pl.String), pl.lit(str(self.seed))], separator="|")
            ordered = candidates.with_columns(draw.hash(seed=self.seed).alias("_draw")).sort(["_row", "_draw", "_k"])
        rejected = ordered.group_by("_row", maintain_order=True).agg(pl.col("_k").first().alias("_rej_k"))
        counts = exploded.group_by("_row").agg(pl.col("_present").sum().alias("_n_present"))
        decision = (
            lf.select("_row")
            .join(counts, on="_row", how="left")
            .join(best, on="_row", how="left")
            .join(rejected, on="_row", how="left")
            .with_columns(
                pl.when(pl.col("_n_present").fill_null(0) < 2)
                .then(pl.lit("single_response"))
                .when(pl.col("_n_scored").fill_null(0) < 2)
                .then(pl.lit("null_scores"))
                .when(pl.col("_best") == pl.col("_worst"))
                .then(pl.lit("all_tied"))
                .when(pl.col("_rej_k").is_null())
                .then(pl.lit("below_margin"))
                .otherwise(pl.lit(None, dtype=pl.String))
                .alias("_drop")
            )
            .collect()
        )
        reasons = {
            "single_response": "fewer than two responses: no pair",
            "null_scores": "fewer than two scored responses (null scores): no pair",
            "all_tied": "all scored responses have equal scores: no pair from a tie",
            "below_margin": f"no response scored at least min_margin={self.min_margin} below the best",
        }
        dropped = decision.filter(pl.col("_drop").is_not_null())
        for key in reasons:
            ctx.note(f"dropped_{key}", int((dropped.get_column("_drop") == key).sum()))
        ctx.note("pairs", decision.height - dropped.height)
        ctx.note("strategy", self.strategy)
        reason_expr = pl.col("_drop").replace_strict(reasons, return_dtype=pl.String)
        ctx.quarantine(
            lf.join(dropped.lazy().select("_row", "_drop"), on="_row", how="inner", maintain_order="left")
            .with_columns(reason_expr.alias("_reason")).drop("_row"),
            pl.col("_reason"),
        )
        kept = decision.lazy().filter(pl.col("_drop").is_null()).select("_row", "_best_k", "_rej_k")
        pick_c = pl.col("responses").list.get(pl.col("_best_k"))
        pick_r = pl.col("responses").list.get(pl.col("_rej_k"))

        def message(pick: pl.Expr) -> pl.Expr:
            one = pl.struct(pl.lit("assistant").alias("role"), pick.struct.field("content").alias("content"))
            return pl.concat_list([one]).cast(MESSAGES)

        names = lf.collect_schema().names()
        meta = [c for c in names if c not in ("_row", "id", "prompt", "responses", "parent_id")]
        out = lf.join(kept, on="_row", how="inner", maintain_order="left").select(
            pl.col("prompt"),
            message(pick_c).alias("chosen"),
            message(pick_r).alias("rejected"),
            pick_c.struct.field("score").cast(pl.Float64).alias("score_chosen"),
            pick_r.struct.field("score").cast(pl.Float64).alias("score_rejected"),
            *[pl.col(c) for c in meta],
            pl.col("id").alias("parent_id"),
            pick_c.struct.field("model").alias("chosen_model"),
            pick_r.struct.field("model").alias("rejected_model"),
            (pick_c.struct.field("score") - pick_r.struct.field("score")).cast(pl.Float64).alias("score_margin"),
        )
        return conform(out, "preference")
