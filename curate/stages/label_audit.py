"""Label-noise audit of preference pairs with cross-fitted embedding reward models (issue #15, ``label_audit``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import polars as pl
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

from curate.embed import embed_for_stage
from curate.errors import InputDataError, StageError
from curate.execution import Shape
from curate.pipeline import Context, Stage
from curate.reward.bradley_terry import DEFAULTS, out_of_fold
from curate.reward.embedding_rm import DEFAULT_FEATURES, assemble, feature_texts, pair_texts
from curate.schema import content_key, hash_expr
from curate.words import listed

FeaturePart = Literal["joint", "response", "prompt", "product"]  # curate.reward.embedding_rm.FEATURE_PARTS

#: Flip probability above which a pair is suspect when neither ``threshold`` nor ``fraction`` is given.
DEFAULT_THRESHOLD = 0.65
#: Head settings of the audit's ensembles when ``hyper`` is not given.  A strongly regularised linear head
#: ranks planted flips better: on hh-rlhf harmless with 10% planted flips and the ``joint`` features alone,
#: cross-fitted AUROC 0.61 at ``C`` 0.001 vs 0.565 at 0.05 (two plantings each), and it fits in well under a
#: second.  benchmarks/label_noise.py measures the stage as shipped.
AUDIT_HYPER: dict[str, dict[str, float]] = {"linear": {"C": 0.001}, "mlp": {}}


def preference_features(ctx: Context, handle: str, pairs: pl.DataFrame, parts: Sequence[str] = DEFAULT_FEATURES,
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``(x_chosen, x_rejected)`` of a preference table: the embedding reward model's features
    (:mod:`curate.reward.embedding_rm`: the same texts and parts as ``curate rm fit``, so the audit's vectors and
    the shipped RM's are one cache entry), encoded by the ``handle`` encoder through the run's vector cache
    (``ctx.compute_batches``: Ray actors under ``--executor ray``); ``texts_encoded``/``texts_cached`` noted."""
    prompts, chosen, rejected = pair_texts(pairs)
    texts = feature_texts(parts, prompts + prompts, chosen + rejected)
    vectors: dict[str, np.ndarray] = {}
    encoded = cached = 0
    for kind, values in texts.items():
        vectors[kind] = embed_for_stage(ctx, handle, pl.Series(kind, values, dtype=pl.String))
        notes = ctx.stats.get(ctx.stage_label, {})
        encoded, cached = encoded + notes.get("texts_encoded", 0), cached + notes.get("texts_cached", 0)
    ctx.note("texts_encoded", encoded)
    ctx.note("texts_cached", cached)
    both = assemble(parts, vectors)
    return both[: len(chosen)], both[len(chosen):]


