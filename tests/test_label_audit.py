"""label_audit: cross-fitted embedding-RM flip probabilities on real hh-rlhf pairs (real MiniLM), planted flips,
flag/drop/swap, fraction, cross-fitting, determinism, errors and a recipe run."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from curate import Context, Pipeline
from curate.errors import InputDataError, StageError
from curate.io import load
from curate.runner import run_recipe
from curate.schema import conform
from curate.stages import STAGES
from curate.stages.label_audit import DEFAULT_THRESHOLD, LabelAudit, top_fraction

#: One vector cache for the module: each hh-rlhf text is encoded once, every later context reads it.
_CACHE = tempfile.TemporaryDirectory(prefix="curate-label-audit-test-")
N_PAIRS = 300


@pytest.fixture(scope="module")
def hh(shared_data: Path) -> pl.DataFrame:
    """The first ``N_PAIRS`` real hh-rlhf harmless pairs, as curate's preference table."""
    return load(shared_data / "hh_rlhf_harmless_base_test" / "test.jsonl.gz").frame.drop("_line").head(
        N_PAIRS).collect()


def ctx_with(encoder: Any, seed: int = 0) -> Context:
    ctx = Context(cache_dir=Path(_CACHE.name), seed=seed)
    ctx.models.register("embed", encoder, {"path": "default"})
    return ctx


def flip(frame: pl.DataFrame, mask: np.ndarray) -> pl.DataFrame:
    """Exchange chosen and rejected where ``mask`` (ids kept, so decisions can be compared row by row)."""
    m = pl.Series("_m", mask)
    return frame.with_columns(m).with_columns(
        chosen=pl.when("_m").then(pl.col("rejected")).otherwise(pl.col("chosen")),
        rejected=pl.when("_m").then(pl.col("chosen")).otherwise(pl.col("rejected")),
    ).drop("_m")


def audit(frame: pl.DataFrame, encoder: Any, seed: int = 0, **params: Any) -> tuple[pl.DataFrame, Context]:
    ctx = ctx_with(encoder, seed)
    return LabelAudit(**params)(frame.lazy(), ctx).collect(), ctx


def test_registered_and_validation() -> None:
    assert STAGES["label_audit"] is LabelAudit
    for bad in ({"mode": "fix"}, {"threshold": 1.0}, {"threshold": 0.0}, {"fraction": 0.0}, {"fraction": 1.5},
                {"threshold": 0.7, "fraction": 0.1}, {"folds": 1}, {"members": 0}, {"head": "tree"},
                {"folds": 10, "min_rows": 15}, {"unknown": 1}, {"hyper": {"gamma": 1.0}},
                {"head": "mlp", "hyper": {"C": 0.1}}):
        with pytest.raises(ValidationError):
            LabelAudit(**bad)
    assert "Wang et al. 2024" in LabelAudit.paper and "cross-fitting" in (LabelAudit.__doc__ or "")


def test_top_fraction_counts_and_ties() -> None:
    scores = np.array([0.2, 0.9, 0.9, 0.1, 0.5, 0.3, 0.4, 0.6, 0.8, 0.7])
    assert top_fraction(scores, 0.1).nonzero()[0].tolist() == [1]  # tie 0.9/0.9: the earlier row
    assert top_fraction(scores, 0.25).sum() == 3  # ceil(2.5)
    assert top_fraction(scores, 1.0).all()


def test_non_preference_table_is_a_clear_error(encoder: Any) -> None:
    conv = conform(pl.DataFrame({"messages": [[{"role": "user", "content": "hi"},
                                               {"role": "assistant", "content": "hello"}]]}).lazy(), "conversation")
    expected = r"label_audit: takes a preference table, but a conversation table .*the pairs stage"
    with pytest.raises(InputDataError, match=expected):
        LabelAudit()(conv, ctx_with(encoder))


def test_too_few_pairs_is_a_clear_error(hh: pl.DataFrame, encoder: Any) -> None:
    with pytest.raises(StageError, match="40 preference pairs, fewer than min_rows \\(100\\)"):
        LabelAudit()(hh.head(40).lazy(), ctx_with(encoder))


