"""MinHash + LSH near-duplicate detection, vectorised with numpy (no per-document or per-shingle Python loop).

This module holds the algorithms only (no Context, no quarantine, no LazyFrame plumbing), so that the local
stage (:mod:`curate.stages.minhash_dedup`) and a distributed executor can share them.  The pieces:

1. :func:`normalise` (Polars string kernels): NFKC, lower case, punctuation, symbols and control characters
   -> space.  Words are the maximal runs of non-space characters (``str.split()``).
2. :func:`token_hashes`: a 64-bit hash of every word, computed from the UTF-8 bytes of a whole batch at once
   (a polynomial hash of each word's bytes from prefix sums, then the MurmurHash3 finaliser).  It depends
   only on the bytes: stable across Polars/numpy versions, machines and batchings (signatures are cached on
   disk across runs; :data:`HASH_VERSION` is part of the cache key).
3. :func:`shingle_hashes`: word ``ngram``-shingles combined from consecutive word hashes.  A text with fewer
   than ``ngram`` words (but at least one) gives exactly one shingle, the whole text; an empty text, none.
4. :func:`signatures`: MinHash with ``num_perm`` affine permutations ``a*h + b mod 2^32`` (``a`` odd: a
   bijection; the scheme datasketch >= 2.0 calls "affine32"), the minimum per text by
   ``np.minimum.reduceat`` over ``[num_perm x block]`` arrays, so memory is bounded whatever the batch.  An
   empty text has the all-``0xFFFFFFFF`` signature: all empty texts are duplicates of each other.
5. :func:`optimal_bands` / :func:`band_hashes`: LSH banding, ``bands x rows`` chosen for a Jaccard
   threshold by minimising the weighted false positive and false negative probability (datasketch's
   ``_optimal_param``); each band is one uint64.
6. :func:`candidate_mask` and :func:`cluster`: rows sharing a bucket in any band, their candidate pairs,
   optionally verified by the signature estimate of Jaccard, joined into clusters (connected components).
   :func:`cluster_by_band` is its distributed form: :func:`band_edges` of each band is an independent task
   (on Ray, against signatures broadcast once), the driver joins the edges; the partition is the same.

:func:`shingle_set` gives the exact semantics in pure Python (the reference for tests and benchmarks).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

#: Bump when tokenisation, token/shingle hashing or the permutations change: part of every cache key.
HASH_VERSION = 1

#: Empty-set value of every signature position.
EMPTY = np.uint32(0xFFFFFFFF)

#: Shingles per block in :func:`signatures`: a ``[num_perm x 16384]`` uint32 block is 8 MiB at 128 perms.
SHINGLE_BLOCK = 16384

#: Bytes of text per sub-batch hashed at once (bounds the uint64 temporaries of :func:`token_hashes`).
BYTE_BLOCK = 1 << 20

#: In :func:`cluster` with verification, a bucket's members (sorted by signature key) are compared with their
#: next ``BUCKET_WINDOW`` neighbours: all pairs for buckets of up to ``BUCKET_WINDOW + 1`` distinct
#: signatures, a bounded band of pairs for larger ones.
BUCKET_WINDOW = 64

_U64 = np.uint64
_FMIX_C1 = _U64(0xFF51AFD7ED558CCD)
_FMIX_C2 = _U64(0xC4CEB9FE1A85EC53)
_S33 = _U64(33)
_S32 = _U64(32)
_BYTE_BASE = 0x100000001B3  # FNV-64 prime: the polynomial base of the token hash
_BYTE_BASE_INV = pow(_BYTE_BASE, -1, 1 << 64)
_LEN_MIX = _U64(0x9E3779B97F4A7C15)


def _fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (an avalanching bijection), in place on a fresh uint64 array."""
    x ^= x >> _S33
    x *= _FMIX_C1
    x ^= x >> _S33
    x *= _FMIX_C2
    x ^= x >> _S33
    return x


def _odd_constants(count: int, stream: int) -> np.ndarray:
    """Fixed odd 64-bit multipliers (the same on every machine: they are part of the hash definition)."""
    rng = np.random.Generator(np.random.PCG64([0x6375726174, stream]))
    return rng.integers(0, 1 << 63, size=count, dtype=np.uint64) * _U64(2) + _U64(1)


