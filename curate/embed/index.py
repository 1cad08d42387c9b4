"""FAISS index helpers: exact below a size threshold, approximate (HNSW or IVF) above it, recall measured.

Every vector here is L2-normalised float32, so inner product is cosine similarity (``METRIC_INNER_PRODUCT``).
Why exact by default: at curate's usual sizes (up to ~10^5 rows) a flat index searches all rows against all
rows in seconds with BLAS, and exact search makes a threshold mean exactly what it says; above
``exact_max`` rows HNSW (Malkov & Yashunin 2018) keeps search sub-linear, and the recall of its top-k
against exact search on a sample is measured and reported, so an approximate result is never silent.
GPU FAISS is used when the installed faiss has GPU support and a GPU is present.

Distributed search (``--executor ray``): the index is built once on the driver, :func:`pack_index` serialises
it (``faiss.serialize_index``) into the object store once, and :func:`pairs_above` runs its query chunks as
Ray tasks through ``ctx.compute_shared``; each worker process deserialises the index once.  The chunks are
the local run's chunks and come back in order, so the pair arrays are byte-identical to a local search.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

IndexKind = Literal["auto", "flat", "hnsw", "ivf"]

#: Rows up to which ``auto`` builds an exact index.
EXACT_MAX = 100_000
#: Queries per search call: bounds the result memory of range and k-NN searches.
SEARCH_CHUNK = 4096


def _faiss() -> Any:
    """FAISS, imported on first use: ``curate stages`` and recipes without embedding stages never load it."""
    import faiss

    return faiss


def gpu_available() -> bool:
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@dataclass
class VectorIndex:
    """A FAISS index plus what a run should report about it (kind, device, measured recall)."""

    index: Any
    kind: str
    gpu: bool = False
    recall: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def exact(self) -> bool:
        return self.kind == "flat"

    def add(self, vectors: np.ndarray) -> None:
        if len(vectors):
            self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (similarities, ids) per query; ids of -1 (with similarity -inf) where fewer exist."""
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        if self.ntotal == 0 or len(queries) == 0:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        sims, ids = [], []
        for start in range(0, len(queries), SEARCH_CHUNK):
            s, i = self.index.search(np.ascontiguousarray(queries[start : start + SEARCH_CHUNK], np.float32), k)
            sims.append(s)
            ids.append(i)
        s, i = np.concatenate(sims), np.concatenate(ids)
        s[i < 0] = -np.inf
        return s, i

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.kind, "gpu": self.gpu, "vectors": self.ntotal, **self.info}
        if self.recall is not None:
            out["recall_at_10"] = round(self.recall, 4)
        return out


def _to_gpu(index: Any) -> tuple[Any, bool]:
    faiss = _faiss()
    if not gpu_available():
        return index, False
    try:  # pragma: no cover - needs faiss-gpu and a GPU
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index), True
    except Exception:  # pragma: no cover - e.g. HNSW has no GPU form: stay on CPU
        return index, False


def new_index(dim: int, expected: int, *, kind: IndexKind = "auto", exact_max: int = EXACT_MAX) -> VectorIndex:
    """An empty index for about ``expected`` vectors that can grow by :meth:`VectorIndex.add` (no training):
    flat up to ``exact_max``, HNSW above (what deita's growing kept set needs)."""
    faiss = _faiss()
    chosen = "flat" if kind == "auto" and expected <= exact_max else ("hnsw" if kind in ("auto", "ivf") else kind)
    if chosen == "flat":
        index, gpu = _to_gpu(faiss.IndexFlatIP(dim))
        return VectorIndex(index, "flat", gpu)
    index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.hnsw.efSearch = 128
    return VectorIndex(index, "hnsw", False, info={"M": 32, "efSearch": 128})


def build_index(
    vectors: np.ndarray,
    *,
    kind: IndexKind = "auto",
    exact_max: int = EXACT_MAX,
    measure_recall: bool = True,
    seed: int = 0,
) -> VectorIndex:
    """Index ``vectors`` (float32, normalised): exact when ``len <= exact_max`` (``auto``), else HNSW, or IVF
    when asked (``nlist = 4 sqrt(n)``, ``nprobe = 16``; trains on the vectors).  For approximate indexes the
    recall@10 against exact search is measured on up to 256 sampled queries."""
    faiss = _faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if kind == "ivf" and n >= 64:
        nlist = max(1, int(4 * np.sqrt(n)))
        quantizer = faiss.IndexFlatIP(dim)
        ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(vectors)
        ivf.nprobe = 16
        index, gpu = _to_gpu(ivf)
        out = VectorIndex(index, "ivf", gpu, info={"nlist": nlist, "nprobe": 16})
        out.index.add(vectors)
    else:
        out = new_index(dim, n, kind="flat" if kind == "ivf" else kind, exact_max=exact_max)
        out.add(vectors)
    if measure_recall and not out.exact and n:
        out.recall = measure_recall_at(out, vectors, k=10, seed=seed)
    return out