@pytest.mark.slow
def test_planted_flips_score_higher(hh: pl.DataFrame, encoder: Any) -> None:
    """Flip a seeded 20%, six times: the audit must rank the planted flips above the other pairs by a margin a
    score that ignores the labels does not reach.  (300 pairs make a weak reward model: one planting's AUROC
    ranges 0.53-0.63; benchmarks/label_noise.py measures the whole set.)"""
    from sklearn.metrics import roc_auc_score

    aurocs, higher = [], 0
    for seed in range(6):
        planted = np.zeros(hh.height, bool)
        planted[np.random.default_rng(seed + 7).choice(hh.height, hh.height // 5, replace=False)] = True
        out, ctx = audit(flip(hh, planted), encoder)
        p = out.get_column("label_flip_p").to_numpy()
        assert out.get_column("id").to_list() == hh.get_column("id").to_list()
        assert ((p > 0) & (p < 1)).all()
        aurocs.append(roc_auc_score(planted, p))
        higher += p[planted].mean() > p[~planted].mean()
    # A label-blind score has AUROC 0.5 with a standard error of about 0.04 per planting (60 vs 240 rows),
    # about 0.017 for the mean of six: 0.55 is three of those above chance.
    assert np.mean(aurocs) > 0.55 and higher >= 5
    notes = ctx.stats["label_audit"]
    # The sixth audit re-encodes nothing: every text of the pairs is in the vector cache.
    assert notes["audited"] == hh.height and notes["texts_encoded"] == 0 and notes["texts_cached"] > hh.height
    assert 0.0 < notes["mean_flip_p"] < 1.0 and notes["threshold"] == DEFAULT_THRESHOLD
    assert notes["suspects"] == int(out.get_column("label_suspect").sum())


@pytest.mark.slow
def test_cross_fitting_a_pair_is_scored_without_its_own_label(hh: pl.DataFrame, encoder: Any) -> None:
    """Flip one pair's label: its own P(flipped) becomes exactly 1 - p (the members that score it never saw it,
    so they are the same models); pairs in its fold are unchanged; pairs elsewhere moved (their ensembles
    trained on the flipped pair).  A member that scored its own training pairs would have moved toward the new
    label instead."""
    before, _ = audit(hh, encoder)
    for i in (3, 150):
        mask = np.zeros(hh.height, bool)
        mask[i] = True
        after, _ = audit(flip(hh, mask), encoder)
        p0 = before.get_column("label_flip_p").to_numpy()
        p1 = after.get_column("label_flip_p").to_numpy()
        assert p1[i] == pytest.approx(1.0 - p0[i], abs=1e-9)
        unchanged = np.isclose(p0, p1, rtol=0, atol=1e-12)
        unchanged[i] = False
        # One fold of five is untouched (about n/5 rows); the other four folds' pairs all moved a little.
        assert hh.height // 5 - 10 <= unchanged.sum() <= hh.height // 5 + 10
        assert (~unchanged).sum() > hh.height // 2


@pytest.mark.slow
def test_flag_drop_swap_and_fraction(hh: pl.DataFrame, encoder: Any) -> None:
    scored = hh.with_columns(score_chosen=pl.Series(np.arange(hh.height, dtype=float)),
                             score_rejected=pl.lit(-1.0))
    flagged, _ = audit(scored, encoder, fraction=0.1)
    suspect = flagged.get_column("label_suspect").to_numpy()
    assert suspect.sum() == math.ceil(0.1 * hh.height)
    p = flagged.get_column("label_flip_p").to_numpy()
    assert p[suspect].min() >= p[~suspect].max()  # the top fraction by P(flipped)

    dropped, ctx = audit(scored, encoder, mode="drop", fraction=0.1)
    assert dropped.height == hh.height - suspect.sum()
    assert set(dropped.get_column("id")) == set(flagged.filter(~pl.col("label_suspect")).get_column("id"))
    quarantine = ctx.quarantine_frame()
    assert quarantine.height == suspect.sum() and ctx.stats["label_audit"]["dropped"] == suspect.sum()
    assert (quarantine.get_column("code") == "label_suspect").all()
    reasons = dict(zip(quarantine.get_column("id"), quarantine.get_column("reason"), strict=True))
    for row in flagged.filter(pl.col("label_suspect")).iter_rows(named=True):
        assert reasons[row["id"]] == f"label suspect: P(flipped) {round(row['label_flip_p'], 3)}"

    cut = round(float(np.quantile(p, 0.8)), 4)
    swapped, ctx = audit(scored, encoder, mode="swap", threshold=cut)
    expect = p > cut
    assert 0 < expect.sum() < hh.height and ctx.stats["label_audit"]["swapped"] == expect.sum()
    assert swapped.get_column("label_swapped").to_numpy().tolist() == expect.tolist()
    for k, (orig, new) in enumerate(zip(scored.iter_rows(named=True), swapped.iter_rows(named=True), strict=True)):
        if expect[k]:
            assert (new["chosen"], new["rejected"]) == (orig["rejected"], orig["chosen"])
            assert (new["score_chosen"], new["score_rejected"]) == (-1.0, orig["score_chosen"])
            assert new["label_swapped_from"] == orig["id"] and new["id"] != orig["id"]
        else:
            assert (new["chosen"], new["rejected"], new["id"]) == (orig["chosen"], orig["rejected"], orig["id"])
            assert new["label_swapped_from"] is None
    # A swapped row's id is its new content's id (the schema's rule): conform recomputes the same ids.
    recomputed = conform(swapped.drop("id").lazy(), "preference").collect().get_column("id")
    assert recomputed.to_list() == swapped.get_column("id").to_list()


@pytest.mark.slow
def test_deterministic_under_the_seed(hh: pl.DataFrame, encoder: Any) -> None:
    a, _ = audit(hh, encoder, seed=1)
    b, _ = audit(hh, encoder, seed=1)
    c, _ = audit(hh, encoder, seed=2)
    assert a.equals(b)
    assert not np.allclose(a.get_column("label_flip_p").to_numpy(), c.get_column("label_flip_p").to_numpy())
    d = LabelAudit(seed=2)(hh.lazy(), ctx_with(encoder, seed=1)).collect()  # the stage's seed wins over the run's
    assert d.get_column("label_flip_p").to_list() == c.get_column("label_flip_p").to_list()


@pytest.mark.slow
def test_recipe_run_and_pipeline(hh: pl.DataFrame, encoder: Any, tmp_path: Path) -> None:
    rows = hh.head(120)
    rows.drop("id").write_parquet(tmp_path / "pairs.parquet")
    recipe = tmp_path / "audit.yaml"
    recipe.write_text(
        "name: label_audit_test\ninput: [{path: pairs.parquet}]\n"
        "stages:\n  - label_audit: {mode: drop, fraction: 0.1, folds: 4, members: 3}\n"
    )
    result = run_recipe(recipe, out=tmp_path / "run")
    out = pl.read_parquet(result.output)
    assert out.height == 120 - 12 and "label_flip_p" in out.columns
    quarantine = pl.read_parquet(list((tmp_path / "run" / "quarantine").glob("*.parquet")))
    assert quarantine.height == 12
    assert quarantine.get_column("reason").str.starts_with("label suspect: P(flipped) ").all()
    manifest = json.loads(result.manifest_path.read_text())
    notes = next(s["notes"] for s in manifest["stages"] if s["name"] == "label_audit")
    assert notes["audited"] == 120 and notes["dropped"] == 12 and result.rows == 108
    # The same audit as a notebook pipeline gives the same kept rows.
    piped = Pipeline([LabelAudit(mode="drop", fraction=0.1, folds=4, members=3)]).run(
        rows.lazy(), ctx_with(encoder)).collect()
    assert sorted(piped.get_column("id")) == sorted(out.get_column("id"))
