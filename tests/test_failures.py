"""Failed runs: what they publish, the exit code a scheduler sees, and what they leave behind.

- every row bad in ``on_error: quarantine`` mode: exit 3, and the ``RUN/quarantine`` the message points at
  exists, with a manifest marked failed; a previous successful run's ``data/`` stays published;
- ``--debug`` prints the traceback and keeps the error's exit code;
- the machine refusing a write (read-only filesystem, immutable folder, a file where the output folder should
  be, a full disk): exit 8 naming the path, the published output intact, no temporary files left, and
  ``curate gc`` removes the temporary files of writers that died.

The read-only and disk-full cases use real filesystems: a tmpfs mounted read-only or with a 1.5 MiB size
limit, and ``chattr +i`` on ext4 (the tests run as root, and root ignores permission bits but not these).
They skip where the machine does not allow mounting or ``chattr``.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app

runner = CliRunner()

GOOD = "".join(json.dumps({"instruction": f"question {i}?", "output": f"answer {i}."}) + "\n" for i in range(20))


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def one_line(result) -> str:
    text = result.stderr.strip()
    assert "Traceback" not in text, text
    assert len(text.splitlines()) == 1, text
    return text


def recipe(folder: Path, data: str, adapter: str, *, on_error: str = "quarantine") -> Path:
    path = folder / "r.yaml"
    path.write_text(f"name: r\non_error: {on_error}\ninput: {{path: {data}, adapter: {adapter}}}\nstages:\n"
                    "  - filter: {min_response_chars: 1}\n")
    return path


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temp_names(run: Path) -> list[str]:
    from curate.checkpoint import temp_files

    return [str(p) for p, _ in temp_files(run)]


def write_all_bad(folder: Path, kind: str) -> tuple[str, str]:
    """Two rows an adapter rejects, of each kind the issue lists; returns (file name, adapter)."""
    if kind == "sharegpt_unknown_roles":
        rows = [{"conversations": [{"from": "alien", "value": f"hi {i}"}, {"from": "robot", "value": "yo"}]}
                for i in range(2)]
        (folder / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return "bad.jsonl", "sharegpt"
    if kind == "hh_no_assistant_turn":
        rows = [{"chosen": f"\n\nHuman: hi {i}", "rejected": f"\n\nHuman: hi {i}"} for i in range(2)]
        (folder / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return "bad.jsonl", "hh_rlhf"
    if kind == "pairwise_bad_label":
        rows = [{"prompt": f"p{i}", "response_a": "a", "response_b": "b", "label": label}
                for i, label in enumerate(["c", "both"])]
        (folder / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return "bad.jsonl", "pairwise"
    if kind == "parquet_wrong_type":
        pl.DataFrame({"instruction": ["a", "b"], "output": [1, 2]}).write_parquet(folder / "bad.parquet")
        return "bad.parquet", "alpaca"
    assert kind == "parquet_struct"
    pl.DataFrame({"instruction": ["a", "b"], "output": [{"x": 1}, {"x": 2}]}).write_parquet(folder / "bad.parquet")
    return "bad.parquet", "alpaca"


BAD_KINDS = ["sharegpt_unknown_roles", "hh_no_assistant_turn", "pairwise_bad_label", "parquet_wrong_type",
             "parquet_struct"]


# -- item 2: a run where every row is bad publishes its quarantine and a failed manifest -------------------

@pytest.mark.parametrize("kind", BAD_KINDS)
def test_every_row_bad_publishes_quarantine_and_failed_manifest(tmp_path: Path, kind: str) -> None:
    data, adapter = write_all_bad(tmp_path, kind)
    run = tmp_path / "run"
    result = invoke("run", str(recipe(tmp_path, data, adapter)), "--out", str(run), "--quiet")
    assert result.exit_code == 3, result.output
    line = one_line(result)
    assert str(run / "quarantine") in line
    quarantined = pl.read_parquet(run / "quarantine" / "00-read.parquet")  # what the message points at
    assert quarantined.height == 2 and quarantined["reason"].str.contains(f"{data}, row ").all()
    assert quarantined["row"].null_count() == 0
    m = manifest(run)
    assert m["status"] == "failed" and m["error"]["exit_code"] == 3 and m["error"]["stage"] == "00-read"
    assert m["error"]["type"] == "InputDataError" and "no usable rows" in m["error"]["message"]
    assert m["quarantined"] == 2 and m["stages"][0]["quarantined"] == 2 and m["last_success"] is None
    assert "output" not in m and not (run / "data").exists()
    assert temp_names(run) == []
    # report: one clear line; gc: works on the failed manifest
    report = invoke("report", str(run))
    assert report.exit_code == 3 and "the last run failed in stage 00-read (exit 3)" in one_line(report)
    logged = invoke("run", str(recipe(tmp_path, data, adapter)), "--out", str(run), "--log-json")
    event = json.loads(logged.stdout.strip().splitlines()[-1])  # what a scheduler reading JSON lines sees
    assert event["event"] == "run_failed" and event["exit_code"] == logged.exit_code == 3
    assert invoke("gc", str(run)).exit_code == 0


def test_failed_run_keeps_the_previous_output_published(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text(GOOD)
    path = recipe(tmp_path, "in.jsonl", "alpaca")
    run = tmp_path / "run"
    assert invoke("run", str(path), "--out", str(run), "--quiet").exit_code == 0
    good = manifest(run)
    assert good["status"] == "ok"
    published = snapshot(run / "data")

    (tmp_path / "in.jsonl").write_text('{"instruction": "", "output": ""}\n{"instruction": "q", "output": ["a"]}\n')
    failed = invoke("run", str(path), "--out", str(run), "--quiet")
    assert failed.exit_code == 3
    assert snapshot(run / "data") == published  # never replaced by a failed run
    m = manifest(run)
    assert m["status"] == "failed" and m["last_success"] == good
    assert pl.read_parquet(run / "quarantine" / "00-read.parquet").height == 2
    report = invoke("report", str(run))
    assert report.exit_code == 3 and f"data/ still holds the run finished at {good['finished_at']}" in one_line(report)
    # gc keeps the stage folders of both: what data/ came from, and what the failed run finished
    assert invoke("gc", str(run)).exit_code == 0
    kept = {p.name for p in (run / "cache" / "stages").iterdir()}
    assert {s["cache_dir"] for s in good["stages"] + m["stages"]} <= kept

    # a second failure keeps the same last success; a refresh after it records that run as replaced
    assert invoke("run", str(path), "--out", str(run), "--quiet").exit_code == 3
    assert manifest(run)["last_success"] == good
    (tmp_path / "in.jsonl").write_text(GOOD + json.dumps({"instruction": "new?", "output": "new."}) + "\n")
    again = invoke("run", str(path), "--out", str(run), "--quiet", "--incremental")
    assert again.exit_code == 0, again.output
    m = manifest(run)
    assert m["status"] == "ok" and "last_success" not in m and "error" not in m
    assert m["refresh"]["previous"]["finished_at"] == good["finished_at"]
    assert m["refresh"]["previous"]["rows"] == good["output"]["rows"]
    assert not list((run / "quarantine").glob("*.parquet"))  # the success replaced the failed run's quarantine
    assert pl.read_parquet(run / "data" / "conversation.parquet").height == 21


# -- item 7: --debug shows the traceback and keeps the exit code -----------------------------------------

@pytest.mark.parametrize("case", ["recipe", "input", "environment"])
def test_debug_keeps_the_exit_code(tmp_path: Path, case: str) -> None:
    (tmp_path / "in.jsonl").write_text(GOOD)
    path, out, code = recipe(tmp_path, "in.jsonl", "alpaca"), tmp_path / "run", 0
    args: list[str] = []
    if case == "recipe":
        args, code = ["--set", "filter.no_such_parameter=1"], 2
    elif case == "input":
        (tmp_path / "in.jsonl").write_text('{"instruction": "x"\n')
        path, code = recipe(tmp_path, "in.jsonl", "alpaca", on_error="raise"), 3
    else:
        out.write_text("a file where the run directory should be")
        code = 8
    plain = invoke("run", str(path), "--out", str(out), "--quiet", *args)
    debug = invoke("run", str(path), "--out", str(out), "--quiet", "--debug", *args)
    assert plain.exit_code == debug.exit_code == code, (plain.output, debug.output)
    assert "Traceback" not in plain.stderr and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()  # the same one line, after it


# -- item 8: the machine refuses a write -------------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1.5 MiB tmpfs (``mount -o remount,ro`` makes it read-only); skips where mounting is not allowed."""
    point = tmp_path / "mnt"
    point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def big_input(path: Path, rows: int = 4000) -> None:
    rng = random.Random(7)
    path.write_text("".join(
        json.dumps({"instruction": f"q{i} {rng.randbytes(200).hex()}", "output": rng.randbytes(200).hex()}) + "\n"
        for i in range(rows)
    ))


