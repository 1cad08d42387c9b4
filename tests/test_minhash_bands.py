"""The per-band (distributed) form of MinHash clustering gives the partition of the local ``cluster``."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from curate import Context
from curate.dedup import minhash as mh


def signatures(seed: int, n: int, num_perm: int, alphabet: int, copies: float) -> np.ndarray:
    """Random signatures over a small alphabet (so bands collide often), a share of them near copies of
    earlier rows (a few positions changed) or exact copies (identical signatures: one node)."""
    rng = np.random.default_rng(seed)
    sig = rng.integers(0, alphabet, size=(n, num_perm), dtype=np.uint32)
    for i in range(1, n):
        if rng.random() < copies:
            sig[i] = sig[rng.integers(i)]
            changed = rng.integers(num_perm, size=rng.integers(0, 3))
            sig[i, changed] = rng.integers(0, alphabet, size=len(changed), dtype=np.uint32)
    return sig


def test_band_hash_is_a_column_of_band_hashes() -> None:
    sig = signatures(0, 50, 24, 1 << 30, 0.0)
    full = mh.band_hashes(sig, 4, 6)
    for k in range(4):
        assert np.array_equal(mh.band_hash(sig, k, 6), full[:, k])


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 70),
    shape=st.sampled_from([(8, 2, 4), (8, 4, 2), (12, 3, 3), (16, 4, 4), (16, 8, 2), (6, 6, 1)]),
    alphabet=st.integers(2, 6),
    copies=st.floats(0.0, 0.9),
    threshold=st.floats(0.05, 1.0),
    verify=st.booleans(),
    window=st.integers(1, 5),
)
def test_per_band_partition_is_the_local_one(
    seed: int, n: int, shape: tuple[int, int, int], alphabet: int, copies: float, threshold: float, verify: bool,
    window: int,
) -> None:
    """Same labels (partition and names), whatever the collisions, bucket sizes beyond the window included:
    the pairs ``cluster`` skips are inside one component already."""
    num_perm, bands, rows = shape
    sig = signatures(seed, n, num_perm, alphabet, copies)
    params = {"bands": bands, "rows": rows, "threshold": threshold, "verify": verify, "window": window}
    local, local_figures = mh.cluster(sig, **params)
    by_band, figures = mh.cluster_by_band(sig, **params)
    assert np.array_equal(by_band, local)
    assert figures["candidate_pairs"] >= local_figures["candidate_pairs"]
    assert figures["verified_pairs"] >= local_figures["verified_pairs"]


def test_through_the_context_hook_and_skipped_pairs_counted() -> None:
    """Through ``Context.compute_shared`` (in this process) the result is the same; the figures count the
    pairs that several bands find (``cluster`` checks those once)."""
    sig = signatures(7, 400, 16, 3, 0.6)
    params = {"bands": 4, "rows": 4, "threshold": 0.5, "verify": True, "window": 3}
    local, local_figures = mh.cluster(sig, **params)
    ctx = Context.ephemeral()
    try:
        by_band, figures = mh.cluster_by_band(sig, **params, compute=ctx.compute_shared)
    finally:
        ctx.close()
    assert np.array_equal(by_band, local)
    assert len(np.unique(local)) < len(sig) - 50  # many clusters of several rows: the test has teeth
    assert figures["candidate_pairs"] > local_figures["candidate_pairs"]


def test_empty_and_single() -> None:
    for n in (0, 1):
        sig = np.zeros((n, 8), np.uint32)
        labels, figures = mh.cluster_by_band(sig, bands=2, rows=4, threshold=0.5)
        assert labels.tolist() == list(range(n)) and figures == {"candidate_pairs": 0, "verified_pairs": 0}
