"""Content-addressed embedding cache: each distinct text is encoded once per model, ever (per cache dir).

Layout: ``<cache_dir>/embeddings/<encoder fingerprint[:32]>/<shard hash>.parquet``, each shard two columns,
``h`` (xxh3-128 hex of the UTF-8 text) and ``v`` (``pl.Array(Float32 | Float16, dim)``).  Why per text and
not per (stage, batch) like :meth:`Context.map_batches`: three stages (dedup, audit, deita) and every
nightly refresh embed mostly the same texts; keyed by the text, a refresh with 1% new rows encodes 1% of
the rows, whatever batch they land in, and a stage that embeds the prompts reuses another's vectors.
Shards are written by rename after each encoded chunk, so a killed run loses at most one chunk of work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import xxhash

from curate import checkpoint
from curate.embed.encoder import TextEncoder
from curate.schema import hash_expr

#: Texts per encoder call (and per cache shard): large enough that the encoder's own batching and
#: length sorting work as in a direct ``encode`` call, small enough that a kill loses little.
ENCODE_CHUNK = 16384


@dataclass
class EmbedStats:
    """What one :func:`embed_texts` call did (stages pass these to ``ctx.note``)."""

    texts: int = 0
    unique: int = 0
    cached: int = 0
    encoded: int = 0


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


def embed_texts(
    encoder: TextEncoder,
    texts: pl.Series | list[str],
    cache_dir: Path | None,
    *,
    chunk: int = ENCODE_CHUNK,
    stats: EmbedStats | None = None,
    compute: Compute | None = None,
) -> np.ndarray:
    """Vectors (``float32[len(texts), dim]``, rows in input order) of ``texts``, encoding only texts not in
    the cache; nulls embed as the empty string.  ``cache_dir=None`` encodes without caching (still once per
    distinct text).  ``compute`` is where the chunks are encoded: a stage passes ``ctx.compute_batches``, so
    under ``--executor ray`` the encoding runs on Ray actors (the encoder travels as its spec and loads once
    per actor) while the cache and the order stay on the driver; without it, chunks encode in this process."""
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
    missing = unique.join(found.select("h"), on="h", how="anti")
    parts = [found]
    if missing.height:
        # Longest first, as SentenceTransformer.encode sorts inside a call: chunks then hold texts of similar
        # length and pad little, so chunking costs no throughput against one direct call.
        missing = missing.sort(pl.col("text").str.len_bytes(), descending=True, maintain_order=True)
        chunks = (missing.slice(start, chunk) for start in range(0, missing.height, chunk))
        run = compute if compute is not None else _in_process
        for shard in run(chunks, _EncodeChunk(encoder, vec_type)):
            stats.encoded += shard.height
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                name = xxhash.xxh3_128_hexdigest("\n".join(shard.get_column("h").to_list()).encode())
                checkpoint.write_parquet_atomic(shard, folder / f"{name}.parquet")
            parts.append(shard)
    table = pl.concat(parts)
    ordered = frame.select("h").join(table, on="h", how="left", maintain_order="left")
    return np.ascontiguousarray(ordered.get_column("v").to_numpy(), dtype=np.float32)
