"""Keyed MinHash clustering (``curate.dedup.minhash_keyed``) against the local ``minhash.cluster``: time, the
caller's peak memory, and whether the partitions agree.

Data: ``--rows`` synthetic MinHash signatures (num_perm 128, uniform uint32), in ``--parts`` Parquet parts
of consecutive positions.  A ``--near`` share of rows copy an earlier row with 1-24 of the 128 positions
redrawn (estimated Jaccard about 0.81-0.99), an ``--exact`` share copy one unchanged (one node); bands
and rows are ``optimal_bands(--threshold, 128)``.  The parts are written by a worker process, so the
caller never holds a signature.

The keyed run's steps go through a ``ProcessPoolExecutor`` (``--workers``) as ``run(fn, items)``, the way
a Ray driver sends them to workers: ``caller_peak_rss_mb`` is this process's peak RSS (ru_maxrss) taken
right after the keyed run, before the local comparison reads all signatures; ``worker_peak_rss_mb`` is
the largest worker's.  Then ``minhash.cluster`` runs in this process on all signatures
(``local_seconds``) and ``equal_to_local`` compares the two partitions (clusters of more than one row).

    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/minhash_keyed.py             # 200,000 rows
    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/minhash_keyed.py --rows 20000

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curate.dedup import minhash as mh
from curate.dedup.minhash_keyed import KeyedSpec, keyed_clusters

NUM_PERM = 128


@dataclass(frozen=True)
class WritePart:
    """Write part ``i`` of the synthetic signatures (rows copy only rows of their own part, so that a worker
    can write a part without the others; parts are large enough for that not to matter)."""

    directory: Path
    rows: int
    parts: int
    near: float
    exact: float
    seed: int

    def __call__(self, i: int) -> str:
        lo, hi = i * self.rows // self.parts, (i + 1) * self.rows // self.parts
        rng = np.random.default_rng([self.seed, i])
        sig = rng.integers(0, 1 << 32, size=(hi - lo, NUM_PERM), dtype=np.uint32)
        draw = rng.random(hi - lo)
        copies = np.flatnonzero(draw < self.near + self.exact)[1:]
        sources = (rng.random(len(copies)) * copies).astype(np.int64)  # an earlier row of the part
        sig[copies] = sig[sources]
        near = copies[draw[copies] < self.near]
        for row in near:
            changed = rng.choice(NUM_PERM, size=int(rng.integers(1, 25)), replace=False)
            sig[row, changed] = rng.integers(0, 1 << 32, size=len(changed), dtype=np.uint32)
        path = self.directory / f"sig-{i:04d}.parquet"
        pl.DataFrame({"_pos": np.arange(lo, hi, dtype=np.int64), "_sig": sig}).write_parquet(path)
        return str(path)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_peak_rss_mb(_: int) -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def groups(labels: np.ndarray, pos: np.ndarray) -> set[frozenset[int]]:
    frame = pl.DataFrame({"label": labels, "pos": pos}).group_by("label").agg("pos")
    frame = frame.filter(pl.col("pos").list.len() > 1)
    return {frozenset(p) for p in frame["pos"].to_list()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--near", type=float, default=0.1)
    parser.add_argument("--exact", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bands, rows = mh.optimal_bands(args.threshold, NUM_PERM)
    spec = KeyedSpec(bands=bands, rows=rows, threshold=args.threshold, partitions=args.partitions)
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.workers) as pool:

        def run(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
            return list(pool.map(fn, items))

        writer = WritePart(Path(tmp), args.rows, args.parts, args.near, args.exact, args.seed)
        parts = [Path(p) for p in run(writer, range(args.parts))]
        start_rss = peak_rss_mb()
        started = time.perf_counter()
        files, figures = keyed_clusters(parts, spec, Path(tmp) / "scratch", run)
        seconds = time.perf_counter() - started
        caller_rss = peak_rss_mb()
        workers_rss = max(run(worker_peak_rss_mb, range(4 * args.workers)))
        keyed = pl.concat([pl.read_parquet(f) for f in files])
        table = pl.concat([pl.read_parquet(p) for p in parts])
        sig = table["_sig"].to_numpy()
        started = time.perf_counter()
        labels, local_figures = mh.cluster(sig, bands=bands, rows=rows, threshold=args.threshold)
        local_seconds = time.perf_counter() - started
        equal = groups(labels, table["_pos"].to_numpy()) == groups(
            keyed["_cluster"].to_numpy(), keyed["_pos"].to_numpy()
        )
    result = {
        "rows": args.rows,
        "parts": args.parts,
        "partitions": args.partitions,
        "workers": args.workers,
        "bands": bands,
        "band_rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_s": round(args.rows / seconds),
        "caller_peak_rss_mb": round(caller_rss, 1),
        "caller_rss_before_mb": round(start_rss, 1),
        "worker_peak_rss_mb": round(workers_rss, 1),
        "local_seconds": round(local_seconds, 2),
        "equal_to_local": equal,
        **figures,
        "local_candidate_pairs": local_figures["candidate_pairs"],
    }
    print(json.dumps(result))
    sys.exit(0 if equal else 1)


if __name__ == "__main__":
    main()
