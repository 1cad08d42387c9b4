"""Content-addressed embedding cache: each distinct text is encoded once per model, ever (per cache dir).

Layout: ``<cache_dir>/embeddings/<encoder fingerprint[:32]>/<shard hash>.parquet``, each shard two columns,
``h`` (xxh3-128 hex of the UTF-8 text) and ``v`` (``pl.Array(Float32 | Float16, dim)``).  Why per text and
not per (stage, batch) like :meth:`Context.map_batches`: three stages (dedup, audit, deita) and every
nightly refresh embed mostly the same texts; keyed by the text, a refresh with 1% new rows encodes 1% of
the rows, whatever batch they land in, and a stage that embeds the prompts reuses another's vectors.

Checkpointing: texts go to the encoder in small chunks of about :data:`CHUNK_TOKENS` estimated tokens, and
what has been encoded is written (by rename) every :data:`FLUSH_SECONDS`, so a killed run loses at most
about that much encoding plus the chunk in flight, whatever the machine's speed (``benchmarks/embed.py``
measures the longest unsaved stretch).  Chunk boundaries depend only on the texts, never on time: a resumed
run encodes the rest in exactly the chunks an uninterrupted run would have, so its vectors are the same.
When a call has written shards, the folder's small files are merged into one (:func:`compact`), so the
short flushes, killed runs and many small refreshes do not leave thousands of tiny Parquet files.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import xxhash

from curate import checkpoint, faults
from curate.embed.encoder import TextEncoder
from curate.schema import hash_expr

#: Estimated tokens (UTF-8 bytes / 4, at most the model's ``max_seq_length``, + 2) per encoder call on CPU:
#: about 50 typical instructions, or 4 texts at MiniLM's 256-token cap.  Measured with all-MiniLM-L6-v2 on
#: this project's 2-core machine shared with other jobs (``benchmarks/embed_checkpoint.py``, 1,200
#: instructions, load average 7): 45 instructions/s, as fast as one call for all (1.06x), and the longest
#: stretch not yet on disk 3.4 s; 16,384-text checkpoints would risk 390 s.  (At load 16, 2,048-token chunks
#: ran 23 instructions/s and left up to 7.1 s unsaved.)
CHUNK_TOKENS = 1024
#: On a GPU an encoder call of 1,024 tokens would leave it idle: the chunk is 128x larger there.
CHUNK_TOKENS_GPU = 131072
#: Seconds of encoding between two writes of the cache (``CURATE_EMBED_FLUSH_SECONDS`` overrides; 0 writes
#: after every chunk).  Lost work on a kill is at most this plus one chunk.
FLUSH_SECONDS = 2.0
#: Cache files smaller than this are merged into one when a call has written shards.
COMPACT_BYTES = 64 << 20


@dataclass
class EmbedStats:
    """What one :func:`embed_texts` call did (stages pass these to ``ctx.note``)."""

    texts: int = 0
    unique: int = 0
    cached: int = 0
    encoded: int = 0
    #: encoder calls, cache files written, and the longest stretch of encoding not yet on disk (seconds):
    #: what a kill at the worst moment would have lost
    chunks: int = 0
    shards_written: int = 0
    max_unsaved_s: float = 0.0


Compute = Callable[[Iterable[pl.DataFrame], Callable[[pl.DataFrame], pl.DataFrame]], Iterable[pl.DataFrame]]


def _in_process(chunks: Iterable[pl.DataFrame], fn: Callable[[pl.DataFrame], pl.DataFrame]) -> Iterator[pl.DataFrame]:
    for part in chunks:
        yield fn(part)


@dataclass
class _EncodeChunk:
    """``(h, text)`` -> ``(h, v)``: one chunk's encoding, as a picklable callable (it runs on Ray workers)."""

    encoder: TextEncoder
    vec_type: pl.DataType

    def __call__(self, part: pl.DataFrame) -> pl.DataFrame:
        vectors = self.encoder.encode(part.get_column("text").to_list())
        return pl.DataFrame({"h": part.get_column("h"), "v": pl.Series("v", vectors).cast(self.vec_type)})


def cache_dir_for(cache_dir: Path, encoder: TextEncoder) -> Path:
    return cache_dir / "embeddings" / encoder.fingerprint[:32]


def _store_dtype(encoder: TextEncoder) -> pl.DataType:
    return pl.Float16() if getattr(encoder, "dtype", "float32") == "float16" else pl.Float32()


def chunk_tokens_for(encoder: TextEncoder) -> int:
    """The chunk budget for this encoder's device (a GPU wants far larger calls than a CPU)."""
    return CHUNK_TOKENS_GPU if str(getattr(encoder, "device", "cpu")).startswith("cuda") else CHUNK_TOKENS


def flush_seconds() -> float:
    value = os.environ.get("CURATE_EMBED_FLUSH_SECONDS")
    return float(value) if value else FLUSH_SECONDS


