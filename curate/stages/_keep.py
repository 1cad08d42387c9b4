"""Keep rules shared by the dedup stages: which row of a duplicate cluster survives."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

import numpy as np
import polars as pl
from pydantic import AfterValidator

from curate.contract import Needs
from curate.errors import RecipeError
from curate.pipeline import Context
from curate.schema import prompt_text

log = logging.getLogger("curate")

#: Which pairs of rows a dedup stage compares: every pair, only rows of different prompts, or only rows of
#: one prompt.  Samples of one prompt (best-of-n, several pairs per prompt) resemble each other by design, so
#: a dedup ``on: response`` compares across prompts unless told otherwise.
Scope = Literal["global", "across_prompts", "within_prompt"]

#: Default share of a dedup stage's input above which it warns (log line, ``warning`` note in the manifest,
#: shown by the report): a dedup removing more than this is usually a threshold or scope set wrong.
WARN_SHARE = 0.10

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


def resolve_scope(scope: Scope | None, on: str) -> Scope:
    """The scope a dedup stage uses: as given, else ``across_prompts`` for ``on: response`` and ``global``
    for ``prompt`` / ``full`` texts."""
    if scope is not None:
        return scope
    return "across_prompts" if on == "response" else "global"


def prompt_key(table: str) -> pl.Expr:
    """A 64-bit hash of a row's prompt text (``_pkey``): rows with the same prompt share it."""
    return prompt_text(table).fill_null("").hash(seed=0).alias("_pkey")


def scope_edges(left: np.ndarray, right: np.ndarray, keys: np.ndarray, scope: Scope) -> np.ndarray:
    """Mask of the similar pairs ``(left[i], right[i])`` (row positions) that count under ``scope``."""
    if scope == "across_prompts":
        return keys[left] != keys[right]
    if scope == "within_prompt":
        return keys[left] == keys[right]
    return np.ones(len(left), dtype=bool)


def scope_clusters(members: pl.DataFrame, scope: Scope) -> pl.DataFrame:
    """``within_prompt``: split each cluster of ``members`` (``_cluster``, ``_pkey``) by prompt, for stages
    whose clusters do not come from pairs :func:`scope_edges` could filter (MinHash's buckets)."""
    if scope != "within_prompt":
        return members
    return members.with_columns(
        _cluster=pl.struct("_cluster", "_pkey").rank("dense").cast(pl.Int64)
    ).filter(pl.len().over("_cluster") > 1)


def scope_losers(loser_keys: np.ndarray, winner_keys: np.ndarray, scope: Scope) -> np.ndarray:
    """Mask of the losers to drop: under ``across_prompts`` a row of its kept row's own prompt stays (it joined
    the cluster through a row of another prompt, and samples of one prompt are never duplicates there)."""
    if scope == "across_prompts":
        return loser_keys != winner_keys
    return np.ones(len(loser_keys), dtype=bool)


def warn_removed(ctx: Context, removed: int, total: int, warn_share: float = WARN_SHARE,
                 advice: str = "check the threshold and the scope") -> None:
    """Note ``removed_share`` and, above ``warn_share``, a ``warning`` (manifest notes, report) and a log line:
    the one place every dedup stage's guard lives."""
    share = removed / total if total else 0.0
    ctx.note("removed_share", round(share, 4))
    if share > warn_share:
        warning = f"removed {removed} of {total} rows ({share:.0%}, more than warn_share {warn_share:.0%}): {advice}"
        ctx.note("warning", warning)
        log.warning("%s: %s", ctx.stage_label, warning)


def drop_cluster_losers(
    lf: pl.LazyFrame,
    ctx: Context,
    losers: pl.DataFrame,
    winners: pl.DataFrame,
    similarity: np.ndarray,
    measure: str,
    *,
    total: int | None = None,
    warn_share: float = WARN_SHARE,
) -> pl.LazyFrame:
    """Quarantine every non-kept member of a duplicate cluster and return the rest of ``lf``.

    ``losers`` has ``id``, ``_pos`` and ``_dup_of`` (the kept id of its cluster), ``winners`` has ``_dup_of``,
    ``similarity`` is each loser's similarity to its kept row, reported as ``near duplicate (MEASURE 0.87) of
    <id>``.  A loser whose id is a kept id has the kept row's content: it stays with it (the join on id cannot
    tell them apart).  Shared by the near-duplicate stages so they report and drop the same way.

    ``total`` (the stage's input rows): when the rows dropped exceed ``warn_share`` of it, a warning goes to
    the log and to the stage's ``warning`` note (manifest, report), since a dedup that removes that much is
    more often a wrong threshold or scope than real duplication.
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
    if total:
        warn_removed(ctx, losers.height, total, warn_share)
    ctx.quarantine(
        lf.join(losers.lazy(), on="id", how="inner", maintain_order="left"),
        pl.format(f"near duplicate ({measure} {{}}) of {{}}", pl.col("_sim"), pl.col("_dup_of")),
        "near_duplicate", duplicate_of=pl.col("_dup_of"),
    )
    return lf.join(losers.lazy().select("id"), on="id", how="anti", maintain_order="left")
