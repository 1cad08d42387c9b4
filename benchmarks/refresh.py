"""Incremental refresh: a recipe with a model stage on N rows, then on the same rows plus 10% new ones.

Scheduled refresh (docs/architecture.md): only new rows cost model time.  Input: the first N prompts of
../shared/data/code_alpaca/code_alpaca_2k.json (real data, read in place); the second run's input has N/10
further prompts inserted at seeded random positions (so model batches of the old layout no longer line up),
run with ``--incremental`` into the same run directory.  Recipe: filter -> exact_dedup -> respond (the
embedded default model, SmolLM2-135M-Instruct GGUF, n=1, greedy, --max-tokens tokens) -> minhash_dedup.

Prints one JSON line: first_s, second_s (wall seconds of each ``curate run``, model load included),
new_rows, model_calls_second (rows the respond stage ran the model on in the second run; target: new_rows),
responses_second (responses generated, counted inside the stage's model call), ratio (second_s / first_s),
respond_first_s / respond_second_s (the respond stage alone, model load included: the fixed cost that keeps
ratio above new_rows / rows at small N).

Run as: flock /tmp/curate-bench.lock .venv/bin/python benchmarks/refresh.py
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "code_alpaca" / "code_alpaca_2k.json"


def run(recipe: Path, out: Path, *extra: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "curate.cli", "run", str(recipe), "--out", str(out), "--quiet",
                           *extra], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()

    items = [{"instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"]}
             for r in json.loads(DATA.read_text())]
    new_count = max(1, args.rows // 10)
    first, extra = items[: args.rows], items[args.rows : args.rows + new_count]
    second = list(first)
    rng = random.Random(0)
    for item in extra:
        second.insert(rng.randrange(len(second) + 1), item)

    with tempfile.TemporaryDirectory(prefix="curate-refresh-") as tmp:
        root = Path(tmp)
        recipe = root / "nightly.yaml"
        recipe.write_text(
            "name: nightly\nrefresh: true\non_error: quarantine\ninput: {path: data.jsonl, adapter: alpaca}\n"
            "stages:\n"
            "  - filter: {min_response_chars: 1}\n  - exact_dedup: {on: prompt}\n"
            f"  - respond: {{model: gen, n: 1, output: conversation, temperature: 0.0, max_tokens: {args.max_tokens},"
            " batch_size: 16}\n  - minhash_dedup: {on: prompt, threshold: 0.8}\n"
        )
        data = root / "data.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in first))
        first_s = run(recipe, root / "run")
        respond_first_s = stage_seconds_of(json.loads((root / "run" / "manifest.json").read_text()), "respond")
        data.write_text("".join(json.dumps(r) + "\n" for r in second))
        second_s = run(recipe, root / "run", "--incremental")
        manifest = json.loads((root / "run" / "manifest.json").read_text())
        respond = next(s for s in manifest["stages"] if s["name"] == "respond")["notes"]
        rows_in = next(s["rows_in"] for s in manifest["stages"] if s["name"] == "respond")

    print(json.dumps({
        "bench": "refresh", "rows_first": args.rows, "rows_second": len(second), "new_rows": len(extra),
        "respond_rows_second": rows_in, "first_s": round(first_s, 2), "second_s": round(second_s, 2),
        "model_calls_second": respond["model_rows_computed"], "model_rows_reused": respond["model_rows_reused"],
        "responses_second": respond.get("responses"), "ratio": round(second_s / first_s, 3),
        "respond_first_s": respond_first_s, "respond_second_s": stage_seconds_of(manifest, "respond"),
        "previous_rows": manifest["refresh"]["previous"]["rows"], "max_tokens": args.max_tokens,
    }))


def stage_seconds_of(manifest: dict, name: str) -> float:
    return next(s["seconds"] for s in manifest["stages"] if s["name"] == name)


if __name__ == "__main__":
    main()
