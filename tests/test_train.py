"""``curate train``: DPO validation training on the tiny test model (tests/tiny_llm.py), real TRL, real Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.errors import InputDataError, ModelError, RecipeError
from curate.schema import conform
from curate.train import load_train_config, parse_train_config, run_train
from curate.train.data import read_preferences

WORDS = ["apple", "river", "stone", "cloud", "green", "piano", "tiger", "lemon", "orbit", "maple"]


def _rows(n: int, offset: int = 0) -> list[dict]:
    rows = []
    for i in range(offset, offset + n):
        a, b = WORDS[i % len(WORDS)], WORDS[(i * 3 + 1) % len(WORDS)]
        rows.append({
            "prompt": [{"role": "user", "content": f"Question {i}: what do {a} and {b} have in common?"}],
            "chosen": [{"role": "assistant", "content": f"Both {a} and {b} are words. Happy to help!"}],
            "rejected": [{"role": "assistant", "content": f"No idea {i}. {b} {b} {b} {a}?"}],
            "score_chosen": 8.0,
            "score_rejected": 3.0,
        })
    return rows


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conform(pl.DataFrame(rows).lazy(), "preference").collect().write_parquet(path)
    return path


def _config(tiny: Path, out: Path, **kw) -> dict:
    return {"model": str(tiny), "output": str(out), "max_steps": 4, "batch_size": 4, "learning_rate": 1e-3,
            "max_length": 128, "eval_batch_size": 8, "logging_steps": 1, **kw}


# -- bad data: clear errors before any model loads -------------------------------------------------------------
# The model path does not exist: if the data check ran after model loading, these would be ModelErrors.

def _bad(tmp_path: Path, frame: pl.DataFrame) -> str:
    path = tmp_path / "bad.parquet"
    frame.write_parquet(path)
    config = parse_train_config({"model": str(tmp_path / "no-such-model"), "data": str(path),
                                 "output": str(tmp_path / "out"), "eval_fraction": 0.0})
    with pytest.raises(InputDataError) as info:
        run_train(config)
    return str(info.value)


def test_missing_column_is_named(tmp_path: Path) -> None:
    frame = conform(pl.DataFrame(_rows(3)).lazy(), "preference").collect().drop("rejected")
    message = _bad(tmp_path, frame)
    assert "bad.parquet" in message and "column 'rejected'" in message and "missing" in message


def test_string_prompt_with_message_responses_is_refused(tmp_path: Path) -> None:
    frame = conform(pl.DataFrame(_rows(3)).lazy(), "preference").collect()
    frame = frame.with_columns(pl.col("prompt").list.first().struct.field("content").alias("prompt"))
    message = _bad(tmp_path, frame)
    assert "column 'prompt'" in message and "never mix" in message and "bad.parquet" in message


@pytest.mark.parametrize("empty", [[], [{"role": "assistant", "content": "  "}]], ids=["no-message", "blank-text"])
def test_empty_chosen_names_file_row_column(tmp_path: Path, empty: list) -> None:
    rows = _rows(5)
    rows[3]["chosen"] = empty
    frame = conform(pl.DataFrame(rows).lazy(), "preference").collect()
    message = _bad(tmp_path, frame)
    assert "bad.parquet, row 4, column 'chosen'" in message and "empty response" in message


def test_response_must_be_assistant(tmp_path: Path) -> None:
    rows = _rows(3)
    rows[0]["rejected"] = [{"role": "user", "content": "hello"}]
    frame = conform(pl.DataFrame(rows).lazy(), "preference").collect()
    message = _bad(tmp_path, frame)
    assert "row 1, column 'rejected'" in message and "assistant" in message


def test_config_typo_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("data: x.parquet\nlearning_rte: 0.1\n")
    with pytest.raises(RecipeError, match=r"train\.learning_rte"):
        load_train_config(path)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU-only failure")
@pytest.mark.parametrize("setting", [{"precision": "bf16"}, {"device": "cuda"}])
def test_gpu_only_option_fails_clearly_on_cpu(tmp_path: Path, tiny_llm_path: Path, setting: dict) -> None:
    data = _write(tmp_path / "d.parquet", _rows(8))
    config = parse_train_config(_config(tiny_llm_path, tmp_path / "out", data=str(data), **setting))
    with pytest.raises(ModelError, match="CUDA GPU"):
        run_train(config)


# -- training ---------------------------------------------------------------------------------------------------

def test_few_steps_lower_the_loss_on_a_fixed_batch(tmp_path: Path, tiny_llm_path: Path) -> None:
    """One batch of 4 pairs, trained on and evaluated on: the DPO loss must fall below log 2."""
    from curate.train.trainer import train_one

    data = _write(tmp_path / "batch.parquet", _rows(4))
    prefs = read_preferences([data])
    config = parse_train_config(_config(tiny_llm_path, tmp_path / "out", data=str(data), max_steps=6, lora=False))
    metrics = train_one(config, prefs, prefs, tmp_path / "out")
    before, after = metrics["eval"]["before"], metrics["eval"]["after"]
    assert before["loss"] == pytest.approx(0.693147, abs=1e-4)  # policy == reference: margin 0
    assert before["reward_accuracy"] == 0.5
    assert after["loss"] < before["loss"] - 0.01
    assert after["reward_margin"] > 0
    assert metrics["train"]["loss_last"] < metrics["train"]["loss_first"]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["train"]["steps"] == 6


@pytest.mark.slow
def test_stored_reference_logps_equal_fresh_ones(tmp_path: Path, tiny_llm_path: Path) -> None:
    """The stored values equal TRL's own precompute on the same rows; a second run reuses them all."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    data = _write(tmp_path / "d" / "prefs.parquet", _rows(12))
    config = parse_train_config(_config(tiny_llm_path, tmp_path / "out", data=str(data), eval_fraction=0.0,
                                        max_steps=1))
    first = run_train(config).runs[0]
    assert first["reference"]["train"]["computed"] == 12
    stored_file = Path(first["reference"]["train"]["file"])
    assert stored_file.parent == tmp_path / "out" / "cache" / "ref_logps" and stored_file.is_file()
    assert [p.name for p in data.parent.iterdir()] == ["prefs.parquet"]
    stored = pl.read_parquet(stored_file)

    prefs = read_preferences([data])
    frame = prefs.frame.select("prompt", "chosen", "rejected", "_key")
    fresh = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_llm_path),
        args=DPOConfig(output_dir=str(tmp_path / "trl"), precompute_ref_log_probs=True, max_length=128,
                       per_device_train_batch_size=3, bf16=False, use_cpu=True, report_to=[], disable_tqdm=True),
        train_dataset=Dataset.from_dict(frame.to_dict(as_series=False)),
        processing_class=AutoTokenizer.from_pretrained(tiny_llm_path),
    ).train_dataset
    ours = dict(zip(stored["_key"], zip(stored["ref_chosen_logps"], stored["ref_rejected_logps"], strict=True),
                    strict=True))
    for key, chosen, rejected in zip(fresh["_key"], fresh["ref_chosen_logps"], fresh["ref_rejected_logps"],
                                     strict=True):
        assert ours[key][0] == pytest.approx(chosen, rel=1e-4, abs=1e-3)
        assert ours[key][1] == pytest.approx(rejected, rel=1e-4, abs=1e-3)

    (tmp_path / "out" / "metrics.json").unlink()  # else the finished run itself is reused
    second = run_train(config).runs[0]
    assert second["reference"]["train"]["computed"] == 0
    assert second["reference"]["train"]["reused"] == 12


