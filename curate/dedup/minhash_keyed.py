"""MinHash LSH clustering in a keyed, file-based distributed form: the partition of :func:`minhash.cluster`,
computed by small tasks that read and write Parquet, so that the caller (a Ray driver) holds no rows.

:func:`curate.dedup.minhash.cluster` needs every signature in one process.  Here each step is a picklable
top-level callable run through ``run(fn, items)`` over small items (a part or partition number); a step
reads Parquet files under ``scratch``, writes Parquet files there and returns only counts.  Nothing the
caller holds grows with the number of rows: it keeps the number of parts, ``partitions`` and the figures.
Every file a task writes has a name fixed by (step, target partition, source task) and is written to a
temporary name and renamed, so a task retried by Ray (a lost worker) rewrites the same files, and a reader
reads an explicit list of names, never a directory listing.

The steps (``P`` = ``spec.partitions``; "scatter" = write one file per target partition, possibly empty):

1. **Keys** (per signature part): each row's signature key (:func:`minhash.signature_keys`, a hash of the
   whole signature); rows ``(key, pos)`` and, per key, the part's smallest-position row with its
   signature, scattered by key.
2. **Nodes** (per key partition): rows with one signature key are one node, as in :func:`minhash._nodes`;
   a node is named by its smallest position (so the smallest node of a component is the smallest
   position of the cluster).  Scatters the row map ``(pos, node)`` and the node signatures by node, and
   the node's band hashes ``(band, band hash, key, node)`` by bucket (band hash).
3. **Candidates** (per bucket partition): a bucket is whole in one partition.  Its nodes sorted by
   signature key, which is the node order of :func:`minhash.cluster` (nodes numbered in key order, the
   stable sort keeps that order within a bucket), are paired with their next ``window`` neighbours (one
   without ``verify``): exactly the pairs :func:`minhash._band_pairs` looks at.  Pairs, oriented
   ``(smaller node, larger node)`` and counted per band, are scattered by their smaller node.
4. **Verification** (two hops over the node signatures, both partitioned by node): per partition of the
   first node, a pair's occurrences are summed and the first node's signature attached, then scattered
   by the second node; per partition of the second node, its signature is attached and the pair kept when
   :func:`minhash.estimate_jaccard` ``>= threshold`` (without ``verify``, every pair is kept).  Each
   task then contracts its own verified edges: the connected components of the edges it holds (scipy)
   replace them by a star per component, every node joined to the component's smallest node.  This
   keeps the connectivity and leaves the distributed step far fewer edges.
5. **Connected components**, the alternating large-star / small-star algorithm of Kiveris, Lattanzi,
   Mirrokni, Rastogi and Vassilvitskii, "Connected Components in MapReduce and Beyond" (SoCC 2014).  The
   state is an edge set, each edge stored under both its ends, partitioned by node.  *Large-star* of a
   node ``u`` with neighbours ``N(u)``: ``m = min(N(u) + {u})``, emit ``(v, m)`` for every neighbour
   ``v > u``.  *Small-star* of ``u`` over its smaller neighbours ``S(u)``: ``m = min(S(u) + {u})``, emit
   ``(v, m)`` for every ``v`` in ``S(u) + {u}``, ``v != m``.  Both keep the connected components (the
   paper's lemmas), and alternating them reaches, in ``O(log^2 n)`` rounds (``O(log n)`` in practice),
   the fixed point where every component is a star around its smallest node.  The stop test is exact,
   not a comparison of edge sets: a large-star task also counts the nodes of its input that have a
   smaller neighbour and more than one neighbour.  When no node anywhere does, every edge ``{a < b}``
   has ``b`` of degree one and ``a`` without a smaller neighbour: the graph is a set of stars, each
   centred on its smallest node, and since the components never changed, each star is a component and
   ``min(N(u) + {u})`` (which the large-star task writes for each of its nodes) is ``u``'s cluster.
   Each round is two ``run`` calls over the partitions; a round's files are removed once the next exists.
6. **Rows** (per node partition): a row is clustered when its node has an edge or more than one row
   (identical signatures); its cluster is the component's smallest node, i.e. the smallest position of
   the cluster.  Rows are scattered by the signature part their position falls in, and gathered into
   one file per part, sorted by position.

Why the partition equals :func:`minhash.cluster`'s: nodes, the bucket order and the window pairs are the
same; :func:`minhash.cluster` skips a pair an earlier band already joined, which changes no component
(:func:`minhash.cluster_by_band`'s argument), and the union of the edges of all bands, contracted per
task into stars of the same components, has the same components.  ``candidate_pairs`` and
``verified_pairs`` count as :func:`minhash.cluster_by_band` does (every band's window pairs, every band's
verified pairs).  :func:`pair_jaccard` is the same two-hop join over the signature parts themselves (they
are range-partitioned by position), for pairs of positions.  See docs/architecture.md for where this sits.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curate.dedup.minhash import (
    BUCKET_WINDOW,
    _components,
    _fmix64,
    band_hashes,
    estimate_jaccard,
    signature_keys,
)

#: ``run(fn, items) -> [fn(item) for item in items]``, in order (locally a list comprehension, on Ray one
#: remote task per item).
RunFn = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]

#: Rows per block when band hashes or Jaccard estimates are computed (bounds the numpy temporaries).
CHUNK = 65536

#: Large-star / small-star rounds before giving up (Kiveris et al. bound them by O(log^2 n); a graph of
#: 2^40 nodes needs far fewer in practice): reaching it means a bug, not a large input.
MAX_ROUNDS = 200

_NAME = "{}.parquet"


@dataclass(frozen=True)
class KeyedSpec:
    """The parameters of :func:`minhash.cluster` plus ``partitions``, the number of hash partitions every
    shuffle uses (more partitions: smaller tasks, more files)."""

    bands: int
    rows: int
    threshold: float
    verify: bool = True
    window: int = BUCKET_WINDOW
    partitions: int = 4

    def __post_init__(self) -> None:
        if self.bands < 1 or self.rows < 1:
            raise ValueError(f"bands and rows must be >= 1, not {self.bands} and {self.rows}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, not {self.window}")
        if self.partitions < 1:
            raise ValueError(f"partitions must be >= 1, not {self.partitions}")


# -- files -------------------------------------------------------------------------------------------------


def _partition_of(values: np.ndarray | pl.Series, parts: int) -> np.ndarray:
    """``int64[n]`` in ``[0, parts)``: a fixed hash of each (int64 or uint64) value, the same everywhere."""
    raw = values.to_numpy() if isinstance(values, pl.Series) else np.asarray(values)
    hashed = _fmix64(raw.astype(np.uint64, copy=True))
    return (hashed % np.uint64(parts)).astype(np.int64)


def _write(frame: pl.DataFrame, path: Path) -> None:
    """Write atomically (a temporary name, then a rename): a retried task replaces, never half-writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    frame.write_parquet(tmp, compression="lz4", statistics=False)  # scratch: signatures hardly compress
    os.replace(tmp, path)


