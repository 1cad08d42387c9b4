"""Combine several objective scores into one: weighted sum or unit direction, min/max norm, hard constraints."""

from __future__ import annotations

import math
import re
from typing import ClassVar, Literal

import polars as pl
from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.dataclasses import dataclass

from curate.contract import Columns, Needs
from curate.errors import InputDataError
from curate.execution import Shape
from curate.pipeline import Context, Stage
from curate.schema import RESPONSES

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_CONSTRAINT = re.compile(rf"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|!=|>|<)\s*({_NUMBER})\s*$")
_OPS = {
    ">=": lambda e, v: e >= v,
    "<=": lambda e, v: e <= v,
    ">": lambda e, v: e > v,
    "<": lambda e, v: e < v,
    "==": lambda e, v: e == v,
    "!=": lambda e, v: e != v,
}
SIDES = ("chosen", "rejected")


def parse_constraint(text: str) -> tuple[str, str, float]:
    """``"harmlessness >= 0"`` -> ``("harmlessness", ">=", 0.0)``; ``ValueError`` on anything else (never eval)."""
    match = _CONSTRAINT.match(text)
    if not match:
        raise ValueError(
            f"constraint {text!r} is not 'column op number' (op one of >=, <=, >, <, ==, !=; e.g. 'harmlessness >= 0')"
        )
    value = float(match.group(3))
    if not math.isfinite(value):
        raise ValueError(f"constraint {text!r}: the number must be finite")
    return match.group(1), match.group(2), value


