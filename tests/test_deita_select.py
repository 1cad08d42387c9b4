"""deita_select: score-first greedy selection with a cosine ceiling to the kept set (real MiniLM)."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from curate import Context
from curate.errors import RecipeError
from curate.schema import conform
from curate.stages import STAGES
from curate.stages.deita_select import DeitaSelect

PROMPTS = [
    "How do I reverse a list in Python?",
    "Give three tips for staying healthy.",
    "How can I reverse a list in Python?",
    "What is the capital of France?",
    "Give 3 tips for staying healthy.",
    "Explain how photosynthesis works.",
]
SIMILAR = re.compile(r"^too similar to ([0-9a-f]{32}) \(cos (\d\.\d\d)\)$")


def ctx_with(encoder: Any) -> Context:
    ctx = Context.ephemeral()
    ctx.models.register("embed", encoder, {"path": "default"})
    return ctx


def frame(prompts: list[str], scores: list[float | None]) -> pl.LazyFrame:
    rows = [[{"role": "user", "content": p}] for p in prompts]
    return conform(pl.DataFrame({"messages": rows, "deita_score": scores}).lazy(), "conversation")


def prompts_of(df: pl.DataFrame) -> list[str]:
    return [m[0]["content"] for m in df["messages"].to_list()]


def test_registered_and_validation() -> None:
    assert STAGES["deita_select"] is DeitaSelect
    assert (DeitaSelect().tau, DeitaSelect().score) == (0.9, "deita_score")
    for bad in (0, -3, 1.5, 0.0):
        with pytest.raises(ValidationError):
            DeitaSelect(budget=bad)


def test_better_scored_near_duplicate_wins_and_order_kept(encoder: Any) -> None:
    ctx = ctx_with(encoder)
    lf = frame(PROMPTS, [1.0, 2.0, 5.0, 3.0, 1.5, None])
    out = lf.pipe(DeitaSelect(on="prompt"), ctx).collect()
    # The higher-scored paraphrase of each pair survives; output keeps input order; a null score is last
    # in line but still kept when nothing similar was kept.
    assert prompts_of(out) == [PROMPTS[1], PROMPTS[2], PROMPTS[3], PROMPTS[5]]
    q = ctx.quarantine_frame()
    ids = dict(zip(PROMPTS, lf.collect()["id"].to_list(), strict=True))
    by_id = {r["id"]: SIMILAR.match(r["reason"]) for r in q.iter_rows(named=True)}
    assert by_id[ids[PROMPTS[0]]].group(1) == ids[PROMPTS[2]]
    assert by_id[ids[PROMPTS[4]]].group(1) == ids[PROMPTS[1]]
    assert float(by_id[ids[PROMPTS[0]]].group(2)) > 0.9
    assert ctx.stats["deita_select"]["too_similar"] == 2


def test_budget_count_and_fraction(encoder: Any) -> None:
    lf = frame(PROMPTS, [1.0, 2.0, 5.0, 3.0, 1.5, 0.5])
    ctx = ctx_with(encoder)
    out = lf.pipe(DeitaSelect(on="prompt", budget=2), ctx).collect()
    assert prompts_of(out) == [PROMPTS[2], PROMPTS[3]]
    reasons = ctx.quarantine_frame()["reason"].to_list()
    assert reasons.count("over budget (2 kept)") == 4
    half = lf.pipe(DeitaSelect(on="prompt", budget=0.5), ctx_with(encoder)).collect()
    assert prompts_of(half) == [PROMPTS[1], PROMPTS[2], PROMPTS[3]]


def test_missing_score_column(encoder: Any) -> None:
    with pytest.raises(RecipeError, match="no score column 'quality'"):
        frame(PROMPTS, [1.0] * 6).pipe(DeitaSelect(score="quality"), ctx_with(encoder))


class TableEncoder:
    """Hand-made vectors: cosine(a, b) is exactly float32(0.6)."""

    dim, fingerprint, dtype = 3, "table-encoder", "float32"
    table: ClassVar[dict[str, list[float]]] = {"a": [1.0, 0.0, 0.0], "b": [0.6, 0.8, 0.0], "c": [0.0, 0.0, 1.0]}

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.array([self.table[t] for t in texts], dtype=np.float32)


@pytest.mark.parametrize(("tau", "kept"), [(0.6, ["a", "b", "c"]), (0.5999, ["a", "c"])])
def test_similarity_exactly_tau_is_kept(tau: float, kept: list[str]) -> None:
    ctx = Context.ephemeral()
    ctx.models.register("embed", TableEncoder())
    out = frame(["a", "b", "c"], [3.0, 2.0, 1.0]).pipe(DeitaSelect(on="prompt", tau=tau), ctx).collect()
    assert prompts_of(out) == kept


def test_blocks_match_one_at_a_time_rule() -> None:
    """Across block boundaries (512) the result equals the naive greedy loop over all kept rows."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((40, 8)).astype(np.float32)
    vectors = base[rng.integers(0, 40, 1300)] + 0.35 * rng.standard_normal((1300, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [f"t{i}" for i in range(len(vectors))]
    scores = rng.random(len(vectors))

    class Enc:
        dim, fingerprint, dtype = 8, "random", "float32"
        table: ClassVar[dict[str, np.ndarray]] = dict(zip(texts, vectors, strict=True))

        def encode(self, batch: list[str]) -> np.ndarray:
            return np.stack([self.table[t] for t in batch])

    ctx = Context.ephemeral()
    ctx.models.register("embed", Enc())
    out = frame(texts, scores.tolist()).pipe(DeitaSelect(on="prompt", tau=0.8), ctx).collect()
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if not kept or float(np.max(vectors[kept] @ vectors[i])) <= np.float32(0.8):
            kept.append(int(i))
    assert sorted(int(p[1:]) for p in prompts_of(out)) == sorted(kept)


def test_empty_input() -> None:
    ctx = Context.ephemeral()
    ctx.models.register("embed", TableEncoder())
    out = frame(["a"], [1.0]).filter(pl.lit(False)).pipe(DeitaSelect(on="prompt", budget=3), ctx).collect()
    assert out.height == 0 and ctx.stats["deita_select"]["kept"] == 0