def test_disk_full_exit_8_names_path_output_intact_no_temp_files(tmp_path: Path, tmpfs: Path) -> None:
    (tmp_path / "in.jsonl").write_text(GOOD)
    path = recipe(tmp_path, "in.jsonl", "alpaca")
    run = tmpfs / "run"
    assert invoke("run", str(path), "--out", str(run), "--quiet").exit_code == 0
    published, good = snapshot(run / "data"), manifest(run)

    big_input(tmp_path / "in.jsonl")  # about 3 MiB of rows that do not compress: the disk fills
    result = invoke("run", str(path), "--out", str(run), "--quiet")
    assert result.exit_code == 8, result.output
    line = one_line(result)
    assert "No space left on device (ENOSPC)" in line and str(run / "cache" / "stages") in line, line
    assert snapshot(run / "data") == published
    assert temp_names(run) == []  # the truncated .parquet.tmp-PID is gone
    m = manifest(run)  # cleaning up made room for the failed run's manifest
    assert m["status"] == "failed" and m["error"]["exit_code"] == 8 and m["error"]["stage"] == "00-read"
    assert m["last_success"] == good

    (tmp_path / "in.jsonl").write_text(GOOD)  # space again: the same command succeeds
    assert invoke("run", str(path), "--out", str(run), "--quiet").exit_code == 0
    rows = {k: v for k, v in published.items() if k.endswith(".parquet")}  # the card records the new run
    assert {k: v for k, v in snapshot(run / "data").items() if k.endswith(".parquet")} == rows
    assert manifest(run)["status"] == "ok"


