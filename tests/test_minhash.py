from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from curate import Context
from curate.dedup import minhash as mh
from curate.schema import conform
from curate.stages import MinHashDedup

REASON = re.compile(r"^near duplicate \(minhash, jaccard [01]\.\d\d\) of ([0-9a-f]{32})$")
VOCAB = [f"w{i}" for i in range(400)]


def doc(seed: int, words: int = 80) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(VOCAB[i] for i in rng.integers(len(VOCAB), size=words))


def near(text: str, seed: int = 0, edits: int = 1) -> str:
    """A copy with ``edits`` words replaced in the last tenth (Jaccard about 0.88 at 80 words, 1 edit)."""
    rng = np.random.default_rng(seed)
    words = text.split()
    for _ in range(edits):
        words[int(rng.integers(len(words) * 9 // 10, len(words)))] = "novel"
    return " ".join(words)


def frame(prompts: list[str], **extra: list) -> pl.LazyFrame:
    rows = [[{"role": "user", "content": p}, {"role": "assistant", "content": f"a{i}"}] for i, p in enumerate(prompts)]
    return conform(pl.DataFrame({"messages": rows, **extra}).lazy(), "conversation")


def prompts_of(df: pl.DataFrame) -> list[str]:
    return [m[0]["content"] for m in df["messages"].to_list()]


def partition(lf: pl.LazyFrame, stage: MinHashDedup) -> set[frozenset[str]]:
    """Clusters of prompts (kept row + the rows quarantined as its duplicates) from one run of ``stage``."""
    ctx = Context.ephemeral()
    text = dict(zip(*lf.select("id", pl.col("messages").list.first().struct.field("content")).collect(), strict=True))
    kept = lf.pipe(stage, ctx).collect()["id"].to_list()
    quarantine = ctx.quarantine_frame()
    groups: dict[str, set[str]] = {k: {text[k]} for k in kept}
    for row_id, reason in zip(quarantine["id"].to_list(), quarantine["reason"].to_list(), strict=True):
        match = REASON.match(reason)
        assert match, reason
        groups[match.group(1)].add(text[row_id])
    return {frozenset(g) for g in groups.values()}


# -- the stage -------------------------------------------------------------------------------------------


def test_exact_and_near_copies_clustered_unrelated_not() -> None:
    a, b, c = doc(1), doc(2), doc(3)
    lf = frame([a, b, a.upper().replace(" ", ", "), near(a), c])
    ctx = Context.ephemeral()
    out = lf.pipe(MinHashDedup(), ctx).collect()
    assert prompts_of(out) == [a, b, c]
    quarantine = ctx.quarantine_frame()
    assert quarantine.height == 2
    kept_a = out["id"][0]
    assert all(REASON.match(r) and r.endswith(f"of {kept_a}") for r in quarantine["reason"])
    assert "jaccard 1.00" in quarantine["reason"][0]  # punctuation and case vanish in normalisation
    stats = ctx.stats["minhash_dedup"]
    assert (stats["bands"], stats["rows"]) == (14, 9)
    assert stats["clusters"] == 1 and stats["duplicates"] == 2


def test_below_threshold_stays() -> None:
    a = doc(4)
    far = " ".join(f"new{i}" if i % 10 == 5 else w for i, w in enumerate(a.split()))  # 8 edits, spread
    set_a, set_far = mh.shingle_set(mh.normalise([a])[0], 5), mh.shingle_set(mh.normalise([far])[0], 5)
    exact = len(set_a & set_far) / len(set_a | set_far)
    assert 0.25 < exact < 0.4
    assert frame([a, far]).pipe(MinHashDedup()).collect().height == 2
    assert frame([a, far]).pipe(MinHashDedup(threshold=0.15)).collect().height == 1


def test_keep_rules_and_reason_names_kept_id() -> None:
    a = doc(5)
    texts = [near(a, 1), a + " and a longer tail of words", near(a, 2)]
    lf = frame(texts, score=[0.5, 0.1, 0.9])
    assert prompts_of(lf.pipe(MinHashDedup()).collect()) == [texts[0]]
    assert prompts_of(lf.pipe(MinHashDedup(keep="longest")).collect()) == [texts[1]]
    ctx = Context.ephemeral()
    best = lf.pipe(MinHashDedup(keep="highest:score"), ctx).collect()
    assert best["score"].to_list() == [0.9]
    assert all(r.endswith(f"of {best['id'][0]}") for r in ctx.quarantine_frame()["reason"])
    with pytest.raises(Exception, match="no column 'nope'"):
        lf.pipe(MinHashDedup(keep="highest:nope")).collect()
    with pytest.raises(ValidationError):
        MinHashDedup(keep="random")


def test_band_selection() -> None:
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    assert MinHashDedup(verify=False).band_params() == (lsh.b, lsh.r) == (9, 13)
    lsh = MinHashLSH(threshold=0.5, num_perm=64)
    assert MinHashDedup(threshold=0.5, num_perm=64, false_negative_weight=0.5).band_params() == (lsh.b, lsh.r)
    assert MinHashDedup().band_params() == (14, 9)  # verified candidates: the bands lean to recall
    assert MinHashDedup(bands=16, rows=8).band_params() == (16, 8)
    b, r = mh.optimal_bands(0.8, 128)
    assert b * r <= 128 and mh.collision_probability(0.9, b, r) > 0.9 > 0.1 > mh.collision_probability(0.5, b, r)
    with pytest.raises(ValidationError, match="both bands and rows"):
        MinHashDedup(bands=4)
    with pytest.raises(ValidationError, match="exceeds num_perm"):
        MinHashDedup(bands=20, rows=10)
    with pytest.raises(ValidationError):
        MinHashDedup(threshold=0)


def test_resume_computes_no_batch_and_threshold_reuses_signatures() -> None:
    texts = [doc(i, 30) for i in range(40)] + [near(doc(0, 30))]
    lf = frame(texts)
    first = Context.ephemeral()
    out1 = MinHashDedup(batch_size=16)(lf, first).collect()
    assert first.stats["minhash_dedup"]["batches_computed"] == 3
    again = Context(cache_dir=first.cache_dir)
    out2 = MinHashDedup(batch_size=16)(lf, again).collect()
    assert again.stats["minhash_dedup"]["batches_computed"] == 0
    assert again.stats["minhash_dedup"]["batches_cached"] == 3
    assert out1.equals(out2)
    other = Context(cache_dir=first.cache_dir)
    MinHashDedup(batch_size=16, threshold=0.6, keep="longest", verify=False)(lf, other).collect()
    assert other.stats["minhash_dedup"]["batches_computed"] == 0
    changed = Context(cache_dir=first.cache_dir)
    MinHashDedup(batch_size=16, ngram=3)(lf, changed).collect()
    assert changed.stats["minhash_dedup"]["batches_computed"] == 3


def test_short_texts_on_response_and_empty() -> None:
    # fewer words than ngram: one shingle of the whole text, so only the same words in order match
    assert mh.shingle_set("hello world", 5) == {"hello world"}
    assert mh.shingle_set("", 5) == set()
    out = frame(["Hello, world!", "hello world", "world hello", "hello there world"]).pipe(MinHashDedup()).collect()
    assert prompts_of(out) == ["Hello, world!", "world hello", "hello there world"]
    pairs = conform(
        pl.DataFrame(
            {
                "messages": [
                    [{"role": "user", "content": q}, {"role": "assistant", "content": r}]
                    for q, r in [("q1", doc(7)), ("q2", near(doc(7))), ("q3", doc(8))]
                ]
            }
        ).lazy(),
        "conversation",
    )
    assert pairs.pipe(MinHashDedup(on="response")).collect().height == 2
    assert pairs.pipe(MinHashDedup(on="prompt")).collect().height == 3
    # empty texts share the empty signature: duplicates of each other, as in exact_dedup
    assert prompts_of(frame(["", "x", ""]).pipe(MinHashDedup()).collect()) == ["", "x"]


def test_empty_input_and_no_verify() -> None:
    lf = frame(["x"]).filter(pl.lit(False))
    assert lf.pipe(MinHashDedup()).collect().height == 0
    a = doc(9)
    assert frame([a, near(a), doc(10)]).pipe(MinHashDedup(verify=False)).collect().height == 2


def test_large_bucket_forms_one_cluster() -> None:
    base = doc(11, 200)
    variants = [near(base, seed=s) for s in range(120)]  # 120 distinct near copies share most buckets
    sig = mh.text_signatures(variants)
    labels, figures = mh.cluster(sig, bands=14, rows=9, threshold=0.8)
    assert len(np.unique(labels)) == 1
    assert figures["verified_pairs"] >= len(np.unique(mh.signature_keys(sig))) - 1


# -- the algorithms ----------------------------------------------------------------------------------------


def test_estimate_close_to_exact_jaccard() -> None:
    errors = []
    for seed in range(60):
        a = doc(100 + seed, 60)
        b = near(a, seed=seed, edits=seed % 8) if seed % 3 else doc(200 + seed, 60)
        b = " ".join(b.split()[: 60 - seed % 5])
        na, nb = mh.normalise([a, b]).to_list()
        sa, sb = mh.shingle_set(na, 5), mh.shingle_set(nb, 5)
        exact = len(sa & sb) / len(sa | sb)
        sig = mh.text_signatures([a, b])
        errors.append(float(mh.estimate_jaccard(sig[0], sig[1])) - exact)
    errors = np.abs(errors)
    assert errors.max() < 0.15  # 128 permutations: standard error <= 0.045
    assert errors.mean() < 0.04


texts_strategy = st.lists(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
    | st.lists(st.sampled_from(["alpha", "beta", "Gamma", "δέλτα", "中文", "x1", "--", " ", "\n"]), max_size=15).map(
        " ".join
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(texts_strategy, st.data())
def test_signatures_do_not_depend_on_batching(texts: list[str], data: st.DataObject) -> None:
    whole = mh.text_signatures(texts, num_perm=32)
    cut = data.draw(st.integers(0, len(texts)))
    parts = np.concatenate([mh.text_signatures(texts[:cut], num_perm=32), mh.text_signatures(texts[cut:], num_perm=32)])
    assert np.array_equal(whole, parts)
    one = data.draw(st.integers(0, len(texts) - 1))
    assert np.array_equal(whole[one], mh.text_signatures([texts[one]], num_perm=32)[0])


@settings(max_examples=60, deadline=None)
@given(texts_strategy, st.integers(1, 6))
def test_hashed_shingles_are_the_reference_shingle_sets(texts: list[str], ngram: int) -> None:
    normalised = mh.normalise(texts)
    tokens, words = mh.token_hashes(normalised)
    shingles, counts = mh.shingle_hashes(tokens, words, ngram)
    starts = np.cumsum(counts) - counts
    for i, text in enumerate(normalised.to_list()):
        reference = mh.shingle_set(text, ngram)
        assert words[i] == len(text.split())
        assert len(np.unique(shingles[starts[i] : starts[i] + counts[i]])) == len(reference)
    # equal shingle sets => equal signatures (the converse only holds with high probability)
    sig = mh.text_signatures(texts, ngram=ngram, num_perm=16)
    for i in range(len(texts)):
        for j in range(i):
            if mh.shingle_set(normalised[i], ngram) == mh.shingle_set(normalised[j], ngram):
                assert np.array_equal(sig[i], sig[j])


def test_sub_batches_cut_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [doc(i, int(5 + i * 7 % 60)) for i in range(50)] + ["", "one", "Ünïcödé ﬁ — text"]
    whole = mh.text_signatures(texts)
    monkeypatch.setattr(mh, "BYTE_BLOCK", 97)  # many sub-batches; some texts longer than a block
    assert np.array_equal(whole, mh.text_signatures(texts))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=8), st.integers(0, 7), st.randoms(use_true_random=False))
def test_a_document_is_a_duplicate_of_its_copy(seeds: list[int], pick: int, rnd) -> None:
    texts = [doc(s, 40) for s in seeds]
    original = texts[pick % len(texts)]
    copy = original.upper() + " !"
    texts.insert(rnd.randint(0, len(texts)), copy)
    out = prompts_of(frame(texts).pipe(MinHashDedup()).collect())
    assert (original in out) != (copy in out)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 3)), min_size=2, max_size=14), st.randoms())
def test_partition_does_not_depend_on_row_order(specs: list[tuple[int, int]], rnd) -> None:
    texts = list(dict.fromkeys(near(doc(s, 50), seed=e, edits=e) if e else doc(s, 50) for s, e in specs))
    shuffled = list(texts)
    rnd.shuffle(shuffled)
    stage = MinHashDedup(batch_size=4)
    assert partition(frame(texts), stage) == partition(frame(shuffled), stage)
    sig = mh.text_signatures(texts)
    order = np.array(rnd.sample(range(len(texts)), len(texts)))
    labels, _ = mh.cluster(sig, bands=14, rows=9, threshold=0.8)
    shuffled_labels, _ = mh.cluster(sig[order], bands=14, rows=9, threshold=0.8)
    same = labels[:, None] == labels[None, :]
    assert np.array_equal(same[np.ix_(order, order)], shuffled_labels[:, None] == shuffled_labels[None, :])
