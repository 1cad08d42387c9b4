"""Reward-augmented preference data: every pair becomes two goal-conditioned pairs (docs/architecture.md)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import polars as pl
from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.dataclasses import dataclass

from curate.errors import InputDataError
from curate.execution import Shape
from curate.pipeline import Context, Stage
from curate.schema import MESSAGES, with_ids
from curate.words import count

DEFAULT_TEMPLATE = "Write a response that would be rated {score} on a scale of {low} to {high}."


def _number(value: float) -> str:
    """``10.0`` -> ``"10"``, ``7.5`` -> ``"7.5"``: how a score reads in the goal sentence."""
    return f"{value:g}"


@dataclass(config=ConfigDict(extra="forbid"))
class RewardAugment(Stage):
    """Turn each preference pair (x, y_w, y_l, r_w, r_l) into two goal-conditioned pairs.

    Zhang et al. 2024, "Reward-Augmented Data Enhances Direct Preference Alignment of LLMs": DPO on plain
    pairs learns only *which* response is better and throws away how good each one is, so high-quality
    rejected responses get pushed down and the model over-fits the winners.  Conditioning the prompt on a
    target reward fixes both: the pair becomes

    - goal ``r_w``: ``y_w`` chosen over ``y_l`` (the original direction), and
    - goal ``r_l``: ``y_l`` chosen over ``y_w`` (at a goal of ``r_l``, ``y_l`` is the response that meets it),

    so the model learns the whole reward scale; at inference the prompt asks for the highest score.

    - **Goal**: a system message built from ``template`` (placeholders ``{score}``, ``{low}``, ``{high}``;
      ``low``/``high`` are the judge's scale, default 1..10).  The score is rounded to ``decimals`` and written
      without a trailing ``.0``.  When the prompt already starts with a system message, ``system`` decides:
      ``prepend`` (goal, ``separator``, the old text), ``append`` (old text, ``separator``, goal) or
      ``replace`` (goal only).  Otherwise a new system message opens the prompt.
    - **Rows out**: two per usable pair, in input order (goal ``r_w`` first).  ``score_chosen`` /
      ``score_rejected`` follow their responses (swapped in the second twin), and so does every metadata
      column pair ``<name>_chosen`` / ``<name>_rejected`` (e.g. lengths or reward heads).  New columns:
      ``parent_id`` (the input pair's ``id``) and ``goal_score``; ``id`` is the content hash of the new row.
    - **Ties**: a pair with ``r_w == r_l`` (also when both round to the same goal at ``decimals``), or a null /
      NaN score, would give two contradictory twins with the same goal; it produces none and goes to
      quarantine with the reason.  The runner counts them per stage.
    - **Manifest**: ``goal_at_inference`` (``high``, the top of the scale, which is what the paper conditions
      on at evaluation) and ``goal_prompt`` (the system text to use then) via ``ctx.note``, for the trainer.

    Expression stage: pure Polars, the result stays lazy.
    """

    name: ClassVar[str] = "reward_augment"
    kind: ClassVar = "expression"
    shape: ClassVar[Shape] = "driver"
    driver_reason: ClassVar[str] = "compares each pair with column-wide figures"
    paper: ClassVar[str] = "Zhang et al. 2024, Reward-Augmented Data Enhances Direct Preference Alignment of LLMs"

    template: str = DEFAULT_TEMPLATE
    low: float = 1.0
    high: float = 10.0
    system: Literal["prepend", "append", "replace"] = "prepend"
    separator: str = "\n\n"
    decimals: int = Field(1, ge=0, le=6)

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        if "{score}" not in value:
            raise ValueError("template must contain {score} (the goal), e.g. " + repr(DEFAULT_TEMPLATE))
        try:
            value.format(score=0, low=0, high=0)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"template may only use {{score}}, {{low}} and {{high}}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _check_scale(self) -> RewardAugment:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"the scale needs finite low < high, got low={self.low}, high={self.high}")
        return self

    def goal_text(self, score: float) -> str:
        """The goal sentence for ``score`` (what the trainer prepends at inference with ``high``)."""
        return self.template.format(score=_number(round(score, self.decimals)), low=_number(self.low),
                                    high=_number(self.high))

    def _goal_expr(self, score: pl.Expr) -> pl.Expr:
        text = score.round(self.decimals).cast(pl.String).str.replace(r"\.0+$", "")
        # {low}/{high} are constants; split the template on {score} so the row's score is spliced in lazily.
        parts = self.template.replace("{low}", _number(self.low)).replace("{high}", _number(self.high))
        pieces = parts.split("{score}")
        exprs: list[pl.Expr] = []
        for i, piece in enumerate(pieces):
            if i:
                exprs.append(text)
            if piece:
                exprs.append(pl.lit(piece.replace("{{", "{").replace("}}", "}")))
        return pl.concat_str(exprs)

    def _prompt_with_goal(self, goal: pl.Expr) -> pl.Expr:
        first = pl.col("prompt").list.first()
        has_system = (first.struct.field("role") == "system").fill_null(False)
        old = first.struct.field("content").fill_null("")
        if self.system == "prepend":
            merged = pl.concat_str([goal, pl.lit(self.separator), old])
        elif self.system == "append":
            merged = pl.concat_str([old, pl.lit(self.separator), goal])
        else:
            merged = goal
        content = pl.when(has_system).then(merged).otherwise(goal)
        rest = pl.when(has_system).then(pl.col("prompt").list.slice(1)).otherwise(pl.col("prompt"))
        return pl.concat_list([pl.struct(pl.lit("system").alias("role"), content.alias("content")), rest]).cast(
            MESSAGES
        )

    accepts: ClassVar[frozenset[str]] = frozenset({"preference"})

    def adds(self, table: str) -> dict[str, pl.DataType | None]:
        return {"parent_id": pl.String(), "goal_score": pl.Float64()}

    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        if self.table_of(lf) != "preference":
            raise InputDataError("reward_augment works on preference rows (prompt, chosen, rejected and scores)")
        names = lf.collect_schema().names()
        for column in ("score_chosen", "score_rejected"):
            if column not in names:
                raise InputDataError(f"reward_augment: the input has no '{column}' column (scores are the goals)")
        ctx.note("goal_at_inference", self.high)
        ctx.note("goal_prompt", self.goal_text(self.high))

        r_w = pl.col("score_chosen").cast(pl.Float64)
        r_l = pl.col("score_rejected").cast(pl.Float64)
        missing = r_w.is_null() | r_l.is_null() | r_w.is_nan() | r_l.is_nan()
        # Scores that round to the same goal text are ties too: their twins would share a goal and contradict.
        tie = ~missing & (r_w.round(self.decimals) == r_l.round(self.decimals))
        reason = (
            pl.when(missing)
            .then(pl.lit("reward_augment: null score (no goal to condition on)"))
            .when(r_w == r_l)
            .then(pl.format("reward_augment: equal scores ({} == {}), twins would contradict", r_w, r_l))
            .otherwise(pl.format(f"reward_augment: scores {{}} and {{}} give the same goal at "
                                 f"{count(self.decimals, 'decimal')}, twins would contradict", r_w, r_l))
        )
        ctx.quarantine(lf.filter(missing | tie), reason)

        # Swap every <name>_chosen / <name>_rejected pair (scores included) in the second twin.
        pairs = sorted(
            c[: -len("_chosen")] for c in names if c.endswith("_chosen") and f"{c[: -len('_chosen')]}_rejected" in names
        )
        pairs = [p for p in pairs if p not in ("", "score")]
        swap = {"chosen": "rejected", "rejected": "chosen", "score_chosen": "score_rejected",
                "score_rejected": "score_chosen"}
        for base in pairs:
            swap[f"{base}_chosen"], swap[f"{base}_rejected"] = f"{base}_rejected", f"{base}_chosen"

        usable = (
            lf.filter(~(missing | tie))
            .with_columns(r_w.alias("score_chosen"), r_l.alias("score_rejected"))
            .with_row_index("_ra_row")
        )
        kept = [c for c in names if c not in ("parent_id", "goal_score")]
        first = usable.select(
            "_ra_row", pl.lit(0, pl.UInt8).alias("_ra_twin"), *kept,
            pl.col("id").alias("parent_id"), pl.col("score_chosen").alias("goal_score"),
        )
        second = usable.select(
            "_ra_row", pl.lit(1, pl.UInt8).alias("_ra_twin"),
            *[pl.col(swap.get(c, c)).alias(c) for c in kept],
            pl.col("id").alias("parent_id"), pl.col("score_rejected").alias("goal_score"),
        )
        twins = pl.concat([first, second], how="vertical").sort("_ra_row", "_ra_twin")
        usable_rows = int(usable.select(pl.len()).collect().item())  # the funnel's balance (curate.funnel)
        ctx.note("rows_consumed", usable_rows)
        ctx.note("rows_created", 2 * usable_rows)
        ctx.note("input_use", "replaced by two goal-conditioned twins each")
        out = twins.with_columns(self._prompt_with_goal(self._goal_expr(pl.col("goal_score"))).alias("prompt"))
        return with_ids(out.drop("_ra_row", "_ra_twin"), "preference")
