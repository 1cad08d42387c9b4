"""embed_dedup on real paraphrases with the real all-MiniLM-L6-v2, plus exact threshold edges."""

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
from curate.stages.embed_dedup import EmbedDedup

REASON = re.compile(r"^near duplicate \(embedding, cos (\d\.\d\d)\) of ([0-9a-f]{32})$")

# Real instructions; cosines under all-MiniLM-L6-v2: 0.998 / 0.95 for the list ones, 0.995 / 0.94 for tips.
PROMPTS = [
    "How do I reverse a list in Python?",
    "Give three tips for staying healthy.",
    "How can I reverse a list in Python?",
    "What is the capital of France?",
    "Give 3 tips for staying healthy.",
    "What is the best way to reverse a Python list?",
    "Explain how photosynthesis works.",
]


def ctx_with(encoder: Any) -> Context:
    ctx = Context.ephemeral()
    ctx.models.register("embed", encoder, {"path": "default"})
    return ctx


def frame(prompts: list[str], **extra: list) -> pl.LazyFrame:
    rows = [[{"role": "user", "content": p}, {"role": "assistant", "content": f"answer {i}"}]
            for i, p in enumerate(prompts)]
    return conform(pl.DataFrame({"messages": rows, **extra}).lazy(), "conversation")


def prompts_of(df: pl.DataFrame) -> list[str]:
    return [m[0]["content"] for m in df["messages"].to_list()]


def test_registered_and_defaults() -> None:
    assert STAGES["embed_dedup"] is EmbedDedup
    stage = EmbedDedup()
    assert (stage.threshold, stage.keep, stage.on, stage.models_used()) == (0.95, "first", "prompt", ["embed"])
    with pytest.raises(ValidationError):
        EmbedDedup(keep="random")


def test_paraphrases_cluster_keep_first(encoder: Any) -> None:
    ctx = ctx_with(encoder)
    lf = frame(PROMPTS)
    out = lf.pipe(EmbedDedup(threshold=0.95), ctx).collect()
    assert prompts_of(out) == [PROMPTS[0], PROMPTS[1], PROMPTS[3], PROMPTS[6]]
    q = ctx.quarantine_frame()
    ids = dict(zip(prompts_of(lf.collect()), lf.collect()["id"].to_list(), strict=True))
    reasons = {row["id"]: REASON.match(row["reason"]) for row in q.iter_rows(named=True)}
    assert set(reasons) == {ids[PROMPTS[2]], ids[PROMPTS[4]], ids[PROMPTS[5]]}
    assert reasons[ids[PROMPTS[2]]].group(2) == ids[PROMPTS[0]]
    assert reasons[ids[PROMPTS[4]]].group(2) == ids[PROMPTS[1]]
    assert float(reasons[ids[PROMPTS[2]]].group(1)) >= 0.99
    stats = ctx.stats["embed_dedup"]
    assert stats["clusters"] == 2 and stats["duplicates"] == 3 and stats["index"] == "flat"


def test_higher_threshold_splits_and_knn_agrees(encoder: Any) -> None:
    strict = frame(PROMPTS).pipe(EmbedDedup(threshold=0.99), ctx_with(encoder)).collect()
    assert prompts_of(strict) == [p for i, p in enumerate(PROMPTS) if i not in (2, 4)]
    knn = frame(PROMPTS).pipe(EmbedDedup(threshold=0.95, search="knn", k=3), ctx_with(encoder)).collect()
    assert prompts_of(knn) == [PROMPTS[0], PROMPTS[1], PROMPTS[3], PROMPTS[6]]


def test_keep_rules(encoder: Any) -> None:
    lf = frame(PROMPTS, quality=[1.0, 5.0, 9.0, 0.0, 2.0, 3.0, 0.0])
    best = lf.pipe(EmbedDedup(keep="highest:quality"), ctx_with(encoder)).collect()
    assert prompts_of(best) == [PROMPTS[1], PROMPTS[2], PROMPTS[3], PROMPTS[6]]
    longest = lf.pipe(EmbedDedup(keep="longest"), ctx_with(encoder)).collect()
    assert prompts_of(longest) == [PROMPTS[1], PROMPTS[3], PROMPTS[5], PROMPTS[6]]
    with pytest.raises(RecipeError, match="no column 'nope'"):
        lf.pipe(EmbedDedup(keep="highest:nope"), ctx_with(encoder))


class TableEncoder:
    """Exact, hand-made vectors (cosine 0.6 exactly representable in float32) for threshold edges."""

    dim, fingerprint, dtype = 3, "table-encoder", "float32"
    table: ClassVar[dict[str, list[float]]] = {"a": [1.0, 0.0, 0.0], "b": [0.6, 0.8, 0.0], "c": [0.0, 0.0, 1.0]}

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.array([self.table[t] for t in texts], dtype=np.float32)


def test_pair_exactly_at_threshold_is_a_duplicate() -> None:
    lf = frame(["a", "b", "c"])
    at = Context.ephemeral()
    at.models.register("embed", TableEncoder())
    assert prompts_of(lf.pipe(EmbedDedup(threshold=0.6), at).collect()) == ["a", "c"]
    assert at.quarantine_frame()["reason"][0].startswith("near duplicate (embedding, cos 0.60)")
    above = Context.ephemeral()
    above.models.register("embed", TableEncoder())
    assert prompts_of(lf.pipe(EmbedDedup(threshold=0.6001), above).collect()) == ["a", "b", "c"]


def test_empty_input() -> None:
    ctx = Context.ephemeral()
    ctx.models.register("embed", TableEncoder())
    out = frame(["a"]).filter(pl.lit(False)).pipe(EmbedDedup(), ctx).collect()
    assert out.height == 0 and ctx.stats["embed_dedup"]["duplicates"] == 0
