"""pairs: candidates -> preference, with ties, single responses, null scores and margins."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate import Context
from curate.errors import InputDataError
from curate.schema import MESSAGES, RESPONSES, conform, validate_schema
from curate.stages import Pairs


def candidates(groups: list[list[float | None]]) -> pl.LazyFrame:
    rows = {
        "prompt": [[{"role": "user", "content": f"prompt {i}"}] for i in range(len(groups))],
        "responses": [
            [{"content": f"p{i} r{k}", "model": f"m{k}", "score": s} for k, s in enumerate(group)]
            for i, group in enumerate(groups)
        ],
        "topic": [f"t{i}" for i in range(len(groups))],
    }
    schema = {"prompt": MESSAGES, "responses": RESPONSES, "topic": pl.String}
    return conform(pl.DataFrame(rows, schema=schema).lazy(), "candidates")


def run(groups, **params) -> tuple[pl.DataFrame, Context]:
    ctx = Context.ephemeral()
    return Pairs(**params)(candidates(groups), ctx).collect(), ctx


def test_best_vs_worst_and_columns() -> None:
    out, ctx = run([[1.0, 5.0, 3.0]])
    row = out.row(0, named=True)
    assert row["chosen"] == [{"role": "assistant", "content": "p0 r1"}]
    assert row["rejected"] == [{"role": "assistant", "content": "p0 r0"}]
    assert (row["score_chosen"], row["score_rejected"], row["score_margin"]) == (5.0, 1.0, 4.0)
    assert (row["chosen_model"], row["rejected_model"], row["topic"]) == ("m1", "m0", "t0")
    assert row["prompt"] == [{"role": "user", "content": "prompt 0"}]
    validate_schema(out.schema, "preference")
    assert row["parent_id"] != row["id"]
    assert ctx.stats["pairs"]["pairs"] == 1


def test_edge_cases_are_dropped_and_counted() -> None:
    groups = [[4.0], [], [3.0, 3.0, 3.0], [None, 2.0], [None, None], [5.0, 4.5], [2.0, 1.0]]
    out, ctx = run(groups, min_margin=1.0)
    assert out["score_chosen"].to_list() == [2.0]
    notes = ctx.stats["pairs"]
    assert (notes["dropped_single_response"], notes["dropped_all_tied"]) == (2, 1)
    assert (notes["dropped_null_scores"], notes["dropped_below_margin"], notes["pairs"]) == (2, 1, 1)
    reasons = ctx.quarantine_frame()["reason"].to_list()
    assert len(reasons) == 6
    assert "all scored responses have equal scores: no pair from a tie" in reasons
    assert "no response scored at least min_margin=1.0 below the best" in reasons


def test_ties_at_the_top_pick_the_first_and_never_pair_equal_scores() -> None:
    out, _ = run([[5.0, 5.0, 1.0]])
    assert out["chosen"][0][0]["content"] == "p0 r0"
    assert out["score_chosen"][0] > out["score_rejected"][0]


def test_best_vs_random_is_seeded_and_respects_margin() -> None:
    groups = [[9.0, 1.0, 2.0, 3.0, 8.5] for _ in range(20)]
    first, _ = run(groups, strategy="best_vs_random", min_margin=1.0, seed=3)
    again, _ = run(groups, strategy="best_vs_random", min_margin=1.0, seed=3)
    assert first.equals(again)
    assert set(first["score_rejected"].to_list()) <= {1.0, 2.0, 3.0}
    assert len(set(first["score_rejected"].to_list())) > 1  # different draws for different prompts


def test_needs_candidates() -> None:
    frame = conform(pl.LazyFrame({"messages": [[{"role": "user", "content": "x"}]]}, schema={"messages": MESSAGES}),
                    "conversation")
    with pytest.raises(InputDataError):
        Pairs()(frame)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.one_of(st.none(), st.integers(1, 5).map(float)), max_size=5), min_size=1, max_size=8),
       st.sampled_from(["best_vs_worst", "best_vs_random"]), st.sampled_from([0.0, 1.0, 2.0]))
def test_every_row_is_paired_or_quarantined(groups, strategy, margin) -> None:
    out, ctx = run(groups, strategy=strategy, min_margin=margin)
    assert out.height + ctx.quarantine_frame().height == len(groups)
    assert (out["score_chosen"] - out["score_rejected"] >= max(margin, 1e-9)).all()