def _scatter(frame: pl.DataFrame, part: np.ndarray, parts: int, directory: Path, source: int) -> None:
    """Write ``frame``'s rows of target ``r`` to ``directory/r/source.parquet`` for every ``r < parts``
    (an empty file where none), so that readers know every name without listing a directory."""
    name = _NAME.format(source)
    if parts == 1:
        _write(frame, directory / "0" / name)
        return
    # One target's rows at a time (a gather of its share), not every target's copy at once.
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(parts + 1))
    for r in range(parts):
        _write(frame[order[bounds[r] : bounds[r + 1]]], directory / str(r) / name)


def _gather(directory: Path, target: int, sources: int) -> pl.DataFrame:
    """Every source's file for ``target`` (see :func:`_scatter`), concatenated.  Empty files are left out
    (an empty signature part's signature column has no width to agree on)."""
    frames = [pl.read_parquet(directory / str(target) / _NAME.format(s)) for s in range(sources)]
    full = [f for f in frames if f.height]
    return pl.concat(full) if full else frames[0]


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _read_signatures(path: Path) -> pl.DataFrame:
    """``_pos`` (Int64) and ``_sig`` of one signature part, the signature as this module keeps it: the
    ``num_perm`` uint32 of a row as one Binary value (Parquet reads a flat binary column several times faster
    than a nested list or array one).  The part's ``_sig`` may be a list or an array column."""
    frame = pl.read_parquet(path, columns=["_pos", "_sig"])
    sig = frame["_sig"]
    if sig.null_count():
        raise ValueError(f"{path}: _sig has nulls")
    if isinstance(sig.dtype, pl.List):
        lengths = sig.list.len()
        width = int(lengths.max() or 0) if len(sig) else 0
        if len(sig) and lengths.min() != width:
            raise ValueError(f"{path}: _sig must be lists of one length (num_perm)")
        sig = sig.list.to_array(width)
    matrix = sig.to_numpy().astype(np.uint32, copy=False) if len(sig) else np.empty((0, 0), np.uint32)
    return pl.DataFrame({"_pos": frame["_pos"].cast(pl.Int64), "_sig": _binary(matrix)})


