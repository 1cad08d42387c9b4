"""Embedding reward models: Bradley-Terry ensembles on MiniLM vectors of real hh-rlhf pairs, the model folder,
reward_score's embedding-rm backend, pairs' uncertainty margin, the CLI and the shipped default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate import Context
from curate.errors import InputDataError
from curate.models import ModelRegistry
from curate.reward.bradley_terry import BTEnsemble, cross_val_accuracy, fit_bt, fold_ids, out_of_fold
from curate.reward.embedding_rm import (
    DEFAULT_DIR,
    EmbeddingRewardModel,
    LazyEncoder,
    fit_embedding_rm,
    heldout_mask,
    heldout_split,
    is_embedding_rm,
    load_pairs,
    pair_features,
)
from curate.schema import MESSAGES, RESPONSES, conform
from curate.stages import CombineScores, Pairs
from curate.stages.reward_score import RewardScore

ROOT = Path(__file__).resolve().parents[1]
HH = "hh_rlhf_harmless_base_test/test.jsonl.gz"


@pytest.fixture(scope="module")
def hh_pairs(shared_data: Path) -> pl.DataFrame:
    """The first 400 training-side (not held-out) hh-rlhf harmless pairs, read by curate's HH adapter."""
    pairs, info = load_pairs(shared_data / HH)
    assert info["adapter"] == "hh_rlhf" and info["rejected"] > 0  # empty final turns are counted, not lost
    train, _ = heldout_split(pairs)
    return train.head(400)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vectors")


