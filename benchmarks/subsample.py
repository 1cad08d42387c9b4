"""Subset quality of ``subsample``: entropy (GMM surprisal) next to kcenter and random at 5%, 10%, 25%.

Pool: real instructions read in place from ../shared/data: Code Alpaca (up to ``--code`` rows), Self-Instruct
seed + user-oriented tasks, and GSM8K train questions (up to ``--gsm8k``), distinct texts; then ``--planted``
exact duplicates (seeded copies of pool rows, each with its own id, as rows that differ only in metadata
would be).  Embedded once with the bundled MiniLM (the embedding cache is shared by every run).

Per method and fraction, one JSON line:
 - ``coverage``: mean Euclidean distance (unit vectors) from every pool row to its nearest selected row;
   lower is better (the k-center objective's average form);
 - ``coverage_max``: the largest of those distances (the k-center objective itself; lower is better);
 - ``clusters_hit``: how many of ``--clusters`` k-means clusters of the pool (faiss.Kmeans, seeded) hold a
   selected row; higher is better;
 - ``duplicates_kept``: planted copies selected together with their original (wasted budget);
 - ``seconds``: the stage's own time (embedding excluded: vectors are cached before the first timed run).

    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/subsample.py [--code 2000 --gsm8k 1500]
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

import faiss
import numpy as np
import polars as pl
from _plant import DATA, jsonl

from curate import Context
from curate.embed import DEFAULT_SPEC, embed_texts, load_encoder
from curate.schema import conform
from curate.stages.subsample import Subsample


def pool_texts(code: int, gsm8k: int) -> list[str]:
    texts = [r["instruction"] for r in json.loads((DATA / "code_alpaca" / "code_alpaca_2k.json").read_text())[:code]]
    texts += [r["instruction"] for r in jsonl(DATA / "self_instruct" / "seed_tasks.jsonl")]
    texts += [r["instruction"] for r in jsonl(DATA / "self_instruct" / "user_oriented_instructions.jsonl")]
    texts += [r["question"] for r in jsonl(DATA / "gsm8k" / "train.jsonl")[:gsm8k]]
    return list(dict.fromkeys(t.strip() for t in texts if t.strip()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=int, default=2000)
    parser.add_argument("--gsm8k", type=int, default=1500)
    parser.add_argument("--planted", type=int, default=150)
    parser.add_argument("--clusters", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fractions", default="0.05,0.1,0.25")
    parser.add_argument("--methods", default="entropy,kcenter,random")
    args = parser.parse_args()

    base = pool_texts(args.code, args.gsm8k)
    rng = random.Random(args.seed)
    originals = rng.sample(range(len(base)), args.planted)
    texts = base + [base[i] for i in originals]
    ids = [f"r{i}" for i in range(len(texts))]
    copy_of = {f"r{len(base) + j}": f"r{i}" for j, i in enumerate(originals)}
    frame = conform(
        pl.DataFrame({"id": ids, "messages": [[{"role": "user", "content": t}] for t in texts]}).lazy(),
        "conversation",
    ).collect()

    encoder = load_encoder(dict(DEFAULT_SPEC))
    with tempfile.TemporaryDirectory(prefix="curate-bench-subsample-") as tmp:
        cache = Path(tmp)
        t0 = time.perf_counter()
        vectors = embed_texts(encoder, texts, cache)
        embed_seconds = time.perf_counter() - t0
        kmeans = faiss.Kmeans(vectors.shape[1], args.clusters, niter=25, seed=args.seed, verbose=False)
        kmeans.train(vectors)
        _, assign = kmeans.index.search(vectors, 1)
        cluster = assign[:, 0]
        position = {row_id: i for i, row_id in enumerate(ids)}
        for fraction in (float(f) for f in args.fractions.split(",")):
            for method in args.methods.split(","):
                ctx = Context(cache_dir=cache, seed=args.seed)
                ctx.models.register("embed", encoder, {"path": "default"})
                t1 = time.perf_counter()
                kept = frame.lazy().pipe(Subsample(method=method, fraction=fraction), ctx).collect()["id"].to_list()
                seconds = time.perf_counter() - t1
                chosen = np.array([position[i] for i in kept], np.int64)
                index = faiss.IndexFlatL2(vectors.shape[1])
                index.add(vectors[chosen])
                dist2, _ = index.search(vectors, 1)
                nearest = np.sqrt(np.maximum(dist2[:, 0], 0.0))
                kept_set = set(kept)
                stats = ctx.stats["subsample"]
                print(json.dumps({
                    "benchmark": "subsample", "method": method, "fraction": fraction, "pool": len(texts),
                    "kept": len(kept), "coverage": round(float(nearest.mean()), 4),
                    "coverage_max": round(float(nearest.max()), 4),
                    "clusters_hit": len(np.unique(cluster[chosen])), "clusters": args.clusters,
                    "duplicates_kept": sum(1 for c, o in copy_of.items() if c in kept_set and o in kept_set),
                    "planted": args.planted, "k": stats.get("k"), "seconds": round(seconds, 3),
                    "embed_seconds": round(embed_seconds, 2),
                }), flush=True)


if __name__ == "__main__":
    main()