def _binary(matrix: np.ndarray) -> pl.Series:
    """``uint32[n, k]`` -> a Binary series of ``4 k`` bytes per row (one copy)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.uint32)
    if not matrix.size:
        return pl.Series("_sig", [b""] * len(matrix), dtype=pl.Binary)
    width = matrix.shape[1] * 4
    array = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(matrix), [None, pa.py_buffer(matrix)])
    return pl.Series("_sig", pl.from_arrow(array), dtype=pl.Binary)


def _matrix(series: pl.Series) -> np.ndarray:
    """``uint32[n, num_perm]`` of a Binary signature column (:func:`_binary`'s inverse)."""
    if not len(series):
        return np.empty((0, 0), np.uint32)
    array = series.to_arrow()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    array = pc.cast(array, pa.large_binary())
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    width = int(offsets[1] - offsets[0])
    if (np.diff(offsets) != width).any() or width % 4:
        raise ValueError("signatures of different lengths")
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.view(np.uint32).reshape(len(array), width // 4)


def _jaccard(left: pl.Series, right: pl.Series) -> np.ndarray:
    """:func:`minhash.estimate_jaccard` row by row, :data:`CHUNK` rows at a time."""
    out = np.empty(len(left), dtype=np.float64)
    for lo in range(0, len(left), CHUNK):
        out[lo : lo + CHUNK] = estimate_jaccard(
            _matrix(left.slice(lo, CHUNK)), _matrix(right.slice(lo, CHUNK))
        )
    return out


def _part_index(pos: np.ndarray, starts: np.ndarray, parts: np.ndarray) -> np.ndarray:
    """The signature part each position falls in (parts hold disjoint increasing ranges: ``starts`` are
    the first positions of the non-empty ``parts``)."""
    at = np.searchsorted(starts, pos, side="right") - 1
    if len(pos) and at.min() < 0:
        raise ValueError(f"position {int(pos[at < 0][0])} lies before every signature part")
    return parts[at]


@dataclass(frozen=True)
class _Ranges:
    """Per signature part: ``(rows, first position, last position)`` (positions only are read)."""

    def __call__(self, path: Path) -> tuple[int, int | None, int | None]:
        pos = pl.read_parquet(path, columns=["_pos"])["_pos"]
        return len(pos), pos.min(), pos.max()  # type: ignore[return-value]


def _ranges(results: Sequence[tuple[int, int | None, int | None]]) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, parts)`` of the non-empty parts, checked to be disjoint and increasing."""
    parts = np.array([i for i, (n, _, _) in enumerate(results) if n], dtype=np.int64)
    starts = np.array([results[i][1] for i in parts], dtype=np.int64)
    ends = np.array([results[i][2] for i in parts], dtype=np.int64)
    if len(parts) > 1 and (starts[1:] <= ends[:-1]).any():
        raise ValueError("signature parts must hold disjoint, increasing _pos ranges")
    return starts, parts


# -- 1. keys -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Keys:
    """Per signature part: rows ``(key, pos)`` and the first row of each key with its signature, by key."""

    root: Path
    partitions: int
    paths: tuple[Path, ...]

    def __call__(self, part: int) -> tuple[int, int | None, int | None]:
        frame = _read_signatures(self.paths[part])
        pos = frame["_pos"].to_numpy()
        keys = signature_keys(_matrix(frame["_sig"])) if len(frame) else np.empty(0, np.uint64)
        rows = pl.DataFrame({"_key": pl.Series(keys, dtype=pl.UInt64), "_pos": frame["_pos"]})
        _scatter(rows, _partition_of(keys, self.partitions), self.partitions, self.root / "keys", part)
        order = np.lexsort((pos, keys))
        first = order[np.r_[True, keys[order][1:] != keys[order][:-1]]] if len(order) else order
        firsts = rows[first].with_columns(frame["_sig"][first])
        _scatter(firsts, _partition_of(keys[first], self.partitions), self.partitions, self.root / "firsts", part)
        if not len(pos):
            return 0, None, None
        return len(pos), int(pos.min()), int(pos.max())


# -- 2. nodes ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Nodes:
    """Per key partition: the nodes (one per signature key, named by its smallest position), scattered as
    the row map and node signatures (by node) and band records (by bucket)."""

    root: Path
    spec: KeyedSpec
    sources: int

    def __call__(self, q: int) -> int:
        parts = self.spec.partitions
        firsts = _gather(self.root / "firsts", q, self.sources)
        key, pos = firsts["_key"].to_numpy(), firsts["_pos"].to_numpy()
        order = np.lexsort((pos, key))  # per key, its smallest position first: the node's name
        first = order[np.r_[True, key[order][1:] != key[order][:-1]]] if len(order) else order
        nodes = firsts[first].rename({"_pos": "_node"})
        del firsts, key, pos, order, first
        rows = _gather(self.root / "keys", q, self.sources)
        rowmap = rows.join(nodes.select("_key", "_node"), on="_key").select("_pos", "_node")
        del rows
        _scatter(rowmap, _partition_of(rowmap["_node"], parts), parts, self.root / "rowmap", q)
        del rowmap
        if self.spec.verify:
            _scatter(nodes.select("_node", "_sig"), _partition_of(nodes["_node"], parts), parts, self.root / "sigs", q)
        width, count = self.spec.bands, len(nodes)
        bands = np.empty((count, width), dtype=np.uint64)
        for lo in range(0, count, CHUNK):  # a block of signatures at a time
            bands[lo : lo + CHUNK] = band_hashes(_matrix(nodes["_sig"].slice(lo, CHUNK)), width, self.spec.rows)
        node_keys, node_names = nodes["_key"].to_numpy(), nodes["_node"].to_numpy()
        del nodes
        records = pl.DataFrame(
            {
                "_band": pl.Series(np.tile(np.arange(width, dtype=np.int32), count), dtype=pl.Int32),
                "_hash": pl.Series(bands.ravel(), dtype=pl.UInt64),
                "_key": pl.Series(np.repeat(node_keys, width), dtype=pl.UInt64),
                "_node": pl.Series(np.repeat(node_names, width), dtype=pl.Int64),
            }
        )
        _scatter(records, _partition_of(bands.ravel(), parts), parts, self.root / "buckets", q)
        return count


# -- 3. candidates -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidates:
    """Per bucket partition: each bucket's nodes in key order, paired with their next ``window`` neighbours
    (one without verify), as :func:`minhash._band_pairs` pairs them; pairs scattered by their smaller node
    with the number of bands they occur in."""

    root: Path
    spec: KeyedSpec

    def __call__(self, b: int) -> int:
        parts = self.spec.partitions
        rec = _gather(self.root / "buckets", b, parts)
        band, bhash, key = rec["_band"].to_numpy(), rec["_hash"].to_numpy(), rec["_key"].to_numpy()
        order = np.lexsort((key, bhash, band))
        node = rec["_node"].to_numpy()[order]
        band, bhash = band[order], bhash[order]
        group = np.cumsum(np.r_[True, (band[1:] != band[:-1]) | (bhash[1:] != bhash[:-1])]) if len(order) else order
        lefts, rights, candidates = [], [], 0
        for d in range(1, (self.spec.window if self.spec.verify else 1) + 1):
            same = group[d:] == group[:-d]
            if not same.any():
                break
            lefts.append(node[:-d][same])
            rights.append(node[d:][same])
            candidates += int(same.sum())
        left = np.concatenate(lefts) if lefts else np.empty(0, np.int64)
        right = np.concatenate(rights) if rights else np.empty(0, np.int64)
        pairs = (
            pl.DataFrame({"_a": np.minimum(left, right), "_b": np.maximum(left, right)}, schema=_PAIR)
            .group_by("_a", "_b")
            .agg(_mult=pl.len().cast(pl.Int64))
        )
        _scatter(pairs, _partition_of(pairs["_a"], parts), parts, self.root / "pairs", b)
        return candidates


_PAIR = {"_a": pl.Int64, "_b": pl.Int64}


# -- 4. verification and contraction -----------------------------------------------------------------------


def _contract_and_scatter(left: np.ndarray, right: np.ndarray, parts: int, directory: Path, source: int) -> None:
    """Replace the edges by one star per connected component (every node joined to the component's
    smallest node: the same components), stored under both ends."""
    nodes, inverse = np.unique(np.concatenate([left, right]), return_inverse=True)
    if len(nodes):
        root = nodes[_components(len(nodes), inverse[: len(left)], inverse[len(left) :])]
        keep = nodes != root
        leaf, centre = nodes[keep], root[keep]
    else:
        leaf = centre = np.empty(0, np.int64)
    adjacency = pl.DataFrame({"_u": np.concatenate([leaf, centre]), "_v": np.concatenate([centre, leaf])}, schema=_ADJ)
    _scatter(adjacency, _partition_of(adjacency["_u"], parts), parts, directory, source)


_ADJ = {"_u": pl.Int64, "_v": pl.Int64}


@dataclass(frozen=True)
class _FirstHop:
    """Per node partition: the pairs whose smaller node is here, occurrences summed; with verify, the
    smaller node's signature attached and the pair scattered by its larger node; without, every pair is
    an edge."""

    root: Path
    spec: KeyedSpec

    def __call__(self, r: int) -> tuple[int, int]:
        parts = self.spec.partitions
        pairs = _gather(self.root / "pairs", r, parts).group_by("_a", "_b").agg(pl.col("_mult").sum())
        if not self.spec.verify:
            left, right = pairs["_a"].to_numpy(), pairs["_b"].to_numpy()
            _contract_and_scatter(left, right, parts, self.root / "cc" / "0", r)
            return len(pairs), int(pairs["_mult"].sum())
        sigs = _gather(self.root / "sigs", r, parts).rename({"_node": "_a", "_sig": "_sig_a"})
        hop = pairs.join(sigs, on="_a")
        _scatter(hop, _partition_of(hop["_b"], parts), parts, self.root / "hop", r)
        return len(pairs), 0


@dataclass(frozen=True)
class _SecondHop:
    """Per node partition: the larger node's signature attached, pairs kept at estimated Jaccard >=
    threshold, contracted into stars."""

    root: Path
    spec: KeyedSpec

    def __call__(self, s: int) -> int:
        parts = self.spec.partitions
        sigs = _gather(self.root / "sigs", s, parts).rename({"_node": "_b", "_sig": "_sig_b"})
        hop = _gather(self.root / "hop", s, parts).join(sigs, on="_b")
        kept = hop.filter(pl.Series(_jaccard(hop["_sig_a"], hop["_sig_b"]) >= self.spec.threshold))
        _contract_and_scatter(kept["_a"].to_numpy(), kept["_b"].to_numpy(), parts, self.root / "cc" / "0", s)
        return int(kept["_mult"].sum())


# -- 5. connected components (large-star / small-star) -----------------------------------------------------


@dataclass(frozen=True)
class _LargeStar:
    """Per node partition, round ``k``: large-star of each node here; writes each node's ``min(N(u) + {u})``
    and counts the nodes with a smaller neighbour and more than one neighbour (0 everywhere: converged)."""

    root: Path
    partitions: int
    k: int
    sources: int

    def __call__(self, p: int) -> int:
        adjacency = _gather(self.root / "cc" / str(self.k), p, self.sources).unique().filter(
            pl.col("_u") != pl.col("_v")
        )
        per = adjacency.group_by("_u").agg(
            _m=pl.col("_v").min(), _deg=pl.len(), _smaller=(pl.col("_v") < pl.col("_u")).sum()
        ).with_columns(_m=pl.min_horizontal("_m", "_u"))
        violations = per.filter((pl.col("_smaller") > 0) & (pl.col("_deg") > 1)).height
        _write(per.select(_node="_u", _label="_m"), self.root / "labels" / str(self.k) / _NAME.format(p))
        emitted = (
            adjacency.filter(pl.col("_v") > pl.col("_u"))
            .join(per.select("_u", "_m"), on="_u")
            .select(_hi="_v", _lo="_m")
            .unique()
        )
        _scatter(emitted, _partition_of(emitted["_hi"], self.partitions), self.partitions,
                 self.root / "ss" / str(self.k), p)
        return violations


@dataclass(frozen=True)
class _SmallStar:
    """Per node partition, round ``k``: small-star of each node here over its smaller neighbours; the new
    edges stored under both ends as round ``k + 1``'s input."""

    root: Path
    partitions: int
    k: int

    def __call__(self, p: int) -> int:
        edges = _gather(self.root / "ss" / str(self.k), p, self.partitions).unique()  # _hi here, _lo < _hi
        centre = edges.group_by("_hi").agg(_m=pl.col("_lo").min())
        emitted = pl.concat(
            [
                edges.join(centre, on="_hi").filter(pl.col("_lo") != pl.col("_m")).select(_x="_lo", _y="_m"),
                centre.select(_x="_hi", _y="_m"),
            ]
        ).unique()
        adjacency = pl.concat(
            [emitted.select(_u="_x", _v="_y"), emitted.select(_u="_y", _v="_x")]
        )
        _scatter(adjacency, _partition_of(adjacency["_u"], self.partitions), self.partitions,
                 self.root / "cc" / str(self.k + 1), p)
        return len(emitted)


def components(root: Path, partitions: int, run: RunFn, sources: int | None = None) -> tuple[Path, int]:
    """Connected components of the undirected edges in ``root/cc/0`` (``_u``, ``_v`` under both ends,
    :func:`_scatter`'d by ``_u`` from ``sources`` (default ``partitions``) tasks into ``partitions``
    targets): returns the directory of label files ``r.parquet`` (``_node``, ``_label`` = the component's
    smallest node, for every node with an edge, by node partition) and the number of rounds."""
    for k in range(MAX_ROUNDS):
        first = sources if k == 0 and sources is not None else partitions
        violations = run(_LargeStar(root, partitions, k, first), range(partitions))
        if sum(violations) == 0:
            run(_remove_tree, [root / "ss" / str(k), root / "cc" / str(k)])
            return root / "labels" / str(k), k + 1
        run(_SmallStar(root, partitions, k), range(partitions))
        run(_remove_tree, [root / "ss" / str(k), root / "cc" / str(k), root / "labels" / str(k)])
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} large-star/small-star rounds")