@pytest.mark.slow
def test_reward_augmented_rows_train_and_evaluate_with_top_goal(tmp_path: Path, tiny_llm_path: Path) -> None:
    """A real run's reward_augment output trains as is; held-out twins are scored at the manifest's top goal."""
    from curate.runner import run_recipe

    rows = _rows(16)
    for i, row in enumerate(rows):
        row["score_chosen"], row["score_rejected"] = 6.0 + i % 4, 2.0
    source = _write(tmp_path / "in.parquet", rows)
    recipe = tmp_path / "ra.yaml"
    recipe.write_text(f"name: ra\ninput: {source}\nstages:\n  - reward_augment: {{low: 1, high: 10}}\n")
    run_dir = tmp_path / "run"
    run_recipe(recipe, run_dir)
    augmented = next((run_dir / "data").glob("*.parquet"))
    assert pl.read_parquet(augmented).height == 32

    config = parse_train_config(_config(tiny_llm_path, tmp_path / "out", data=str(run_dir), eval_fraction=0.25))
    metrics = run_train(config).runs[0]
    assert metrics["eval_goal_prompt"] == "Write a response that would be rated 10 on a scale of 1 to 10."
    held = metrics["rows"]["eval"]
    assert held > 0 and metrics["rows"]["train"] + 2 * held == 32  # one original-direction twin per held pair
    assert metrics["eval"]["after"]["rows"] == held


