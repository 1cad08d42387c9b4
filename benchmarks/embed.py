"""Embedding layer throughput: curate's cached ``embed_texts`` against ``SentenceTransformer.encode`` called
directly on the same texts, in the same process, on the same loaded model (target: >= 0.95x).

Texts: distinct real instructions (Self-Instruct seeds and user-oriented tasks, Code Alpaca), read in place.
Timed, alternating to even out a shared CPU, best of ``--repeats``:
 (a) direct: ``model.encode(texts, batch_size=64, normalize_embeddings=True)``;
 (b) curate: ``embed_texts(encoder, texts, fresh cache dir)`` (hashing, cache lookup, encode, Parquet shard);
then ``second_run_s``: ``embed_texts`` again on the same cache dir, with the model's ``encode`` calls counted
by a wrapper around the model object (target: zero).  ``duplicate_*``: the same texts twice over in one call
(encoded once).  One JSON line.

    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/embed.py [--texts 2000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _plant import corpus_instructions

from curate.embed import DEFAULT_SPEC, EmbedStats, Encoder, embed_texts, load_encoder


class Counting:
    def __init__(self, model: Any) -> None:
        self.model, self.calls = model, 0

    def encode(self, texts: list[str], **kwargs: Any) -> Any:
        self.calls += 1
        return self.model.encode(texts, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    texts = corpus_instructions(limit_code=2017)[: args.texts]
    loaded = load_encoder(dict(DEFAULT_SPEC))
    model = Counting(loaded.model)
    encoder = Encoder(model=model, path=loaded.path, identity=loaded.identity, batch_size=64)
    model.model.encode(texts[:64], batch_size=64)  # warm-up (first-call allocations)

    direct, stage = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        model.model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        direct.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            embed_texts(encoder, texts, Path(tmp))
            stage.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        embed_texts(encoder, texts, Path(tmp))
        before = model.calls
        t0 = time.perf_counter()
        stats = EmbedStats()
        embed_texts(encoder, texts, Path(tmp), stats=stats)
        second = time.perf_counter() - t0
        second_calls = model.calls - before
        dup_stats = EmbedStats()
        t0 = time.perf_counter()
        embed_texts(encoder, texts * 2, None, stats=dup_stats)
        dup_s = time.perf_counter() - t0
    d, s = min(direct), min(stage)
    print(json.dumps({
        "texts": len(texts),
        "model": "all-MiniLM-L6-v2",
        "device": loaded.device,
        "direct_s": round(d, 3),
        "stage_s": round(s, 3),
        "direct_sentences_per_s": round(len(texts) / d, 1),
        "stage_sentences_per_s": round(len(texts) / s, 1),
        "ratio": round(d / s, 3),
        "second_run_s": round(second, 3),
        "second_run_encoder_calls": second_calls,
        "second_run_texts_encoded": stats.encoded,
        "second_run_share_of_first": round(second / s, 4),
        "duplicate_texts": dup_stats.texts,
        "duplicate_encoded": dup_stats.encoded,
        "duplicate_s": round(dup_s, 3),
    }))


if __name__ == "__main__":
    main()
