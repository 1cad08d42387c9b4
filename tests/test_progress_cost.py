"""Progress inside model batches, API cost accounting and ``curate run --log-json`` (curate.progress, curate.events).

The model stages run against the project's own OpenAI-compatible server (curate.llm.serve over the tiny model)
on 127.0.0.1; ``service_seconds`` makes each request take a while, so a batch is long enough to report from
inside it.  The ``--log-json`` tests run the real command in a subprocess and parse every stdout line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate import progress
from curate.cli import app
from curate.errors import RecipeError
from curate.llm import load_llm
from curate.llm.serve import OpenAICompatServer
from curate.models import ModelRegistry
from curate.recipe import load_recipe
from curate.runner import run_recipe
from curate.summary import summarize

PRICE = {"input": 2.5, "output": 10.0}
PROMPTS = [f"Name a colour that starts with the letter {c}." for c in "abcdefgh"]


@pytest.fixture(scope="module")
def local(tiny_llm_path: Path):
    return load_llm({"backend": "transformers", "path": str(tiny_llm_path)})


@pytest.fixture()
def server(local):
    srv = OpenAICompatServer(local).start()
    yield srv
    srv.stop()


def write_recipe(tmp: Path, base_url: str, *, price: dict | None = PRICE, cache_dir: Path | None = None,
                 batch_size: int = 4, concurrency: int = 4) -> Path:
    (tmp / "data.jsonl").write_text("".join(json.dumps({"instruction": p, "output": "x"}) + "\n" for p in PROMPTS))
    spec = {"backend": "openai", "base_url": base_url, "model": "tiny", "concurrency": concurrency, "backoff": 0.01}
    if price is not None:
        spec["price_per_million"] = price
    if cache_dir is not None:
        spec["cache_dir"] = str(cache_dir)
    path = tmp / "api.yaml"
    path.write_text(
        "name: api\n"
        "input: {path: data.jsonl, adapter: alpaca}\n"
        f"models:\n  gen: {json.dumps(spec)}\n"
        f"stages:\n  - respond: {{n: 1, temperature: 0.0, max_tokens: 6, batch_size: {batch_size}}}\n"
    )
    return path


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def test_price_is_checked_with_the_recipe_and_never_changes_the_cache_key(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, "http://127.0.0.1:9", price={"input": 1.0, "outptu": 2.0})
    with pytest.raises(RecipeError, match=r"gen\.price_per_million: unknown key\(s\) outptu"):
        load_recipe(path)
    path = write_recipe(tmp_path, "http://127.0.0.1:9", price={"input": -1})
    with pytest.raises(RecipeError, match=r"gen\.price_per_million\.input: expected a number >= 0"):
        load_recipe(path)
    spec = {"backend": "openai", "base_url": "http://h", "model": "m"}
    priced = ModelRegistry({"gen": {**spec, "price_per_million": PRICE}})
    assert priced.fingerprint("gen") == ModelRegistry({"gen": spec}).fingerprint("gen")
    assert progress.parse_price("gen", {"price_per_million": {"output": 3}}) == progress.Price(0.0, 3.0)


def test_short_model_labels_never_show_a_path(tiny_llm_path: Path) -> None:
    assert progress.short_model_name({"backend": "transformers", "path": str(tiny_llm_path)}) == tiny_llm_path.name
    assert progress.short_model_name({"backend": "openai", "model": "/models/Qwen2.5-7B-Instruct"}) == \
        "Qwen2.5-7B-Instruct"
    assert progress.short_model_name({"backend": "transformers", "path": "default"}).startswith("SmolLM2-135M")
    assert progress.short_model_name({"path": "/m/model.Q4_K_M.gguf"}) == "model.Q4_K_M"


@pytest.mark.slow
def test_api_cost_per_stage_and_in_total(tmp_path: Path, server: OpenAICompatServer, local) -> None:
    shared = tmp_path / "request-cache"
    path = write_recipe(tmp_path, server.base_url, cache_dir=shared)
    events: list[dict] = []
    run_recipe(path, tmp_path / "a", on_event=events.append)
    m = manifest(tmp_path / "a")
    notes = m["stages"][1]["notes"]
    # tokens in: the prompts as the served model's template renders and tokenises them, counted by the server
    expected_in = sum(len(local.encode(local.render([{"role": "user", "content": p}]))) for p in PROMPTS)
    assert notes["model_requests"] == 8 and notes["requests_cached"] == 0
    assert notes["tokens_in"] == expected_in
    assert 8 <= notes["tokens_out"] <= 8 * 6
    cost = (notes["tokens_in"] * PRICE["input"] + notes["tokens_out"] * PRICE["output"]) / 1e6
    assert notes["cost"] == pytest.approx(cost)
    usage = m["model_usage"]
    assert usage["cost"] == pytest.approx(cost) and usage["tokens_in"] == expected_in
    assert usage["stages"]["01-respond"]["cached"] is False
    done = events[-1]
    assert done["event"] == "run_done" and done["model_usage"] == usage and done["run_id"] == m["run_id"]
    assert done["model_rows"] == {"computed": 8, "reused": 0}
    assert summarize(tmp_path / "a")["model_usage"] == usage  # curate inspect RUN --json
    html = (tmp_path / "a" / "report.html").read_text()
    assert "Requests, tokens and cost" in html and progress.format_cost(cost) in html

    # A second run directory over the same request cache: every answer comes from the cache, nothing is paid.
    before = server.requests
    again = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "b")], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert server.requests == before
    usage_b = manifest(tmp_path / "b")["model_usage"]
    assert (usage_b["model_requests"], usage_b["requests_cached"], usage_b["tokens_in"], usage_b["cost"]) == \
        (8, 8, 0, 0.0)
    assert "models:    8 requests (8 from the request cache), 0 tokens in, 0 out, cost 0" in again.output
    stage_line = next(line for line in again.output.splitlines() if "01-respond" in line)
    assert stage_line.endswith("8 requests (8 from the request cache), 0 tokens in, 0 out, cost 0"), stage_line
    # A resumed run reuses the stage: its cost is an earlier run's, and this run's total is nothing.
    run_recipe(path, tmp_path / "a")
    usage_a2 = manifest(tmp_path / "a")["model_usage"]
    assert usage_a2["stages"]["01-respond"]["cached"] is True and usage_a2["cost"] is None
    assert usage_a2["model_requests"] == 0


@pytest.mark.slow
def test_progress_inside_a_batch_with_a_short_label(tmp_path: Path, server: OpenAICompatServer) -> None:
    """One batch of 8 requests, one at a time, each held 0.2 s by the server: the progress events show requests
    done while no row of the batch is done yet, labelled with the stage, the handle and the model's name."""
    server.service_seconds = 0.2
    path = write_recipe(tmp_path, server.base_url, batch_size=8, concurrency=1)
    events: list[dict] = []
    with progress.reporting(events.append, interval=0.1):
        run_recipe(path, tmp_path / "run")
    seen = [e for e in events if e["event"] == "progress" and "rows_total" in e]  # (not between batches)
    assert seen, "no progress event during a batch of 8 slow requests"
    assert {e["label"] for e in seen} <= {"respond: gen (tiny)", "respond"}
    inside = [e for e in seen if e["rows_done"] == 0 and e.get("batch_requests_done", 0) > 0]
    assert inside, seen
    assert all(e["rows_total"] == 8 and e.get("batch_requests_total", 8) == 8 for e in seen)
    assert all(e["stage"] == "01-respond" for e in inside)


