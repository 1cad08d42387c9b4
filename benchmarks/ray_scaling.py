"""Ray executor overhead and agreement: non-LLM recipes on the local executor and on local Ray.

Scale-out: same recipe, ``--executor ray``, same output.  Input: --rows instruction rows made from
../shared/data/code_alpaca/code_alpaca_2k.json (real prompts, read in place), each copied with seeded word
edits so near duplicates exist.  Recipes:

- ``clean``: clean_sft's stages (filter -> exact_dedup -> minhash_dedup; on Ray the MinHash signatures and
  the per-band bucket verification run as Ray tasks), over --rows rows.  Runs: local, Ray with 1 worker CPU,
  Ray with 2 worker CPUs (``CURATE_RAY_NUM_CPUS``; a local Ray started by the run).
- ``embed``: embed_dedup alone (encoding on Ray actors, the FAISS range search over query chunks on Ray
  tasks against the index broadcast once), over the first --embed-rows rows.  Runs: local, Ray with 2 CPUs.

Each run is a fresh ``curate run --fresh`` process.  On a 2-core machine the point is overhead and identical
output, not speedup.

Prints one JSON line: rows, and per run rows_per_s (input rows / the run's manifest seconds, Ray start-up
included), wall_s (process, interpreter start included), per-stage seconds, the Ray task counts of the global
stages (``ray_band_tasks``, ``ray_search_chunks``), and identical (data and quarantine equal to local).

Run as: flock /tmp/curate-bench.lock .venv/bin/python benchmarks/ray_scaling.py
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "code_alpaca" / "code_alpaca_2k.json"


def make_input(path: Path, rows: int) -> None:
    base = json.loads(DATA.read_text())
    rng = random.Random(0)
    with open(path, "w") as out:
        for i in range(rows):
            item = base[i % len(base)]
            words = item["instruction"].split()
            if i >= len(base) and words:  # a copy: one or two words changed (a near duplicate, or not)
                for _ in range(rng.randint(1, 2)):
                    words[rng.randrange(len(words))] = rng.choice(["please", "kindly", "now", f"v{i}"])
            out.write(json.dumps({"instruction": " ".join(words), "input": item.get("input", ""),
                                  "output": item["output"]}) + "\n")


def outputs(run: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    data = pl.read_parquet(next((run / "data").glob("*.parquet")))
    files = sorted((run / "quarantine").glob("*.parquet"))
    quarantine = pl.concat([pl.read_parquet(p) for p in files]) if files else pl.DataFrame()
    return data, quarantine


def run_all(root: Path, name: str, recipe: Path, rows: int, runs: dict[str, tuple[str, str | None]],
            result: dict[str, object]) -> None:
    """Run ``recipe`` once per entry of ``runs`` (name -> executor, Ray CPUs); figures go to ``result``."""
    for run, (executor, cpus) in runs.items():
        env = {k: v for k, v in os.environ.items() if k not in ("CURATE_RAY_NUM_CPUS", "RAY_ADDRESS")}
        if cpus:
            env["CURATE_RAY_NUM_CPUS"] = cpus
        out = root / f"{name}-{run}"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "curate.cli", "run", str(recipe), "--out", str(out),
                               "--fresh", "--quiet", "--executor", executor], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{name} {run}: {done.stderr}")
        manifest = json.loads((out / "manifest.json").read_text())
        prefix = f"{name}_{run}"
        result[f"{prefix}_rows_per_s"] = round(rows / manifest["seconds"], 1)
        result[f"{prefix}_wall_s"] = round(wall, 2)
        result[f"{prefix}_stage_s"] = {s["label"]: s["seconds"] for s in manifest["stages"]}
        tasks = {f"{s['label']}.{key}": value for s in manifest["stages"] for key, value in s["notes"].items()
                 if key in ("ray_band_tasks", "ray_search_chunks")}
        if tasks:
            result[f"{prefix}_ray_tasks"] = tasks
    local = outputs(root / f"{name}-local")
    for run in runs:
        if run != "local":
            got = outputs(root / f"{name}-{run}")
            result[f"{name}_{run}_identical"] = got[0].equals(local[0]) and got[1].equals(local[1])
    result[f"{name}_rows_out"] = local[0].height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--embed-rows", type=int, default=5_000)
    parser.add_argument("--only", choices=["clean", "embed"], default=None, help="run one of the two recipes")
    args = parser.parse_args()

    result: dict[str, object] = {"bench": "ray_scaling", "rows": args.rows, "embed_rows": args.embed_rows}
    with tempfile.TemporaryDirectory(prefix="curate-ray-") as tmp:
        root = Path(tmp)
        make_input(root / "data.jsonl", max(args.rows, args.embed_rows))
        lines = (root / "data.jsonl").read_text().splitlines(keepends=True)
        (root / "clean.jsonl").write_text("".join(lines[: args.rows]))
        (root / "embed.jsonl").write_text("".join(lines[: args.embed_rows]))
        if args.only in (None, "clean"):
            recipe = root / "clean.yaml"
            recipe.write_text(
                "name: clean\non_error: quarantine\ninput: {path: clean.jsonl, adapter: alpaca}\nstages:\n"
                "  - filter: {min_response_chars: 2, max_response_chars: 4000, refusals: true}\n"
                "  - exact_dedup: {on: prompt}\n  - minhash_dedup: {on: prompt, threshold: 0.8, batch_size: 5000}\n"
            )
            runs = {"local": ("local", None), "ray_1": ("ray", "1"), "ray_2": ("ray", "2")}
            run_all(root, "clean", recipe, args.rows, runs, result)
        if args.only in (None, "embed"):
            recipe = root / "embed.yaml"
            recipe.write_text(
                "name: embed\non_error: quarantine\ninput: {path: embed.jsonl, adapter: alpaca}\nstages:\n"
                "  - embed_dedup: {on: prompt, threshold: 0.95}\n"
            )
            run_all(root, "embed", recipe, args.embed_rows, {"local": ("local", None), "ray_2": ("ray", "2")},
                    result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
