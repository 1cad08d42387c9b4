from __future__ import annotations

import math

import polars as pl
import pytest
from pydantic import ValidationError

from curate import Context
from curate.errors import InputDataError
from curate.schema import RESPONSES, conform
from curate.stages.combine_scores import CombineScores, parse_constraint


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def said(content: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": content}]


def preference(**objectives: list[float | None]) -> pl.LazyFrame:
    n = len(next(iter(objectives.values())))
    df = pl.DataFrame(
        {"prompt": [user(f"p{i}") for i in range(n)], "chosen": [said(f"c{i}") for i in range(n)],
         "rejected": [said(f"r{i}") for i in range(n)], **objectives},
        schema_overrides={k: pl.Float64 for k in objectives},
    )
    return conform(df.lazy(), "preference")


def candidates(sizes: list[int | None], **objectives: list[list[float | None] | None]) -> pl.LazyFrame:
    responses = [None if k is None else [{"content": f"a{i}{j}", "model": "m", "score": float(j)} for j in range(k)]
                 for i, k in enumerate(sizes)]
    df = pl.DataFrame(
        {"prompt": [user(f"p{i}") for i in range(len(sizes))], "responses": responses, **objectives},
        schema_overrides={"responses": RESPONSES, **{k: pl.List(pl.Float64) for k in objectives}},
    )
    return conform(df.lazy(), "candidates")


def scores(df: pl.DataFrame) -> list[list[float | None] | None]:
    return [None if row is None else [r["score"] for r in row] for row in df["responses"].to_list()]


PAIRS = preference(
    reward_help_chosen=[2.0, 1.0, 4.0], reward_help_rejected=[0.0, 3.0, 1.0],
    reward_harm_chosen=[1.0, -1.0, 0.5], reward_harm_rejected=[-2.0, 0.0, None],
)


def test_weighted_sum_on_preference_rows() -> None:
    out = PAIRS.pipe(CombineScores(weights={"help": 0.5, "harm": 2.0})).collect()
    assert out["score_chosen"].to_list() == [3.0, -1.5, 3.0]
    assert out["score_rejected"].to_list() == [-4.0, 1.5, None]  # a null objective gives a null score
    assert out["reward_help_chosen"].to_list() == [2.0, 1.0, 4.0]  # inputs untouched
    # the reward_ prefix is optional; full column base names work too
    same = PAIRS.pipe(CombineScores(weights={"reward_help": 0.5, "reward_harm": 2.0})).collect()
    assert same["score_chosen"].equals(out["score_chosen"])


def test_direction_is_unit_normalised() -> None:
    stage = CombineScores(direction={"help": 3.0, "harm": 4.0})
    assert stage.coefficients() == {"help": 0.6, "harm": 0.8}
    out = PAIRS.pipe(stage).collect()
    assert out["score_chosen"].to_list() == pytest.approx([2.0, -0.2, 2.8])
    scaled = PAIRS.pipe(CombineScores(direction={"help": 30.0, "harm": 40.0})).collect()
    assert scaled["score_chosen"].to_list() == pytest.approx(out["score_chosen"].to_list())


def test_minmax_normalisation_spans_both_sides() -> None:
    out = PAIRS.pipe(CombineScores(weights={"help": 1.0, "harm": 1.0}, normalize="minmax")).collect()
    # help over both sides: min 0, max 4; harm: min -2, max 1
    assert out["score_chosen"].to_list() == pytest.approx([0.5 + 1.0, 0.25 + 1 / 3, 1.0 + 2.5 / 3])
    assert out["score_rejected"].to_list()[:2] == pytest.approx([0.0 + 0.0, 0.75 + 2 / 3])
    constant = preference(x_chosen=[5.0, 5.0], x_rejected=[5.0, None])
    flat = constant.pipe(CombineScores(weights={"x": 1.0}, normalize="minmax")).collect()
    assert flat["score_chosen"].to_list() == [0.0, 0.0] and flat["score_rejected"].to_list() == [0.0, None]


def test_preference_constraints_quarantine_failing_rows() -> None:
    ctx = Context.ephemeral()
    out = PAIRS.pipe(CombineScores(weights={"help": 1.0}, constraints=["harm >= 0", "help<4"]), ctx).collect()
    assert out["reward_help_chosen"].to_list() == [2.0]
    quarantine = ctx.quarantine_frame().sort("reason")
    assert quarantine["reason"].to_list() == [
        "constraint failed: reward_harm_chosen >= 0",
        "constraint failed: reward_help_chosen < 4",
    ]
    assert quarantine["stage"].to_list() == ["combine_scores"] * 2
    both = Context.ephemeral()
    kept = PAIRS.pipe(CombineScores(weights={"help": 1.0}, constraints=["harm >= 0"], constrain="both"), both)
    assert kept.collect().height == 0  # row 0's rejected side is harmful, row 2's rejected harm is null
    assert both.quarantine_frame()["reason"].to_list() == [
        "constraint failed: reward_harm_rejected >= 0",
        "constraint failed: reward_harm_chosen >= 0",
        "constraint failed: reward_harm_rejected >= 0",  # a null value fails a constraint
    ]
    two = preference(a_chosen=[-1.0], a_rejected=[0.0], b_chosen=[5.0], b_rejected=[1.0])
    ctx2 = Context.ephemeral()
    two.pipe(CombineScores(weights={"a": 1.0}, constraints=["a >= 0", "b < 2"], constrain="both"), ctx2).collect()
    assert ctx2.quarantine_frame()["reason"].to_list() == ["constraint failed: a_chosen >= 0; b_chosen < 2"]


def test_candidates_lists_to_response_scores() -> None:
    lf = candidates(
        [2, 1, 0, None],
        reward_help=[[1.0, 3.0], [2.0], [], None],
        reward_harm=[[-1.0, 0.5], [1.0], [], None],
    )
    out = lf.pipe(CombineScores(weights={"help": 1.0, "harm": 2.0})).collect()
    assert scores(out) == [[-1.0, 4.0], [4.0], [], None]
    assert [r["content"] for r in out["responses"][0]] == ["a00", "a01"]
    assert out.columns == lf.collect_schema().names() and out.schema == lf.collect_schema()
    constrained = lf.pipe(CombineScores(weights={"help": 1.0, "harm": 2.0}, constraints=["harm >= 0"])).collect()
    assert scores(constrained) == [[None, 4.0], [4.0], [], None]  # failing responses: null score, row kept
    unit = lf.pipe(CombineScores(direction={"help": 3.0, "harm": 4.0}, normalize="minmax")).collect()
    assert scores(unit)[:2] == [pytest.approx([0.0, 0.6 + 0.8 * 0.75]), pytest.approx([0.3 + 0.8])]


def test_existing_score_is_an_objective() -> None:
    lf = candidates([2], reward_help=[[1.0, 3.0]])  # responses[].score is 0, 1
    out = lf.pipe(CombineScores(weights={"score": 10.0, "help": 1.0})).collect()
    assert scores(out) == [[1.0, 13.0]]
    pairs = preference(score_chosen=[1.0], score_rejected=[2.0], x_chosen=[1.0], x_rejected=[1.0])
    out = pairs.pipe(CombineScores(weights={"score": 2.0, "x": 1.0})).collect()
    assert (out["score_chosen"][0], out["score_rejected"][0]) == (3.0, 5.0)


def test_stays_lazy(monkeypatch: pytest.MonkeyPatch) -> None:
    lf = candidates([2], reward_help=[[1.0, 3.0]])
    ctx = Context.ephemeral()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("combine_scores collected during apply")

    monkeypatch.setattr(pl.LazyFrame, "collect", refuse)
    stage = CombineScores(weights={"help": 1.0}, normalize="minmax", constraints=["help > 0"])
    out_c = lf.pipe(stage, ctx)
    out_p = PAIRS.pipe(stage, ctx)
    monkeypatch.undo()
    assert isinstance(out_c, pl.LazyFrame) and isinstance(out_p, pl.LazyFrame)
    assert scores(out_c.collect()) == [[0.0, 1.0]]


def test_bad_names_and_parameters_are_clear_errors() -> None:
    with pytest.raises(InputDataError, match=r"objective 'nope' not found.*objectives present: \['reward_harm', "):
        PAIRS.pipe(CombineScores(weights={"nope": 1.0}))
    with pytest.raises(InputDataError, match="objective 'nope' not found"):
        PAIRS.pipe(CombineScores(weights={"help": 1.0}, constraints=["nope > 1"]))
    with pytest.raises(InputDataError, match=r"list columns present: \['reward_help'\]"):
        candidates([1], reward_help=[[1.0]]).pipe(CombineScores(weights={"helpful": 1.0}))
    with pytest.raises(ValidationError, match="exactly one of weights"):
        CombineScores()
    with pytest.raises(ValidationError, match="exactly one of weights"):
        CombineScores(weights={"a": 1.0}, direction={"a": 1.0})
    with pytest.raises(ValidationError, match="zero vector"):
        CombineScores(direction={"a": 0.0})
    for bad in ["harm >= __import__('os')", "harm => 0", "1 < harm", "harm >= inf", "harm", "harm >= 0 or 1"]:
        with pytest.raises(ValidationError, match="column op number"):
            CombineScores(weights={"a": 1.0}, constraints=[bad])
    assert parse_constraint(" harm>=-1.5e-1 ") == ("harm", ">=", -0.15)
    assert math.isclose(parse_constraint("x != .5")[2], 0.5)
