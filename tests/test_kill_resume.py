"""A run SIGKILLed mid-stage and resumed ends with exactly the rows of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

pytestmark = pytest.mark.slow

WORDS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu "
    "nu xi omicron pi rho sigma tau upsilon phi chi psi omega "
    "river stone cloud light paper glass metal forest ocean signal "
).split()


def write_input(path: Path, rows: int) -> None:
    rng = random.Random(3)
    lines = []
    for i in range(rows):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 30)))
        if i % 25 == 24:  # a near duplicate of an earlier prompt
            earlier = json.loads(lines[rng.randrange(len(lines))])["instruction"].split()
            earlier[rng.randrange(len(earlier))] = "changed"
            prompt = " ".join(earlier)
        lines.append(json.dumps({"instruction": prompt, "output": f"answer number {i}."}))
    path.write_text("\n".join(lines) + "\n")


def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: kill\nbatch_size: 64\ninput: {path: data.jsonl, adapter: alpaca}\nstages:\n"
        "  - filter: {min_response_chars: 1}\n  - exact_dedup: {}\n"
        "  - minhash_dedup: {threshold: 0.7, ngram: 3, batch_size: 64}\n"
    )
    return path


def curate(*args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("CURATE_CRASH_AT", None)
    if crash_at is not None:
        env["CURATE_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def quarantine(run: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in sorted((run / "quarantine").glob("*.parquet"))])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("kill")
    write_input(tmp / "data.jsonl", 6_000)
    path = recipe(tmp)
    done = curate("run", str(path), "--out", str(tmp / "ref"), "--quiet")
    assert done.returncode == 0, done.stderr
    return path, tmp / "ref"


@pytest.mark.parametrize("crash_at", ["stage:00-read", "stage:02-exact_dedup", "shard:7", "shard:60", "publish"])
def test_sigkill_then_resume_matches_uninterrupted_run(
    reference: tuple[Path, Path], tmp_path: Path, crash_at: str
) -> None:
    path, ref = reference
    run_dir = tmp_path / "killed"
    killed = curate("run", str(path), "--out", str(run_dir), "--quiet", crash_at=crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    shards_before = sum(1 for _ in (run_dir / "cache" / "shards").rglob("*.parquet"))

    resumed = curate("run", str(path), "--out", str(run_dir), "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    expected = pl.read_parquet(ref / "data" / "conversation.parquet")
    got = pl.read_parquet(run_dir / "data" / "conversation.parquet")
    assert got.equals(expected)
    assert quarantine(run_dir).equals(quarantine(ref))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    minhash = manifest["stages"][-1]
    if crash_at.startswith("shard:"):
        # finished batches were not redone
        assert shards_before == int(crash_at.split(":")[1])
        assert minhash["notes"]["batches_cached"] == shards_before
    if crash_at == "publish":
        assert all(stage["cached"] for stage in manifest["stages"])
    assert not list(run_dir.glob(".*tmp*")) and not list(run_dir.glob(".staging*"))


def test_random_moment_kill(reference: tuple[Path, Path], tmp_path: Path) -> None:
    """A plain SIGKILL from outside at an arbitrary moment, then resume (whatever moment it hit)."""
    path, ref = reference
    run_dir = tmp_path / "killed"
    victim = subprocess.Popen([sys.executable, "-m", "curate.cli", "run", str(path), "--out", str(run_dir),
                               "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    resumed = curate("run", str(path), "--out", str(run_dir), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert pl.read_parquet(run_dir / "data" / "conversation.parquet").equals(
        pl.read_parquet(ref / "data" / "conversation.parquet"))