@pytest.mark.slow
def test_random_baseline_has_the_same_size(tmp_path: Path, tiny_llm_path: Path) -> None:
    curated = _write(tmp_path / "curated.parquet", _rows(10))
    pool = _write(tmp_path / "pool.parquet", _rows(30, offset=100))
    held = _write(tmp_path / "held.parquet", _rows(4, offset=500))
    config = parse_train_config(_config(tiny_llm_path, tmp_path / "out", data=str(curated), eval_data=str(held),
                                        baseline="random", pool=str(pool), max_steps=1))
    outcome = run_train(config)
    curated_run, baseline_run = outcome.runs
    assert (curated_run["run"], baseline_run["run"]) == ("curated", "baseline")
    assert baseline_run["rows"]["train"] == curated_run["rows"]["train"] == 10
    assert baseline_run["data"] == [str(pool)]
    assert json.loads(outcome.comparison.read_text())["runs"][1]["eval"]["after"]["rows"] == 4


# -- CLI --------------------------------------------------------------------------------------------------------

def test_cli_train_end_to_end(tmp_path: Path, tiny_llm_path: Path) -> None:
    data = _write(tmp_path / "d.parquet", _rows(12))
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"model: {tiny_llm_path}\ndata: d.parquet\nmax_length: 128\nlearning_rate: 0.001\n"
                   "eval_fraction: 0.25\noutput: out\n")
    result = CliRunner().invoke(app, ["train", str(cfg), "--set", "max_steps=2", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 2 and metrics["settings"]["batch_size"] == 2
    assert metrics["data"] == [str(data)]
    assert "held-out acc" in result.output


def test_cli_compare_prints_one_table(tmp_path: Path, tiny_llm_path: Path) -> None:
    curated = _write(tmp_path / "curated.parquet", _rows(12))
    flipped = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in _rows(12)]
    baseline = _write(tmp_path / "baseline.parquet", flipped)
    result = CliRunner().invoke(app, [
        "train", "--model", str(tiny_llm_path), "--compare", str(curated), str(baseline), "--max-steps", "2",
        "--lr", "0.001", "--max-length", "128", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert "curated" in result.output and "baseline" in result.output and "held-out acc" in result.output
    assert "n eval" in result.output and "curated - baseline" in result.output
    assert f"model trained: {tiny_llm_path}" in " ".join(result.output.split())
    summary = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [r["run"] for r in summary["runs"]] == ["curated", "baseline"]
    assert (tmp_path / "cmp" / "curated" / "metrics.json").is_file()
    assert (tmp_path / "cmp" / "baseline" / "metrics.json").is_file()
    # Reference log-probs go to the training output's cache, keyed by the data file's content, never beside
    # the user's files.
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == ["baseline.parquet", "curated.parquet"]
    assert len(list((tmp_path / "cmp" / "cache" / "ref_logps").glob("*.parquet"))) == 2
    # Same held-out pairs for both runs (the curated set's held-out prompts, removed from both training sets).
    assert summary["runs"][0]["eval"]["after"]["rows"] == summary["runs"][1]["eval"]["after"]["rows"]
    diff = summary["difference"]
    assert diff["n"] == summary["runs"][0]["eval"]["after"]["rows"] > 0
    assert diff["reward_accuracy"]["diff"] == pytest.approx(
        summary["runs"][0]["eval"]["after"]["reward_accuracy"] - summary["runs"][1]["eval"]["after"]["reward_accuracy"])


def test_cli_bad_data_exits_with_input_error(tmp_path: Path) -> None:
    frame = conform(pl.DataFrame(_rows(3)).lazy(), "preference").collect().drop("chosen")
    frame.write_parquet(tmp_path / "bad.parquet")
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "bad.parquet"), "--out", str(tmp_path)])
    assert result.exit_code == InputDataError.exit_code
    assert "column 'chosen'" in result.output


