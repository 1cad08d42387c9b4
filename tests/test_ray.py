"""The Ray executor gives the local executor's output: same ids, same rows, same quarantine (local Ray)."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from curate.models import ModelRegistry
from curate.pipeline import QUARANTINE_SCHEMA
from curate.runner import run_recipe

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # Ray's own

if importlib.util.find_spec("ray") is None:
    if os.environ.get("CI"):
        pytest.fail("ray is not installed: CI installs the dist extra (pip install -e '.[dist]')", pytrace=False)
    pytest.skip("ray not installed (pip install 'curate[dist]')", allow_module_level=True)

WORDS = "alpha beta gamma delta epsilon zeta river stone cloud light paper glass metal forest ocean".split()


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (2 CPUs, no dashboard); the executor reuses it and leaves it running."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def write_input(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 20)))
        if i % 9 == 8:  # a near duplicate of an earlier prompt
            words = json.loads(lines[rng.randrange(len(lines))])["instruction"].split()
            words[0] = "changed"
            prompt = " ".join(words)
        answer = "ok" if i % 13 == 12 else f"answer {i}."  # filter (min 4 chars) quarantines these
        lines.append(json.dumps({"instruction": prompt, "output": answer}))
    path.write_text("\n".join(lines) + "\n")


def outputs(run: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    data = pl.read_parquet(next((run / "data").glob("*.parquet")))
    files = sorted((run / "quarantine").glob("*.parquet"))
    quarantine = pl.concat([pl.read_parquet(p) for p in files]) if files else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    return data, quarantine


def assert_same(local: Path, distributed: Path) -> None:
    (data_l, q_l), (data_r, q_r) = outputs(local), outputs(distributed)
    assert data_r.sort("id").equals(data_l.sort("id"))
    assert data_r.equals(data_l)  # and in the same order
    assert q_r.equals(q_l)
    manifest = json.loads((distributed / "manifest.json").read_text())
    assert manifest["executor"]["name"] == "ray"
    assert [s["rows_out"] for s in manifest["stages"]] == [
        s["rows_out"] for s in json.loads((local / "manifest.json").read_text())["stages"]]


def run_both(recipe: Path, tmp_path: Path) -> None:
    """Run ``recipe`` locally into ``tmp_path/local`` and on Ray into ``tmp_path/ray``; the outputs must agree."""
    run_recipe(recipe, tmp_path / "local")
    run_recipe(recipe, tmp_path / "ray", executor="ray")
    assert_same(tmp_path / "local", tmp_path / "ray")


def test_dedup_recipe_local_and_ray_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_RAY_BLOCK_ROWS", "100")  # several blocks on this small input
    write_input(tmp_path / "data.jsonl", 600)
    lines = (tmp_path / "data.jsonl").read_text().splitlines()
    copies = [json.loads(lines[i]) for i in range(0, 600, 40)]  # exact duplicates up to case and spacing
    copies = [json.dumps({"instruction": "  " + c["instruction"].upper(), "output": "a copy"}) for c in copies]
    (tmp_path / "data.jsonl").write_text("\n".join([*lines[:300], *copies, *lines[300:]]) + "\n")
    recipe = tmp_path / "clean.yaml"
    recipe.write_text(
        "name: clean\ninput: {path: data.jsonl, adapter: alpaca}\nstages:\n"
        "  - filter: {min_response_chars: 4}\n  - exact_dedup: {on: prompt}\n"
        "  - minhash_dedup: {on: prompt, threshold: 0.7, ngram: 3, batch_size: 100}\n"
    )
    run_both(recipe, tmp_path)
    _, quarantine = outputs(tmp_path / "ray")
    assert quarantine.filter(pl.col("stage") == "03-minhash_dedup").height > 0  # the test has teeth
    assert quarantine.filter(pl.col("stage") == "01-filter").height > 0
    stages = json.loads((tmp_path / "ray" / "manifest.json").read_text())["stages"]
    assert stages[0]["notes"]["ran_on"] == "ray: one task on a worker (the whole read)"
    assert stages[1]["notes"]["ran_on"] == "ray: every block on a worker (row stage)"
    assert stages[1]["notes"]["blocks"] == 7  # 615 rows in blocks of 100 (CURATE_RAY_BLOCK_ROWS)
    exact = stages[2]["notes"]
    assert exact["ran_on"].startswith("ray: keys per block, decisions per hash partition")
    assert exact["partitions"] == 2 and exact["duplicates"] >= 15  # one partition per Ray CPU
    assert quarantine.filter(pl.col("stage") == "02-exact_dedup").height == exact["duplicates"]
    local_exact = json.loads((tmp_path / "local" / "manifest.json").read_text())["stages"][2]["notes"]
    assert {k: v for k, v in exact.items() if k not in ("ran_on", "partitions", "blocks")} == local_exact
    minhash = stages[3]["notes"]
    assert minhash["ran_on"].startswith("ray: signatures per block, band buckets")
    assert minhash["batches_computed"] == 6  # signatures: one batch per block of 100 (the last one shorter)
    local = json.loads((tmp_path / "local" / "manifest.json").read_text())["stages"][3]["notes"]
    assert (local["clusters"], local["duplicates"]) == (minhash["clusters"], minhash["duplicates"])
    assert not (tmp_path / "ray" / "cache" / "ray").exists()  # scratch blocks removed


def test_model_stage_local_and_ray_agree_and_refresh(tiny_llm_path: Path, tmp_path: Path) -> None:
    """Sampled responses (temperature 1) are identical: Ray runs the local run's batches, with their seeds."""
    write_input(tmp_path / "data.jsonl", 14)
    recipe = tmp_path / "gen.yaml"
    recipe.write_text(
        f"name: gen\ninput: {{path: data.jsonl, adapter: alpaca}}\n"
        f"models:\n  gen: {{backend: transformers, path: '{tiny_llm_path}', device: cpu}}\n"
        "stages:\n  - filter: {min_response_chars: 1}\n"
        "  - respond: {n: 2, temperature: 1.0, max_tokens: 4, batch_size: 4, seed: 5}\n"
    )
    run_both(recipe, tmp_path)
    notes = json.loads((tmp_path / "ray" / "manifest.json").read_text())["stages"][-1]["notes"]
    assert notes["ray_batches"] == 4 and notes["model_rows_computed"] == 14  # 14 rows in batches of 4, on Ray
    # the counts respond keeps inside its model calls (on Ray: in the actors) reach the manifest, as locally
    local = json.loads((tmp_path / "local" / "manifest.json").read_text())["stages"][-1]["notes"]
    assert notes["responses"] == 28 and notes["tokens"] > 0
    assert {k: v for k, v in notes.items() if k not in ("ran_on", "ray_batches")} == local

    # A refresh on Ray: the two new rows are the only model work.
    lines = (tmp_path / "data.jsonl").read_text().splitlines()
    extra = [json.dumps({"instruction": f"new question {i} about rivers", "output": "ok"}) for i in range(2)]
    (tmp_path / "data.jsonl").write_text("\n".join([extra[0], *lines, extra[1]]) + "\n")
    run_recipe(recipe, tmp_path / "ray", executor="ray", incremental=True)
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    respond = manifest["stages"][-1]["notes"]
    assert respond["model_rows_computed"] == 2 and respond["model_rows_reused"] == 14 and respond["ray_batches"] == 1
    assert manifest["refresh"]["previous"]["rows"] == outputs(tmp_path / "local")[0].height


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_unreachable_address_fails_in_seconds_with_one_line(tmp_path: Path, scheme: str) -> None:
    """Nothing listens at --address: the CLI says so in one line, with the address and what to do, instead of
    Ray retrying for minutes."""
    from curate.distributed.executor import RayUnavailableError

    write_input(tmp_path / "data.jsonl", 5)
    (tmp_path / "r.yaml").write_text(
        "name: r\ninput: {path: data.jsonl, adapter: alpaca}\nstages:\n  - filter: {min_response_chars: 1}\n")
    with socket.socket() as probe:  # a port that was free a moment ago: closed, nothing listens there
        probe.bind(("127.0.0.1", 0))
        address = f"{scheme}127.0.0.1:{probe.getsockname()[1]}"
    curate = Path(sys.executable).with_name("curate")
    t0 = time.perf_counter()
    proc = subprocess.run([str(curate), "run", str(tmp_path / "r.yaml"), "-o", str(tmp_path / "out"),
                           "--executor", "ray", "--address", address],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    elapsed = time.perf_counter() - t0
    assert proc.returncode == RayUnavailableError.exit_code != 0, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"cannot reach the Ray cluster at {address}" in errors[0], proc.stderr
    assert "ray start --head" in errors[0] and "RAY_ADDRESS" in errors[0]
    print(f"{address}: failed in {elapsed:.1f}s")  # a second or two (was over a minute before the TCP check)


def test_gpu_specs_request_gpus() -> None:
    from curate.distributed import RayExecutor
    from curate.distributed.models import ProxyRegistry
    from curate.stages import Respond

    executor = RayExecutor()
    registry = ProxyRegistry({"gen": {"backend": "transformers", "path": "x", "device": "cuda"},
                              "cpu": {"backend": "transformers", "path": "x", "device": "cpu"}})
    assert executor.resources_for(Respond(model="gen"), registry).num_gpus == 1.0
    on_cpu = executor.resources_for(Respond(model="cpu"), registry)
    assert on_cpu.num_gpus == 0.0 and on_cpu.model and on_cpu.actors == 2


def test_embedding_stages_encode_on_ray_and_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """embed_dedup and audit: new texts are encoded by Ray actors and searched on Ray tasks against the index
    broadcast once; vectors, pairs and decisions match local."""
    import curate.embed.index

    monkeypatch.setattr(curate.embed.index, "SEARCH_CHUNK", 32)  # several query chunks, both runs alike
    write_input(tmp_path / "data.jsonl", 120, seed=3)
    prompts = [json.loads(line)["instruction"] for line in (tmp_path / "data.jsonl").read_text().splitlines()]
    (tmp_path / "refs.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in prompts[:5]))
    recipe = tmp_path / "embed.yaml"
    recipe.write_text(
        "name: embed\ninput: {path: data.jsonl, adapter: alpaca}\nstages:\n"
        "  - embed_dedup: {on: prompt, threshold: 0.9}\n"
        "  - audit: {on: prompt, references: [{path: refs.jsonl, text: text}], method: embedding, mode: flag}\n"
    )
    run_both(recipe, tmp_path)
    stages = {s["name"]: s for s in json.loads((tmp_path / "ray" / "manifest.json").read_text())["stages"]}
    dedup = stages["embed_dedup"]["notes"]
    assert dedup["ran_on"].startswith("driver: one FAISS index") and dedup["ray_batches"] >= 1
    assert dedup["texts_encoded"] > 0 and stages["embed_dedup"]["quarantined"] > 0
    assert dedup["ray_search_chunks"] == 4  # 120 queries in chunks of 32
    local = {s["name"]: s["notes"] for s in json.loads((tmp_path / "local" / "manifest.json").read_text())["stages"]}
    assert local["embed_dedup"]["pairs"] == dedup["pairs"] and "ray_search_chunks" not in local["embed_dedup"]
    # the audit's references are prompts already encoded: all from the driver's vector cache, none sent to Ray
    audit = stages["audit"]["notes"]
    assert audit["texts_encoded"] == 0 and audit.get("ray_batches", 0) == 0
    assert audit["ray_search_chunks"] == -(-audit["texts_audited"] // 32) >= 2
    data, _ = outputs(tmp_path / "ray")
    assert data["contaminated"].sum() >= 4  # the referenced prompts that survived dedup are flagged


def _ray_executor():
    from curate.distributed import RayExecutor

    return RayExecutor()


def _ray_context(tmp_path: Path):
    return _ray_executor().context(cache_dir=tmp_path, models=ModelRegistry())


def test_counts_recorded_on_workers_reach_the_driver(tmp_path: Path) -> None:
    """ctx.count / ctx.note inside a batch or chunk function run on a worker land in the driver's stats, in order."""
    ctx = _ray_context(tmp_path)
    ctx.stage_label = "01-x"

    def fn(batch: pl.DataFrame) -> pl.DataFrame:
        ctx.count("rows_seen", batch.height)
        ctx.note("first_id", batch["id"][0])
        return batch.with_columns(pl.col("id").str.to_uppercase())

    batches = [pl.DataFrame({"id": [f"r{i}" for i in range(j * 3, j * 3 + 3)]}) for j in range(4)]
    out = pl.concat(list(ctx.compute_batches(iter(batches), fn)))
    assert out["id"].to_list() == [f"R{i}" for i in range(12)]

    def chunk_fn(shared: int, chunk: int) -> int:
        ctx.count("chunk_sum", chunk)
        return shared * chunk

    ident = lambda x: x  # noqa: E731
    assert list(ctx.compute_shared(10, range(1, 5), chunk_fn, pack=ident, unpack=ident, name="chunks")) == [
        10, 20, 30, 40]
    assert ctx.stats["01-x"] == {"rows_seen": 12, "first_id": "r9", "ray_batches": 4, "chunk_sum": 10,
                                 "ray_chunks": 4}


@pytest.mark.parametrize("keep", ["first", "longest", "highest:score"])
def test_exact_dedup_partitions_on_ray_give_the_local_decision(tmp_path: Path, keep: str) -> None:
    """Every keep rule: hash partitions decided by Ray tasks keep and quarantine exactly the local rows."""
    from curate import Context
    from curate.schema import conform
    from curate.stages import ExactDedup

    rng = random.Random(7)
    prompts = [rng.choice(["a b", "A  b", "c d", "e f", "E F ", "g", "h i j"]) + " " * rng.randint(1, 2)
               + rng.choice(["", "x", "y"]) for _ in range(300)]
    messages = [[{"role": "user", "content": p}, {"role": "assistant", "content": "r" * rng.randint(1, 9) + str(i)}]
                for i, p in enumerate(prompts)]
    lf = conform(pl.DataFrame({"messages": messages, "score": [rng.random() for _ in prompts]}).lazy(),
                 "conversation")
    stage = ExactDedup(on="prompt", keep=keep)
    local_ctx = Context.ephemeral()
    local = stage(lf, local_ctx).collect()
    # The data plane: blocks of 40 rows of a Parquet file, keys hash-partitioned, one Ray task per partition.
    from curate.distributed.plane import Plane

    source = tmp_path / "in" / "data.parquet"
    source.parent.mkdir()
    lf.collect().write_parquet(source)
    executor = _ray_executor()
    ray_ctx = executor.context(cache_dir=tmp_path / "cache", models=ModelRegistry(), stage_label="exact_dedup")
    plane = Plane(executor.run_tasks, cpus=executor.cpus, rows_per_block=40)
    plane.run_stage(stage, source, tmp_path / "out", ray_ctx, "conversation")
    ray = pl.read_parquet(tmp_path / "out" / "data.parquet")
    assert ray.equals(local) and local.height == 15  # 5 texts x 3 suffixes
    quarantine = pl.read_parquet(tmp_path / "out" / "quarantine.parquet")
    assert quarantine.drop("row").equals(local_ctx.quarantine_frame(row="json").drop("row"))
    notes = ray_ctx.stats["exact_dedup"]
    assert notes["partitions"] == 2 and notes["blocks"] == 8
    assert notes["duplicates"] == local_ctx.stats["exact_dedup"]["duplicates"] == 285
    plane.close()


@pytest.mark.parametrize(("kind", "search"), [("flat", "range"), ("flat", "knn"), ("hnsw", "knn"), ("ivf", "knn")])
def test_search_on_ray_gives_the_local_pair_arrays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, search: str
) -> None:
    """Query chunks searched by Ray tasks against the broadcast index: byte-identical (rows, cols, sims)."""
    import numpy as np

    import curate.embed.index
    from curate.embed import build_index, pairs_above

    monkeypatch.setattr(curate.embed.index, "SEARCH_CHUNK", 100)
    rng = np.random.default_rng(0)
    base = rng.normal(size=(60, 16)).astype(np.float32)
    vectors = base[rng.integers(60, size=450)] + 0.3 * rng.normal(size=(450, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_index(vectors, kind=kind, exact_max=100 if kind == "hnsw" else 100_000)
    assert index.kind == kind
    ctx = _ray_context(tmp_path)
    local = pairs_above(index, vectors, 0.8, search=search, k=8)
    ray = pairs_above(index, vectors, 0.8, search=search, k=8, compute=ctx.compute_shared)
    assert len(local[0]) > 450  # pairs beyond the self-pairs: the test has teeth
    for a, b in zip(local, ray, strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert ctx.stats[ctx.stage_label]["ray_search_chunks"] == 5  # 450 queries in chunks of 100


def test_band_tasks_on_ray_give_the_local_partition(tmp_path: Path) -> None:
    import numpy as np

    from curate.dedup import minhash

    rng = np.random.default_rng(1)
    sig = rng.integers(0, 3, size=(300, 16), dtype=np.uint32)
    sig[150:] = sig[:150]
    sig[150:, rng.integers(16, size=150)] = 7  # near copies: one position changed
    params = {"bands": 4, "rows": 4, "threshold": 0.6, "verify": True, "window": 3}
    ctx = _ray_context(tmp_path)
    local, _ = minhash.cluster(sig, **params)
    ray, _ = minhash.cluster_by_band(sig, **params, compute=ctx.compute_shared)
    assert np.array_equal(ray, local) and len(np.unique(local)) < 250
    assert ctx.stats[ctx.stage_label]["ray_band_tasks"] == 4


def test_storage_probe_names_what_a_node_cannot_see(tmp_path: Path) -> None:
    """The data plane needs the run directory on every node: the per-node probe says why a node cannot use it."""
    from curate.distributed.executor import _sees_file

    probe = tmp_path / ".probe"
    assert _sees_file(str(probe)).startswith("FileNotFoundError")
    probe.write_text("curate")
    assert _sees_file(str(probe)) == ""
    executor = _ray_executor()
    executor.check_shared_storage(tmp_path / "cache")  # one machine: every node sees it
    assert executor._storage_checked and not list((tmp_path / "cache").iterdir())  # the probe file is gone


def test_killed_ray_run_resumes_from_its_blocks(tmp_path: Path) -> None:
    """The driver killed (SIGKILL) after a data-plane stage wrote every block: the same command again finds the
    blocks' files (a block with its stats file is not redone) and gives the uninterrupted output."""
    write_input(tmp_path / "data.jsonl", 400)
    recipe = tmp_path / "clean.yaml"
    recipe.write_text(
        "name: clean\ninput: {path: data.jsonl, adapter: alpaca}\nstages:\n"
        "  - filter: {min_response_chars: 4}\n  - exact_dedup: {on: prompt}\n"
        "  - minhash_dedup: {on: prompt, threshold: 0.7, ngram: 3, batch_size: 100}\n"
    )
    run_recipe(recipe, tmp_path / "local")
    env = {**os.environ, "CURATE_RAY_BLOCK_ROWS": "100", "CURATE_RAY_NUM_CPUS": "2", "RAY_ADDRESS": ""}
    command = [str(Path(sys.executable).parent / "curate"), "run", str(recipe), "--out", str(tmp_path / "ray"),
               "--executor", "ray"]
    killed = subprocess.run(command, env={**env, "CURATE_CRASH_AT": "plane:03-minhash_dedup"}, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode in (-9, 137), killed.stderr[-2000:]
    blocks = list((tmp_path / "ray" / "cache" / "ray").glob("03-minhash_dedup-*/parts/stats-*.json"))
    assert len(blocks) >= 3  # blocks of 100 rows
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same(tmp_path / "local", tmp_path / "ray")
