"""The keyed, file-based MinHash clustering gives the partition of the local ``minhash.cluster``; its
large-star / small-star components equal scipy's; ``pair_jaccard`` equals ``estimate_jaccard``."""

from __future__ import annotations

import importlib.util
import itertools
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from test_minhash_bands import signatures  # tests/ is on sys.path: one generator for both MinHash files

from curate.dedup import minhash as mh
from curate.dedup.minhash_keyed import KeyedSpec, edge_components, keyed_clusters, pair_jaccard


def run_local(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    return [fn(item) for item in items]


def run_twice(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """Every task run twice, as a retried task would be: the second run must find nothing it breaks."""
    first = [fn(item) for item in items]
    again = [fn(item) for item in items]
    assert again == first
    return again


def write_parts(sig: np.ndarray, pos: np.ndarray, cuts: Sequence[int], directory: Path, as_list: bool) -> list[Path]:
    """Signature parts split at ``cuts`` (empty parts allowed), ``_sig`` as a list or an array column."""
    bounds = [0, *sorted(cuts), len(sig)]
    paths = []
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        column = (
            pl.Series("_sig", [list(r) for r in sig[lo:hi]], dtype=pl.List(pl.UInt32))
            if as_list
            else pl.Series("_sig", sig[lo:hi].reshape(hi - lo, sig.shape[1]))
        )
        path = directory / f"sig-{i}.parquet"
        pl.DataFrame({"_pos": pl.Series(pos[lo:hi], dtype=pl.Int64), "_sig": column}).write_parquet(path)
        paths.append(path)
    return paths


def groups(labels: np.ndarray, pos: np.ndarray) -> set[frozenset[int]]:
    """The clusters of more than one row, as sets of positions."""
    found: dict[int, set[int]] = {}
    for label, p in zip(labels.tolist(), pos.tolist(), strict=True):
        found.setdefault(label, set()).add(p)
    return {frozenset(g) for g in found.values() if len(g) > 1}


SHAPES = [(8, 2, 4), (8, 4, 2), (12, 3, 3), (16, 4, 4), (16, 8, 2), (6, 6, 1)]


@pytest.mark.slow  # 60 examples, each a few hundred small Parquet files
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 60),
    shape=st.sampled_from(SHAPES),
    alphabet=st.integers(2, 6),
    copies=st.floats(0.0, 0.9),
    threshold=st.floats(0.05, 1.0),
    verify=st.booleans(),
    window=st.sampled_from([1, 2, 3, 5, mh.BUCKET_WINDOW]),
    partitions=st.integers(1, 7),
    n_parts=st.integers(1, 4),
    as_list=st.booleans(),
)
def test_keyed_clusters_is_the_local_partition(
    seed: int, n: int, shape: tuple[int, int, int], alphabet: int, copies: float, threshold: float,
    verify: bool, window: int, partitions: int, n_parts: int, as_list: bool,
) -> None:
    num_perm, bands, rows = shape
    sig = signatures(seed, n, num_perm, alphabet, copies)
    rng = np.random.default_rng(seed)
    pos = np.sort(rng.choice(10 * n + 10, size=n, replace=False)).astype(np.int64) + 5  # gaps: not row numbers
    labels, local = mh.cluster(sig, bands=bands, rows=rows, threshold=threshold, verify=verify, window=window)
    by_band = mh.cluster_by_band(sig, bands=bands, rows=rows, threshold=threshold, verify=verify, window=window)[1]
    spec = KeyedSpec(bands=bands, rows=rows, threshold=threshold, verify=verify, window=window, partitions=partitions)
    with tempfile.TemporaryDirectory() as tmp:
        parts = write_parts(sig, pos, rng.integers(0, n + 1, size=n_parts - 1).tolist(), Path(tmp), as_list)
        files, figures = keyed_clusters(parts, spec, Path(tmp) / "scratch", run_local)
        assert len(files) == len(parts)
        frames = [pl.read_parquet(f) for f in files]
        for frame, part in zip(frames, parts, strict=True):  # file i holds part i's rows, sorted
            assert frame["_pos"].is_sorted()
            assert set(frame["_pos"].to_list()) <= set(pl.read_parquet(part)["_pos"].to_list())
        out = pl.concat(frames)
    expected = groups(labels, pos)
    assert groups(out["_cluster"].to_numpy(), out["_pos"].to_numpy()) == expected
    assert out["_pos"].n_unique() == out.height == sum(len(g) for g in expected)
    named = out.group_by("_cluster").agg(pl.col("_pos").min())
    assert (named["_cluster"] == named["_pos"]).all()  # a cluster is named by its smallest position
    assert figures["candidate_pairs"] == by_band["candidate_pairs"] >= local["candidate_pairs"]
    assert figures["verified_pairs"] == by_band["verified_pairs"]
    assert figures["rows"] == n
    assert figures["nodes"] == (len(np.unique(mh.signature_keys(sig))) if n else 0)
    assert figures["clusters"] == len(expected)