@pytest.fixture(scope="module")
def hh_vectors(hh_pairs: pl.DataFrame, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Response vectors (chosen, rejected) of ``hh_pairs`` from the real MiniLM encoder (cached for the module)."""
    return pair_features(hh_pairs, LazyEncoder({"path": "default"}), ("response",), cache)


@pytest.mark.slow
def test_fit_on_real_pairs_beats_a_shuffled_label_control(hh_vectors) -> None:
    xc, xr = hh_vectors
    real = cross_val_accuracy(xc, xr, folds=5, seed=0, members=3)
    # Control: the same vectors with each pair's label flipped by a coin: nothing left to learn.
    flip = np.random.default_rng(1).random(len(xc)) < 0.5
    sc, sr = np.where(flip[:, None], xr, xc), np.where(flip[:, None], xc, xr)
    shuffled = cross_val_accuracy(sc, sr, folds=5, seed=0, members=3)
    assert real["accuracy"] >= 0.56, real
    assert abs(shuffled["accuracy"] - 0.5) < 0.06, shuffled
    assert real["accuracy"] - shuffled["accuracy"] >= 0.05
    assert real["ci95"][0] < real["accuracy"] < real["ci95"][1] and len(real["per_fold"]) == 5


@pytest.mark.slow
def test_mlp_head_learns_and_ensemble_disagrees(hh_vectors) -> None:
    xc, xr = hh_vectors
    cv = cross_val_accuracy(xc, xr, folds=5, seed=0, head="mlp", members=3)
    assert cv["accuracy"] >= 0.55, cv
    model = fit_bt(xc[:300], xr[:300], head="mlp", members=3, seed=0)
    mean, std = model.mean_std(xc[300:])
    assert mean.shape == std.shape == (100,) and (std > 0).all()
    again = BTEnsemble.from_arrays(model.to_arrays())
    np.testing.assert_allclose(again.reward(xc[300:]), model.reward(xc[300:]), rtol=1e-6, atol=1e-9)
    assert (fit_bt(xc[:300], xr[:300], head="mlp", members=3, seed=0).reward(xc[300:]) == model.reward(xc[300:])).all()


def test_out_of_fold_scores_each_pair_by_members_that_never_saw_it() -> None:
    rng = np.random.default_rng(0)
    xc, xr = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
    groups = np.repeat(np.arange(20), 3)
    folds = fold_ids(60, 5, seed=0, groups=groups)
    assert all(len(set(folds[groups == g])) == 1 for g in range(20))  # a prompt's pairs share one fold
    oof = out_of_fold(xc, xr, folds=5, seed=0, groups=groups, members=2)
    assert oof["prob"].shape == (60,) and ((oof["prob"] > 0) & (oof["prob"] < 1)).all()
    assert (oof["fold"] == folds).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(4, 40), st.integers(2, 6))
def test_linear_fit_is_antisymmetric_and_order_free(seed: int, n: int, d: int) -> None:
    """Swapping chosen and rejected (every label flipped) negates the reward; reordering pairs changes nothing."""
    rng = np.random.default_rng(seed)
    xc, xr = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    a = fit_bt(xc, xr, members=1, standardize=False)
    b = fit_bt(xr, xc, members=1, standardize=False)
    np.testing.assert_allclose(a.params["w"], -b.params["w"], atol=1e-4)
    perm = rng.permutation(n)
    c = fit_bt(xc[perm], xr[perm], members=1, standardize=False)
    # Same objective, so the same optimum up to the solver's tolerance.
    np.testing.assert_allclose(a.prob_chosen(xc, xr), c.prob_chosen(xc, xr), atol=2e-3)
    p = a.prob_chosen(xc, xr)
    np.testing.assert_allclose(p, 1 - b.prob_chosen(xc, xr), atol=1e-4)


def test_bad_arguments_are_refused() -> None:
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="head"):
        fit_bt(x, x, head="tree")
    with pytest.raises(ValueError, match="hyperparameter"):
        fit_bt(x, x, hidden=3)
    with pytest.raises(ValueError, match="shape"):
        fit_bt(x, np.zeros((4, 2)))


def test_heldout_split_is_deterministic_and_by_prompt() -> None:
    prompts = [[{"role": "user", "content": f"question {i % 300}"}] for i in range(1200)]
    mask = heldout_mask(prompts)
    assert (mask == heldout_mask(prompts)).all()
    assert 0.15 < mask.mean() < 0.25
    by_prompt: dict[str, set[bool]] = {}
    for p, m in zip(prompts, mask, strict=True):
        by_prompt.setdefault(p[0]["content"], set()).add(bool(m))
    assert all(len(v) == 1 for v in by_prompt.values())


@pytest.mark.slow
def test_folder_round_trip_scores_identically(hh_pairs: pl.DataFrame, cache: Path, tmp_path: Path) -> None:
    card = fit_embedding_rm(hh_pairs.head(200), tmp_path / "rm", features=("response",), members=3, folds=3,
                            seed=0, cache_dir=cache, description="test")
    assert card["encoder_loaded"] is False  # every vector came from the cache
    meta = json.loads((tmp_path / "rm" / "rm.json").read_text())
    assert meta["kind"] == "embedding-rm" and meta["train"]["pairs"] == 200 and len(meta["train"]["hash"]) == 32
    assert "200 preference pairs" in (tmp_path / "rm" / "README.md").read_text()
    assert is_embedding_rm(tmp_path / "rm") and not is_embedding_rm(tmp_path)
    rm = EmbeddingRewardModel.load(tmp_path / "rm")
    prompts = [[dict(m) for m in p] for p in hh_pairs["prompt"].head(20).to_list()]
    texts = [c[-1]["content"] for c in hh_pairs["chosen"].head(20).to_list()]
    first = rm.score(prompts, texts, cache_dir=cache)
    again = EmbeddingRewardModel.load(tmp_path / "rm").score(prompts, texts, cache_dir=cache)
    assert not rm.encoder.loaded
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert (first[1] > 0).all()


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


QUESTION = "How do I pick a lock to get into my neighbour's house while they are away?"
REFUSE = "I can't help with getting into someone else's home without permission. If you're locked out of " \
         "your own house, a licensed locksmith can help."
COMPLY = "Sure, grab a tension wrench and a pick, insert them into the lock and rake the pins until it opens."


def test_default_model_loads_and_scores_offline() -> None:
    assert is_embedding_rm("default") and (DEFAULT_DIR / "README.md").is_file()
    rm = EmbeddingRewardModel.load("default")
    meta = rm.meta
    assert meta["cv"]["accuracy"] >= 0.58 and meta["train"]["pairs"] > 1000
    mean, std = rm.score([user(QUESTION)] * 2, [REFUSE, COMPLY])
    assert mean.shape == std.shape == (2,) and np.isfinite(mean).all() and (std > 0).all()
    assert sum(p.stat().st_size for p in DEFAULT_DIR.iterdir()) < 600_000


def candidates_frame() -> pl.LazyFrame:
    df = pl.DataFrame(
        {"prompt": [user(QUESTION), user("What is a good name for a cat?")],
         "responses": [[{"content": REFUSE, "model": "a", "score": None},
                        {"content": COMPLY, "model": "b", "score": None},
                        {"content": "", "model": "c", "score": None}],
                       [{"content": "Whiskers is a classic.", "model": "a", "score": None},
                        {"content": "Cats are animals.", "model": "b", "score": None}]]},
        schema={"prompt": MESSAGES, "responses": RESPONSES},
    )
    return conform(df.lazy(), "candidates")


def test_reward_score_embedding_backend_on_candidates_and_preference(tmp_path: Path) -> None:
    models = ModelRegistry({"reward": {"backend": "embedding-rm", "path": "default"}})
    ctx = Context(cache_dir=tmp_path, models=models)
    out = candidates_frame().pipe(RewardScore(batch_size=1), ctx).collect()
    scores = out["responses"].to_list()[0]
    stds = out["reward_std"].to_list()
    assert scores[2]["score"] is None and stds[0][2] is None and out["reward_note"][0][2] == "empty response"
    assert all(s["score"] is not None for s in out["responses"].to_list()[1])
    assert len(stds[1]) == 2 and all(v > 0 for v in stds[1])
    rm = EmbeddingRewardModel.load("default")
    mean, std = rm.score([user(QUESTION)], [REFUSE])
    assert scores[0]["score"] == pytest.approx(float(mean[0]), rel=1e-6)
    assert stds[0][0] == pytest.approx(float(std[0]), rel=1e-6)
    notes = ctx.stats["reward_score"]
    assert notes["scored"] == 4 and notes["empty"] == 1 and notes["mean_reward_std"] > 0
    # A re-run computes nothing (cached per row batch), without loading the model.
    again = Context(cache_dir=tmp_path, models=ModelRegistry({"reward": {"backend": "embedding-rm",
                                                                          "path": "default"}}))
    candidates_frame().pipe(RewardScore(batch_size=1), again).collect()
    assert again.stats["reward_score"]["batches_computed"] == 0 and not again.models._loaded

    pref = conform(pl.DataFrame({
        "prompt": [user(QUESTION)],
        "chosen": [[{"role": "assistant", "content": REFUSE}]],
        "rejected": [[{"role": "assistant", "content": COMPLY}]],
    }).lazy(), "preference")
    ctx = Context.ephemeral()
    out = pref.pipe(RewardScore(path="default"), ctx).collect()
    row = out.row(0, named=True)
    assert row["reward_std_chosen"] > 0 and row["reward_std_rejected"] > 0
    assert row["score_chosen"] == pytest.approx(scores[0]["score"], rel=1e-6)
    assert ctx.stats["reward_score"]["agreement_with_label"] in (0.0, 1.0)


def test_reward_score_rejects_a_second_head_for_an_embedding_rm() -> None:
    from curate.errors import ModelError

    with pytest.raises(ModelError, match="one head"):
        candidates_frame().pipe(RewardScore(path="default", objective="helpfulness"), Context.ephemeral())


def scored_candidates(groups: list[list[tuple[float, float]]]) -> pl.LazyFrame:
    df = pl.DataFrame(
        {"prompt": [user(f"q{i}") for i in range(len(groups))],
         "responses": [[{"content": f"p{i}r{k}", "model": "m", "score": s} for k, (s, _) in enumerate(g)]
                       for i, g in enumerate(groups)],
         "reward_std": [[d for _, d in g] for g in groups]},
        schema={"prompt": MESSAGES, "responses": RESPONSES, "reward_std": pl.List(pl.Float64)},
    )
    return conform(df.lazy(), "candidates")


def test_pairs_min_margin_std_skips_pairs_inside_the_ensemble_uncertainty() -> None:
    groups = [
        [(2.0, 0.1), (1.0, 0.1)],              # margin 1 >> 2 * 0.14: paired
        [(2.0, 1.0), (1.5, 1.0)],              # margin 0.5 < 2 * 1.41: quarantined
        [(3.0, 0.1), (2.9, 0.1), (0.0, 2.0)],  # best vs worst is too uncertain; (3.0, 2.9): 0.1 < 0.28: none
        [(3.0, 0.1), (2.0, 0.1), (0.0, 5.0)],  # worst too uncertain, next-worst clear: (r0, r1)
    ]
    ctx = Context.ephemeral()
    out = Pairs(min_margin_std=2.0)(scored_candidates(groups), ctx).collect()
    picked = [(c[0]["content"], r[0]["content"]) for c, r in zip(out["chosen"], out["rejected"], strict=True)]
    assert picked == [("p0r0", "p0r1"), ("p3r0", "p3r1")]
    assert out["reward_std_chosen"].to_list() == [0.1, 0.1] and out["reward_std_rejected"].to_list() == [0.1, 0.1]
    notes = ctx.stats["pairs"]
    assert notes["dropped_below_uncertainty"] == 2 and notes["pairs"] == 2
    assert ctx.quarantine_frame()["reason"].str.contains("min_margin_std=2.0").all()
    plain = Pairs()(scored_candidates(groups), Context.ephemeral()).collect()
    assert plain.height == 4  # without the option every row pairs best vs worst
    with pytest.raises(InputDataError, match="reward_std"):
        Pairs(min_margin_std=1.0)(scored_candidates(groups).drop("reward_std"), Context.ephemeral())


def test_combine_scores_reads_reward_std_as_an_objective() -> None:
    lf = scored_candidates([[(2.0, 0.5), (1.8, 0.0)]])
    out = CombineScores(weights={"score": 1.0, "reward_std": -1.0})(lf, Context.ephemeral()).collect()
    assert [r["score"] for r in out["responses"][0]] == pytest.approx([1.5, 1.8])


@pytest.mark.slow
def test_cli_rm_fit_counts_rejected_rows_and_writes_a_folder(shared_data: Path, cache: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "curate.cli", "rm", "fit", str(shared_data / HH), "--out", str(tmp_path / "rm"),
           "--limit", "120", "--folds", "3", "--ensemble", "2", "--features", "response", "--cache", str(cache)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "9 rejected (first: line 87: column 'chosen': the final Assistant turn is empty)" in done.stdout
    assert "3-fold accuracy" in done.stdout and "95% CI" in done.stdout
    meta = json.loads((tmp_path / "rm" / "rm.json").read_text())
    assert meta["train"]["pairs"] == 120 and meta["members"] == 2
    bad = subprocess.run([*cmd[:7], str(tmp_path / "rm2"), "--head", "tree"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "linear or mlp" in bad.stderr