def curate(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "curate.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, **kw)


def json_lines(stdout: str) -> list[dict]:
    lines = stdout.splitlines()
    assert lines, "no output on stdout"
    parsed = [json.loads(line) for line in lines]  # every stdout line is one JSON object
    for event in parsed:
        assert {"ts", "run_id", "level", "event"} <= set(event), event
        assert event["ts"].endswith("Z") and event["ts"][10] == "T"
    assert len({e["run_id"] for e in parsed}) == 1
    return parsed


@pytest.mark.slow
def test_log_json_lines_from_a_real_run(tmp_path: Path, server: OpenAICompatServer) -> None:
    server.service_seconds = 0.15
    server.faults.append("500")  # one retried request: its warning is a JSON line too, never plain text
    path = write_recipe(tmp_path, server.base_url, batch_size=4, concurrency=1)
    with path.open("a") as f:
        f.write("export: {format: sft, test_size: 0.25}\n")
    run = tmp_path / "run"
    proc = curate("run", str(path), "--out", str(run), "--log-json", env={"CURATE_PROGRESS_SECONDS": "0.2"})
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    events = json_lines(stdout)
    names = [e["event"] for e in events]
    assert names[0] == "run_start" and names[-1] == "run_done"
    assert "progress" in names and "export_done" in names
    warning = next(e for e in events if e["event"] == "log")
    assert warning["level"] == "warning" and "HTTP 500" in warning["message"]
    for event in events:
        if event["event"] == "progress" and "rows_total" in event:  # in batches (else: loading, writing)
            assert event["label"] in ("respond: gen (tiny)", "respond") and event["rows_total"] == 8
        elif event["event"] == "progress":
            assert set(event) == {"ts", "run_id", "level", "event", "stage", "label", "seconds"}
    done = events[-1]
    m = manifest(run)
    assert done["run_id"] == m["run_id"] == events[0]["run_id"]
    assert done["model_rows"] == {"computed": 8, "reused": 0}
    assert done["exports"][0]["format"] == "sft" and Path(done["exports"][0]["out"]).is_dir()
    assert done["card"] == str(run / "data" / "README.md") and done["report"] == str(run / "report.html")
    assert done["model_usage"]["model_requests"] == 8 and done["model_usage"]["cost"] > 0
    print("\n".join(stdout.splitlines()[:3] + stdout.splitlines()[-2:]))  # shown with pytest -s


def test_log_json_recipe_error_is_one_run_failed_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\ninput: missing.jsonl\nstages: [{nosuchstage: {}}]\n")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "bad.yaml"), "--log-json"], catch_exceptions=False)
    assert result.exit_code == 2
    events = json_lines(result.stdout)
    assert len(events) == 1
    failed = events[0]
    assert failed["event"] == "run_failed" and failed["level"] == "error" and failed["exit_code"] == 2
    assert failed["stage"] == "start" and "nosuchstage" in failed["error"]


@pytest.mark.parametrize(("signum", "code", "says"),
                         [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "interrupted")])
