"""``judge_eval`` of ``curate train``: answers of the trained vs the base model, judged in both orders.

The tie logic runs the real ``judge`` stage against deterministic judges that implement the LLM protocol (as
tests/test_translate.py does); the end-to-end runs train the tiny test model (tests/tiny_llm.py) with real TRL
and judge with the tiny model itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl
import pytest
from test_train import _config, _rows, _write

from curate import Context
from curate.errors import ModelError, RecipeError
from curate.llm.base import LLM, Generation, Sampling
from curate.train import parse_train_config, run_train
from curate.train.data import read_preferences, with_goal
from curate.train.winrate import HeldOutPrompts, judge_pairs, select_prompts

RESPONSE = re.compile(r"\[Response ([AB])\]\n(.*?)\n\[End of response \1\]", re.DOTALL)


class ScriptedJudge:
    """A deterministic judge behind the LLM protocol: ``decide(a, b) -> reply text`` sees the two responses of
    each pairwise prompt in the order shown.  No chat template, so the judge stage reads its text verdicts."""

    def __init__(self, decide: Callable[[str, str], str], name: str = "scripted-judge") -> None:
        self.name = name
        self.decide = decide
        self.calls = 0

    def chat(self, conversations: Sequence[Sequence[dict[str, str]]], sampling: Sampling) -> list[list[Generation]]:
        out = []
        for conv in conversations:
            self.calls += 1
            shown = dict((m.group(1), m.group(2)) for m in RESPONSE.finditer(conv[-1]["content"]))
            out.append([Generation(text=self.decide(shown["A"], shown["B"]), tokens=4)])
        return out

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[Generation]]:
        raise AssertionError("the judge stage chats in text mode")

    def render(self, conversation: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        raise ModelError("the scripted judge has no chat template")


def always_a(a: str, b: str) -> str:
    return "Reason: the first one.\nVerdict: A"


def longer(a: str, b: str) -> str:
    return "Verdict: " + ("A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie")


POLICY = ["a long and careful answer", "short", "same length!", "identical", "x"]
BASE = ["brief", "a much longer base answer", "equal length", "identical", "yy"]


def _prompts(n: int) -> HeldOutPrompts:
    msgs = [[{"role": "user", "content": f"question {i}?"}] for i in range(n)]
    return HeldOutPrompts([f"p{i}" for i in range(n)], msgs, msgs, True)


def _judge(decide: Callable[[str, str], str]) -> tuple[dict, pl.DataFrame, ScriptedJudge]:
    backend = ScriptedJudge(decide)
    assert isinstance(backend, LLM)
    ctx = Context.ephemeral()
    ctx.models.register("judge", backend)
    result, rows = judge_pairs(_prompts(len(POLICY)), POLICY, BASE, ctx)
    return result, rows, backend


def test_position_biased_judge_gives_only_ties() -> None:
    """A judge that always picks position A names the policy in one order and the base in the other: a tie."""
    result, rows, backend = _judge(always_a)
    assert (result["wins"], result["losses"], result["ties"], result["prompts"]) == (0, 0, 5, 5)
    assert result["win_rate"] == 0.5
    assert result["identical"] == 1 and result["unparseable"] == 0
    assert result["swap_consistency"] == 0.0
    assert backend.calls == 2 * 4  # both orders of every pair, none for the identical answers
    assert rows["verdict"].to_list() == ["tie"] * 5
    assert rows["judge_verdict_first"].to_list()[:3] == ["a", "a", "a"]


def test_length_preferring_judge_counts_wins_from_the_responses() -> None:
    result, rows, _ = _judge(longer)
    wins = sum(len(p) > len(b) for p, b in zip(POLICY, BASE, strict=True))
    losses = sum(len(p) < len(b) for p, b in zip(POLICY, BASE, strict=True))
    ties = len(POLICY) - wins - losses
    assert (result["wins"], result["losses"], result["ties"]) == (wins, losses, ties) == (1, 2, 2)
    assert result["win_rate"] == pytest.approx((wins + 0.5 * ties) / len(POLICY))
    assert result["swap_consistency"] == 1.0 and result["longer_wins"] == 1.0
    assert rows["verdict"].to_list() == ["win", "loss", "tie", "tie", "loss"]


def test_unreadable_verdict_is_a_tie_and_reported() -> None:
    result, _, _ = _judge(lambda a, b: "I cannot decide.")
    assert result["unparseable"] == 4 and result["ties"] == 5 and result["win_rate"] == 0.5


def test_prompts_are_distinct_seeded_and_hide_the_goal(tmp_path: Path) -> None:
    rows = _rows(10) + _rows(10)  # every prompt twice
    held = read_preferences([_write(tmp_path / "h.parquet", rows)])
    first = select_prompts(held, 4, seed=3)
    assert len(first.generate) == 4 and len({json.dumps(p) for p in first.generate}) == 4
    shuffled = read_preferences([_write(tmp_path / "s.parquet", rows[::-1])])
    assert select_prompts(shuffled, 4, seed=3).generate == first.generate  # row order does not matter
    assert len(select_prompts(held, 50, seed=3).generate) == 10

    goal = "Write a response that would be rated 10 on a scale of 1 to 10."
    chosen = select_prompts(with_goal(held, goal), 4, seed=3, goal=goal)
    assert all(p[0] == {"role": "system", "content": goal} for p in chosen.generate)
    assert chosen.judge == first.generate


# -- configuration ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("setting", "message"), [
    ({"prompts": 0}, r"train\.judge_eval\.prompts"),
    ({"promts": 4}, r"train\.judge_eval\.promts"),
    ({"options": {"mode": "pointwise"}}, r"train\.judge_eval\.options.*mode cannot be set"),
    ({"options": {"scale": 7}}, r"train\.judge_eval\.options.*scale"),
    ({"judge": {"path": "m"}}, r"train\.judge_eval\.judge.*backend"),
])
def test_bad_judge_eval_settings_are_named(setting: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        parse_train_config({"data": "x.parquet", "judge_eval": setting})


def test_judge_eval_switch_and_held_out_requirement() -> None:
    config = parse_train_config({"data": "x.parquet", "judge_eval": True})
    assert config.judge_eval is not None and config.judge_eval.prompts == 32
    assert parse_train_config({"data": "x.parquet", "judge_eval": False}).judge_eval is None
    with pytest.raises(RecipeError, match="judge_eval answers held-out prompts"):
        parse_train_config({"data": "x.parquet", "eval_fraction": 0.0, "judge_eval": True})


def test_missing_judge_model_fails_before_training(tmp_path: Path, tiny_llm_path: Path) -> None:
    data = _write(tmp_path / "d.parquet", _rows(8))
    config = parse_train_config(_config(tiny_llm_path, tmp_path / "out", data=str(data), eval_fraction=0.25,
                                        judge_eval={"judge": str(tmp_path / "no-judge")}))
    with pytest.raises(ModelError, match=r"train\.judge_eval\.judge: model folder not found"):
        run_train(config)
    assert not (tmp_path / "out").exists()


# -- end to end ------------------------------------------------------------------------------------------------

def test_run_writes_win_rate_and_base_answers_come_from_the_untrained_model(tmp_path: Path,
                                                                           tiny_llm_path: Path) -> None:
    """Full fine-tuning changes the base weights in place: the base answers must still be the untrained model's."""
    from curate.llm import load_llm

    data = _write(tmp_path / "d.parquet", _rows(12))
    held = _write(tmp_path / "held.parquet", _rows(6, offset=50))
    config = parse_train_config(_config(tiny_llm_path, tmp_path / "out", data=str(data), eval_data=str(held),
                                        lora=False, max_steps=2, learning_rate=5e-3,
                                        judge_eval={"judge": str(tiny_llm_path), "prompts": 4, "max_new_tokens": 6}))
    metrics = run_train(config).runs[0]
    judged = json.loads((tmp_path / "out" / "metrics.json").read_text())["judge_eval"]
    assert judged == metrics["judge_eval"]
    assert 0.0 <= judged["win_rate"] <= 1.0
    assert judged["wins"] + judged["losses"] + judged["ties"] == judged["prompts"] == 4
    assert judged["judge"] == str(tiny_llm_path)

    rows = pl.read_parquet(tmp_path / "out" / "judge_eval.parquet")
    assert rows.height == 4 and set(rows["verdict"]) <= {"win", "loss", "tie"}
    untrained = load_llm({"backend": "transformers", "path": str(tiny_llm_path), "dtype": "float32",
                          "device": "cpu"})
    prompts = [[{"role": m["role"], "content": m["content"]} for m in p] for p in rows["prompt"].to_list()]
    fresh = untrained.chat(prompts, Sampling(temperature=0.0, max_tokens=6, seed=0))
    assert rows["base"].to_list() == [g[0].text.strip() for g in fresh]


def test_curated_and_baseline_are_each_judged_against_the_same_base_answers(tmp_path: Path,
                                                                            tiny_llm_path: Path) -> None:
    curated = _write(tmp_path / "curated.parquet", _rows(8))
    baseline = _write(tmp_path / "baseline.parquet", _rows(8, offset=100))
    held = _write(tmp_path / "held.parquet", _rows(5, offset=50))
    config = parse_train_config(_config(
        tiny_llm_path, tmp_path / "cmp", data=str(curated), baseline=str(baseline), eval_data=str(held),
        max_steps=1, judge_eval={"judge": str(tiny_llm_path), "prompts": 3, "max_new_tokens": 4}))
    outcome = run_train(config)
    assert [m["judge_eval"]["prompts"] for m in outcome.runs] == [3, 3]
    bases = [pl.read_parquet(tmp_path / "cmp" / run / "judge_eval.parquet")["base"].to_list()
             for run in ("curated", "baseline")]
    assert bases[0] == bases[1]
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "win_rate" in table.splitlines()[0] and "w/t/l" in table
    summary = json.loads(outcome.comparison.read_text())
    assert all(0.0 <= r["judge_eval"]["win_rate"] <= 1.0 for r in summary["runs"])
