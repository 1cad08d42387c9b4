"""subsample: entropy (GMM surprisal), random, kcenter and deita selection on small real texts (real MiniLM)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from curate import Context
from curate.errors import RecipeError
from curate.schema import conform
from curate.stages import STAGES
from curate.stages.subsample import Subsample, kcenter_order, keep_count

PYTHON = [
    "How do I reverse a list in Python?", "How can I sort a list in Python?", "How do I append to a list in Python?",
    "How do I remove duplicates from a Python list?", "How do I get the length of a list in Python?",
    "How do I concatenate two lists in Python?", "How can I reverse a string in Python?",
    "How do I copy a list in Python?", "How to find the max of a list in Python?",
    "How do I flatten a nested list in Python?",
]
ARITHMETIC = [
    "What is 12 times 7?", "What is 45 plus 19?", "What is 100 divided by 4?", "What is 9 squared?",
    "What is 81 minus 27?", "What is 3 times 15?", "What is 64 divided by 8?", "What is 17 plus 26?",
]
OUTLIERS = [
    "Describe the migration of monarch butterflies.", "Write a haiku about winter in Kyoto.",
    "Explain the causes of the French Revolution.",
]
TEXTS = PYTHON + ARITHMETIC + OUTLIERS


#: One embedding cache for the module: each text is encoded once, later contexts read the cached vectors.
_CACHE = tempfile.TemporaryDirectory(prefix="curate-subsample-test-")


def ctx_with(encoder: Any, seed: int = 0) -> Context:
    ctx = Context(cache_dir=Path(_CACHE.name), seed=seed)
    ctx.models.register("embed", encoder, {"path": "default"})
    return ctx


def frame(texts: list[str], scores: list[float | None] | None = None) -> pl.LazyFrame:
    data: dict[str, Any] = {"messages": [[{"role": "user", "content": t}] for t in texts]}
    if scores is not None:
        data["deita_score"] = scores
    return conform(pl.DataFrame(data).lazy(), "conversation")


def texts_of(df: pl.DataFrame) -> list[str]:
    return [m[0]["content"] for m in df["messages"].to_list()]


def test_keep_count_arithmetic() -> None:
    assert keep_count(30, 0.1, None) == 3  # 0.1 * 30 is 3.0000000000000004 in floats: still 3
    assert keep_count(21, 0.1, None) == 3  # ceil: at least the fraction
    assert keep_count(10, 0.25, None) == 3
    assert keep_count(100, 1.0, None) == 100
    assert keep_count(7, None, 20) == 7 and keep_count(7, None, 2) == 2
    assert keep_count(0, 0.5, None) == 0


def test_registered_and_validation() -> None:
    assert STAGES["subsample"] is Subsample
    for bad in ({"fraction": 0.0}, {"fraction": 1.5}, {"count": 0}, {"fraction": 0.1, "count": 3},
                {"method": "coreset"}, {"k_min": 5, "k_max": 3}):
        with pytest.raises(ValidationError):
            Subsample(**bad)
    assert Subsample().budget_label() == "top 10%" and Subsample(count=7).budget_label() == "top 7"


@pytest.mark.parametrize("method", ["entropy", "random", "kcenter"])
def test_fraction_reasons_and_determinism(encoder: Any, method: str) -> None:
    lf = frame(TEXTS)
    ctx = ctx_with(encoder, seed=7)
    stage = Subsample(method=method, fraction=0.25, k=2 if method == "entropy" else None)
    out = lf.pipe(stage, ctx).collect()
    assert out.height == 6  # ceil(0.25 * 21)
    q = ctx.quarantine_frame()
    assert q.height == 15 and set(q["reason"]) == {f"subsample {method}: not in top 25%"}
    assert set(q["id"]) | set(out["id"]) == set(lf.collect()["id"])
    assert out["id"].to_list() == [i for i in lf.collect()["id"].to_list() if i in set(out["id"])]  # input order
    stats = ctx.stats["subsample"]
    assert (stats["method"], stats["pool"], stats["budget"], stats["kept"]) == (method, 21, 6, 6)
    again = lf.pipe(stage, ctx_with(encoder, seed=7)).collect()
    assert again["id"].to_list() == out["id"].to_list()


def test_random_depends_on_seed(encoder: Any) -> None:
    picks = {tuple(frame(TEXTS).pipe(Subsample(method="random", count=5), ctx_with(encoder, seed=s)).collect()["id"])
             for s in range(4)}
    assert len(picks) > 1


def test_entropy_keeps_low_density_rows(encoder: Any) -> None:
    ctx = ctx_with(encoder)
    out = frame(TEXTS).pipe(Subsample(method="entropy", count=3), ctx).collect()
    assert texts_of(out) == OUTLIERS  # alone in their region of the space: the highest surprisal
    stats = ctx.stats["subsample"]
    assert 2 <= stats["k"] <= 8 and set(stats["bic"]) == {str(k) for k in range(2, 9)}
    fixed = ctx_with(encoder)
    frame(TEXTS).pipe(Subsample(method="entropy", count=3, k=3, pca_dims=0, covariance="diag"), fixed).collect()
    assert fixed.stats["subsample"]["k"] == 3 and "bic" not in fixed.stats["subsample"]


def test_entropy_ranks_a_repeated_text_once(encoder: Any) -> None:
    texts = [*TEXTS, OUTLIERS[0], OUTLIERS[0]]
    lf = frame(texts).with_columns(pl.Series("source", [f"s{i}" for i in range(len(texts))]))
    ids = lf.collect()["id"].to_list()  # same content, same id: make the repeats distinct rows
    lf = lf.with_columns(pl.Series("id", [*ids[:-2], "dup-a", "dup-b"]))
    ctx = ctx_with(encoder)
    out = lf.pipe(Subsample(method="entropy", count=4), ctx).collect()
    assert "dup-a" not in out["id"] and "dup-b" not in out["id"]
    reasons = dict(zip(ctx.quarantine_frame()["id"], ctx.quarantine_frame()["reason"], strict=True))
    assert reasons["dup-a"] == f"subsample entropy: repeats the text of {ids[TEXTS.index(OUTLIERS[0])]}"


def test_kcenter_covers_each_group(encoder: Any) -> None:
    out = frame(TEXTS).pipe(Subsample(method="kcenter", count=5), ctx_with(encoder)).collect()
    kept = set(texts_of(out))
    assert kept & set(PYTHON) and kept & set(ARITHMETIC) and len(kept & set(OUTLIERS)) >= 2


def test_kcenter_order_is_farthest_point() -> None:
    points = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [5.0, 5.0], [0.1, 0.0]], np.float32)
    order = kcenter_order(points, 3, seed=0)
    start = int(np.random.default_rng(0).integers(5))
    assert order[0] == start and len(set(order.tolist())) == 3
    first_dist = np.linalg.norm(points - points[start], axis=1)
    assert order[1] == int(np.argmax(first_dist))


def test_deita_method(encoder: Any) -> None:
    texts = ["How do I reverse a list in Python?", "How can I reverse a list in Python?", *ARITHMETIC[:3]]
    ctx = ctx_with(encoder)
    out = frame(texts, [4.0, 5.0, 3.0, None, 2.0]).pipe(Subsample(method="deita", count=3), ctx).collect()
    assert texts_of(out) == [texts[1], texts[2], texts[4]]  # score order, near-duplicate blocked, budget 3
    q = ctx.quarantine_frame()
    reasons = dict(zip(q["id"], q["reason"], strict=True))
    ids = frame(texts).collect()["id"].to_list()
    assert re.fullmatch(rf"subsample deita: too similar to {ids[1]} \(cos [01]\.\d\d\)", reasons[ids[0]])
    assert reasons[ids[3]] == "subsample deita: not in top 3"
    with pytest.raises(RecipeError, match="score column"):
        frame(texts).pipe(Subsample(method="deita"), ctx_with(encoder))


def test_whole_budget_and_empty(encoder: Any) -> None:
    out = frame(TEXTS).pipe(Subsample(fraction=1.0), ctx_with(encoder)).collect()
    assert out.height == len(TEXTS)
    ctx = ctx_with(encoder)
    empty = frame(TEXTS).filter(pl.lit(False)).pipe(Subsample(), ctx).collect()
    assert empty.height == 0 and ctx.stats["subsample"]["kept"] == 0
