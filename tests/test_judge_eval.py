"""judge-eval: metrics on hand-made verdicts, labelled files (label_map, ties, preference tables), the CLI with
the baselines, a tiny LLM judge and a tiny reward model, and the judge stage's degeneracy guard (a real
OpenAI-compatible server scripted to always answer "A")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from synth_fakes import FakeLLM
from tiny_llm import CHATML

from curate import Context
from curate.errors import DegenerateJudgeError
from curate.io import load
from curate.io.prefs import label_keys
from curate.judge_eval import load_labelled, summarize
from curate.judge_eval.metrics import (
    bootstrap_ci,
    length_bias,
    position_bias,
    swap_consistency,
    three_way_hits,
    two_way_credit,
)
from curate.schema import MESSAGES, conform
from curate.stages import Judge

CURATE = [sys.executable, "-m", "curate.cli"]


def curate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CURATE, *args], capture_output=True, text=True, cwd=cwd, check=False)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def hand_pairs(labels: list[str], a: list[str] | None = None, b: list[str] | None = None,
               category: list[str | None] | None = None) -> pl.DataFrame:
    n = len(labels)
    return pl.DataFrame({
        "id": [str(i) for i in range(n)], "prompt": [[{"role": "user", "content": "q"}]] * n,
        "a": a or ["x"] * n, "b": b or ["y"] * n, "label": labels, "category": category or [None] * n,
    }, schema={"id": pl.String, "prompt": MESSAGES, "a": pl.String, "b": pl.String, "label": pl.String,
               "category": pl.String})


# -- metrics ----------------------------------------------------------------------------------------------
def test_agreement_counts_ties_half_and_three_way_counts_tie_labels() -> None:
    labels = ["a", "b", "a", "b", "tie", "tie"]
    verdicts = ["a", "b", "b", "tie", "tie", "a"]
    assert two_way_credit(verdicts, labels).tolist() == [1.0, 1.0, 0.0, 0.5]
    assert three_way_hits(verdicts, labels).tolist() == [1, 1, 0, 0, 1, 0]
    out = summarize("j", hand_pairs(labels), verdicts)
    assert out["agreement"] == 0.625 and out["agreement_decided"] == round(2 / 3, 4)
    assert out["agreement_3way"] == 0.5 and out["decided"] == round(4 / 6, 4)
    assert out["swap_consistency"] is None and out["position_bias"] is None
    assert out["agreement_ci"][0] <= 0.625 <= out["agreement_ci"][1]


def test_interval_contains_the_estimate_and_narrows_with_n() -> None:
    pattern = [1.0, 1.0, 0.0, 0.5, 1.0]
    small, large = bootstrap_ci(pattern * 4, seed=1), bootstrap_ci(pattern * 400, seed=1)
    mean = float(np.mean(pattern))
    assert small[0] <= mean <= small[1] and large[0] <= mean <= large[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 5
    assert bootstrap_ci(pattern * 4, seed=1) == small  # seeded
    assert bootstrap_ci([], seed=1) is None


def test_swap_consistency_and_position_bias() -> None:
    # first order shows (a, b); swapped shows (b, a), so its "a" names response b.
    first = ["a", "a", "b", None, "tie"]
    swapped = ["b", "a", "a", "b", "tie"]
    assert swap_consistency(first, swapped) == 0.75  # pairs 1, 3 and 5 agree; pair 4 is unreadable
    assert position_bias(first, swapped) == round(4 / 7, 4)  # a-verdicts among the 7 decided ones
    assert position_bias(["a"] * 5, ["a"] * 5) == 1.0 and swap_consistency(["a"] * 5, ["a"] * 5) == 0.0


def test_length_bias_among_decided_pairs() -> None:
    verdicts = ["a", "b", "a", "tie", None, "b"]
    assert length_bias(verdicts, [10, 10, 1, 5, 5, 3], [1, 1, 10, 1, 1, 3]) == round(1 / 3, 4)


def test_by_category() -> None:
    out = summarize("j", hand_pairs(["a", "a", "b", "b"], category=["x", "x", "y", "y"]), ["a", "b", "b", "b"])
    assert out["by_category"]["x"]["agreement"] == 0.5 and out["by_category"]["y"]["agreement"] == 1.0
    assert out["by_category"]["y"]["n"] == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=1, max_size=300), st.integers(0, 2**31))
def test_bootstrap_interval_properties(values: list[float], seed: int) -> None:
    lo, hi = bootstrap_ci(values, seed=seed)
    assert 0.0 <= lo <= hi <= 1.0
    assert lo <= np.mean(values) + 1e-9 and np.mean(values) - 1e-9 <= hi
    if len(set(values)) == 1:
        assert lo == hi == values[0]


@given(st.one_of(st.integers(-1000, 1000), st.text(min_size=1, max_size=8)))
def test_label_keys_cover_integer_and_float_columns(value: object) -> None:
    keys = label_keys(value)
    assert str(value).strip().lower() in keys
    if isinstance(value, int):
        assert str(value) in keys and f"{value}.0" in keys


# -- labelled files -----------------------------------------------------------------------------------------
def test_label_map_012_and_12(tmp_path: Path) -> None:
    rows = [{"prompt": "Q", "response_a": f"A{i}", "response_b": f"B{i}", "label": lab} for i, lab in
            enumerate([0, 1, 2, 1, 0])]
    path = write_jsonl(tmp_path / "l012.jsonl", rows)
    got = load_labelled(path, label_map={0: "a", 1: "b", 2: "tie"})
    assert got.pairs["label"].to_list() == ["a", "b", "tie", "b", "a"] and got.skipped == 0
    assert got.pairs["a"].to_list() == [f"A{i}" for i in range(5)]  # the file's A/B order is kept
    # 1/2 labels (1 = first response better), as a recipe's adapter option would give them (YAML int keys)
    rows12 = [{**r, "label": {0: 1, 1: 2, 2: 3}[r["label"]]} for r in rows]
    path12 = write_jsonl(tmp_path / "l12.jsonl", rows12)
    got12 = load_labelled(path12, label_map=yaml.safe_load("{1: a, 2: B}"))
    assert got12.pairs["label"].to_list() == ["a", "b", "b", "a"]
    assert got12.skipped == 1 and "label_map keys 1, 2, got '3'" in got12.first_problem
    # through the plain loader (what `input: [{adapter: pairwise, options: {label_map: ...}}]` does): ties are
    # still row errors there, unless ties: keep
    loaded = load(path, "pairwise", {"label_map": {0: "a", 1: "b", 2: "tie"}})
    assert loaded.rejected.collect()["reason"].to_list() == ["tie: no preference"]
    assert loaded.frame.collect().height == 4


def test_label_map_through_a_recipe(tmp_path: Path) -> None:
    rows = [{"prompt": f"Q{i}", "response_a": f"first {i}", "response_b": f"second answer {i}",
             "label": 1 + i % 2} for i in range(6)]
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    recipe = {"name": "lm", "input": [{"path": "pairs.jsonl", "adapter": "pairwise",
                                       "options": {"label_map": {1: "a", 2: "b"}}}],
              "output": {"dir": "out"}, "stages": []}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    done = curate("run", "r.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = pl.read_parquet(next((tmp_path / "out" / "data").glob("*.parquet")))
    chosen = [c[0]["content"] for c in out.sort("prompt")["chosen"].to_list()]
    assert chosen == [f"first {i}" if i % 2 == 0 else f"second answer {i}" for i in range(6)]


def test_preference_table_gets_a_seeded_ab_order(shared_data: Path) -> None:
    hh = shared_data / "hh_rlhf_harmless_base_test" / "test.jsonl.gz"
    one, two = load_labelled(hh, seed=3, limit=200), load_labelled(hh, seed=3, limit=200)
    assert one.pairs.equals(two.pairs)
    counts = one.pairs["label"].value_counts()
    assert set(counts["label"]) == {"a", "b"} and counts["count"].min() > 70
    assert not load_labelled(hh, seed=4, limit=200).pairs["label"].equals(one.pairs["label"])


# -- the length baseline on real data, computed independently ------------------------------------------------
def _hh_pairwise_file(shared_data: Path, out: Path, n: int = 300) -> Path:
    """A pairwise JSONL from hh-rlhf (chosen/rejected last turns), A/B order from a seeded coin."""
    frame = load(shared_data / "hh_rlhf_harmless_base_test" / "test.jsonl.gz", "hh_rlhf").frame.head(n).collect()
    rng = np.random.default_rng(7)
    rows = []
    for row in frame.iter_rows(named=True):
        better, worse = row["chosen"][-1]["content"], row["rejected"][-1]["content"]
        first = bool(rng.random() < 0.5)
        rows.append({"prompt": row["prompt"], "response_a": better if first else worse,
                     "response_b": worse if first else better, "label": "a" if first else "b"})
    return write_jsonl(out, rows)


@pytest.mark.slow
def test_length_baseline_reproduces_longer_wins_exactly(shared_data: Path, tmp_path: Path) -> None:
    path = _hh_pairwise_file(shared_data, tmp_path / "hh.jsonl")
    credit, decided = [], 0
    for line in path.read_text().splitlines():
        r = json.loads(line)
        la, lb = len(r["response_a"]), len(r["response_b"])
        verdict = "a" if la > lb else "b" if lb > la else "tie"
        decided += verdict != "tie"
        credit.append(1.0 if verdict == r["label"] else 0.5 if verdict == "tie" else 0.0)
    done = curate("judge-eval", str(path), "--json", "--judge", "length", "--judge", "random", "--seed", "5")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    length = result["judges"][0]
    assert result["n"] == len(credit) == 300 and length["name"] == "length"
    assert length["agreement"] == round(sum(credit) / len(credit), 4)
    assert length["decided"] == round(decided / len(credit), 4) and length["length_bias"] == 1.0
    assert length["swap_consistency"] is None and length["calls"] == 0
    rand = result["judges"][1]
    assert rand["decided"] == 1.0 and 0.35 < rand["agreement"] < 0.65
    for judge in result["judges"]:
        assert judge["agreement_ci"][0] <= judge["agreement"] <= judge["agreement_ci"][1]


# -- CLI with real models ---------------------------------------------------------------------------------
def _small_file(tmp_path: Path, n: int = 6) -> Path:
    rows = [{"prompt": f"What is {i} plus {i}?", "response_a": f"It is {2 * i}." + " Indeed." * (i % 3),
             "response_b": "No idea" + "!" * i, "label": ["a", "b", "tie"][i % 3], "category": f"c{i % 2}"}
            for i in range(n)]
    return write_jsonl(tmp_path / "small.jsonl", rows)


@pytest.mark.slow
def test_cli_model_judge_with_tiny_llm_caches_and_writes_outputs(tmp_path: Path, tiny_llm_path: Path) -> None:
    path = _small_file(tmp_path)
    args = ["judge-eval", str(path), "--json", "--judge", f"model:{tiny_llm_path}", "--judge", "length",
            "--out", str(tmp_path / "je")]
    first = curate(*args)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    model = result["judges"][0]
    assert result["n"] == 6 and model["name"] == f"model:{tiny_llm_path}" and model["calls"] == 12
    # a random tiny model rarely puts A/B among its top tokens: unreadable verdicts are null, never an error
    for key in ("swap_consistency", "position_bias"):
        assert model[key] is None or 0.0 <= model[key] <= 1.0
    assert 0.0 <= model["decided"] <= 1.0
    assert model["length_bias"] is None or 0.0 <= model["length_bias"] <= 1.0
    assert set(model["by_category"]) == {"c0", "c1"}
    assert set(result["labels"]) == {"a", "b", "tie"}
    again = json.loads(curate(*args).stdout)
    assert again["judges"][0]["calls"] == 0  # every verdict from OUT/cache
    assert {k: v for k, v in again["judges"][0].items() if k not in ("seconds", "calls")} == \
        {k: v for k, v in model.items() if k not in ("seconds", "calls")}
    html = (tmp_path / "je" / "judge_eval.html").read_text()
    assert '<section id="judges">' in html and "position bias" in html
    verdicts = pl.read_parquet(tmp_path / "je" / "verdicts.parquet")
    assert verdicts.height == 12 and set(verdicts["judge"]) == {model["name"], "length"}
    table = curate("judge-eval", str(path))  # the default judges, as a table
    assert table.returncode == 0 and "length" in table.stdout and "random" in table.stdout

    # the same model as a judge stage configured in a recipe: the same verdicts
    recipe = {"name": "r", "input": [{"path": str(path)}], "models": {"j": {"backend": "transformers",
                                                                          "path": str(tiny_llm_path)}},
              "stages": [{"filter": {}}, {"judge": {"model": "j", "mode": "pairwise", "batch_size": 4}}]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    from_recipe = curate("judge-eval", str(path), "--json", "--judge", f"recipe:{tmp_path / 'r.yaml'}#2")
    assert from_recipe.returncode == 0, from_recipe.stderr
    staged = json.loads(from_recipe.stdout)["judges"][0]
    assert {k: v for k, v in staged.items() if k not in ("name", "seconds")} == \
        {k: v for k, v in model.items() if k not in ("name", "seconds")}
    wrong = curate("judge-eval", str(path), "--judge", f"recipe:{tmp_path / 'r.yaml'}#1")
    assert wrong.returncode == 2 and "is a filter stage, not judge or reward_score" in wrong.stderr


@pytest.mark.slow
def test_cli_reward_model_judge(tmp_path: Path) -> None:
    from tiny_reward import build_tiny_reward

    folder = build_tiny_reward(tmp_path / "rm")
    path = _small_file(tmp_path)
    done = curate("judge-eval", str(path), "--json", "--judge", f"rm:{folder}")
    assert done.returncode == 0, done.stderr
    rm = json.loads(done.stdout)["judges"][0]
    assert rm["name"] == f"rm:{folder}" and rm["decided"] > 0 and rm["calls"] == 12
    assert rm["swap_consistency"] is None and rm["position_bias"] is None


@pytest.mark.slow
def test_cli_default_embedding_rm_on_held_out_pairs(shared_data: Path, tmp_path: Path) -> None:
    from curate.reward.embedding_rm import heldout_mask

    hh = _hh_pairwise_file(shared_data, tmp_path / "hh.jsonl", n=400)
    rows = [json.loads(line) for line in hh.read_text().splitlines()]
    held = [r for r, keep in zip(rows, heldout_mask([r["prompt"] for r in rows]), strict=True) if keep]
    path = write_jsonl(tmp_path / "held.jsonl", held)  # never trained on: the default RM's held-out prompts
    done = curate("judge-eval", str(path), "--json", "--judge", "rm:default", "--judge", "random")
    assert done.returncode == 0, done.stderr
    rm = json.loads(done.stdout)["judges"][0]
    assert rm["name"] == "rm:default" and rm["n"] == len(held) > 40 and rm["calls"] == 2 * len(held)
    assert rm["decided"] == 1.0 and rm["agreement_ci"][0] <= rm["agreement"] <= rm["agreement_ci"][1]


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    path = _small_file(tmp_path)
    bad = curate("judge-eval", str(path), "--judge", "gpt9")
    assert bad.returncode == 2 and "not a judge spec" in bad.stderr and "Traceback" not in bad.stderr
    bad_map = curate("judge-eval", str(path), "--label-map", "{0: a}")
    assert bad_map.returncode == 2 and "--label-map: not valid JSON" in bad_map.stderr
    conv = write_jsonl(tmp_path / "conv.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    wrong = curate("judge-eval", str(conv))
    assert wrong.returncode == 3 and "judge-eval needs labelled pairs" in wrong.stderr


# -- the degeneracy guard -------------------------------------------------------------------------------------
def preference(n: int) -> pl.LazyFrame:
    rows = {
        "prompt": [[{"role": "user", "content": f"question {i}"}] for i in range(n)],
        "chosen": [[{"role": "assistant", "content": f"a good long answer {i}"}] for i in range(n)],
        "rejected": [[{"role": "assistant", "content": f"bad {i}"}] for i in range(n)],
    }
    schema = {"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES}
    return conform(pl.DataFrame(rows, schema=schema).lazy(), "preference")


def always(text: str) -> FakeLLM:
    return FakeLLM(CHATML, chat_fn=lambda conv, sampling, k: text)


def test_guard_stops_a_judge_that_always_says_a_and_decides_the_same_from_cache() -> None:
    ctx = Context.ephemeral()
    llm = always("Reason: fine.\nVerdict: A")
    ctx.models.register("judge", llm)
    stage = Judge(mode="pairwise", rating_from="text", batch_size=8)
    with pytest.raises(DegenerateJudgeError, match=r"first \(A\) position won 48 of 48 decided verdicts"):
        stage(preference(100), ctx)
    assert len(llm.calls) == 3  # 3 batches of 8 rows (24 pairs), not 100 rows
    with pytest.raises(DegenerateJudgeError):  # cached verdicts decide the same, without a model call
        stage(preference(100), ctx)
    assert len(llm.calls) == 3
    out = Judge(mode="pairwise", rating_from="text", batch_size=8, allow_degenerate=True)(preference(100), ctx)
    assert out.collect()["judge_verdict"].to_list() == ["tie"] * 100
    assert len(llm.calls) == 3 + 10  # the 24 guard rows came from the cache
    notes = ctx.stats["judge"]
    assert notes["position_bias"] == 1.0 and notes["swap_consistency"] == 0.0
    assert notes["degeneracy_check"].startswith("degenerate, allowed")


def test_guard_pointwise_constant_score_and_all_ties() -> None:
    ctx = Context.ephemeral()
    ctx.models.register("judge", always("Reason: ok.\nRating: 3"))
    with pytest.raises(DegenerateJudgeError, match="the score 3 to every one of the first"):
        Judge(rating_from="text", batch_size=4)(preference(30), ctx)
    ties = Context.ephemeral()
    ties.models.register("judge", always("Reason: same.\nVerdict: tie"))
    with pytest.raises(DegenerateJudgeError, match="no verdict named a winner"):
        Judge(mode="pairwise", rating_from="text")(preference(30), ties)


def test_guard_passes_a_judge_that_reads_the_responses() -> None:
    def longer(conv, sampling, k) -> str:
        text = conv[-1]["content"]
        a = text.split("[Response A]\n")[1].split("\n[End of response A]")[0]
        b = text.split("[Response B]\n")[1].split("\n[End of response B]")[0]
        return "Verdict: " + ("A" if len(a) > len(b) else "B")

    ctx = Context.ephemeral()
    ctx.models.register("judge", FakeLLM(CHATML, chat_fn=longer))
    out = Judge(mode="pairwise", rating_from="text", batch_size=8)(preference(30), ctx).collect()
    assert out["judge_verdict"].to_list() == ["chosen"] * 30
    notes = ctx.stats["judge"]
    assert notes["position_bias"] == 0.5 and notes["swap_consistency"] == 1.0
    assert notes["degeneracy_check"] == "passed on the first 24 rows"
    assert notes["rows_computed"] == 30 and notes["rows_cached"] == 0  # the guard's rows counted once


@pytest.mark.slow
def test_guard_in_a_run_against_a_scripted_openai_server(tmp_path: Path) -> None:
    from curate.llm.serve import OpenAICompatServer

    server = OpenAICompatServer(always("Reason: the first one.\nVerdict: A")).start()
    try:
        rows = [{"prompt": f"question {i}", "chosen": f"a careful answer {i}", "rejected": f"meh {i}"}
                for i in range(30)]
        write_jsonl(tmp_path / "prefs.jsonl", rows)
        recipe = {
            "name": "guard", "input": [{"path": "prefs.jsonl"}], "output": {"dir": "out"},
            "models": {"judge": {"backend": "openai", "base_url": server.base_url, "model": "scripted"}},
            "stages": [{"judge": {"mode": "pairwise", "batch_size": 8}}],
        }
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
        stopped = curate("run", "r.yaml", cwd=tmp_path)
        assert stopped.returncode == 5, stopped.stderr
        line = stopped.stderr.strip().splitlines()[-1]
        assert "is degenerate: the first (A) position won 48 of 48 decided verdicts" in line
        assert "pairwise_rule: calibrated" in line and "allow_degenerate: true" in line
        assert server.requests == 48  # 24 pairs x 2 orders, then it stopped

        recipe["stages"] = [{"judge": {"mode": "pairwise", "batch_size": 8, "allow_degenerate": True}}]
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
        done = curate("run", "r.yaml", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert server.requests == 60  # the 24 pairs judged before came from the cache
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        notes = next(s for s in manifest["stages"] if s["name"] == "judge")["notes"]
        assert notes["position_bias"] == 1.0 and notes["swap_consistency"] == 0.0
        report = curate("report", "out", cwd=tmp_path)
        assert report.returncode == 0, report.stderr
        html = (tmp_path / "out" / "report.html").read_text()
        assert "position_bias" in html and "swap_consistency" in html
    finally:
        server.stop()
