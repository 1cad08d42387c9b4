"""reward_augment: each pair -> two goal-conditioned twins; ties and null scores quarantined."""

from __future__ import annotations

import polars as pl
import pytest
from pydantic import ValidationError

from curate import Context
from curate.errors import InputDataError
from curate.schema import conform, with_ids
from curate.stages import STAGES
from curate.stages.reward_augment import RewardAugment


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def pairs() -> pl.LazyFrame:
    rows = {
        "prompt": [
            [msg("user", "Add 2 and 2.")],
            [msg("system", "Be brief."), msg("user", "Name a colour.")],
            [msg("user", "Tie?")],
            [msg("user", "Null?")],
        ],
        "chosen": [[msg("assistant", "4")], [msg("assistant", "Red")], [msg("assistant", "a")],
                   [msg("assistant", "b")]],
        "rejected": [[msg("assistant", "5")], [msg("assistant", "Colour")], [msg("assistant", "c")],
                     [msg("assistant", "d")]],
        "score_chosen": [9.0, 7.5, 5.0, None],
        "score_rejected": [2.0, 3.0, 5.0, 4.0],
        "len_chosen": [1, 3, 1, 1],
        "len_rejected": [1, 6, 1, 1],
    }
    return conform(pl.DataFrame(rows).lazy(), "preference")


def goal(score: str) -> str:
    return f"Write a response that would be rated {score} on a scale of 1 to 10."


def expected(system: str) -> list[dict]:
    def sys_prompt(score: str, user: str, old: str | None) -> list[dict[str, str]]:
        text = goal(score)
        if old is not None:
            text = {"prepend": f"{text}\n\n{old}", "append": f"{old}\n\n{text}", "replace": text}[system]
        return [msg("system", text), msg("user", user)]

    return [
        {"prompt": sys_prompt("9", "Add 2 and 2.", None), "chosen": "4", "rejected": "5", "score_chosen": 9.0,
         "score_rejected": 2.0, "len_chosen": 1, "len_rejected": 1, "goal_score": 9.0, "parent": 0},
        {"prompt": sys_prompt("2", "Add 2 and 2.", None), "chosen": "5", "rejected": "4", "score_chosen": 2.0,
         "score_rejected": 9.0, "len_chosen": 1, "len_rejected": 1, "goal_score": 2.0, "parent": 0},
        {"prompt": sys_prompt("7.5", "Name a colour.", "Be brief."), "chosen": "Red", "rejected": "Colour",
         "score_chosen": 7.5, "score_rejected": 3.0, "len_chosen": 3, "len_rejected": 6, "goal_score": 7.5,
         "parent": 1},
        {"prompt": sys_prompt("3", "Name a colour.", "Be brief."), "chosen": "Colour", "rejected": "Red",
         "score_chosen": 3.0, "score_rejected": 7.5, "len_chosen": 6, "len_rejected": 3, "goal_score": 3.0,
         "parent": 1},
    ]


@pytest.mark.parametrize("system", ["prepend", "append", "replace"])
def test_exact_rows(system: str) -> None:
    lf = pairs()
    parent_ids = lf.collect()["id"].to_list()
    ctx = Context.ephemeral()
    out = lf.pipe(RewardAugment(system=system), ctx).collect()
    got = [
        {"prompt": r["prompt"], "chosen": r["chosen"][0]["content"], "rejected": r["rejected"][0]["content"],
         "score_chosen": r["score_chosen"], "score_rejected": r["score_rejected"], "len_chosen": r["len_chosen"],
         "len_rejected": r["len_rejected"], "goal_score": r["goal_score"], "parent": parent_ids.index(r["parent_id"])}
        for r in out.iter_rows(named=True)
    ]
    assert got == expected(system)
    # ids are the content hash of the new rows, all distinct and different from the parents.
    assert out["id"].to_list() == with_ids(out.lazy(), "preference").collect()["id"].to_list()
    assert out["id"].n_unique() == 4 and not set(out["id"].to_list()) & set(parent_ids)
    assert out.columns[:7] == ["id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected", "source"]
    q = ctx.quarantine_frame()
    assert q["id"].to_list() == parent_ids[2:]
    assert q["reason"].to_list() == [
        "reward_augment: equal scores (5.0 == 5.0), twins would contradict",
        "reward_augment: null score (no goal to condition on)",
    ]
    assert ctx.stats["reward_augment"]["goal_at_inference"] == 10.0
    assert ctx.stats["reward_augment"]["goal_prompt"] == goal("10")


def test_custom_template_and_scale() -> None:
    stage = RewardAugment(template="Target: {score}/{high} (min {low}).", low=1, high=5, decimals=0)
    out = pairs().head(1).with_columns(pl.lit(4.6).alias("score_chosen")).pipe(stage).collect()
    assert [p[0]["content"] for p in out["prompt"].to_list()] == ["Target: 5/5 (min 1).", "Target: 2/5 (min 1)."]


def test_scores_rounding_to_one_goal_are_ties() -> None:
    ctx = Context.ephemeral()
    lf = pairs().head(1).with_columns(pl.lit(7.51).alias("score_chosen"), pl.lit(7.49).alias("score_rejected"))
    assert lf.pipe(RewardAugment(), ctx).collect().height == 0
    assert ctx.quarantine_frame()["reason"].to_list() == [
        "reward_augment: scores 7.51 and 7.49 give the same goal at 1 decimal, twins would contradict"
    ]
    assert lf.pipe(RewardAugment(decimals=2)).collect()["goal_score"].to_list() == [7.51, 7.49]


def test_validation_and_input_checks() -> None:
    assert STAGES["reward_augment"] is RewardAugment
    for bad in ({"template": "no goal"}, {"template": "{score} {oops}"}, {"low": 5, "high": 5},
                {"system": "merge"}):
        with pytest.raises(ValidationError):
            RewardAugment(**bad)
    sft = conform(pl.DataFrame({"messages": [[msg("user", "hi")]]}).lazy(), "conversation")
    with pytest.raises(InputDataError, match="preference"):
        sft.pipe(RewardAugment())


def test_stays_lazy_and_empty() -> None:
    out = pairs().filter(pl.lit(False)).pipe(RewardAugment())
    assert isinstance(out, pl.LazyFrame)
    assert out.collect().height == 0
