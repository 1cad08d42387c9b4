"""Keep rules shared by the dedup stages: which row of a duplicate cluster survives."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import polars as pl
from pydantic import AfterValidator

from curate.contract import Needs
from curate.errors import RecipeError
from curate.pipeline import Context

KEEP_RULE_HELP = "'first' (earliest row), 'longest' (longest text) or 'highest:<column>' (largest value)"


def validate_keep(rule: str) -> str:
    if rule in ("first", "longest") or (rule.startswith("highest:") and len(rule) > len("highest:")):
        return rule
    raise ValueError(f"keep must be {KEEP_RULE_HELP}, got {rule!r}")


#: A stage parameter holding a keep rule, checked when the stage is built (from YAML or Python).
KeepRule = Annotated[str, AfterValidator(validate_keep)]


def keep_columns(rule: str) -> list[str]:
    """Columns of the input that ``rule`` needs besides ``id`` and the text."""
    return [rule.split(":", 1)[1]] if rule.startswith("highest:") else []


def keep_needs(rule: str) -> list[Needs]:
    """The number column a ``highest:<column>`` rule names (part of the dedup stages' table contract)."""
    return [Needs.column(f"keep: {rule}", column, "number") for column in keep_columns(rule)]


def rank_expr(rule: str, schema_names: list[str]) -> list[pl.Expr]:
    """Sort keys (ascending = better) that order the rows of a cluster by the keep rule.

    Every rule ends with the row position so that ties resolve to the earliest row: the result never
    depends on hash order or thread scheduling.
    """
    if rule == "first":
        return [pl.col("_pos")]
    if rule == "longest":
        return [pl.col("_text_len").cast(pl.Int64).neg(), pl.col("_pos")]
    column = rule.split(":", 1)[1]
    if column not in schema_names:
        raise RecipeError(f"keep rule {rule!r}: the input has no column '{column}' (columns: {schema_names})")
    return [pl.col(column).cast(pl.Float64).fill_null(float("-inf")).neg(), pl.col("_pos")]


def drop_cluster_losers(
    lf: pl.LazyFrame,
    ctx: Context,
    losers: pl.DataFrame,
    winners: pl.DataFrame,
    similarity: np.ndarray,
    measure: str,
) -> pl.LazyFrame:
    """Quarantine every non-kept member of a duplicate cluster and return the rest of ``lf``.

    ``losers`` has ``id``, ``_pos`` and ``_dup_of`` (the kept id of its cluster), ``winners`` has ``_dup_of``,
    ``similarity`` is each loser's similarity to its kept row, reported as ``near duplicate (MEASURE 0.87) of
    <id>``.  A loser whose id is a kept id has the kept row's content: it stays with it (the join on id cannot
    tell them apart).  Shared by the near-duplicate stages so they report and drop the same way.
    """
    losers = (
        losers.with_columns(_sim=pl.Series(np.char.mod("%.2f", similarity), dtype=pl.String))
        .filter(~pl.col("id").is_in(winners.get_column("_dup_of").implode()))
        .sort("_pos")
        .unique("id", keep="first", maintain_order=True)
        .select("id", "_dup_of", "_sim")
    )
    ctx.note("clusters", winners.height)
    ctx.note("duplicates", losers.height)
    ctx.quarantine(
        lf.join(losers.lazy(), on="id", how="inner", maintain_order="left"),
        pl.format(f"near duplicate ({measure} {{}}) of {{}}", pl.col("_sim"), pl.col("_dup_of")),
        "near_duplicate", duplicate_of=pl.col("_dup_of"),
    )
    return lf.join(losers.lazy().select("id"), on="id", how="anti", maintain_order="left")