@dataclass(frozen=True)
class _EdgeScatter:
    """Per edge file: its edges ``(_a, _b)`` under both ends, scattered by node (round 0's input)."""

    root: Path
    edges: tuple[Path, ...]
    partitions: int

    def __call__(self, j: int) -> int:
        frame = pl.read_parquet(self.edges[j], columns=["_a", "_b"]).select(pl.all().cast(pl.Int64))
        adjacency = pl.concat([frame.select(_u="_a", _v="_b"), frame.select(_u="_b", _v="_a")])
        _scatter(adjacency, _partition_of(adjacency["_u"], self.partitions), self.partitions,
                 self.root / "cc" / "0", j)
        return len(frame)


def edge_components(edges: Sequence[Path], scratch: Path, partitions: int, run: RunFn) -> tuple[list[Path], int]:
    """The connected components of the undirected graph whose edges are the rows of ``edges`` (Parquet
    files of ``_a``, ``_b``: Int64 nodes), by large-star / small-star (see the module docstring): one file
    per node partition (``_node``, ``_label``: the smallest node of its component, for every node with an
    edge other than a self-loop) and the number of rounds."""
    root = Path(scratch) / "components"
    paths = tuple(Path(p) for p in edges)
    if not paths:
        return [], 0
    run(_EdgeScatter(root, paths, partitions), range(len(paths)))
    labels, rounds = components(root, partitions, run, sources=len(paths))
    return [labels / _NAME.format(p) for p in range(partitions)], rounds