def measure_recall_at(index: VectorIndex, vectors: np.ndarray, *, k: int = 10, seed: int = 0) -> float:
    """Share of the exact top-``k`` neighbours the index returns, over up to 256 sampled queries."""
    n = len(vectors)
    k = min(k, n)
    rng = np.random.default_rng(seed)
    sample = rng.choice(n, size=min(256, n), replace=False)
    queries = vectors[sample]
    exact = np.argpartition(-(queries @ vectors.T), kth=k - 1, axis=1)[:, :k]
    _, approx = index.search(queries, k)
    hits = sum(len(set(e.tolist()) & set(a.tolist())) for e, a in zip(exact, approx, strict=True))
    return hits / (len(sample) * k)


Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]


#: ``Context.compute_shared``: ``fn(shared, chunk)`` per chunk, in order (on Ray: ``shared`` broadcast once).
SharedCompute = Callable[..., Iterable[Any]]


def pack_index(index: VectorIndex) -> dict[str, Any]:
    """What travels to the workers: the serialised FAISS index (a uint8 array, read there without a copy) and
    the wrapper's kind and parameters.  A GPU index is never packed (:func:`pairs_above` searches it here)."""
    if index.gpu:
        raise ValueError("a GPU index is searched on the driver, not packed for workers")
    return {"data": _faiss().serialize_index(index.index), "kind": index.kind, "info": dict(index.info)}


def unpack_index(packed: dict[str, Any]) -> VectorIndex:
    """The index :func:`pack_index` serialised (its search parameters, efSearch and nprobe, included)."""
    return VectorIndex(_faiss().deserialize_index(packed["data"]), packed["kind"], False, info=packed["info"])


@dataclass(frozen=True)
class _ChunkSearch:
    """The search of one chunk of queries ``(start, rows)``: pairs with query rows offset by ``start``."""

    threshold: np.float32
    use_range: bool
    k: int

    def __call__(self, index: VectorIndex, chunk: tuple[int, np.ndarray]) -> Pairs:
        start, queries = chunk
        t32 = self.threshold
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.use_range:
            # FAISS's inner-product range search keeps results strictly above the radius: start one ulp lower.
            radius = float(np.nextafter(t32, np.float32(-np.inf)))
            lims, dist, ids = index.index.range_search(q, radius)
            counts = np.diff(lims).astype(np.int64)
            r = np.repeat(np.arange(len(q), dtype=np.int64), counts)
            c, s = ids.astype(np.int64), dist.astype(np.float32)
        else:
            s2, i2 = index.search(q, self.k)
            r = np.repeat(np.arange(len(q), dtype=np.int64), i2.shape[1])
            c, s = i2.reshape(-1), s2.reshape(-1)
        keep = (s >= t32) & (c >= 0)
        return r[keep] + start, c[keep], s[keep]


def pairs_above(
    index: VectorIndex,
    queries: np.ndarray,
    threshold: float,
    *,
    search: Literal["range", "knn"] = "range",
    k: int = 16,
    compute: SharedCompute | None = None,
) -> Pairs:
    """All (query row, index row, cosine) with cosine ``>= threshold`` (compared in float32, so a pair exactly
    at the threshold counts).  ``range`` (exact indexes only; an approximate index falls back to k-NN) finds
    every such pair; ``knn`` finds at most ``k`` per query, which bounds the work on dense duplicate clusters
    at the cost of missing pairs beyond the k-th neighbour.

    Queries are searched in chunks of :data:`SEARCH_CHUNK`.  With ``compute`` (``ctx.compute_shared`` of a
    distributed context) the chunks run where it sends them, against the index broadcast once; the result is
    concatenated in chunk order, the same arrays as here.  A GPU index is always searched in this process."""
    if index.ntotal == 0 or len(queries) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    use_range = search == "range" and index.exact and not index.gpu
    step = _ChunkSearch(np.float32(threshold), use_range, k)
    chunks = ((start, queries[start : start + SEARCH_CHUNK]) for start in range(0, len(queries), SEARCH_CHUNK))
    if compute is None or index.gpu:
        parts = [step(index, chunk) for chunk in chunks]
    else:
        parts = list(compute(index, chunks, step, pack=pack_index, unpack=unpack_index, name="search_chunks"))
    rows, cols, sims = zip(*parts, strict=True)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(sims)
