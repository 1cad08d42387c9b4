"""Keep rules shared by the dedup stages: which row of a duplicate cluster survives."""

from __future__ import annotations

import polars as pl

from curate.errors import RecipeError

KEEP_RULE_HELP = "'first' (earliest row), 'longest' (longest text) or 'highest:<column>' (largest value)"


def validate_keep(rule: str) -> str:
    if rule in ("first", "longest") or (rule.startswith("highest:") and len(rule) > len("highest:")):
        return rule
    raise ValueError(f"keep must be {KEEP_RULE_HELP}, got {rule!r}")


def keep_columns(rule: str) -> list[str]:
    """Columns of the input that ``rule`` needs besides ``id`` and the text."""
    return [rule.split(":", 1)[1]] if rule.startswith("highest:") else []


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