# -- 6. rows -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rows:
    """Per node partition: the clustered rows ``(_pos, _cluster)``, scattered by signature part."""

    root: Path
    labels: Path
    partitions: int
    sources: int
    starts: tuple[int, ...]
    nonempty: tuple[int, ...]

    def __call__(self, p: int) -> None:
        rowmap = _gather(self.root / "rowmap", p, self.partitions)
        labels = pl.read_parquet(self.labels / _NAME.format(p))
        clustered = (
            rowmap.join(labels, on="_node", how="left")
            .filter(pl.col("_label").is_not_null() | (pl.len().over("_node") > 1))
            .select("_pos", _cluster=pl.coalesce("_label", "_node"))
        )
        part = _part_index(
            clustered["_pos"].to_numpy(), np.array(self.starts, np.int64), np.array(self.nonempty, np.int64)
        )
        _scatter(clustered, part, self.sources, self.root / "rows", p)


@dataclass(frozen=True)
class _Collect:
    """Per signature part: its clustered rows from every node partition, sorted by position."""

    root: Path
    partitions: int

    def __call__(self, part: int) -> tuple[str, int, int]:
        rows = _gather(self.root / "rows", part, self.partitions).sort("_pos")
        path = self.root / "clusters" / _NAME.format(part)
        _write(rows, path)
        return str(path), len(rows), int((rows["_pos"] == rows["_cluster"]).sum())


