"""pairs: candidates -> preference, with ties, single responses, null scores, margins and length controls."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

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


def sized(groups: list[list[tuple[float | None, int]]]) -> pl.LazyFrame:
    """Candidates whose responses have the given (score, length in characters); content starts ``p<i>r<k>``."""
    rows = {
        "prompt": [[{"role": "user", "content": f"prompt {i}"}] for i in range(len(groups))],
        "responses": [
            [{"content": f"p{i}r{k}".ljust(n, "."), "model": f"m{k}", "score": s} for k, (s, n) in enumerate(group)]
            for i, group in enumerate(groups)
        ],
    }
    return conform(pl.DataFrame(rows, schema={"prompt": MESSAGES, "responses": RESPONSES}).lazy(), "candidates")


def run(groups, **params) -> tuple[pl.DataFrame, Context]:
    ctx = Context.ephemeral()
    return Pairs(**params)(candidates(groups), ctx).collect(), ctx


def run_sized(groups, **params) -> tuple[pl.DataFrame, Context]:
    ctx = Context.ephemeral()
    return Pairs(**params)(sized(groups), ctx).collect(), ctx


def picked(out: pl.DataFrame) -> list[tuple[str, str]]:
    """(chosen, rejected) as ``p<i>r<k>`` labels, in output order."""
    pairs = zip(out["chosen"], out["rejected"], strict=True)
    return [(c[0]["content"].rstrip("."), r[0]["content"].rstrip(".")) for c, r in pairs]


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


def test_max_length_ratio_walks_to_the_next_admissible_combination() -> None:
    groups = [
        [(5.0, 30), (1.0, 10), (2.0, 20), (4.0, 12)],  # best with next-worst: 30 <= 1.5 * 20
        [(5.0, 100), (3.0, 10), (1.0, 40)],  # the best has no admissible partner: next-best with the worst
        [(2.0, 50), (1.0, 10)],  # nothing admissible -> quarantine
        [(5.0, 5), (1.0, 50)],  # a shorter chosen is always admissible
        [(5.0, 30), (4.5, 30), (1.0, 5)],  # same length exists only below min_margin -> quarantine
    ]
    out, ctx = run_sized(groups, max_length_ratio=1.5, min_margin=1.0)
    assert picked(out) == [("p0r0", "p0r2"), ("p1r1", "p1r2"), ("p3r0", "p3r1")]
    assert (out["score_margin"] >= 1.0).all()
    notes = ctx.stats["pairs"]
    assert (notes["pairs"], notes["dropped_length_ratio"], notes["dropped_below_margin"]) == (3, 2, 0)
    assert notes["length_ratio_mean"] == pytest.approx((1.5 + 0.25 + 0.1) / 3, abs=1e-4)
    control = notes["length_control"]
    assert control["before"] == {"pairs": 5, "length_ratio_mean": pytest.approx((3 + 2.5 + 5 + 0.1 + 6) / 5),
                                 "chosen_longer_share": 0.8}
    assert control["after"]["pairs"] == 3 and control["after"]["chosen_longer_share"] == pytest.approx(1 / 3, 1e-3)
    assert control["changed"] == 2
    quarantine = ctx.quarantine_frame(row="json")
    expected = ("no pair at least min_margin=1.0 apart has a chosen at most max_length_ratio=1.5 times as long as "
                "its rejected (characters)")
    assert quarantine["reason"].to_list() == [expected, expected]
    assert quarantine["code"].to_list() == ["length_ratio", "length_ratio"]
    assert quarantine["row"].str.contains("p2r0").to_list() == [True, False]


def test_length_controlled_takes_the_smallest_length_difference_with_a_stated_tie_break() -> None:
    groups = [
        [(5.0, 40), (4.0, 20), (3.0, 38), (1.0, 42)],  # |diff| 2 twice: the wider margin (5 vs 1) wins
        [(5.0, 10), (3.0, 12), (4.0, 20), (2.0, 22)],  # |diff| 2, margin 2 twice: the higher chosen score wins
        [(5.0, 10), (5.0, 10), (1.0, 10)],  # equal chosen scores: the earlier chosen position
        [(5.0, 10), (1.0, 10), (1.0, 10)],  # equal rejected scores: the later rejected position
        [(2.0, 10), (2.0, 30)],  # a tie: no pair at all
    ]
    out, ctx = run_sized(groups, length_controlled=True)
    assert picked(out) == [("p0r0", "p0r3"), ("p1r0", "p1r1"), ("p2r0", "p2r2"), ("p3r0", "p3r2")]
    notes = ctx.stats["pairs"]
    assert (notes["pairs"], notes["dropped_all_tied"], notes["dropped_length_ratio"]) == (4, 1, 0)
    assert notes["length_control"]["changed"] == 1  # only prompt 1: best vs worst would give p1r0 / p1r3
    again, _ = run_sized(groups, length_controlled=True)
    assert out.equals(again)


def test_length_controls_combine_and_validate() -> None:
    groups = [[(5.0, 90), (4.0, 50), (2.0, 60), (1.0, 10)]]
    out, _ = run_sized(groups, length_controlled=True, max_length_ratio=1.2)
    assert picked(out) == [("p0r1", "p0r2")]  # |diff| 10 is not the smallest (30: r0/r2), but 90 > 1.2 * 60
    with pytest.raises(ValidationError):
        Pairs(strategy="best_vs_random", length_controlled=True)
    with pytest.raises(ValidationError):
        Pairs(max_length_ratio=0.0)


def test_best_vs_random_draws_only_admissible_rejected() -> None:
    groups = [[(9.0, 30), (1.0, 10), (2.0, 25), (3.0, 20), (4.0, 40)] for _ in range(20)]
    out, _ = run_sized(groups, strategy="best_vs_random", max_length_ratio=1.5, seed=1)
    assert {c for c, _ in picked(out)} == {f"p{i}r0" for i in range(20)}
    assert {r.split("r")[1] for _, r in picked(out)} == {"2", "3", "4"}  # never r1 (30 > 1.5 * 10), every other drawn


def test_without_controls_the_notes_still_report_length_bias() -> None:
    _, ctx = run_sized([[(5.0, 40), (1.0, 10)], [(5.0, 10), (1.0, 10)]])
    notes = ctx.stats["pairs"]
    assert (notes["length_ratio_mean"], notes["chosen_longer_share"]) == (2.5, 0.5)
    assert "length_control" not in notes


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.one_of(st.none(), st.integers(1, 5).map(float)), max_size=5), min_size=1, max_size=8),
       st.sampled_from(["best_vs_worst", "best_vs_random"]), st.sampled_from([0.0, 1.0, 2.0]))
def test_every_row_is_paired_or_quarantined(groups, strategy, margin) -> None:
    out, ctx = run(groups, strategy=strategy, min_margin=margin)
    assert out.height + ctx.quarantine_frame().height == len(groups)
    assert (out["score_chosen"] - out["score_rejected"] >= max(margin, 1e-9)).all()


def side_lengths(out: pl.DataFrame) -> pl.DataFrame:
    """Characters of chosen (``c``) and rejected (``r``), signed so differences do not wrap around."""
    def length(side: str) -> pl.Expr:
        return pl.col(side).list.first().struct.field("content").str.len_chars().cast(pl.Int64)

    return out.select(length("chosen").alias("c"), length("rejected").alias("r"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.one_of(st.none(), st.integers(1, 5).map(float)), st.integers(0, 40)),
                         max_size=5), min_size=1, max_size=8),
       st.sampled_from([None, 1.0, 1.5]), st.booleans(), st.sampled_from([0.0, 1.0]))
def test_length_controls_keep_every_row_accounted_for(groups, ratio, controlled, margin) -> None:
    out, ctx = run_sized(groups, max_length_ratio=ratio, length_controlled=controlled, min_margin=margin)
    assert out.height + ctx.quarantine_frame().height == len(groups)
    assert (out["score_chosen"] - out["score_rejected"] >= max(margin, 1e-9)).all()
    lengths = side_lengths(out)
    if ratio is not None:
        assert (lengths["c"] <= ratio * lengths["r"]).all()
    if controlled and ratio is None:  # the uncontrolled pair is a candidate, so the difference never grows
        plain, _ = run_sized(groups, min_margin=margin)
        base = side_lengths(plain)
        assert ((lengths["c"] - lengths["r"]).abs() <= (base["c"] - base["r"]).abs()).all()
