"""Deita scoring throughput: the ``deita_score`` stage vs raw backend calls on the same prompts (target:
a model stage must reach >= 0.9x its backend called directly).

Model: the embedded default ``gen`` (SmolLM2-135M-Instruct, transformers backend, CPU), loaded once and shared
by both paths, so the comparison is of the code around ``llm.generate`` only.  Rows: the first ``--rows``
self-instruct seed tasks (``../shared/data/self_instruct/seed_tasks.jsonl`` via :func:`curate.read`), one
(instruction, response) turn each, so two scoring prompts per row (complexity and quality).

* stage: ``DeitaScore(batch_size=--batch)`` on a fresh ``Context`` (nothing cached): prompt building, chat
  template rendering, ``generate`` with top-k logprobs, expected values, Parquet shards, collect.
* raw: the same prompts rendered beforehand (untimed), then ``llm.generate`` on the same batches with the same
  ``Sampling``, and the expected value read from the returned logprobs.

Alternating, best of ``--repeats`` after a warm-up.  One JSON line: ``stage_scores_per_s``, ``raw_scores_per_s``
(scores = prompts scored), ``ratio``, ``max_abs_diff`` between the two paths' scores, ``mean_score``.

    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/deita_score.py [--rows 24] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl

import curate
from curate import Context
from curate.models import ModelRegistry
from curate.stages.deita_score import DeitaScore, conversation_turns
from curate.synth import scoring

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "self_instruct" / "seed_tasks.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    frame = curate.read(DATA).head(args.rows).collect()
    lf = frame.lazy()
    llm = ModelRegistry().get("gen", "llm")
    stage = DeitaScore(batch_size=args.batch)

    # Raw path inputs: the stage's prompts for each batch of rows, rendered once, untimed.
    batches: list[tuple[list[str], list[str]]] = []
    for start in range(0, frame.height, args.batch):
        part = frame.slice(start, args.batch)
        convs, keys = [], []
        for row_id, messages in zip(part["id"].to_list(), part["messages"].to_list(), strict=True):
            for t, (instruction, response) in enumerate(conversation_turns(messages)):
                convs += [scoring.complexity_prompt(instruction), scoring.quality_prompt(instruction, response)]
                keys += [f"{row_id}\x1f{t}\x1fc", f"{row_id}\x1f{t}\x1fq"]  # the stage's per-call keys
        prompts = [llm.render(c, add_generation_prompt=True) + scoring.PREFILL for c in convs]
        batches.append((keys, prompts))
    n_scores = sum(len(p) for _, p in batches)

    def run_stage() -> tuple[float, pl.DataFrame]:
        ctx = Context.ephemeral(progress=False)
        ctx.models.register("gen", llm)
        t0 = time.perf_counter()
        out = stage(lf, ctx).collect()
        elapsed = time.perf_counter() - t0
        ctx.close()
        return elapsed, out

    def run_raw() -> tuple[float, list[float | None]]:
        t0 = time.perf_counter()
        scores: list[float | None] = []
        for keys, prompts in batches:
            outputs = llm.generate(prompts, stage.sampling(keys))
            scores += [scoring.expected_score(g[0].logprobs)[0] for g in outputs]
        return time.perf_counter() - t0, scores

    run_raw()  # warm-up
    best_stage = best_raw = float("inf")
    out = None
    raw_scores: list[float | None] = []
    for _ in range(args.repeats):
        t, out = run_stage()
        best_stage = min(best_stage, t)
        t, raw_scores = run_raw()
        best_raw = min(best_raw, t)
    assert out is not None
    stage_scores = [v for c, q in zip(out["deita_complexity_turns"].to_list(), out["deita_quality_turns"].to_list(),
                                      strict=True) for pair in zip(c, q, strict=True) for v in pair]
    diffs = [abs(a - b) for a, b in zip(stage_scores, raw_scores, strict=True) if a is not None and b is not None]
    mean = out["deita_score"].mean()
    print(json.dumps({
        "benchmark": "deita_score", "model": "SmolLM2-135M-Instruct (default gen)", "rows": frame.height,
        "scores": n_scores, "batch_rows": args.batch,
        "stage_scores_per_s": round(n_scores / best_stage, 2), "raw_scores_per_s": round(n_scores / best_raw, 2),
        "ratio": round(best_raw / best_stage, 3),
        "max_abs_diff": round(max(diffs), 6) if diffs else None,
        "null_scores": int(out["deita_score"].null_count()),
        "mean_score": round(float(mean), 4) if mean is not None else None,  # type: ignore[arg-type]
    }))


if __name__ == "__main__":
    main()
