"""What progress inside a batch costs: the transformers backend watched (progress events on) vs not.

While someone watches (a terminal bar or ``curate run --log-json``), the transformers backend adds a stopping
criterion that never stops (``curate.llm.hf._RowsEnded``): after every decoding step it counts the rows that
have ended, so a micro-batch shows rows done before it returns (curate.progress).  This measures that per-step
cost on the embedded SmolLM2-135M-Instruct: ``--prompts`` questions, greedy, ``--max-tokens`` tokens, through
``TransformersLLM.chat`` inside a tracked batch, with a progress listener (watched) and without (not watched;
no criterion).  Greedy decoding gives the same tokens either way (checked: ``same_output``).  Each path runs
``--repeats`` times, alternating, after a warm-up; the best time counts.  Prints one JSON line.

Run as: flock /tmp/curate-bench.lock .venv/bin/python benchmarks/progress_overhead.py
"""

from __future__ import annotations

import argparse
import json
import time

import polars as pl

QUESTIONS = [
    "What is the capital of France?", "Give me three tips for staying healthy.", "Write a haiku about autumn.",
    "Explain what a neural network is.", "How do I reverse a list in Python?", "Why is the sky blue?",
    "Name a famous painting by Leonardo da Vinci.", "What is the difference between weather and climate?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from curate import progress
    from curate.llm import Sampling, load_llm
    from curate.pipeline import _fixed_batches

    llm = load_llm({"backend": "transformers", "path": "default", "device": "cpu", "batch_size": args.prompts})
    convs = [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}] for i in range(args.prompts)]
    sampling = Sampling(temperature=0.0, max_tokens=args.max_tokens)
    frame = pl.LazyFrame({"i": list(range(args.prompts))})

    def once(watched: bool) -> tuple[float, list[str]]:
        events: list[dict] = []
        with progress.reporting(events.append if watched else None, interval=0.5):
            for _ in progress.iter_batches(frame, args.prompts, bar=False, desc="bench", cut=_fixed_batches):
                t0 = time.perf_counter()
                out = llm.chat(convs, sampling)
                seconds = time.perf_counter() - t0
        return seconds, [row[0].text for row in out]

    once(True)  # warm-up
    best = {True: float("inf"), False: float("inf")}
    texts: dict[bool, list[str]] = {}
    for _ in range(args.repeats):
        for watched in (False, True):
            seconds, texts[watched] = once(watched)
            best[watched] = min(best[watched], seconds)
    print(json.dumps({
        "benchmark": "progress_overhead", "model": "SmolLM2-135M-Instruct (GGUF, CPU)", "prompts": args.prompts,
        "max_tokens": args.max_tokens, "repeats": args.repeats, "seconds_not_watched": round(best[False], 3),
        "seconds_watched": round(best[True], 3), "ratio": round(best[True] / best[False], 3),
        "same_output": texts[True] == texts[False],
    }))


if __name__ == "__main__":
    main()