# -- the drivers -------------------------------------------------------------------------------------------


def keyed_clusters(
    sig_parts: Sequence[Path], spec: KeyedSpec, scratch: Path, run: RunFn
) -> tuple[list[Path], dict[str, int]]:
    """The partition of :func:`minhash.cluster` over the rows of ``sig_parts`` (Parquet with ``_pos``:
    Int64 global positions, disjoint increasing ranges per part, and ``_sig``: num_perm UInt32, a list or
    array), computed by tasks that ``run`` executes (see the module docstring for the steps).

    Returns one Parquet file per part (``scratch/keyed/clusters/i.parquet``, sorted by ``_pos``) holding
    ``_pos`` and ``_cluster`` (Int64) for every member of a cluster of more than one row, the cluster
    named by its smallest ``_pos``; and figures: ``rows``, ``nodes``, ``candidate_pairs`` and
    ``verified_pairs`` (counted as :func:`minhash.cluster_by_band` counts them), ``distinct_pairs``,
    ``cc_rounds``, ``clustered_rows``, ``clusters``.  ``scratch`` is this call's own directory: its
    ``keyed/`` subdirectory is overwritten; intermediate files are removed at the end."""
    root = Path(scratch) / "keyed"
    paths = tuple(Path(p) for p in sig_parts)
    figures = dict.fromkeys(
        ("rows", "nodes", "candidate_pairs", "distinct_pairs", "verified_pairs", "cc_rounds", "clustered_rows",
         "clusters"), 0,
    )
    if not paths:
        return [], figures
    parts = spec.partitions
    ranges = run(_Keys(root, parts, paths), range(len(paths)))
    starts, nonempty = _ranges(ranges)
    figures["rows"] = sum(n for n, _, _ in ranges)
    figures["nodes"] = sum(run(_Nodes(root, spec, len(paths)), range(parts)))
    figures["candidate_pairs"] = sum(run(_Candidates(root, spec), range(parts)))
    first = run(_FirstHop(root, spec), range(parts))
    figures["distinct_pairs"] = sum(n for n, _ in first)
    if spec.verify:
        figures["verified_pairs"] = sum(run(_SecondHop(root, spec), range(parts)))
    else:
        figures["verified_pairs"] = sum(v for _, v in first)
    labels, figures["cc_rounds"] = components(root, parts, run)
    run(
        _Rows(root, labels, parts, len(paths), tuple(int(s) for s in starts), tuple(int(i) for i in nonempty)),
        range(parts),
    )
    collected = run(_Collect(root, parts), range(len(paths)))
    figures["clustered_rows"] = sum(n for _, n, _ in collected)
    figures["clusters"] = sum(c for _, _, c in collected)
    run(_remove_tree, [root / d for d in ("keys", "firsts", "rowmap", "sigs", "buckets", "pairs", "hop", "rows",
                                          "labels", "cc", "ss")])
    return [Path(p) for p, _, _ in collected], figures