def test_log_json_signal_is_a_run_failed_line_with_its_exit_code(tmp_path: Path, signum: int, code: int,
                                                                   says: str) -> None:
    """The run stops itself after its read stage (CURATE_STOP_AT, SIGSTOP), is sent SIGTERM (or SIGINT, Ctrl-C)
    and continued: it cleans up, prints ``run_failed`` with exit code 143 (130) as its last stdout line and
    exits with that code."""
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"instruction": p, "output": "x"}) + "\n"
                                                 for p in PROMPTS))
    (tmp_path / "r.yaml").write_text("name: r\ninput: {path: data.jsonl, adapter: alpaca}\n"
                                     "stages:\n  - exact_dedup: {}\n")
    run = tmp_path / "run"
    proc = curate("run", str(tmp_path / "r.yaml"), "--out", str(run), "--log-json",
                  env={"CURATE_STOP_AT": "stage:00-read"})
    try:
        deadline = time.monotonic() + 120
        while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before stopping"
            time.sleep(0.05)
        proc.send_signal(signum)
        proc.send_signal(signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, stderr
    events = json_lines(stdout)
    assert events[0]["event"] == "run_start"
    last = events[-1]
    assert last["event"] == "run_failed" and last["exit_code"] == code and last["stage"] == "00-read"
    assert says in last["error"]
    assert not list(run.glob(".staging-*")) and not list(run.rglob("*.tmp-*"))


def test_transformers_rows_that_end_inside_a_micro_batch_show_before_it_returns(tmp_path: Path,
                                                                                 tiny_llm_path: Path) -> None:
    """The transformers backend generates a micro-batch in one call; rows that hit EOS are shown as done while
    the call still runs (its other rows are generating), and counted once it returns."""
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"instruction": p, "output": "x"}) + "\n"
                                                 for p in PROMPTS))
    (tmp_path / "r.yaml").write_text(
        "name: hf\ninput: {path: data.jsonl, adapter: alpaca}\n"
        f"models:\n  gen: {{backend: transformers, path: '{tiny_llm_path}', device: cpu, batch_size: 8}}\n"
        "stages:\n  - respond: {n: 1, max_tokens: 48, batch_size: 8, seed: 1}\n")
    events: list[dict] = []
    with progress.reporting(events.append, interval=0.02):
        run_recipe(tmp_path / "r.yaml", tmp_path / "run")
    inside = [e for e in events if e.get("requests_done") == 0 and e.get("batch_requests_done", 0) > 0]
    assert inside, [e for e in events if "rows_total" in e][-3:]
    assert all(e["label"] == f"respond: gen ({tiny_llm_path.name})" for e in inside)
    assert all(0 < e["batch_requests_done"] <= 8 == e["batch_requests_total"] for e in inside)
    notes = manifest(tmp_path / "run")["stages"][1]["notes"]
    assert notes["model_requests"] == 8 and notes["tokens_out"] == notes["tokens"] and "cost" not in notes


def test_log_json_run_done_of_a_refresh_names_the_previous_run(tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"instruction": p, "output": "x"}) + "\n"
                                                 for p in PROMPTS[:5]))
    (tmp_path / "r.yaml").write_text("name: r\nrefresh: true\ninput: {path: data.jsonl, adapter: alpaca}\n"
                                     "stages:\n  - exact_dedup: {}\n")
    args = ["run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "run"), "--log-json"]
    first = json_lines(CliRunner().invoke(app, args, catch_exceptions=False).stdout)[-1]
    with (tmp_path / "data.jsonl").open("a") as f:
        f.write(json.dumps({"instruction": PROMPTS[5], "output": "x"}) + "\n")
    second = json_lines(CliRunner().invoke(app, args, catch_exceptions=False).stdout)[-1]
    assert first["event"] == second["event"] == "run_done" and first["run_id"] != second["run_id"]
    assert first["refresh"] == {"previous": None}
    previous = second["refresh"]["previous"]
    assert previous["rows"] == first["rows"] == 5 and second["rows"] == 6
    assert "model_usage" not in second and second["model_rows"] == {"computed": 0, "reused": 0}
