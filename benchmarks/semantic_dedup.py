"""Semantic dedup quality: ``embed_dedup`` next to ``minhash_dedup`` on planted paraphrase duplicates.

Base: distinct real instructions (Self-Instruct seeds + user-oriented, Code Alpaca; read in place).  Planted,
seeded: for ``--planted`` sources, one copy each, a third of each kind:
 - surface: case and punctuation changed (every method should join it);
 - edited: numbers changed and a few words swapped (``_plant.edit``);
 - paraphrase: phrase rewrites inside a request template (``_plant.paraphrase``), which MinHash cannot see.
Truth: each (source, copy) pair.  Each method's clusters are read from its quarantine (a dropped row joins
the cluster of the kept row its reason names); predicted pairs are all pairs inside a cluster.
precision = |predicted & planted| / |predicted|, recall per kind = planted pairs of that kind in one cluster /
planted pairs of that kind.  Natural near-duplicates of the base (Code Alpaca has some) count against
precision, so precision here is a lower bound.  Methods: ``minhash_dedup`` (threshold 0.8, 5-grams),
``embed_dedup`` at cosine 0.95 (default) and 0.90 (the second
embed run reads the first one's cached vectors: its ``seconds`` is search and clustering only).  One JSON line.

    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/semantic_dedup.py [--base 1500 --planted 150]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl
from _plant import corpus_instructions, edit, paraphrase

from curate import Context
from curate.pipeline import Stage
from curate.schema import conform
from curate.stages.embed_dedup import EmbedDedup
from curate.stages.minhash_dedup import MinHashDedup

OF = re.compile(r" of ([0-9a-f]{32})$")


def surface(text: str, rng: random.Random) -> str:
    out = text.upper() if rng.random() < 0.5 else text.lower()
    return out.rstrip(".?!") + (" !" if rng.random() < 0.5 else " ?")


def clusters(frame: pl.DataFrame, stage: Stage, cache: Path) -> tuple[list[set[str]], float]:
    ctx = Context(cache_dir=cache)
    t0 = time.perf_counter()
    kept = frame.lazy().pipe(stage, ctx).collect()["id"].to_list()
    seconds = time.perf_counter() - t0
    groups: dict[str, set[str]] = {k: {k} for k in kept}
    q = ctx.quarantine_frame()
    for row_id, reason in zip(q["id"].to_list(), q["reason"].to_list(), strict=True):
        match = OF.search(reason)
        assert match, reason
        groups[match.group(1)].add(row_id)
    return [g for g in groups.values() if len(g) > 1], seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=int, default=1500)
    parser.add_argument("--planted", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    base = corpus_instructions(limit_code=2017)[: args.base]
    sources = rng.sample(range(len(base)), args.planted)
    kinds = ["surface", "edited", "paraphrase"]
    copies = [(i, kinds[n % 3]) for n, i in enumerate(sources)]
    fns = {"surface": surface, "edited": edit, "paraphrase": paraphrase}
    prompts = base + [fns[k](base[i], rng) for i, k in copies]
    rows = [[{"role": "user", "content": p}, {"role": "assistant", "content": "ok"}] for p in prompts]
    frame = conform(pl.DataFrame({"messages": rows}).lazy(), "conversation").collect()
    ids = frame["id"].to_list()
    truth = {frozenset((ids[i], ids[len(base) + n])): k for n, (i, k) in enumerate(copies)}

    result: dict[str, object] = {"base_rows": len(base), "planted_pairs": len(truth)}
    methods = {
        "minhash_0.8": MinHashDedup(threshold=0.8),
        "embed_0.95": EmbedDedup(threshold=0.95),
        "embed_0.90": EmbedDedup(threshold=0.90),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, stage in methods.items():
            found, seconds = clusters(frame, stage, Path(tmp))
            predicted = {frozenset(p) for g in found for p in itertools.combinations(sorted(g), 2)}
            correct = predicted & set(truth)
            entry: dict[str, object] = {
                "precision": round(len(correct) / len(predicted), 3) if predicted else None,
                "recall": round(len(correct) / len(truth), 3),
                "predicted_pairs": len(predicted),
                "seconds": round(seconds, 2),
            }
            for kind in kinds:
                total = sum(1 for k in truth.values() if k == kind)
                entry[f"{kind}_recall"] = round(sum(1 for p in correct if truth[p] == kind) / total, 3)
            result[name] = entry
    print(json.dumps(result))


if __name__ == "__main__":
    main()