def test_recipe_train_section_defaults_to_the_recipe_output(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: demo\ninput: in.jsonl\noutput: {dir: out}\nstages: []\n"
                      "train: {beta: 0.2, baseline: random, pool: in.jsonl}\n")
    config = load_train_config(recipe, ["max_steps=7"])
    assert config.data == [str((tmp_path / "out").resolve())]
    assert (config.beta, config.max_steps, config.resolve(config.pool[0])) == (0.2, 7, tmp_path / "in.jsonl")
    from curate.recipe import load_recipe

    assert load_recipe(recipe).train == {"beta": 0.2, "baseline": "random", "pool": "in.jsonl"}


def test_long_prompts_are_cut_with_max_prompt_length_not_dropped(tmp_path: Path, tiny_llm_path: Path) -> None:
    from curate.train.trainer import train_one

    rows = _rows(4)
    for row in rows[:2]:
        row["prompt"][0]["content"] = "tell me more " * 60
    data = _write(tmp_path / "long.parquet", rows)
    prefs = read_preferences([data])
    dropped = train_one(parse_train_config(_config(tiny_llm_path, tmp_path / "a", max_steps=1, max_length=96)),
                        prefs, None, tmp_path / "a")
    assert dropped["rows"]["dropped_long_prompt"]["train"] == 2 and dropped["rows"]["train_used"] == 2
    cut = train_one(parse_train_config(_config(tiny_llm_path, tmp_path / "b", max_steps=1, max_length=96,
                                               max_prompt_length=48)), prefs, None, tmp_path / "b")
    assert cut["rows"]["dropped_long_prompt"]["train"] == 0 and cut["rows"]["train_used"] == 4


def test_reference_logps_stay_out_of_the_run_data_folder(tmp_path: Path, tiny_llm_path: Path) -> None:
    """Training on a run directory caches reference log-probs in RUN/cache: RUN/data keeps only the output, so
    ``curate inspect``, ``curate export`` and ``datasets.load_dataset`` still read it; a file an older curate
    left beside the data is moved into the cache and reused."""
    import datasets

    from curate.runner import run_recipe

    source = _write(tmp_path / "in.parquet", _rows(12))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\ninput: {source}\nstages:\n  - exact_dedup: {{}}\n")
    run_dir = tmp_path / "run"
    run_recipe(recipe, run_dir)
    config = parse_train_config(_config(tiny_llm_path, tmp_path / "out", data=str(run_dir), max_steps=1,
                                        eval_fraction=0.25))
    first = run_train(config).runs[0]
    assert sorted(p.name for p in (run_dir / "data").iterdir()) == ["README.md", "preference.parquet"]  # + card
    stored = Path(first["reference"]["train"]["file"])
    assert stored.parent == run_dir / "cache" / "ref_logps" and stored.is_file()

    runner = CliRunner()
    inspected = runner.invoke(app, ["inspect", str(run_dir)])
    assert inspected.exit_code == 0, inspected.output
    assert "12 rows" in inspected.output
    exported = runner.invoke(app, ["export", str(run_dir), "--format", "dpo", "--out", str(tmp_path / "dpo")])
    assert exported.exit_code == 0, exported.output
    loaded = datasets.load_dataset("parquet", data_files=str(run_dir / "data" / "*"), cache_dir=str(tmp_path / "hf"))
    assert loaded["train"].num_rows == 12

    legacy = run_dir / "data" / f"preference.ref_logps-{stored.name.removeprefix('ref_logps-')}"
    stored.rename(legacy)  # what an older curate wrote
    (tmp_path / "out" / "metrics.json").unlink()  # else the finished run itself is reused
    second = run_train(config).runs[0]
    assert second["reference"]["train"]["computed"] == 0
    assert second["reference"]["train"]["reused"] == first["rows"]["train"]
    assert not legacy.exists() and stored.is_file()


