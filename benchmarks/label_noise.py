"""Does ``label_audit`` find flipped preference labels?  Planted flips in hh-rlhf harmless, AUROC and precision.

Data: Anthropic hh-rlhf harmless-base test (../shared/data/hh_rlhf_harmless_base_test/test.jsonl.gz, read in
place with curate's hh_rlhf adapter: 2,303 pairs; 9 rows with an empty final turn are rejected by the
adapter).  For each noise rate (``--rates``, default 10% and 20%) and seed, a seeded ``round(rate * n)`` of the
pairs get chosen and rejected exchanged (the planted flips); ``label_audit`` (``mode: flag``, its defaults:
5 folds, 5 linear Bradley-Terry members, MiniLM features) then gives every pair ``label_flip_p``.

Figures per rate (mean over ``--seeds`` seeds; per-seed values under ``runs``):

- ``auroc``: area under the ROC curve of ``label_flip_p`` for telling planted flips from the other pairs;
- ``precision_at_rate`` / ``recall_at_rate``: of the ``k`` pairs with the highest ``label_flip_p``, ``k`` the
  number planted, the share that are planted / the share of planted found (equal by construction: ``k`` is
  the number of positives);
- ``precision_at_threshold`` / ``recall_at_threshold``: the same for the stage's ``label_suspect`` at its
  default threshold;
- baselines in the same run: ``auroc_random`` (a seeded uniform score) and ``auroc_length`` ("length disagrees
  with the label": score 1 when the rejected response, after flipping, is longer than the chosen, else 0).

Caveat: hh-rlhf's own labels are noisy (Wang et al. 2024 report a sizeable share of ambiguous or flipped
pairs), so the audit also flags pairs that were wrong before any flip; AUROC here is measured against the
planted flips only, and an original mislabel the audit finds counts as a false positive.

    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/label_noise.py [--rates 0.1,0.2 --seeds 3]

Last line: one JSON object (``noise_rates``, ``auroc``, ``auroc_length``, ``auroc_random``,
``precision_at_rate``, ``recall_at_rate``, ..., ``seconds``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import polars as pl
from _plant import DATA
from sklearn.metrics import roc_auc_score

from curate import Context
from curate.io import load
from curate.stages.label_audit import LabelAudit

HH = DATA / "hh_rlhf_harmless_base_test" / "test.jsonl.gz"


def hh_pairs() -> pl.DataFrame:
    """hh-rlhf harmless-base test as curate's preference table (the adapter's rejected rows left out)."""
    return load(HH).frame.drop("_line").collect()


def plant(pairs: pl.DataFrame, rate: float, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    """Exchange chosen and rejected of a seeded ``round(rate * n)`` of the pairs; ids stay (they key the audit's
    decisions).  Returns the noisy table and the planted mask."""
    n = pairs.height
    planted = np.zeros(n, bool)
    planted[np.random.default_rng(seed).choice(n, round(rate * n), replace=False)] = True
    mask = pl.Series("_planted", planted)
    noisy = pairs.with_columns(mask).with_columns(
        chosen=pl.when("_planted").then(pl.col("rejected")).otherwise(pl.col("chosen")),
        rejected=pl.when("_planted").then(pl.col("chosen")).otherwise(pl.col("rejected")),
    ).drop("_planted")
    return noisy, planted


def chars(column: str) -> pl.Expr:
    return pl.col(column).list.eval(pl.element().struct.field("content")).list.join("\n").str.len_chars()


def at_top(score: np.ndarray, planted: np.ndarray, k: int) -> tuple[float, float]:
    """Precision and recall of the ``k`` highest scores (ties: earlier row first)."""
    top = np.lexsort((np.arange(len(score)), -score))[:k]
    hits = float(planted[top].sum())
    return hits / max(k, 1), hits / max(int(planted.sum()), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="0.1,0.2")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--head", default="linear", choices=["linear", "mlp"])
    parser.add_argument("--cache", default=None, help="vector cache folder (default: a temporary one)")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    started = time.perf_counter()
    pairs = hh_pairs()
    tmp = tempfile.TemporaryDirectory(prefix="curate-label-noise-") if args.cache is None else None
    cache = Path(args.cache or tmp.name)  # type: ignore[union-attr]
    cache.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    for rate in rates:
        for seed in range(args.seeds):
            noisy, planted = plant(pairs, rate, seed)
            ctx = Context(cache_dir=cache, seed=seed)
            t0 = time.perf_counter()
            out = LabelAudit(mode="flag", head=args.head)(noisy.lazy(), ctx).collect()
            audit_seconds = time.perf_counter() - t0
            flip_p = out.get_column("label_flip_p").to_numpy()
            suspect = out.get_column("label_suspect").to_numpy()
            k = int(planted.sum())
            precision, recall = at_top(flip_p, planted, k)
            length = noisy.select((chars("rejected") > chars("chosen")).cast(pl.Float64)).to_series().to_numpy()
            random_score = np.random.default_rng(10_000 + seed).random(len(planted))
            notes = ctx.stats.get("label_audit", {})
            run = {
                "rate": rate, "seed": seed, "n": len(planted), "planted": k,
                "auroc": round(float(roc_auc_score(planted, flip_p)), 4),
                "auroc_length": round(float(roc_auc_score(planted, length)), 4),
                "auroc_random": round(float(roc_auc_score(planted, random_score)), 4),
                "precision_at_rate": round(precision, 4), "recall_at_rate": round(recall, 4),
                "suspects": int(suspect.sum()),
                "precision_at_threshold": round(float(planted[suspect].mean()) if suspect.any() else 0.0, 4),
                "recall_at_threshold": round(float(suspect[planted].mean()), 4),
                "mean_flip_p_planted": round(float(flip_p[planted].mean()), 4),
                "mean_flip_p_other": round(float(flip_p[~planted].mean()), 4),
                "cv_accuracy": notes.get("cv_accuracy"), "texts_encoded": notes.get("texts_encoded"),
                "audit_seconds": round(audit_seconds, 2),
            }
            runs.append(run)
            print(json.dumps(run), flush=True)

    def mean_per_rate(key: str) -> list[float]:
        return [round(float(np.mean([r[key] for r in runs if r["rate"] == rate])), 4) for rate in rates]

    summary = {
        "benchmark": "label_noise", "data": "hh-rlhf harmless-base test", "n": pairs.height,
        "head": args.head, "seeds": args.seeds, "noise_rates": rates,
        "auroc": mean_per_rate("auroc"), "auroc_length": mean_per_rate("auroc_length"),
        "auroc_random": mean_per_rate("auroc_random"),
        "precision_at_rate": mean_per_rate("precision_at_rate"), "recall_at_rate": mean_per_rate("recall_at_rate"),
        "precision_at_threshold": mean_per_rate("precision_at_threshold"),
        "recall_at_threshold": mean_per_rate("recall_at_threshold"),
        "cv_accuracy": mean_per_rate("cv_accuracy"),
        "audit_seconds": mean_per_rate("audit_seconds"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