def top_fraction(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the ``ceil(fraction * n)`` highest scores (ties: the earlier row first)."""
    n = len(scores)
    count = min(n, math.ceil(round(fraction * n, 9)))
    mask = np.zeros(n, bool)
    mask[np.lexsort((np.arange(n), -scores))[:count]] = True
    return mask


def _swap_columns(names: list[str]) -> list[tuple[str, str]]:
    """Column pairs that name the chosen and the rejected side of a pair (``chosen``/``rejected``,
    ``score_chosen``/``score_rejected``, ``chosen_model``/``rejected_model``, ...), each once."""
    present = set(names)
    return [(c, c.replace("chosen", "rejected")) for c in names
            if "chosen" in c and c.replace("chosen", "rejected") in present]


@dataclass(config=ConfigDict(extra="forbid"))
class LabelAudit(Stage):
    """Find preference pairs whose label is probably flipped: ``label_flip_p`` = P(the rejected response is the
    better one), from embedding reward models that never saw the pair; then flag, drop or swap the suspects.

    Wang et al. 2024, "Secrets of RLHF in Large Language Models Part II: Reward Modeling": human preference
    data holds flipped and ambiguous pairs, and an ensemble of reward models trained on the data finds them
    (pairs the ensemble confidently orders the other way are likely mislabelled; pairs near 0.5 are
    ambiguous).  The reward models here are Bradley-Terry heads on frozen sentence embeddings of
    (prompt, response) (Sun et al. 2025, "Reusing Embeddings: Reproducible Reward Model Research in LLM
    Alignment without GPUs": such heads and their ensembles are competitive and fit in seconds on a CPU), so
    the audit needs no GPU.  Features are :mod:`curate.reward.embedding_rm`'s (the same as ``curate rm fit``).

    **Why cross-fitting.**  A model scoring a pair it was trained on has fitted that pair's label, flipped or
    not, and calls it clean.  So pairs are dealt into ``folds`` seeded folds; an ensemble of ``members`` heads
    (``head``: ``linear`` or ``mlp``) is fitted on the other folds and scores only the held-out fold.  Every
    probability comes from members that never trained on the pair (flipping a pair's label changes its own
    ``label_flip_p`` to exactly ``1 - p``, and the other pairs' only through their own ensembles).

    - **Head**: ``head`` and ``hyper`` (settings for :func:`~curate.reward.bradley_terry.fit_bt`; default for
      ``linear``: ``C: 0.001``, a strong L2 penalty, which ranks planted flips better than a weak one, see
      :data:`AUDIT_HYPER`).  ``features``: the embedding reward model's feature parts (its default).
    - **Suspects**: ``label_flip_p > threshold`` (default 0.65), or with ``fraction`` the ``ceil(fraction * n)``
      pairs with the highest ``label_flip_p`` (ties: input order).  The strongly regularised ensemble ranks
      pairs well but its probabilities are shrunk toward 0.5 (hh-rlhf harmless with 10% planted flips: 12% of
      pairs above 0.65; benchmarks/label_noise.py), so ``fraction`` is the knob for a fixed budget.
    - ``mode: flag`` adds ``label_flip_p``, ``label_suspect`` and ``label_margin`` (the same ensemble's mean
      ``r(chosen) - r(rejected)`` in log-odds units: a ``pairs``-style margin for filtering ambiguous pairs,
      those near 0, with a ``filter`` expression); ``drop`` also sends suspects to quarantine
      with ``label suspect: P(flipped) 0.912``; ``swap`` exchanges chosen and rejected of every suspect (and
      every column pair named by ``chosen``/``rejected``, such as ``score_chosen``/``score_rejected`` or
      ``chosen_model``/``rejected_model``; ``score_margin`` changes sign), marks it in ``label_swapped``,
      records the input id in ``label_swapped_from`` and gives the row the content id of its new content.
      ``label_flip_p`` is always about the input's label.
    - Text is encoded by the ``model`` handle (the bundled all-MiniLM-L6-v2 when undefined) through the run's
      vector cache: a re-run, or another stage over the same texts, encodes nothing again.
    - Fewer than ``min_rows`` pairs: a ``StageError`` (a reward model fitted on a handful of pairs says
      nothing about their labels).

    Notes: ``audited``, ``suspects``, ``mean_flip_p``, ``cv_accuracy`` (share of pairs whose cross-fitted
    ensemble agrees with the given label, i.e. ``label_flip_p < 0.5``; ties count one half), ``threshold``
    (the effective one when ``fraction`` is used), ``dropped`` / ``swapped``.  Global stage: reads ``id`` and
    the texts, returns the input joined with its decisions.
    """

    name: ClassVar[str] = "label_audit"
    kind: ClassVar = "global"
    shape: ClassVar[Shape] = "driver"
    driver_reason: ClassVar[str] = "fits a reward model on every pair, then scores them (no keyed form)"
    paper: ClassVar[str] = ("Wang et al. 2024, Secrets of RLHF Part II (flipped labels via RM ensembles); "
                            "Sun et al. 2025, embedding reward models")
    model_params: ClassVar[tuple[str, ...]] = ("model",)
    accepts: ClassVar[frozenset[str]] = frozenset({"preference"})

    mode: Literal["flag", "drop", "swap"] = "flag"
    threshold: float | None = Field(None, gt=0.0, lt=1.0)
    fraction: float | None = Field(None, gt=0.0, le=1.0)
    folds: int = Field(5, ge=2, le=50)
    members: int = Field(5, ge=1, le=50)
    head: Literal["linear", "mlp"] = "linear"
    seed: int | None = Field(None, ge=0)
    min_rows: int = Field(100, ge=10)
    model: str = "embed"
    features: list[FeaturePart] = Field(default_factory=lambda: list(DEFAULT_FEATURES), min_length=1)
    hyper: dict[str, float] | None = None

    @model_validator(mode="after")
    def _check(self) -> LabelAudit:
        if self.threshold is not None and self.fraction is not None:
            raise ValueError("give threshold or fraction, not both")
        if self.hyper is not None:
            unknown = set(self.hyper) - set(DEFAULTS[self.head])
            if unknown:
                raise ValueError(f"hyper: unknown {self.head} {listed('setting', sorted(unknown))} "
                                 f"(known: {sorted(DEFAULTS[self.head])})")
        if self.min_rows < 2 * self.folds:
            raise ValueError(f"min_rows ({self.min_rows}) must be at least 2 x folds ({self.folds})")
        return self

    def adds(self, table: str) -> dict[str, pl.DataType | None]:
        added: dict[str, pl.DataType | None] = {"label_flip_p": pl.Float64(), "label_margin": pl.Float64(),
                                                "label_suspect": pl.Boolean()}
        if self.mode == "swap":
            added.update({"label_swapped": pl.Boolean(), "label_swapped_from": pl.String()})
        return added

    def table_hint(self, table: str) -> str:
        return " (turn candidates into pairs first: the pairs stage)"

    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        table = self.table_of(lf)
        if table != "preference":
            raise InputDataError(
                f"label_audit needs a preference table (prompt, chosen, rejected), got a {table} table; "
                "turn candidates into pairs first (the pairs stage)"
            )
        rows = lf.select("id", "prompt", "chosen", "rejected").collect().unique("id", keep="first",
                                                                                maintain_order=True)
        n = rows.height
        if n < self.min_rows:
            raise StageError(
                f"label_audit: {n} preference pairs, fewer than min_rows ({self.min_rows}): reward models "
                "fitted on so few pairs cannot judge their labels; audit a larger set or lower min_rows"
            )
        x_chosen, x_rejected = preference_features(ctx, self.model, rows, self.features)
        seed = ctx.seed if self.seed is None else self.seed
        # Pairs of one prompt share a fold: a duplicate pair in the training folds would vouch for its twin.
        groups = rows.select(hash_expr(pl.struct("prompt").struct.json_encode())).to_series().to_numpy()
        hyper = AUDIT_HYPER[self.head] if self.hyper is None else self.hyper
        oof = out_of_fold(x_chosen, x_rejected, folds=self.folds, seed=seed, groups=groups, head=self.head,
                          members=self.members, **hyper)
        flip_p = 1.0 - oof["prob"]
        if self.fraction is not None:
            suspect = top_fraction(flip_p, self.fraction)
            threshold = float(flip_p[suspect].min()) if suspect.any() else 1.0
        else:
            threshold = self.threshold if self.threshold is not None else DEFAULT_THRESHOLD
            suspect = flip_p > threshold
        agree = np.where(flip_p < 0.5, 1.0, np.where(flip_p == 0.5, 0.5, 0.0))
        ctx.note("audited", n)
        ctx.note("suspects", int(suspect.sum()))
        ctx.note("mean_flip_p", round(float(flip_p.mean()), 4))
        ctx.note("cv_accuracy", round(float(agree.mean()), 4))
        ctx.note("threshold", round(threshold, 4))
        decided = pl.DataFrame(
            {"id": rows.get_column("id"), "label_flip_p": flip_p, "label_margin": oof["margin"],
             "label_suspect": suspect},
            schema={"id": pl.String, "label_flip_p": pl.Float64, "label_margin": pl.Float64,
                    "label_suspect": pl.Boolean},
        ).lazy()
        names = lf.collect_schema().names()
        out = lf.drop([c for c in ("label_flip_p", "label_margin", "label_suspect") if c in names]).join(
            decided, on="id", how="left", maintain_order="left")
        if self.mode == "drop":
            ctx.note("dropped", int(suspect.sum()))
            ctx.quarantine(out.filter(pl.col("label_suspect")),
                           pl.format("label suspect: P(flipped) {}", pl.col("label_flip_p").round(3)),
                           code="label_suspect")
            return out.filter(~pl.col("label_suspect"))
        if self.mode == "swap":
            ctx.note("swapped", int(suspect.sum()))
            return self._swap(out)
        return out

    @staticmethod
    def _swap(out: pl.LazyFrame) -> pl.LazyFrame:
        """Exchange the chosen and rejected sides of suspect rows; swapped rows get their new content id."""
        names = out.collect_schema().names()
        flip = pl.col("label_suspect")
        exprs = []
        for c, r in _swap_columns(names):
            exprs += [pl.when(flip).then(pl.col(r)).otherwise(pl.col(c)).alias(c),
                      pl.when(flip).then(pl.col(c)).otherwise(pl.col(r)).alias(r)]
        if "score_margin" in names:
            exprs.append(pl.when(flip).then(-pl.col("score_margin")).otherwise(pl.col("score_margin"))
                         .alias("score_margin"))
        swapped = out.with_columns(*exprs, label_swapped=flip,
                                   label_swapped_from=pl.when(flip).then(pl.col("id")))
        new_id = hash_expr(content_key("preference"))
        return swapped.with_columns(pl.when(flip).then(new_id).otherwise(pl.col("id")).alias("id"))