@dataclass(config=ConfigDict(extra="forbid"))
class CombineScores(Stage):
    """One score from several objectives: ``score = sum_i w_i * x_i`` over named score columns, with optional
    per-objective min/max normalisation over the data and hard constraints.

    Multi-objective reward modelling and alignment train on a fixed linear combination of per-objective rewards
    (MODPO, Zhou et al. 2023, "Beyond One-Preference-Fits-All Alignment: Multi-Objective Direct Preference
    Optimization"); Directional Preference Alignment (Wang et al. 2024, "Arithmetic Control of LLMs for Diverse
    User Preferences") scores with ``v . r`` for a user direction ``v`` of unit length, so only the direction,
    not the scale of the weights, matters.  Why here: the reward heads of ``reward_score`` (or judge scores)
    become the single ``score`` that ``pairs`` and DPO use, with a preference trade-off chosen per dataset.

    - ``weights`` (a weighted sum as given) or ``direction`` (the same, the vector first scaled to unit L2
      norm): ``{objective: number}``; give exactly one.
    - **Objectives** are found by name: on preference rows ``<name>_chosen`` / ``<name>_rejected`` (also
      ``reward_<name>_...``, as ``reward_score`` writes them; ``score`` is ``score_chosen`` / ``score_rejected``);
      on candidates a ``list<f64>`` column ``<name>`` (or ``reward_<name>``) aligned with ``responses``
      (``score`` is ``responses[].score``).  A missing objective is an error naming what exists.
    - ``normalize: minmax`` maps each objective to ``(x - min) / (max - min)`` with min and max over the whole
      input (both sides of preference rows together, every response of candidates; lazy aggregates over the
      frame, nulls ignored); a constant objective maps to 0.
    - ``constraints``: ``"column op number"`` (``>=``, ``<=``, ``>``, ``<``, ``==``, ``!=``), parsed, never
      evaluated as code, checked on the *raw* objective values (a null value fails).  Preference rows: checked
      on the chosen response (``constrain: chosen``, default: a rejected response that breaks a constraint is a
      good negative) or on both; a failing row goes to quarantine with the failed constraints as reason.
      Candidates: a response that fails gets a null ``score`` (rows and responses are kept; ``pairs`` leaves
      null-scored responses out).
    - **Output**: preference -> ``score_chosen``, ``score_rejected``; candidates -> ``responses[].score``.  A
      null objective value gives a null score.  Expression stage: the result stays lazy.
    """

    name: ClassVar[str] = "combine_scores"
    kind: ClassVar = "expression"
    shape: ClassVar[Shape] = "driver"
    driver_reason: ClassVar[str] = "normalises scores over the whole column"
    paper: ClassVar[str] = "Zhou et al. 2023, MODPO; Wang et al. 2024, Directional Preference Alignment"

    weights: dict[str, float] | None = None
    direction: dict[str, float] | None = None
    normalize: Literal["none", "minmax"] = "none"
    constraints: list[str] = Field(default_factory=list)
    #: Preference rows: which response a constraint is checked on.
    constrain: Literal["chosen", "both"] = "chosen"

    @field_validator("constraints")
    @classmethod
    def _check_constraints(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_constraint(text)
        return value

    @model_validator(mode="after")
    def _check_vector(self) -> CombineScores:
        if (self.weights is None) == (self.direction is None):
            raise ValueError("give exactly one of weights (a weighted sum) or direction (a unit-normalised vector)")
        vector = self.weights if self.weights is not None else self.direction
        assert vector is not None
        if not vector:
            raise ValueError("weights/direction needs at least one objective")
        if not all(math.isfinite(v) for v in vector.values()):
            raise ValueError("weights/direction must be finite numbers")
        if self.direction is not None and math.sqrt(sum(v * v for v in vector.values())) == 0:
            raise ValueError("direction must not be the zero vector")
        return self

    def coefficients(self) -> dict[str, float]:
        """The weights applied: ``weights`` as given, or ``direction / ||direction||``."""
        if self.weights is not None:
            return dict(self.weights)
        assert self.direction is not None
        norm = math.sqrt(sum(v * v for v in self.direction.values()))
        return {k: v / norm for k, v in self.direction.items()}

    # -- table contract ----------------------------------------------------------------------------------
    accepts: ClassVar[frozenset[str]] = frozenset({"candidates", "preference"})

    def requires(self, table: str) -> list[Needs]:
        """Each objective (weights/direction) and each constraint column, under either of its names."""
        named = {name: "weights" if self.weights is not None else "direction" for name in self.coefficients()}
        for text in self.constraints:
            named.setdefault(parse_constraint(text)[0], f"constraints: {text}")
        needs = []
        for name, param in named.items():
            if name == "score":
                continue  # score_chosen/score_rejected, or responses[].score: always in the table
            bases = (name, f"reward_{name}")
            if table == "preference":
                options = tuple((f"{b}_chosen", f"{b}_rejected") for b in bases)
                needs.append(Needs(f"{param}: objective '{name}'", options, "number"))
            else:
                needs.append(Needs(f"{param}: objective '{name}'", tuple((b,) for b in bases), "number list"))
        return needs

    def explain_missing(self, need: Needs, table: str, columns: Columns) -> str:
        name = need.options[0][0].removesuffix("_chosen")
        if table == "preference":
            found = sorted({c.rsplit("_", 1)[0] for c in columns if c.endswith(("_chosen", "_rejected"))})
            return (f"{need.param} not found: need columns {name}_chosen and {name}_rejected (or "
                    f"reward_{name}_...); objectives present: {found}")
        found = sorted(c for c, t in columns.items() if isinstance(t, pl.List) and c not in ("prompt", "responses"))
        return (f"{need.param} not found: need a list column '{name}' (or 'reward_{name}') aligned with "
                f"responses; list columns present: {found}")

    # -- columns -----------------------------------------------------------------------------------------
    @staticmethod
    def _resolve(name: str, table: str, schema: pl.Schema) -> str:
        """The base column name of objective ``name`` (``name`` or ``reward_<name>``)."""
        names = set(schema.names())
        for base in (name, f"reward_{name}"):
            if table == "preference" and {f"{base}_{s}" for s in SIDES} <= names:
                return base
            if table == "candidates" and base in names:
                if not isinstance(schema[base], pl.List):
                    raise InputDataError(f"combine_scores: column '{base}' is {schema[base]}, expected a list of "
                                         "numbers aligned with responses")
                return base
        if name == "score":
            return "score"
        if table == "preference":
            found = sorted({c.rsplit("_", 1)[0] for c in names if c.endswith(("_chosen", "_rejected"))})
            raise InputDataError(f"combine_scores: objective '{name}' not found: need columns {name}_chosen and "
                                 f"{name}_rejected (or reward_{name}_...); objectives present: {found}")
        found = sorted(c for c in names if isinstance(schema[c], pl.List) and c not in ("prompt", "responses"))
        raise InputDataError(f"combine_scores: objective '{name}' not found: need a list column '{name}' (or "
                             f"'reward_{name}') aligned with responses; list columns present: {found}")

    # -- stage -------------------------------------------------------------------------------------------
    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        table = self.table_of(lf)
        if table not in ("candidates", "preference"):
            raise InputDataError("combine_scores works on candidates or preference rows")
        schema = lf.collect_schema()
        coefficients = self.coefficients()
        columns = {name: self._resolve(name, table, schema) for name in coefficients}
        constraints = [parse_constraint(c) for c in self.constraints]
        for column, _, _ in constraints:
            columns.setdefault(column, self._resolve(column, table, schema))
        ctx.note("coefficients", {k: round(v, 6) for k, v in coefficients.items()})
        if table == "preference":
            return self._preference(lf, ctx, coefficients, columns, constraints)
        return self._candidates(lf, coefficients, columns, constraints)

    def _combine(self, value: dict[str, pl.Expr], bounds: dict[str, tuple[pl.Expr, pl.Expr]],
                 coefficients: dict[str, float]) -> pl.Expr:
        total: pl.Expr | None = None
        for name, weight in coefficients.items():
            x = value[name].cast(pl.Float64)
            if self.normalize == "minmax":
                lo, hi = bounds[name]
                span = hi - lo
                x = pl.when(span > 0).then((x - lo) / span).otherwise(pl.when(x.is_not_null()).then(0.0))
            term = x * weight
            total = term if total is None else total + term
        assert total is not None
        return total

    def _preference(self, lf: pl.LazyFrame, ctx: Context, coefficients: dict[str, float], columns: dict[str, str],
                    constraints: list[tuple[str, str, float]]) -> pl.LazyFrame:
        bounds = {
            name: (
                pl.min_horizontal(pl.col(f"{columns[name]}_chosen").min(), pl.col(f"{columns[name]}_rejected").min()),
                pl.max_horizontal(pl.col(f"{columns[name]}_chosen").max(), pl.col(f"{columns[name]}_rejected").max()),
            )
            for name in coefficients
        }
        scores = [
            self._combine({n: pl.col(f"{columns[n]}_{side}") for n in coefficients}, bounds, coefficients)
            .alias(f"score_{side}")
            for side in SIDES
        ]
        out = lf.with_columns(scores)
        if not constraints:
            return out
        sides = ("chosen",) if self.constrain == "chosen" else SIDES
        failures = [
            pl.when(~_OPS[op](pl.col(f"{columns[name]}_{side}"), value).fill_null(False))
            .then(pl.lit(f"{columns[name]}_{side} {op} {value:g}"))
            for name, op, value in constraints
            for side in sides
        ]
        reason = pl.concat_str(failures, separator="; ", ignore_nulls=True)
        flagged = out.with_columns(reason.alias("_failed"))
        failing = pl.col("_failed").is_not_null() & (pl.col("_failed") != "")
        ctx.quarantine(flagged.filter(failing),
                       pl.concat_str([pl.lit("constraint failed: "), pl.col("_failed")]))
        return flagged.filter(~failing).drop("_failed")

    def _candidates(self, lf: pl.LazyFrame, coefficients: dict[str, float], columns: dict[str, str],
                    constraints: list[tuple[str, str, float]]) -> pl.LazyFrame:
        used = sorted({c for c in columns.values() if c != "score"})
        flat = (
            lf.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_combine_row"), "responses", *used)
            .explode("responses", *used, keep_nulls=False)
            .with_columns(pl.col("responses").struct.field("score").alias("_old_score"))
        )

        def value(name: str) -> pl.Expr:
            column = columns[name]
            return pl.col("_old_score") if column == "score" else pl.col(column)

        bounds = {n: (value(n).min(), value(n).max()) for n in coefficients}
        score = self._combine({n: value(n) for n in coefficients}, bounds, coefficients)
        if constraints:
            ok = pl.all_horizontal([_OPS[op](value(name), v).fill_null(False) for name, op, v in constraints])
            score = pl.when(ok).then(score)
        rebuilt = (
            flat.with_columns(pl.col("responses").struct.with_fields(score.alias("score")))
            .group_by("_combine_row", maintain_order=True)
            .agg(pl.col("responses").alias("_responses"))
        )
        return (
            lf.with_row_index("_combine_row")
            .join(rebuilt, on="_combine_row", how="left", maintain_order="left")
            .with_columns(pl.coalesce("_responses", "responses").cast(RESPONSES).alias("responses"))
            .drop("_combine_row", "_responses")
        )