def test_read_only_filesystem_exit_8_output_intact(tmp_path: Path, tmpfs: Path) -> None:
    (tmp_path / "in.jsonl").write_text(GOOD)
    path = recipe(tmp_path, "in.jsonl", "alpaca")
    run = tmpfs / "run"
    assert invoke("run", str(path), "--out", str(run), "--quiet").exit_code == 0
    before = snapshot(run)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    big_input(tmp_path / "in.jsonl", rows=50)
    result = invoke("run", str(path), "--out", str(run), "--quiet")
    assert result.exit_code == 8, result.output
    line = one_line(result)
    assert "Read-only file system (EROFS)" in line and str(run) in line, line
    assert snapshot(run) == before


def test_immutable_cache_folder_exit_8_names_it_in_a_later_stage(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text(GOOD)
    path = recipe(tmp_path, "in.jsonl", "alpaca")
    run = tmp_path / "run"
    assert invoke("run", str(path), "--out", str(run), "--quiet").exit_code == 0
    published, good = snapshot(run / "data"), manifest(run)
    stages = run / "cache" / "stages"
    if subprocess.run(["chattr", "+i", str(stages)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this filesystem")
    try:  # read and filter are cached; the added stage must create its folder in the immutable one
        path.write_text(path.read_text() + "  - exact_dedup: {}\n")
        result = invoke("run", str(path), "--out", str(run), "--quiet")
    finally:
        subprocess.run(["chattr", "-i", str(stages)], check=True)
    assert result.exit_code == 8, result.output
    line = one_line(result)
    assert "Operation not permitted (EPERM)" in line and str(stages) in line, line
    assert snapshot(run / "data") == published
    m = manifest(run)
    assert m["status"] == "failed" and m["error"]["exit_code"] == 8 and m["error"]["stage"] == "02-exact_dedup"
    assert [s["label"] for s in m["stages"]] == ["00-read", "01-filter"] and m["last_success"] == good
    assert temp_names(run) == []


def test_gc_removes_temp_files_of_dead_writers_only(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text(GOOD)
    run = tmp_path / "run"
    assert invoke("run", str(recipe(tmp_path, "in.jsonl", "alpaca")), "--out", str(run), "--quiet").exit_code == 0
    published = snapshot(run / "data")
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(child.stdout)  # a process that has exited: what a SIGKILLed run leaves behind
    stage = next((run / "cache" / "stages").iterdir())
    left = [stage / f".data.parquet.tmp-{dead}", run / f".staging-{dead}" / "data" / "x.parquet",
            run / "cache" / "shards" / "abc" / f".0123.parquet.tmp-{dead}"]
    for item in left:
        item.parent.mkdir(parents=True, exist_ok=True)
        item.write_bytes(b"PAR1 half a file")
    alive = stage / f".quarantine.parquet.tmp-{os.getpid()}"  # a writer still at work keeps its file
    alive.write_bytes(b"PAR1")
    # killed between publish_dir's two renames: data/ is gone, .data.old-PID is the published output
    os.replace(run / "data", run / f".data.old-{dead}")

    dry = invoke("gc", str(run), "--dry-run")
    assert dry.exit_code == 0 and all(p.exists() for p in left)
    assert f".data.parquet.tmp-{dead}" in dry.output and f".data.old-{dead}" not in dry.output
    assert invoke("gc", str(run)).exit_code == 0
    assert not any(p.exists() for p in left) and not (run / f".staging-{dead}").exists()
    assert alive.exists()
    assert snapshot(run / "data") == published  # put back, not deleted