def test_keyed_clusters_survive_retried_tasks(tmp_path: Path) -> None:
    """Every task run twice (a Ray retry after a lost worker): the same files, the same clusters."""
    sig = signatures(3, 120, 16, 4, 0.6)
    pos = np.arange(120, dtype=np.int64)
    parts = write_parts(sig, pos, [40, 90], tmp_path, as_list=False)
    spec = KeyedSpec(bands=4, rows=4, threshold=0.5, partitions=3)
    once, figures = keyed_clusters(parts, spec, tmp_path / "a", run_local)
    twice, again = keyed_clusters(parts, spec, tmp_path / "b", run_twice)
    assert figures == again
    for a, b in zip(once, twice, strict=True):
        assert pl.read_parquet(a).equals(pl.read_parquet(b))
    labels, _ = mh.cluster(sig, bands=4, rows=4, threshold=0.5)
    out = pl.concat([pl.read_parquet(f) for f in once])
    assert groups(out["_cluster"].to_numpy(), out["_pos"].to_numpy()) == groups(labels, pos)
    assert figures["clustered_rows"] > 20  # the example has clusters to find


def test_keyed_clusters_leave_only_their_output(tmp_path: Path) -> None:
    sig = signatures(5, 50, 8, 3, 0.5)
    parts = write_parts(sig, np.arange(50, dtype=np.int64), [25], tmp_path, as_list=True)
    files, _ = keyed_clusters(parts, KeyedSpec(bands=4, rows=2, threshold=0.5), tmp_path / "s", run_local)
    left = {p.relative_to(tmp_path / "s") for p in (tmp_path / "s").rglob("*") if p.is_file()}
    assert left == {f.relative_to(tmp_path / "s") for f in files}


def test_keyed_spec_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="partitions"):
        KeyedSpec(bands=2, rows=2, threshold=0.5, partitions=0)
    with pytest.raises(ValueError, match="window"):
        KeyedSpec(bands=2, rows=2, threshold=0.5, window=0)


