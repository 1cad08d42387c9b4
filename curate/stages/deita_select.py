"""Score-first diversity selection (deita's Repr Filter; docs/architecture.md, ``deita_select``)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import polars as pl
from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass

from curate.contract import Needs
from curate.embed import embed_for_stage
from curate.embed.select import greedy_diverse
from curate.errors import RecipeError
from curate.execution import Shape
from curate.pipeline import Context, Stage
from curate.schema import text_for

#: Candidates examined per index search: one batched search against the kept set, then the greedy rule
#: inside the block with the block's own similarity matrix (exactly the one-at-a-time result, far fewer calls).


@dataclass(config=ConfigDict(extra="forbid"))
class DeitaSelect(Stage):
    """Keep the best-scored rows that are not too similar to any row already kept, up to a budget.

    Liu et al. 2024, "What Makes Good Data for Alignment? A Comprehensive Study of Automatic Data Selection
    in Instruction Tuning" (deita), section 3.3 (Repr Filter): rows sorted by ``score`` (default
    ``deita_score``, high first; nulls last; ties by input order) are visited greedily, and a row is kept only
    if its cosine similarity to *every* kept row is ``<= tau`` (default 0.9), i.e. its largest similarity to
    the kept set; a row exactly at ``tau`` is kept.  Why not the nearest neighbour *distance* some ports
    threshold: the paper's rule is on similarity to what was already selected, which makes the result depend
    on the score order (the point: the better of two near-duplicates wins).

    The kept set lives in a FAISS index (exact ``IndexFlatIP`` while the budget fits ``exact_max``, HNSW above;
    no n x n matrix).  ``budget``: a row count (int >= 1) or a fraction of the input (float in (0, 1]);
    none = as many as pass.  Rows not kept go to quarantine with ``too similar to <id> (cos 0.93)`` or
    ``over budget (N kept)``.  ``on`` picks the embedded text (``full``: instruction and response, as the
    paper embeds whole samples).
    """

    name: ClassVar[str] = "deita_select"
    kind: ClassVar = "global"
    shape: ClassVar[Shape] = "driver"
    driver_reason: ClassVar[str] = (
        "a greedy selection whose index grows with every kept row (encoding runs on workers)"
    )
    paper: ClassVar[str] = "Liu et al. 2024, What Makes Good Data for Alignment (deita)"
    model_params: ClassVar[tuple[str, ...]] = ("model",)

    score: str = "deita_score"
    tau: float = Field(0.9, ge=-1.0, le=1.0)
    budget: int | float | None = None
    on: Literal["prompt", "response", "full"] = "full"
    model: str = "embed"
    exact_max: int = Field(100_000, ge=1)

    @field_validator("budget")
    @classmethod
    def _check_budget(cls, value: int | float | None) -> int | float | None:
        if value is None:
            return None
        if isinstance(value, int) and value < 1:
            raise ValueError("budget as a count must be >= 1")
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ValueError("budget as a fraction must be in (0, 1]")
        return value

    def requires(self, table: str) -> list[Needs]:
        return [Needs.column("score", self.score, "number", "score column")]

    def _budget_rows(self, n: int) -> int:
        if self.budget is None:
            return n
        if isinstance(self.budget, float):
            return round(self.budget * n)
        return min(self.budget, n)

    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        table = self.table_of(lf)
        names = lf.collect_schema().names()
        if self.score not in names:
            raise RecipeError(f"{self.name}: the input has no score column '{self.score}' (columns: {names})")
        rows = (
            lf.select("id", text_for(table, self.on).fill_null("").alias("_text"),
                      pl.col(self.score).cast(pl.Float64).alias("_score"))
            .with_row_index("_pos")
            .sort([pl.col("_score").fill_nan(None), pl.col("_pos")], descending=[True, False], nulls_last=True)
        ).collect()
        n = rows.height
        budget = self._budget_rows(n)
        vectors = embed_for_stage(ctx, self.model, rows.get_column("_text"))

        status, blocker, blocker_sim, kept_index = greedy_diverse(vectors, budget, self.tau, exact_max=self.exact_max)
        if kept_index is not None:
            for key, value in kept_index.describe().items():
                if key != "vectors":
                    ctx.note(key, value)

        ids_in_order = rows.get_column("id")
        decided = pl.DataFrame(
            {
                "id": ids_in_order,
                "_status": status,
                "_by": ids_in_order.gather(np.maximum(blocker, 0)).to_numpy(),
                "_cos": np.char.mod("%.2f", blocker_sim),
            },
            schema_overrides={"_by": pl.String, "_cos": pl.String},
        ).unique("id", keep="first", maintain_order=True)
        kept = decided.filter(pl.col("_status") == 1).select("id")
        rejected = decided.filter(pl.col("_status") != 1)
        ctx.note("budget", budget)
        ctx.note("kept", kept.height)
        ctx.note("too_similar", int((status == 2).sum()))
        ctx.note("over_budget", int((status == 0).sum()))
        reason = (
            pl.when(pl.col("_status") == 2)
            .then(pl.format("too similar to {} (cos {})", pl.col("_by"), pl.col("_cos")))
            .otherwise(pl.lit(f"over budget ({kept.height} kept)"))
        )
        ctx.quarantine(lf.join(rejected.lazy(), on="id", how="inner", maintain_order="left"), reason)
        return lf.join(kept.lazy(), on="id", how="semi", maintain_order="left")
