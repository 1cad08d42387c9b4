"""Incremental refresh: a grown input costs model calls for its new rows only; killed refreshes resume;
two concurrent runs on one output directory (the second gets the lock exit code)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from curate.checkpoint import file_digest
from curate.errors import LockHeldError, RecipeError
from curate.pipeline import QUARANTINE_SCHEMA
from curate.runner import run_recipe

WORDS = "river stone cloud light paper glass metal forest ocean signal amber orbit violet quartz".split()


def rows(n: int, start: int = 0) -> list[dict[str, str]]:
    rng = random.Random(start)
    return [{"instruction": f"Question {i}: " + " ".join(rng.choice(WORDS) for _ in range(8)),
             "output": f"answer {i}."} for i in range(start, start + n)]


def write(path: Path, items: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in items))


def recipe(tmp: Path, model: Path, *, refresh: bool = True, max_tokens: int = 4) -> Path:
    path = tmp / "nightly.yaml"
    path.write_text(
        "name: nightly\n"
        f"refresh: {str(refresh).lower()}\n"
        "input: {path: data.jsonl, adapter: alpaca}\n"
        f"models:\n  gen: {{backend: transformers, path: '{model}', device: cpu}}\n"
        "stages:\n"
        "  - filter: {min_response_chars: 1}\n"
        "  - exact_dedup: {on: prompt}\n"
        f"  - respond: {{n: 2, temperature: 1.0, max_tokens: {max_tokens}, batch_size: 4, seed: 3}}\n"
    )
    return path


def curate(*args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CURATE_CRASH_AT"}
    if crash_at is not None:
        env["CURATE_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def respond_notes(run: Path) -> dict:
    manifest = json.loads((run / "manifest.json").read_text())
    return next(s for s in manifest["stages"] if s["name"] == "respond")["notes"]


def quarantine(run: Path) -> pl.DataFrame:
    files = sorted((run / "quarantine").glob("*.parquet"))
    return pl.concat([pl.read_parquet(p) for p in files]) if files else pl.DataFrame(schema=QUARANTINE_SCHEMA)


def test_refresh_calls_the_model_for_new_rows_only(tiny_llm_path: Path, tmp_path: Path) -> None:
    base = rows(40)
    write(tmp_path / "data.jsonl", base)
    path = recipe(tmp_path, tiny_llm_path)
    run = tmp_path / "run"
    first = run_recipe(path, run)
    first_manifest = run / "manifest.json"
    first_digest = file_digest(first_manifest)
    notes = respond_notes(run)
    assert notes["model_rows_computed"] == 40 and notes["model_rows_reused"] == 0
    before = pl.read_parquet(first.output)

    # Nightly: 4 new rows, two of them in the middle of the file (a grown input shifts every batch).
    new = rows(4, start=1000)
    write(tmp_path / "data.jsonl", base[:10] + new[:2] + base[10:] + new[2:])
    second = run_recipe(path, run)
    notes = respond_notes(run)
    assert notes["model_rows_computed"] == 4 and notes["model_rows_reused"] == 40
    # Counted inside the stage's model call: 2 sampled responses for each of the 4 new prompts, no more.
    assert 0 < notes["responses"] <= 8 and notes["tokens"] > 0
    assert notes["batches_computed"] == 1  # the 4 new rows, one model batch

    after = pl.read_parquet(second.output)
    assert after.height + quarantine(run).filter(pl.col("stage").str.ends_with("respond")).height == 44
    # Old rows are the first run's rows, sampled responses included (nothing regenerated at temperature 1).
    kept = after.join(before.select("parent_id"), on="parent_id", how="semi")
    assert kept.sort("parent_id").equals(before.sort("parent_id"))

    manifest = json.loads((run / "manifest.json").read_text())
    previous = manifest["refresh"]["previous"]
    assert previous["manifest_xxh3"] == first_digest and previous["rows"] == first.rows
    assert previous["input_rows"] == 40 and manifest["refresh"]["input_rows"] == 44
    assert manifest["model_rows"] == {"computed": 4, "reused": 40}
    assert manifest["executor"] == {"name": "local"}
    # Stage outputs of the old input are pruned; the content-keyed shards stay for the next refresh.
    live = {s["cache_dir"] for s in manifest["stages"]}
    assert {p.name for p in (run / "cache" / "stages").iterdir()} == live

    with pytest.raises(RecipeError, match="drop --fresh"):
        run_recipe(path, run, resume=False)


def test_without_refresh_a_grown_input_still_reuses_rows(tiny_llm_path: Path, tmp_path: Path) -> None:
    """Per-row reuse is how model stages cache, refresh or not; refresh adds the record and the pruning."""
    write(tmp_path / "data.jsonl", rows(12))
    path = recipe(tmp_path, tiny_llm_path, refresh=False)
    run_recipe(path, tmp_path / "run")
    write(tmp_path / "data.jsonl", rows(3, start=500) + rows(12))
    run_recipe(path, tmp_path / "run")
    notes = respond_notes(tmp_path / "run")
    assert notes["model_rows_computed"] == 3 and notes["model_rows_reused"] == 12
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert "refresh" not in manifest
    run_recipe(path, tmp_path / "run2", incremental=True)  # --incremental on a first run: nothing to refresh
    assert json.loads((tmp_path / "run2" / "manifest.json").read_text())["refresh"]["previous"] is None


@pytest.mark.slow
def test_refresh_killed_mid_run_and_resumed_matches(tiny_llm_path: Path, tmp_path: Path) -> None:
    base = rows(24)
    write(tmp_path / "data.jsonl", base)
    path = recipe(tmp_path, tiny_llm_path, refresh=False)
    run_recipe(path, tmp_path / "a")  # in-process: two fewer interpreter + model start-ups
    shutil.copytree(tmp_path / "a", tmp_path / "b")

    write(tmp_path / "data.jsonl", rows(6, start=700) + base + rows(6, start=900))  # 12 new rows: 3 batches
    run_recipe(path, tmp_path / "a", incremental=True)
    killed = curate("run", str(path), "--out", str(tmp_path / "b"), "--quiet", "--incremental", crash_at="shard:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = curate("run", str(path), "--out", str(tmp_path / "b"), "--quiet", "--incremental", "--log-json")
    assert resumed.returncode == 0, resumed.stderr

    table = "candidates.parquet"
    assert pl.read_parquet(tmp_path / "b" / "data" / table).equals(pl.read_parquet(tmp_path / "a" / "data" / table))
    assert quarantine(tmp_path / "b").equals(quarantine(tmp_path / "a"))
    assert respond_notes(tmp_path / "a")["model_rows_computed"] == 12
    assert respond_notes(tmp_path / "b")["model_rows_computed"] == 4  # 8 finished before the kill
    done = [json.loads(line) for line in resumed.stdout.splitlines() if line.startswith("{")]
    assert done[-1]["event"] == "run_done"
    assert done[-1]["rows"] == pl.read_parquet(tmp_path / "b" / "data" / table).height
    previous = [json.loads((tmp_path / d / "manifest.json").read_text())["refresh"]["previous"] for d in "ab"]
    assert previous[0] == previous[1] and previous[0]["input_rows"] == 24


def test_two_concurrent_runs_on_one_output(tmp_path: Path) -> None:
    """Two real ``curate run`` processes on one output: the second exits 6 naming the holder.  The first
    stops itself (SIGSTOP, ``CURATE_STOP_AT``) right after its read stage, holding the lock, so the overlap is
    certain, not a race.  Killing the holder frees the lock (flock dies with the process): the next run goes
    through.  (``test_runner.test_lock_held`` checks the in-process error.)"""
    write(tmp_path / "data.jsonl", rows(5))
    (tmp_path / "ok.yaml").write_text(
        "name: ok\ninput: {path: data.jsonl, adapter: alpaca}\nstages:\n  - exact_dedup: {}\n")
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "curate.cli", "run", str(tmp_path / "ok.yaml"), "--out",
                              str(run), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "CURATE_STOP_AT": "stage:00-read"})
    try:
        deadline = time.monotonic() + 120
        # /proc/PID/stat's third field is the state: T once the process has stopped itself at the read stage
        while Path(f"/proc/{first.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
            assert first.poll() is None and time.monotonic() < deadline, "first run ended before stopping"
            time.sleep(0.05)
        assert f"pid {first.pid} " in (run / ".lock").read_text()
        second = curate("run", str(tmp_path / "ok.yaml"), "--out", str(run), "--quiet", "--log-json")
        assert first.poll() is None
    finally:
        first.kill()
        first.wait()
    assert second.returncode == LockHeldError.exit_code == 6
    assert "another curate run is writing here" in second.stderr and f"pid {first.pid}" in second.stderr
    assert not (run / "manifest.json").exists()
    third = curate("run", str(tmp_path / "ok.yaml"), "--out", str(run), "--quiet")
    assert third.returncode == 0, third.stderr
    assert json.loads((run / "manifest.json").read_text())["output"]["rows"] == 5
