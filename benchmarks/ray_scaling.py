"""Ray executor overhead and agreement: one non-LLM recipe on the local executor and on local Ray.

DESIGN.md section 4: same recipe, ``--executor ray``, same output.  Input: --rows instruction rows made from
../shared/data/code_alpaca/code_alpaca_2k.json (real prompts, read in place), each copied with seeded word
edits so near duplicates exist.  Recipe: clean_sft's stages (filter -> exact_dedup -> minhash_dedup).
Runs, each a fresh ``curate run --fresh`` process: local, Ray with 1 worker CPU, Ray with 2 worker CPUs
(``CURATE_RAY_NUM_CPUS``; a local Ray started by the run).  On a 2-core machine the point is overhead and
identical output, not speedup.

Prints one JSON line: rows, and per run rows_per_s (input rows / the run's manifest seconds, Ray start-up
included), wall_s (process, interpreter start included), and identical (data and quarantine equal to local).

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
    return data, pl.concat([pl.read_parquet(p) for p in files])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000)
    args = parser.parse_args()

    result: dict[str, object] = {"bench": "ray_scaling", "rows": args.rows}
    with tempfile.TemporaryDirectory(prefix="curate-ray-") as tmp:
        root = Path(tmp)
        make_input(root / "data.jsonl", args.rows)
        recipe = root / "clean.yaml"
        recipe.write_text(
            "name: clean\non_error: quarantine\ninput: {path: data.jsonl, adapter: alpaca}\nstages:\n"
            "  - filter: {min_response_chars: 2, max_response_chars: 4000, refusals: true}\n"
            "  - exact_dedup: {on: prompt}\n  - minhash_dedup: {on: prompt, threshold: 0.8, batch_size: 5000}\n"
        )
        runs = {"local": ("local", None), "ray_1": ("ray", "1"), "ray_2": ("ray", "2")}
        for name, (executor, cpus) in runs.items():
            env = {k: v for k, v in os.environ.items() if k not in ("CURATE_RAY_NUM_CPUS", "RAY_ADDRESS")}
            if cpus:
                env["CURATE_RAY_NUM_CPUS"] = cpus
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "curate.cli", "run", str(recipe), "--out", str(root / name),
                                   "--fresh", "--quiet", "--executor", executor], capture_output=True, text=True,
                                  env=env)
            wall = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"{name}: {done.stderr}")
            manifest = json.loads((root / name / "manifest.json").read_text())
            result[f"{name}_rows_per_s"] = round(args.rows / manifest["seconds"], 1)
            result[f"{name}_wall_s"] = round(wall, 2)
            result[f"{name}_stage_s"] = {s["label"]: s["seconds"] for s in manifest["stages"]}
        local = outputs(root / "local")
        for name in ("ray_1", "ray_2"):
            got = outputs(root / name)
            result[f"{name}_identical"] = got[0].equals(local[0]) and got[1].equals(local[1])
        result["rows_out"] = local[0].height
    print(json.dumps(result))


if __name__ == "__main__":
    main()
