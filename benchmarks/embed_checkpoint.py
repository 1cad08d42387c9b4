"""Vector-cache checkpointing: how much encoding a kill can lose, and what the finer checkpoints cost.

Texts: distinct real instructions (Self-Instruct seeds and user-oriented tasks, Code Alpaca), read in place.
Timed, alternating to even out a shared CPU, best of ``--repeats``, each into a fresh cache folder:
 (a) ``coarse``: the former scheme, one encoder call and one cache write per 16,384 texts (for these texts:
     one call, one write at the end, so a kill before the end loses everything);
 (b) ``fine``: the defaults, chunks of ``CHUNK_TOKENS`` estimated tokens and a cache write every
     ``FLUSH_SECONDS`` of encoding, then the small files merged.
``lost_work_bound_s`` is the longest stretch of encoding that was not yet on disk (``EmbedStats.max_unsaved_s``,
measured): the most a SIGKILL at the worst moment throws away.  ``coarse_lost_work_at_16384_s`` is what the
former scheme risked per 16,384-text chunk at the measured rate.  One JSON line.

    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/embed_checkpoint.py [--texts 2442] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _plant import corpus_instructions

from curate.embed import DEFAULT_SPEC, EmbedStats, embed_texts, load_encoder
from curate.embed.cache import CHUNK_TOKENS, cache_dir_for, flush_seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=2442)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    texts = corpus_instructions(limit_code=2017)[: args.texts]
    encoder = load_encoder(dict(DEFAULT_SPEC))
    encoder.encode(texts[:64])  # warm-up (first-call allocations)

    coarse: list[float] = []
    fine: list[tuple[float, EmbedStats, int]] = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            embed_texts(encoder, texts, Path(tmp), chunk_tokens=10**12, flush_every=float("inf"))
            coarse.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            stats = EmbedStats()
            t0 = time.perf_counter()
            embed_texts(encoder, texts, Path(tmp), stats=stats)
            seconds = time.perf_counter() - t0
            files = len(list(cache_dir_for(Path(tmp), encoder).glob("*.parquet")))
            fine.append((seconds, stats, files))
    c = min(coarse)
    f, stats, files = min(fine, key=lambda item: item[0])
    rate = len(texts) / c
    print(json.dumps({
        "texts": len(texts),
        "model": "all-MiniLM-L6-v2",
        "device": encoder.device,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "chunk_tokens": CHUNK_TOKENS,
        "flush_seconds": flush_seconds(),
        "coarse_s": round(c, 3),
        "fine_s": round(f, 3),
        "coarse_texts_per_s": round(rate, 1),
        "fine_texts_per_s": round(len(texts) / f, 1),
        "fine_over_coarse_throughput": round(c / f, 3),
        "fine_chunks": stats.chunks,
        "fine_cache_writes": stats.shards_written,
        "fine_files_after_compaction": files,
        "lost_work_bound_s": stats.max_unsaved_s,
        "coarse_lost_work_bound_s": round(c, 3),
        "coarse_lost_work_at_16384_s": round(16384 / rate, 1),
    }))


if __name__ == "__main__":
    main()