def _powers(base: int, count: int) -> np.ndarray:
    """``base^k mod 2^64`` for ``k < count``."""
    steps = np.full(count, base, dtype=np.uint64)
    steps[0] = 1
    return np.multiply.accumulate(steps)


@functools.cache
def _byte_powers(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Powers of the byte base and of its inverse mod 2^64 (cached for the usual block size)."""
    return _powers(_BYTE_BASE, count), _powers(_BYTE_BASE_INV, count)


@functools.cache
def _shingle_constants(ngram: int) -> np.ndarray:
    return _odd_constants(ngram + 1, stream=ngram)


# -- text -> words --------------------------------------------------------------------------------------


#: Everything that is not part of a word after NFKC: punctuation, symbols, control characters and the
#: separators NFKC does not map to U+0020.  Each run becomes one space.
_NON_WORD = r"[\p{P}\p{S}\p{Cc}\x{1680}\x{2028}\x{2029}]+"


def normalise(texts: pl.Series | Sequence[str | None]) -> pl.Series:
    """NFKC, lower case, punctuation/symbols/control characters replaced by a space; nulls become "".

    Words are then the maximal runs of non-space characters (``text.split()``); runs of spaces are not
    collapsed here because the tokeniser treats any run as one separator.  NFKC runs only on the texts that
    are not pure ASCII (it is the identity on ASCII and the costliest step).
    """
    series = texts if isinstance(texts, pl.Series) else pl.Series("text", list(texts), dtype=pl.String)
    series = series.cast(pl.String).fill_null("")
    non_ascii = series.str.contains(r"[^\x00-\x7f]").arg_true()
    if len(non_ascii):
        series = series.scatter(non_ascii, series.gather(non_ascii).str.normalize("NFKC"))
    return series.str.to_lowercase().str.replace_all(_NON_WORD, " ")


def shingle_set(normalised: str, ngram: int) -> set[str]:
    """Reference semantics (pure Python): the word ``ngram``-shingles of an already normalised text.

    A text with at least one but fewer than ``ngram`` words gives one shingle, the whole text; an empty text
    gives the empty set.  :func:`shingle_hashes` hashes exactly these sets.
    """
    words = normalised.split()
    if not words:
        return set()
    if len(words) < ngram:
        return {" ".join(words)}
    return {" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)}


def _utf8_buffers(texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of all texts back to back and the ``len + 1`` offsets (no copy where Arrow allows)."""
    arr = texts.fill_null("").to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != pa.large_string():
        arr = pc.cast(arr, pa.large_string())
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    return data, offsets


def token_hashes(normalised: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Hash every space-separated word of every (normalised) text: ``(hashes uint64[T], words per text)``.

    Vectorised over the batch's bytes, no gather per byte: a token ``[s, e)`` hashes to
    ``sum_{s<=i<e} (byte_i + 1) * B^(i-s) mod 2^64`` = ``(C[e] - C[s]) * B^-s`` with ``C`` the prefix sums of
    ``(byte_i + 1) * B^i`` (``B`` odd, so invertible mod 2^64), plus its length, through the MurmurHash3
    finaliser.  Runs of spaces separate words; a word never spans two texts.
    """
    data, offsets = _utf8_buffers(normalised)
    n_docs = len(offsets) - 1
    start, end = int(offsets[0]), int(offsets[-1])
    data = data[start:end]
    local = offsets - start
    size = len(data)
    if size == 0:
        return np.empty(0, np.uint64), np.zeros(n_docs, np.int64)
    word = data != 0x20
    doc_starts = local[:-1][local[:-1] < local[1:]]
    before = np.empty(size, dtype=bool)  # a break (space or text boundary) just before byte i
    before[0] = True
    np.logical_not(word[:-1], out=before[1:])
    before[doc_starts] = True
    after = np.empty(size, dtype=bool)  # a break just after byte i
    after[-1] = True
    np.logical_not(word[1:], out=after[:-1])
    after[doc_starts[doc_starts > 0] - 1] = True
    tok_start = np.flatnonzero(word & before)
    tok_end = np.flatnonzero(word & after) + 1
    if len(tok_start) == 0:
        return np.empty(0, np.uint64), np.zeros(n_docs, np.int64)
    powers, inverse = _byte_powers(BYTE_BLOCK) if size <= BYTE_BLOCK else _byte_powers.__wrapped__(size)
    prefix = np.empty(size + 1, dtype=np.uint64)
    prefix[0] = 0
    np.add(data, 1, out=prefix[1:], dtype=np.uint64)
    prefix[1:] *= powers[:size]
    np.cumsum(prefix, out=prefix)
    hashes = prefix[tok_end] - prefix[tok_start]
    hashes *= inverse[tok_start]
    hashes += (tok_end - tok_start).astype(np.uint64) * _LEN_MIX
    _fmix64(hashes)
    words = np.searchsorted(tok_start, local[1:]) - np.searchsorted(tok_start, local[:-1])
    return hashes, words.astype(np.int64)


def shingle_hashes(tokens: np.ndarray, words: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of the word ``ngram``-shingles of each text: ``(hashes uint32[S], shingles per text)``.

    Texts with ``0 < words < ngram`` give one shingle of all their words; empty texts give none.
    """
    if ngram < 1:
        raise ValueError("ngram must be >= 1")
    counts = np.where(words >= ngram, words - ngram + 1, np.minimum(words, 1))
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, np.uint32), counts
    first_token = np.cumsum(words) - words
    first_shingle = np.cumsum(counts) - counts
    start = np.repeat(first_token - first_shingle, counts) + np.arange(total, dtype=np.int64)
    width = np.repeat(np.minimum(words, ngram), counts)
    padded = np.concatenate([tokens, np.zeros(ngram, np.uint64)])
    mult = _shingle_constants(ngram)
    acc = width.astype(np.uint64) * mult[ngram]
    short = bool((width < ngram).any())
    for k in range(ngram):
        term = padded[start + k] * mult[k]
        if short:
            term[width <= k] = 0
        acc += term
    _fmix64(acc)
    return (acc >> _S32).astype(np.uint32), counts


@functools.cache
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``num_perm`` affine permutations ``h -> a*h + b mod 2^32`` (``a`` odd) drawn from ``seed``."""
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.integers(0, 1 << 31, size=num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = rng.integers(0, 1 << 32, size=num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


def signatures(shingles: np.ndarray, counts: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures ``uint32[docs, num_perm]``: per permutation, the minimum over each text's shingles.

    Blocks of :data:`SHINGLE_BLOCK` shingles are permuted as a ``[num_perm x block]`` array and reduced with
    ``np.minimum.reduceat`` along the shingle axis; a text cut by a block boundary is merged by a minimum.
    """
    n_docs = len(counts)
    a, b = permutations(num_perm, seed)
    sig_t = np.full((num_perm, n_docs), EMPTY, dtype=np.uint32)
    nonempty = np.flatnonzero(counts > 0)
    if len(nonempty) == 0:
        return np.ascontiguousarray(sig_t.T)
    first = (np.cumsum(counts) - counts)[nonempty]
    total = len(shingles)
    block = np.empty((num_perm, min(SHINGLE_BLOCK, total)), dtype=np.uint32)
    a_col, b_col = a[:, None], b[:, None]
    for lo in range(0, total, SHINGLE_BLOCK):
        hi = min(lo + SHINGLE_BLOCK, total)
        view = block[:, : hi - lo]
        np.multiply(a_col, shingles[None, lo:hi], out=view)
        np.add(view, b_col, out=view)
        i0, i1 = np.searchsorted(first, [lo, hi])
        bounds = first[i0:i1] - lo
        docs = nonempty[i0:i1]
        if len(bounds) == 0 or bounds[0] != 0:  # the block starts inside a text
            bounds = np.concatenate([[0], bounds])
            docs = np.concatenate([[nonempty[i0 - 1]], docs])
        mins = np.minimum.reduceat(view, bounds, axis=1)
        sig_t[:, docs] = np.minimum(sig_t[:, docs], mins)
    return np.ascontiguousarray(sig_t.T)


def text_signatures(
    texts: pl.Series | Sequence[str | None], *, ngram: int = 5, num_perm: int = 128, seed: int = 1
) -> np.ndarray:
    """Normalise, shingle and MinHash raw texts: ``uint32[len(texts), num_perm]``.

    Texts are hashed in sub-batches of about :data:`BYTE_BLOCK` bytes (each text is independent, so the result
    does not depend on the batching).
    """
    norm = normalise(texts)
    if len(norm) == 0:
        return np.empty((0, num_perm), np.uint32)
    sizes = norm.str.len_bytes().to_numpy().astype(np.int64)
    block_of_text = (np.cumsum(sizes) - sizes) // BYTE_BLOCK
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(block_of_text)) + 1, [len(norm)]])
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        tokens, words = token_hashes(norm.slice(int(lo), int(hi - lo)))
        shingles, counts = shingle_hashes(tokens, words, ngram)
        parts.append(signatures(shingles, counts, num_perm, seed))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


