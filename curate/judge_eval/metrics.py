"""Figures of one judge against labels: agreement (2-way and 3-way) with bootstrap intervals, decided share,
swap consistency, position bias and length bias, overall and per category.

Definitions (the ``--json`` keys):

- ``agreement``: over pairs labelled a or b, the share the judge got right; a tie or unreadable verdict counts
  one half (a coin would break it), so a judge that never decides scores 0.5, chance, not 0.
- ``agreement_decided``: the same over the pairs the judge decided (said a or b).
- ``agreement_3way``: over all pairs, ties included, the share whose verdict equals the label (a / b / tie).
- ``agreement_ci`` / ``agreement_3way_ci``: 95% percentile bootstrap intervals, seeded (Efron & Tibshirani).
- ``decided``: share of pairs with a verdict a or b.
- ``swap_consistency`` (pairwise LLM judges): share of pairs whose two orders name the same response (MT-Bench,
  Zheng et al. 2023, section 3.4).  ``position_bias``: of the decided verdicts of both orders, the share naming
  the response shown first; 0.5 is unbiased, 1.0 means "always A".
- ``length_bias``: of the judge's decided pairs whose responses differ in length, the share the longer won.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

FLIP = {"a": "b", "b": "a", "tie": "tie"}


def bootstrap_ci(values: Sequence[float] | np.ndarray, *, seed: int = 0, resamples: int = 2000,
                 level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``values``.

    Resampling n values with replacement only changes how often each distinct value is drawn, so the draws
    are multinomial counts over the distinct values: the same distribution as index resampling at any n, in
    memory of the distinct values (three here: 0, 0.5, 1)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return None
    levels, counts = np.unique(data, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(data.size, counts / data.size, size=resamples)
    means = draws @ levels / data.size
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return round(float(lo), 4), round(float(hi), 4)


def _share(hits: Sequence[bool] | np.ndarray) -> float | None:
    arr = np.asarray(hits, dtype=float)
    return round(float(arr.mean()), 4) if arr.size else None


def two_way_credit(verdicts: Sequence[str | None], labels: Sequence[str]) -> np.ndarray:
    """Per non-tie labelled pair: 1 right, 0 wrong, 0.5 for a tie or unreadable verdict."""
    out = [1.0 if v == lab else 0.5 if v not in ("a", "b") else 0.0
           for v, lab in zip(verdicts, labels, strict=True) if lab in ("a", "b")]
    return np.asarray(out, dtype=float)


def three_way_hits(verdicts: Sequence[str | None], labels: Sequence[str]) -> np.ndarray:
    return np.asarray([float(v == lab) for v, lab in zip(verdicts, labels, strict=True)], dtype=float)


def agreement_decided(verdicts: Sequence[str | None], labels: Sequence[str]) -> float | None:
    return _share([v == lab for v, lab in zip(verdicts, labels, strict=True) if lab in ("a", "b") and v in ("a", "b")])


def decided_share(verdicts: Sequence[str | None]) -> float | None:
    return _share([v in ("a", "b") for v in verdicts])


def swap_consistency(first: Sequence[str | None], swapped: Sequence[str | None]) -> float | None:
    """Share of pairs (both orders readable) where the swapped order names the same response."""
    return _share([f == FLIP[s] for f, s in zip(first, swapped, strict=True) if f in FLIP and s in FLIP])


def position_bias(first: Sequence[str | None], swapped: Sequence[str | None]) -> float | None:
    """Share of decided verdicts, over both orders, that named the position shown first ("A")."""
    raw = [v for v in (*first, *swapped) if v in ("a", "b")]
    return _share([v == "a" for v in raw])


def length_bias(verdicts: Sequence[str | None], len_a: Sequence[int], len_b: Sequence[int]) -> float | None:
    """Among decided pairs whose responses differ in length, the share where the longer one won."""
    return _share([(v == "a") == (la > lb) for v, la, lb in zip(verdicts, len_a, len_b, strict=True)
                   if v in ("a", "b") and la != lb])


def _core(verdicts: list[str | None], labels: list[str], seed: int) -> dict[str, Any]:
    credit = two_way_credit(verdicts, labels)
    three = three_way_hits(verdicts, labels)
    return {
        "n": len(labels),
        "agreement": _share(credit),
        "agreement_ci": list(ci) if (ci := bootstrap_ci(credit, seed=seed)) else None,
        "agreement_decided": agreement_decided(verdicts, labels),
        "agreement_3way": _share(three),
        "agreement_3way_ci": list(ci3) if (ci3 := bootstrap_ci(three, seed=seed)) else None,
        "decided": decided_share(verdicts),
    }


def summarize(name: str, pairs: pl.DataFrame, verdicts: list[str | None], *, first: list[str | None] | None = None,
              swapped: list[str | None] | None = None, seconds: float | None = None, calls: int | None = None,
              seed: int = 0) -> dict[str, Any]:
    """Every figure of one judge over ``pairs`` (:data:`curate.judge_eval.labelled.PAIRS_SCHEMA`)."""
    labels = pairs["label"].to_list()
    len_a = pairs["a"].str.len_chars().to_list()
    len_b = pairs["b"].str.len_chars().to_list()
    out: dict[str, Any] = {"name": name, **_core(verdicts, labels, seed)}
    out["swap_consistency"] = swap_consistency(first, swapped) if first is not None and swapped is not None else None
    out["position_bias"] = position_bias(first, swapped) if first is not None and swapped is not None else None
    out["length_bias"] = length_bias(verdicts, len_a, len_b)
    out["seconds"] = round(seconds, 2) if seconds is not None else None
    out["calls"] = calls
    by: dict[str, Any] | None = None
    categories = pairs["category"].to_list()
    if any(c is not None for c in categories):
        by = {}
        for cat in sorted({c for c in categories if c is not None}):
            idx = [i for i, c in enumerate(categories) if c == cat]
            core = _core([verdicts[i] for i in idx], [labels[i] for i in idx], seed)
            by[cat] = {k: core[k] for k in ("n", "agreement", "agreement_ci", "agreement_3way", "decided")}
    out["by_category"] = by
    return out