@dataclass(frozen=True)
class _PairScatter:
    """Per pairs file: ``(_j, _idx, _a, _b)`` scattered by the signature part of ``_a``."""

    root: Path
    pairs: tuple[Path, ...]
    sources: int
    starts: tuple[int, ...]
    nonempty: tuple[int, ...]

    def __call__(self, j: int) -> int:
        frame = pl.read_parquet(self.pairs[j], columns=["_a", "_b"]).select(
            _j=pl.lit(j, pl.Int64), _idx=pl.int_range(pl.len(), dtype=pl.Int64), _a=pl.col("_a").cast(pl.Int64),
            _b=pl.col("_b").cast(pl.Int64),
        )
        if frame["_a"].null_count() or frame["_b"].null_count():
            raise ValueError(f"{self.pairs[j]}: _a and _b must not be null")
        part = _part_index(frame["_a"].to_numpy(), np.array(self.starts, np.int64), np.array(self.nonempty, np.int64))
        _scatter(frame, part, self.sources, self.root / "by_a", j)
        return len(frame)


def _attach(frame: pl.DataFrame, column: str, path: Path, name: str) -> pl.DataFrame:
    """``frame`` with the signature of ``column`` (read from the part ``path``) as ``name``; a position the
    part does not hold is an error."""
    sigs = _read_signatures(path).rename({"_pos": column, "_sig": name})
    joined = frame.join(sigs, on=column, how="left")
    missing = joined.filter(pl.col(name).is_null())
    if missing.height:
        raise ValueError(f"position {missing[column][0]} of a pair is in no signature part ({path} has not it)")
    return joined


