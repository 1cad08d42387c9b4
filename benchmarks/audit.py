"""Contamination audit recall: planted benchmark leaks in a real instruction corpus, per method.

Corpus (read in place from ../shared/data): Self-Instruct seed + user-oriented instructions and Code Alpaca
instructions (``--clean`` rows, distinct).  References: MT-Bench questions (both turns), GSM8K test questions,
HumanEval prompts.  Planted (seeded, ``--per-kind`` items per reference set and kind):
 - verbatim: the reference text as the row's prompt;
 - edited: numbers changed and a few words swapped (``_plant.edit``);
 - paraphrase: phrase rewrites inside a request template (``_plant.paraphrase``).
The ``audit`` stage runs once (``method: both``, threshold 0.95, 13-grams, ``mode: flag``); its report holds
both scores of every candidate pair, from which each method's decision is read: ``embedding`` (cosine >=
0.95), ``ngram`` (>= 1 shared 13-gram), ``both`` (either).  Recall per kind = planted rows flagged / planted
rows; ``false_positive_rate`` = unplanted rows flagged / unplanted rows (an unplanted row that truly
overlaps a benchmark counts as a false positive here).  One JSON line.

    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/audit.py [--per-kind 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl
from _plant import DATA, corpus_instructions, edit, jsonl, paraphrase

from curate import Context
from curate.schema import conform
from curate.stages.audit import Audit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-kind", type=int, default=20)
    parser.add_argument("--clean", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    clean = corpus_instructions(limit_code=2017)[: args.clean]
    sources = {
        "mt_bench": [t[0] for t in (r["turns"] for r in jsonl(DATA / "mt_bench" / "question.jsonl"))],
        "gsm8k": [r["question"] for r in jsonl(DATA / "gsm8k" / "test.jsonl")],
        "humaneval": [r["prompt"] for r in jsonl(DATA / "humaneval" / "HumanEval.jsonl.gz")],
    }
    planted: list[tuple[str, str]] = []  # (kind, text)
    for _name, items in sources.items():
        for kind, fn in (("verbatim", lambda t, r: t), ("edited", edit), ("paraphrase", paraphrase)):
            for text in rng.sample(items, args.per_kind):
                planted.append((kind, fn(text, rng)))
    prompts = clean + [t for _, t in planted]
    kinds = ["clean"] * len(clean) + [k for k, _ in planted]
    rows = [[{"role": "user", "content": p}, {"role": "assistant", "content": "ok"}] for p in prompts]
    lf = conform(pl.DataFrame({"messages": rows, "_kind": kinds}).lazy(), "conversation")
    frame = lf.collect()
    row_ids = frame["id"].to_list()  # planted copies that equal another row share its id: count rows, not ids

    references = [
        {"path": str(DATA / "mt_bench" / "question.jsonl"), "name": "mt_bench"},
        {"path": str(DATA / "gsm8k" / "test.jsonl"), "name": "gsm8k"},
        {"path": str(DATA / "humaneval" / "HumanEval.jsonl.gz"), "name": "humaneval", "text": "prompt"},
    ]
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(cache_dir=Path(tmp))
        t0 = time.perf_counter()
        frame.lazy().pipe(Audit(references=references), ctx).collect()
        seconds = time.perf_counter() - t0
        report = pl.read_parquet(ctx.stats["audit"]["report"])
        notes = ctx.stats["audit"]

    totals = {k: kinds.count(k) for k in ("verbatim", "edited", "paraphrase", "clean")}
    result: dict[str, object] = {
        "clean_rows": totals["clean"], "planted_per_kind": totals["verbatim"],
        "reference_items": notes["reference_items"], "audit_s": round(seconds, 2), "index": notes.get("index"),
    }
    for method, column in (("embedding", "embedding_match"), ("ngram", "ngram_match"), ("both", None)):
        hit = report.filter(pl.col(column) if column else pl.col("embedding_match") | pl.col("ngram_match"))
        flagged = set(hit["id"].to_list())
        counts = {k: sum(1 for i, kind in zip(row_ids, kinds, strict=True) if kind == k and i in flagged)
                  for k in totals}
        result[method] = {
            "verbatim_recall": round(counts["verbatim"] / totals["verbatim"], 3),
            "edited_recall": round(counts["edited"] / totals["edited"], 3),
            "paraphrase_recall": round(counts["paraphrase"] / totals["paraphrase"], 3),
            "false_positive_rate": round(counts["clean"] / totals["clean"], 4),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