# -- LSH ------------------------------------------------------------------------------------------------


@functools.cache
def optimal_bands(threshold: float, num_perm: int, false_negative_weight: float = 0.5) -> tuple[int, int]:
    """``(bands, rows)`` with ``bands * rows <= num_perm`` minimising the weighted probability mass of false
    positives (below ``threshold``) and false negatives (above), as ``datasketch.MinHashLSH`` chooses them."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 1.0 - false_negative_weight, false_negative_weight)


def collision_probability(jaccard: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """Probability that two texts of Jaccard similarity ``jaccard`` share at least one band: 1-(1-s^r)^b."""
    return 1.0 - (1.0 - np.asarray(jaccard, dtype=float) ** rows) ** bands


def _combine(values: np.ndarray, stream: int) -> np.ndarray:
    """64-bit hash of each row of a ``[n, ..., k]`` uint32 array: a random linear form mod 2^64 (one column
    at a time, no ``[n, ..., k]`` uint64 temporary), then the finaliser."""
    mult = _odd_constants(values.shape[-1], stream)
    out = np.zeros(values.shape[:-1], dtype=np.uint64)
    for j in range(values.shape[-1]):
        out += values[..., j].astype(np.uint64) * mult[j]
    return _fmix64(out)


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``uint64[docs, bands]``: band ``k`` hashes signature positions ``k*rows .. (k+1)*rows - 1``."""
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands*rows = {bands * rows} exceeds num_perm = {sig.shape[1]}")
    out = _combine(sig[:, : bands * rows].reshape(len(sig), bands, rows), stream=1000 + rows)
    out += np.arange(bands, dtype=np.uint64) * _LEN_MIX  # different bands never share a bucket
    return out