def chunk_starts(texts: pl.Series, budget: int, max_tokens: int = 256) -> list[int]:
    """Where each chunk starts: greedy, a chunk takes texts while their estimated tokens fit ``budget`` (at
    least one text).  Greedy restarts the same way at any chunk start, so the chunks of what a killed run
    left are the chunks an uninterrupted run encoded there."""
    costs = (texts.str.len_bytes().cast(pl.Int64) // 4).clip(upper_bound=max_tokens) + 2
    starts, total = [0], 0
    for i, cost in enumerate(costs.to_list()):
        if total and total + cost > budget:
            starts.append(i)
            total = 0
        total += cost
    return starts


def compact(folder: Path, *, small: int = COMPACT_BYTES) -> int:
    """Merge the folder's cache files smaller than ``small`` bytes into one; returns how many were merged.

    The merged file is written (by rename) before the small ones are deleted: a kill in between leaves
    vectors twice, which readers already drop (``unique`` on the hash)."""
    files = sorted(p for p in folder.glob("*.parquet") if p.stat().st_size < small)
    if len(files) < 2:
        return 0
    name = xxhash.xxh3_128_hexdigest("\n".join(p.name for p in files).encode())
    target = folder / f"{name}.parquet"
    tmp = checkpoint.tmp_path_for(target)
    with checkpoint.writing(target, tmp):
        pl.scan_parquet(files).unique("h", keep="first", maintain_order=True).sink_parquet(tmp)
    checkpoint.commit(tmp, target)
    for path in files:
        if path != target:
            path.unlink(missing_ok=True)
    return len(files)


def embed_texts(
    encoder: TextEncoder,
    texts: pl.Series | list[str],
    cache_dir: Path | None,
    *,
    chunk_tokens: int | None = None,
    flush_every: float | None = None,
    stats: EmbedStats | None = None,
    compute: Compute | None = None,
) -> np.ndarray:
    """Vectors (``float32[len(texts), dim]``, rows in input order) of ``texts``, encoding only texts not in
    the cache; nulls embed as the empty string.  ``cache_dir=None`` encodes without caching (still once per
    distinct text).  ``compute`` is where the chunks are encoded: a stage passes ``ctx.compute_batches``, so
    under ``--executor ray`` the encoding runs on Ray actors (the encoder travels as its spec and loads once
    per actor) while the cache and the order stay on the driver; without it, chunks encode in this process.
    ``chunk_tokens`` / ``flush_every`` override :func:`chunk_tokens_for` and :func:`flush_seconds`."""
    stats = stats if stats is not None else EmbedStats()
    series = texts if isinstance(texts, pl.Series) else pl.Series("text", texts, dtype=pl.String)
    frame = pl.DataFrame({"text": series.cast(pl.String).fill_null("")}).with_columns(
        hash_expr(pl.col("text")).alias("h")
    )
    stats.texts = frame.height
    dim = encoder.dim
    if frame.height == 0:
        return np.empty((0, dim), dtype=np.float32)
    unique = frame.unique("h", keep="first", maintain_order=True)
    stats.unique = unique.height
    store = _store_dtype(encoder)
    vec_type = pl.Array(store, dim)
    folder = cache_dir_for(cache_dir, encoder) if cache_dir is not None else None

    found = pl.DataFrame(schema={"h": pl.String, "v": vec_type})
    if folder is not None and folder.is_dir() and any(folder.glob("*.parquet")):
        found = (
            pl.scan_parquet(folder / "*.parquet")
            .join(unique.lazy().select("h"), on="h", how="semi")
            .unique("h", keep="any")
            .collect()
            .cast({"v": vec_type})
        )
    stats.cached = found.height
    missing = unique.join(found.select("h"), on="h", how="anti", maintain_order="left")
    parts = [found]
    if missing.height:
        # Longest first, as SentenceTransformer.encode sorts inside a call: chunks then hold texts of similar
        # length and pad little, so chunking costs no throughput against one direct call.  Ties keep the
        # order of first appearance, so a resumed run sees the same sequence as an uninterrupted one.
        missing = missing.sort(pl.col("text").str.len_bytes(), descending=True, maintain_order=True)
        budget = chunk_tokens if chunk_tokens is not None else chunk_tokens_for(encoder)
        limit = int(getattr(getattr(encoder, "model", None), "max_seq_length", None) or 256)
        starts = [*chunk_starts(missing.get_column("text"), budget, limit), missing.height]
        chunks = (missing.slice(a, b - a) for a, b in itertools.pairwise(starts))
        every = flush_every if flush_every is not None else flush_seconds()
        run = compute if compute is not None else _in_process
        pending: list[pl.DataFrame] = []
        saved_at = time.perf_counter()

        def flush() -> None:
            nonlocal saved_at
            if folder is not None and pending:
                shard = pl.concat(pending)
                name = xxhash.xxh3_128_hexdigest("\n".join(shard.get_column("h").to_list()).encode())
                checkpoint.write_parquet_atomic(shard, folder / f"{name}.parquet")
                stats.shards_written += 1
                faults.reached("embed:flush")
            now = time.perf_counter()
            stats.max_unsaved_s = max(stats.max_unsaved_s, round(now - saved_at, 3))
            saved_at = now
            pending.clear()

        for shard in run(chunks, _EncodeChunk(encoder, vec_type)):
            stats.encoded += shard.height
            stats.chunks += 1
            parts.append(shard)
            pending.append(shard)
            if time.perf_counter() - saved_at >= every:
                flush()
        flush()
        if folder is not None and stats.shards_written:
            compact(folder)
    table = pl.concat(parts)
    ordered = frame.select("h").join(table, on="h", how="left", maintain_order="left")
    return np.ascontiguousarray(ordered.get_column("v").to_numpy(), dtype=np.float32)
