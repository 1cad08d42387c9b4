"""The embedding layer: encoder loading, the per-text cache, FAISS helpers (real all-MiniLM-L6-v2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from curate.embed import DEFAULT_SPEC, EmbedStats, Encoder, build_index, embed_texts, load_encoder, pairs_above
from curate.embed.cache import cache_dir_for
from curate.errors import ModelError, RecipeError

TEXTS = [
    "Give three tips for staying healthy.",
    "How do I reverse a list in Python?",
    "Give three tips for staying healthy.",
    "What is the capital of France?",
    "Explain how photosynthesis works.",
]


class CountingModel:
    """Wraps the real SentenceTransformer and counts its ``encode`` calls and texts (independent of curate)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.calls = 0
        self.texts = 0

    def encode(self, texts: list[str], **kwargs: Any) -> Any:
        self.calls += 1
        self.texts += len(texts)
        return self.model.encode(texts, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


@pytest.fixture(scope="module")
def loaded() -> Encoder:
    return load_encoder(dict(DEFAULT_SPEC))


@pytest.fixture
def counted(loaded: Encoder) -> tuple[Encoder, CountingModel]:
    model = CountingModel(loaded.model)
    enc = Encoder(model=model, path=loaded.path, identity=loaded.identity, batch_size=loaded.batch_size)
    return enc, model


def test_vectors_normalised_and_identical_texts_encoded_once(counted: tuple[Encoder, CountingModel]) -> None:
    enc, model = counted
    stats = EmbedStats()
    vectors = embed_texts(enc, TEXTS, None, stats=stats)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert model.texts == 4 and (stats.unique, stats.encoded) == (4, 4)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert float(vectors[0] @ vectors[3]) < 0.5


def test_second_run_encodes_nothing_and_refresh_encodes_only_new(
    counted: tuple[Encoder, CountingModel], tmp_path: Path
) -> None:
    enc, model = counted
    first = embed_texts(enc, TEXTS, tmp_path)
    calls = model.calls
    again = embed_texts(enc, list(reversed(TEXTS)), tmp_path)
    assert model.calls == calls  # zero encoder calls: every vector came from the cache
    np.testing.assert_allclose(again, first[::-1], atol=1e-6)
    stats = EmbedStats()
    embed_texts(enc, [*TEXTS, "Write a haiku about autumn leaves."], tmp_path, stats=stats)
    assert model.calls == calls + 1 and model.texts == 5 and (stats.cached, stats.encoded) == (4, 1)
    shard = next(cache_dir_for(tmp_path, enc).glob("*.parquet"))
    assert pl.read_parquet_schema(shard)["v"] == pl.Array(pl.Float32, 384)


def test_float16_storage_is_a_separate_cache(loaded: Encoder, tmp_path: Path) -> None:
    half = Encoder(model=loaded.model, path=loaded.path, identity=loaded.identity, dtype="float16")
    assert half.fingerprint != loaded.fingerprint
    vectors = embed_texts(half, TEXTS[:2], tmp_path)
    full = embed_texts(loaded, TEXTS[:2], None)
    np.testing.assert_allclose(vectors, full, atol=2e-3)
    shard = next(cache_dir_for(tmp_path, half).glob("*.parquet"))
    assert pl.read_parquet_schema(shard)["v"] == pl.Array(pl.Float16, 384)


def test_bad_model_specs(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="nowhere"):
        load_encoder({"path": str(tmp_path / "nowhere")})
    with pytest.raises(RecipeError, match="backend"):
        load_encoder({"backend": "tfidf", "path": "default"})
    with pytest.raises(RecipeError, match="unknown key"):
        load_encoder({"path": "default", "pooling": "max"})


def test_pairs_exactly_at_threshold_count() -> None:
    vectors = np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 0, 1]], dtype=np.float32)
    index = build_index(vectors)
    left, right, _ = pairs_above(index, vectors, 0.6)
    pairs = {(int(a), int(b)) for a, b in zip(left, right, strict=True) if a < b}
    assert pairs == {(0, 1)}
    assert pairs_above(index, vectors, 0.6000001)[0].tolist() == [0, 1, 2]  # only self pairs remain


def test_approximate_index_reports_recall() -> None:
    vectors = np.random.default_rng(0).standard_normal((2000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_index(vectors, exact_max=1000)
    info = index.describe()
    assert info["index"] == "hnsw" and info["recall_at_10"] > 0.9
    left, right, _ = pairs_above(index, vectors, 0.999, search="range")  # falls back to k-NN: self pairs
    assert (left == right).mean() == 1.0 and len(left) >= 1990