@pytest.mark.slow
def test_finished_runs_are_reused_and_a_killed_comparison_trains_only_its_last_arm(tmp_path: Path,
                                                                                   tiny_llm_path: Path) -> None:
    """Same command twice: nothing trains again.  A comparison killed during its baseline arm (the curated arm's
    metrics.json written, the baseline's not) trains only the baseline on the next run.  Loss is logged at every
    step even when logging_steps is larger than the run."""
    curated = _write(tmp_path / "curated.parquet", _rows(10))
    baseline = _write(tmp_path / "baseline.parquet", _rows(10, offset=40))
    config = parse_train_config(_config(tiny_llm_path, tmp_path / "cmp", data=str(curated), max_steps=3,
                                        logging_steps=10, eval_fraction=0.2))
    said: list[str] = []
    first = run_train(config, compare=(curated, baseline), notify=said.append)
    for metrics in first.runs:
        assert len(metrics["train"]["loss_per_step"]) == 3
        assert metrics["train"]["loss_first"] is not None and metrics["train"]["loss_last"] is not None
    stamps = {m["run"]: (tmp_path / "cmp" / m["run"] / "metrics.json").stat().st_mtime_ns for m in first.runs}

    said.clear()
    again = run_train(config, compare=(curated, baseline), notify=said.append)
    assert [m["train"] for m in again.runs] == [m["train"] for m in first.runs]
    assert sum("reusing" in line for line in said) == 2 and not any(": training on" in line for line in said)

    (tmp_path / "cmp" / "baseline" / "metrics.json").unlink()  # killed before the baseline arm finished
    said.clear()
    resumed = run_train(config, compare=(curated, baseline), notify=said.append)
    assert (tmp_path / "cmp" / "curated" / "metrics.json").stat().st_mtime_ns == stamps["curated"]
    assert any(line.startswith("  curated: finished before") for line in said)
    assert any(line.startswith("  baseline: training on") for line in said)
    assert resumed.difference is not None and resumed.difference["n"] == first.runs[0]["eval"]["after"]["rows"]

    from curate.train.run import _plan, run_key

    plan = _plan(config, (curated, baseline))[0][0]
    changed = config.model_copy(update={"beta": 0.2})
    assert run_key(config, plan, "fp32", "cpu") != run_key(changed, plan, "fp32", "cpu")  # another run
    assert run_key(config, plan, "fp32", "cpu") != run_key(config, plan, "bf16", "cuda")
    assert run_key(config, plan, "fp32", "cpu") == run_key(config.model_copy(update={"logging_steps": 1}), plan,
                                                           "fp32", "cpu")


def test_paired_difference_and_model_description(tmp_path: Path) -> None:
    from curate.train.evaluate import describe_model, paired_difference

    keys = [f"k{i}" for i in range(4)]
    pl.DataFrame({"_key": keys, "correct": [1.0, 1.0, 1.0, 0.0], "margin": [0.0] * 4}).write_parquet(tmp_path / "a")
    pl.DataFrame({"_key": keys[::-1], "correct": [0.0, 0.0, 1.0, 0.0], "margin": [0.0] * 4}).write_parquet(
        tmp_path / "b")
    diff = paired_difference(tmp_path / "a", tmp_path / "b")
    # b by key: k3 0, k2 0, k1 1, k0 0 -> d = [1, 0, 1, 0]: mean 0.5, sd 0.57735, half-width 1.96 * 0.57735 / 2
    assert diff == {"n": 4, "diff": 0.5, "ci_low": round(0.5 - 0.565803, 4), "ci_high": round(0.5 + 0.565803, 4)}
    text = describe_model(Path("/m"), "SmolLM2-135M-Instruct.Q4_1.gguf", "fp32")
    assert text.startswith("SmolLM2-135M-Instruct.Q4_1.gguf (GGUF Q4_1, de-quantized and trained in fp32")