@dataclass(frozen=True)
class _JoinA:
    """Per signature part: ``_a``'s signature attached; scattered by the part of ``_b``."""

    root: Path
    paths: tuple[Path, ...]
    pair_files: int
    starts: tuple[int, ...]
    nonempty: tuple[int, ...]

    def __call__(self, i: int) -> None:
        frame = _attach(_gather(self.root / "by_a", i, self.pair_files), "_a", self.paths[i], "_sig_a")
        part = _part_index(frame["_b"].to_numpy(), np.array(self.starts, np.int64), np.array(self.nonempty, np.int64))
        _scatter(frame.drop("_a"), part, len(self.paths), self.root / "by_b", i)


@dataclass(frozen=True)
class _JoinB:
    """Per signature part: ``_b``'s signature attached, the estimate computed; scattered by pairs file."""

    root: Path
    paths: tuple[Path, ...]
    pair_files: int

    def __call__(self, i: int) -> None:
        frame = _attach(_gather(self.root / "by_b", i, len(self.paths)), "_b", self.paths[i], "_sig_b")
        out = frame.select("_j", "_idx", _jaccard=pl.Series(_jaccard(frame["_sig_a"], frame["_sig_b"])))
        _scatter(out, out["_j"].to_numpy(), self.pair_files, self.root / "by_j", i)


@dataclass(frozen=True)
class _PairCollect:
    """Per pairs file: its estimates in its own row order, next to ``_a`` and ``_b``."""

    root: Path
    pairs: tuple[Path, ...]
    sources: int

    def __call__(self, j: int) -> str:
        estimates = _gather(self.root / "by_j", j, self.sources).sort("_idx")
        pairs = pl.read_parquet(self.pairs[j], columns=["_a", "_b"]).select(pl.all().cast(pl.Int64))
        if estimates.height != pairs.height:  # a lost pair would be a bug in the scatter
            raise RuntimeError(f"{self.pairs[j]}: {pairs.height} pairs, {estimates.height} estimates")
        path = self.root / "jaccard" / _NAME.format(j)
        _write(pairs.with_columns(estimates["_jaccard"]), path)
        return str(path)


def pair_jaccard(sig_parts: Sequence[Path], pairs: Sequence[Path], scratch: Path, run: RunFn) -> list[Path]:
    """:func:`minhash.estimate_jaccard` of each pair of positions (Parquet files of ``_a``, ``_b``) from the
    signatures in ``sig_parts`` (as :func:`keyed_clusters` reads them): one file per pairs file
    (``scratch/pair_jaccard/jaccard/j.parquet``) with ``_a``, ``_b``, ``_jaccard`` (Float64) in the
    pairs' order.  Two hops over the signature parts, which are range-partitioned by position already:
    pairs scattered by ``_a``'s part, ``_a``'s signature attached, scattered by ``_b``'s part, ``_b``'s
    attached and the estimate taken, scattered back by pairs file.  A position in no part is an error."""
    root = Path(scratch) / "pair_jaccard"
    paths, pair_paths = tuple(Path(p) for p in sig_parts), tuple(Path(p) for p in pairs)
    if not pair_paths:
        return []
    if not paths:
        raise ValueError("pair_jaccard needs at least one signature part")
    starts, nonempty = _ranges(run(_Ranges(), list(paths)))
    bounds = (tuple(int(s) for s in starts), tuple(int(i) for i in nonempty))
    run(_PairScatter(root, pair_paths, len(paths), *bounds), range(len(pair_paths)))
    run(_JoinA(root, paths, len(pair_paths), *bounds), range(len(paths)))
    run(_JoinB(root, paths, len(pair_paths)), range(len(paths)))
    out = run(_PairCollect(root, pair_paths, len(paths)), range(len(pair_paths)))
    run(_remove_tree, [root / d for d in ("by_a", "by_b", "by_j")])
    return [Path(p) for p in out]