def signature_keys(sig: np.ndarray) -> np.ndarray:
    """``uint64[docs]``: a hash of the whole signature (equal signatures <=> equal keys, up to 2^-64)."""
    return _combine(sig, stream=2000 + sig.shape[1])


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Row-wise MinHash estimate of Jaccard: the fraction of equal signature positions."""
    return np.count_nonzero(sig_a == sig_b, axis=-1) / sig_a.shape[-1]


def candidate_mask(bands: np.ndarray) -> np.ndarray:
    """Rows sharing a bucket with another row in at least one band (the only rows :func:`cluster` needs)."""
    mask = np.zeros(len(bands), dtype=bool)
    for k in range(bands.shape[1]):
        column = bands[:, k]
        order = np.argsort(column)
        ordered = column[order]
        same = ordered[1:] == ordered[:-1]
        mask[order[1:][same]] = True
        mask[order[:-1][same]] = True
    return mask


def _components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Each node's cluster, named by its smallest node (so the names do not depend on scipy's numbering)."""
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n)).tocsr()
    component = connected_components(graph, directed=False)[1]
    _, smallest = np.unique(component, return_index=True)
    return smallest[component]


def _nodes(sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Texts with identical signatures are one node (estimated Jaccard 1): ``(first, node_of_row)``, each
    node's first row and each row's node, nodes numbered in signature-key order (not row order)."""
    _, first, node_of_row = np.unique(signature_keys(sig), return_index=True, return_inverse=True)
    return first, node_of_row


def _band_pairs(
    column: np.ndarray,
    sig: np.ndarray,
    first: np.ndarray,
    *,
    steps: int,
    threshold: float,
    verify: bool,
    chunk: int,
    rep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(left, right, candidates)`` of one band: nodes sharing a bucket (equal ``column`` hash) paired with
    their next ``steps`` bucket neighbours, kept when verified (``verify``: estimated Jaccard of the nodes'
    signatures, read through ``first``, ``>= threshold``); pairs whose nodes ``rep`` already puts in one
    cluster are skipped.  ``candidates`` counts the pairs looked at."""
    # Nodes are numbered in key order and the sort is stable (ties keep node order), so the order does not
    # depend on the row order, nor on which sort kernel this CPU's numpy picks (quicksort orders ties
    # differently on AVX2 and AVX-512 machines).
    order = np.argsort(column, kind="stable")
    ordered = column[order]
    left_parts, right_parts, candidates = [], [], 0
    for d in range(1, min(steps, len(column) - 1) + 1):
        same = ordered[d:] == ordered[:-d]
        if not same.any():
            break
        left, right = order[:-d][same], order[d:][same]
        if rep is not None:
            fresh = rep[left] != rep[right]
            left, right = left[fresh], right[fresh]
        candidates += len(left)
        if verify and len(left):
            row_l, row_r = first[left], first[right]
            keep = np.concatenate(
                [
                    estimate_jaccard(sig[row_l[i : i + chunk]], sig[row_r[i : i + chunk]]) >= threshold
                    for i in range(0, len(left), chunk)
                ]
            )
            left, right = left[keep], right[keep]
        left_parts.append(left)
        right_parts.append(right)
    if not left_parts:
        return np.empty(0, np.int64), np.empty(0, np.int64), 0
    return np.concatenate(left_parts), np.concatenate(right_parts), candidates


def cluster(
    sig: np.ndarray,
    *,
    bands: int,
    rows: int,
    threshold: float,
    verify: bool = True,
    window: int = BUCKET_WINDOW,
    chunk: int = 65536,
) -> tuple[np.ndarray, dict[str, int]]:
    """Cluster texts by their signatures ``uint32[n, num_perm]``: returns ``(labels int64[n], figures)``.

    Texts with identical signatures are one node (their estimated Jaccard is 1).  Two nodes are joined when
    they share a bucket in some band and, with ``verify``, their estimated Jaccard is ``>= threshold``.
    Without ``verify`` every band collision joins (chaining consecutive bucket members is enough for the
    components).  With ``verify``, the members of a bucket, sorted by signature key, are compared with
    their next ``window`` neighbours (all pairs for buckets of up to ``window + 1`` distinct signatures);
    pairs already in one cluster are not checked again.  The partition does not depend on the row order.
    """
    n = len(sig)
    figures = {"candidate_pairs": 0, "verified_pairs": 0}
    if n == 0:
        return np.empty(0, np.int64), figures
    first, node_of_row = _nodes(sig)
    n_nodes = len(first)
    # A node is its first row: signatures are read through ``first``, never copied (they can be most of the
    # memory), and band hashes are computed a block of nodes at a time.
    node_bands = np.empty((n_nodes, bands), dtype=np.uint64)
    for lo in range(0, n_nodes, chunk):
        node_bands[lo : lo + chunk] = band_hashes(sig[first[lo : lo + chunk]], bands, rows)
    nodes = np.arange(n_nodes)
    rep = nodes.copy()  # each node's cluster, named by its smallest node
    steps = 1 if not verify else window
    for k in range(bands):
        left, right, candidates = _band_pairs(
            node_bands[:, k], sig, first, steps=steps, threshold=threshold, verify=verify, chunk=chunk, rep=rep
        )
        figures["candidate_pairs"] += candidates
        figures["verified_pairs"] += len(left)
        if len(left):
            rep = _components(n_nodes, np.concatenate([nodes, left]), np.concatenate([rep, right]))
    return rep[node_of_row].astype(np.int64), figures


# -- the distributed form of :func:`cluster` -----------------------------------------------------------------


#: ``Context.compute_shared``: ``fn(shared, chunk)`` per chunk, in order (on Ray: ``shared`` broadcast once).
SharedCompute = Callable[..., Iterable[Any]]


def _same(value: Any) -> Any:
    return value


def band_hash(sig: np.ndarray, band: int, rows: int) -> np.ndarray:
    """``uint64[docs]``: the hash of one band, equal to ``band_hashes(sig, bands, rows)[:, band]`` (reads only
    that band's signature positions)."""
    lo = band * rows
    if lo + rows > sig.shape[1]:
        raise ValueError(f"band {band} of {rows} rows exceeds num_perm = {sig.shape[1]}")
    out = _combine(sig[:, lo : lo + rows].reshape(len(sig), 1, rows), stream=1000 + rows)[:, 0]
    out += np.arange(band, band + 1, dtype=np.uint64) * _LEN_MIX  # as in band_hashes (wraps mod 2^64)
    return out


@dataclass(frozen=True)
class BandEdges:
    """The edges one band contributes (a picklable task: the parameters of :func:`cluster`)."""

    rows: int
    threshold: float
    verify: bool = True
    window: int = BUCKET_WINDOW
    chunk: int = 65536

    def __call__(self, nodes: tuple[np.ndarray, np.ndarray], band: int) -> tuple[np.ndarray, np.ndarray, int]:
        """``(left, right, candidates)`` of ``band`` over ``nodes = (sig, first)`` (node ``i`` is row
        ``first[i]``): bucket neighbours within ``window`` in the order :func:`cluster` sorts them (one
        neighbour without ``verify``), kept when verified; ``candidates`` counts the pairs looked at."""
        sig, first = nodes
        n_nodes = len(first)
        column = np.empty(n_nodes, dtype=np.uint64)
        for lo in range(0, n_nodes, self.chunk):
            column[lo : lo + self.chunk] = band_hash(sig[first[lo : lo + self.chunk]], band, self.rows)
        return _band_pairs(
            column, sig, first, steps=self.window if self.verify else 1, threshold=self.threshold,
            verify=self.verify, chunk=self.chunk,
        )


def cluster_by_band(
    sig: np.ndarray,
    *,
    bands: int,
    rows: int,
    threshold: float,
    verify: bool = True,
    window: int = BUCKET_WINDOW,
    chunk: int = 65536,
    compute: SharedCompute | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """:func:`cluster` with each band an independent task: the same ``labels`` (the partition, and each
    cluster named by its smallest node), different figures.

    :func:`cluster` skips a band's pair when an earlier band already joined it; here every band checks all its
    bucket neighbours (so that bands need not wait for each other) and the driver takes the connected
    components of all verified edges.  A skipped pair lies inside one component already, so adding its edge
    changes no component: the partition is the same, and only ``candidate_pairs`` / ``verified_pairs`` (which
    count the skipped pairs here) grow.  With ``compute`` (``ctx.compute_shared``) the bands run there, the
    signatures and node rows broadcast once; without it, in this process."""
    n = len(sig)
    figures = {"candidate_pairs": 0, "verified_pairs": 0}
    if n == 0:
        return np.empty(0, np.int64), figures
    first, node_of_row = _nodes(sig)
    n_nodes = len(first)
    task = BandEdges(rows=rows, threshold=threshold, verify=verify, window=window, chunk=chunk)
    nodes = (sig, first)
    if compute is None:
        results: Iterable[tuple[np.ndarray, np.ndarray, int]] = (task(nodes, k) for k in range(bands))
    else:
        results = compute(nodes, range(bands), task, pack=_same, unpack=_same, name="band_tasks")
    left_parts, right_parts = [], []
    for left, right, candidates in results:
        figures["candidate_pairs"] += candidates
        figures["verified_pairs"] += len(left)
        left_parts.append(left)
        right_parts.append(right)
    if figures["verified_pairs"] == 0:
        return np.arange(n_nodes)[node_of_row].astype(np.int64), figures
    labels = _components(n_nodes, np.concatenate(left_parts), np.concatenate(right_parts))
    return labels[node_of_row].astype(np.int64), figures