def test_keyed_clusters_reject_overlapping_parts(tmp_path: Path) -> None:
    sig = signatures(1, 10, 8, 3, 0.0)
    parts = write_parts(sig, np.array([0, 1, 2, 3, 4, 2, 6, 7, 8, 9], dtype=np.int64), [5], tmp_path, as_list=False)
    with pytest.raises(ValueError, match="disjoint"):
        keyed_clusters(parts, KeyedSpec(bands=4, rows=2, threshold=0.5), tmp_path / "s", run_local)


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 80),
    density=st.floats(0.0, 2.0),
    partitions=st.integers(1, 7),
    files=st.integers(1, 4),
)
def test_edge_components_are_scipys(seed: int, n: int, density: float, partitions: int, files: int) -> None:
    """Random graphs (paths, self-loops, repeated edges, sparse large ids) against scipy's components."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(1 << 40, size=n, replace=False)).astype(np.int64)
    m = int(density * n)
    a, b = rng.integers(0, n, size=m), rng.integers(0, n, size=m)
    if rng.random() < 0.3:  # a long path in a shuffled order: the case that needs many rounds
        path = rng.permutation(n)
        a, b = np.concatenate([a, path[:-1]]), np.concatenate([b, path[1:]])
    which = rng.integers(0, files, size=len(a))
    with tempfile.TemporaryDirectory() as tmp:
        edge_files = []
        for j in range(files):
            path = Path(tmp) / f"edges-{j}.parquet"
            pl.DataFrame({"_a": ids[a[which == j]], "_b": ids[b[which == j]]}, schema={"_a": pl.Int64, "_b": pl.Int64}
                         ).write_parquet(path)
            edge_files.append(path)
        label_files, rounds = edge_components(edge_files, Path(tmp) / "s", partitions, run_local)
        labels = pl.concat([pl.read_parquet(f) for f in label_files])
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    component = connected_components(graph, directed=False)[1]
    smallest = np.full(component.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(smallest, component, ids)
    touched = np.unique(np.concatenate([a[a != b], b[a != b]]))
    expected = dict(zip(ids[touched].tolist(), smallest[component[touched]].tolist(), strict=True))
    assert dict(zip(labels["_node"].to_list(), labels["_label"].to_list(), strict=True)) == expected
    assert labels.height == len(expected)
    assert rounds >= 1


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 60),
    num_perm=st.sampled_from([1, 8, 16]),
    n_parts=st.integers(1, 4),
    pair_files=st.integers(1, 3),
    as_list=st.booleans(),
)
def test_pair_jaccard_is_estimate_jaccard(
    seed: int, n: int, num_perm: int, n_parts: int, pair_files: int, as_list: bool
) -> None:
    sig = signatures(seed, n, num_perm, 3, 0.5)
    rng = np.random.default_rng(seed)
    pos = np.sort(rng.choice(3 * n, size=n, replace=False)).astype(np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        parts = write_parts(sig, pos, rng.integers(0, n + 1, size=n_parts - 1).tolist(), Path(tmp), as_list)
        pairs, wanted = [], []
        for j in range(pair_files):
            i, k = rng.integers(0, n, size=(2, int(rng.integers(0, 40))))
            path = Path(tmp) / f"pairs-{j}.parquet"
            pl.DataFrame({"_a": pos[i], "_b": pos[k]}, schema={"_a": pl.Int64, "_b": pl.Int64}).write_parquet(path)
            pairs.append(path)
            wanted.append((pos[i], pos[k], mh.estimate_jaccard(sig[i], sig[k])))
        out = [pl.read_parquet(p) for p in pair_jaccard(parts, pairs, Path(tmp) / "s", run_local)]
    assert len(out) == pair_files
    for frame, (a, b, jaccard) in zip(out, wanted, strict=True):
        assert frame.columns == ["_a", "_b", "_jaccard"]
        assert frame["_jaccard"].dtype == pl.Float64
        assert np.array_equal(frame["_a"].to_numpy(), a)  # the pairs' order is kept
        assert np.array_equal(frame["_b"].to_numpy(), b)
        assert np.array_equal(frame["_jaccard"].to_numpy(), jaccard)


def test_pair_jaccard_names_a_position_in_no_part(tmp_path: Path) -> None:
    sig = signatures(2, 10, 8, 3, 0.0)
    parts = write_parts(sig, np.arange(10, 20, dtype=np.int64), [5], tmp_path, as_list=False)
    pairs = tmp_path / "pairs.parquet"
    pl.DataFrame({"_a": [11, 13], "_b": [12, 3]}).write_parquet(pairs)
    with pytest.raises(ValueError, match="position 3"):
        pair_jaccard(parts, [pairs], tmp_path / "s", run_local)
    pl.DataFrame({"_a": [11, 13], "_b": [12, 15]}).write_parquet(pairs)  # 15: after part 0, before part 1
    pl.DataFrame({"_pos": [16, 17, 18, 19, 20], "_sig": sig[5:]}).write_parquet(parts[1])
    with pytest.raises(ValueError, match="position 15"):
        pair_jaccard(parts, [pairs], tmp_path / "s", run_local)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed (pip install 'curate[dist]')")
def test_keyed_steps_run_as_ray_tasks(tmp_path: Path) -> None:
    """The steps pickle and run in Ray workers (a local 2-CPU Ray), with the local run's result."""
    import ray

    def run_ray(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        task = ray.remote(lambda f, item: f(item))
        return ray.get([task.remote(fn, item) for item in items])

    sig = signatures(11, 300, 16, 4, 0.6)
    pos = np.arange(300, dtype=np.int64) * 2
    parts = write_parts(sig, pos, [100, 200], tmp_path, as_list=False)
    spec = KeyedSpec(bands=4, rows=4, threshold=0.5, partitions=3)
    pairs = tmp_path / "pairs.parquet"
    pl.DataFrame({"_a": pos[:50], "_b": pos[::-1][:50]}).write_parquet(pairs)
    started = ray.is_initialized()
    if not started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        files, figures = keyed_clusters(parts, spec, tmp_path / "ray", run_ray)
        jaccard = pair_jaccard(parts, [pairs], tmp_path / "ray", run_ray)
    finally:
        if not started:
            ray.shutdown()
    local_files, local_figures = keyed_clusters(parts, spec, tmp_path / "local", run_local)
    assert figures == local_figures
    assert figures["clustered_rows"] > 50
    for a, b in zip(files, local_files, strict=True):
        assert pl.read_parquet(a).equals(pl.read_parquet(b))
    frame = pl.read_parquet(jaccard[0])
    assert np.array_equal(frame["_jaccard"].to_numpy(), mh.estimate_jaccard(sig[:50], sig[::-1][:50]))


def test_edge_components_of_a_long_shuffled_path(tmp_path: Path) -> None:
    """A path of 300 nodes in shuffled order over 3 partitions needs several large-star/small-star rounds
    (the contraction of the keyed run would hide them); every node ends labelled with the smallest."""
    rng = np.random.default_rng(7)
    order = rng.permutation(300).astype(np.int64) * 11 + 3
    edges = tmp_path / "edges.parquet"
    pl.DataFrame({"_a": order[:-1], "_b": order[1:]}).write_parquet(edges)
    files, rounds = edge_components([edges], tmp_path / "s", 3, run_local)
    labels = pl.concat([pl.read_parquet(f) for f in files])
    assert labels.height == 300
    assert labels["_label"].unique().to_list() == [3]
    assert 2 < rounds < 20


def test_keyed_clusters_rerun_after_a_crash_ignores_its_files(tmp_path: Path) -> None:
    """A run killed part-way (here after 40 tasks, 6 partitions) leaves files behind; the same call again in
    the same scratch, with fewer partitions (a cluster that lost a node), gives a fresh run's result."""
    sig = signatures(9, 150, 16, 4, 0.6)
    pos = np.arange(150, dtype=np.int64) * 5
    parts = write_parts(sig, pos, [30, 60, 120], tmp_path, as_list=False)
    done = []

    def crashing(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        out = []
        for item in items:
            if len(done) == 40:
                raise RuntimeError("worker lost")
            out.append(fn(item))
            done.append(item)
        return out

    spec = KeyedSpec(bands=4, rows=4, threshold=0.5, partitions=6)
    with pytest.raises(RuntimeError, match="worker lost"):
        keyed_clusters(parts, spec, tmp_path / "s", crashing)
    again, figures = keyed_clusters(parts, KeyedSpec(bands=4, rows=4, threshold=0.5, partitions=2),
                                    tmp_path / "s", run_local)
    fresh, fresh_figures = keyed_clusters(parts, KeyedSpec(bands=4, rows=4, threshold=0.5, partitions=2),
                                          tmp_path / "fresh", run_local)
    assert figures == fresh_figures
    for a, b in zip(again, fresh, strict=True):
        assert pl.read_parquet(a).equals(pl.read_parquet(b))
    labels, _ = mh.cluster(sig, bands=4, rows=4, threshold=0.5)
    out = pl.concat([pl.read_parquet(f) for f in again])
    assert groups(out["_cluster"].to_numpy(), out["_pos"].to_numpy()) == groups(labels, pos)
