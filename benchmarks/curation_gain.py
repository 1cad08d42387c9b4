"""Does curation help a reward model?  Embedding RMs trained on curated vs uncurated hh-rlhf pairs, on a CPU.

Data: Anthropic hh-rlhf harmless-base test (../shared/data, curate's hh_rlhf adapter: 2,303 pairs), split by
prompt per seed (``--heldout`` of the distinct prompts, seeded; no prompt on both sides).  Every arm trains the
same reward model: :func:`curate.reward.bradley_terry.fit_bt` (``--head``, ``--members``; its default settings,
those of ``curate rm fit``, unless ``--C`` is given) on the features of :mod:`curate.reward.embedding_rm`
(MiniLM; what ``curate rm fit`` and ``label_audit`` use), from one vector cache shared by every arm and seed
(texts are encoded once).  The audit runs with its own defaults (5 folds, 5 linear members, ``C`` 0.001).
Arms, each a subset of the training pairs:

- ``all``: every training pair.
- ``label_audit``: the pairs ``label_audit`` keeps when it drops its top 10% by ``label_flip_p`` (the real
  stage, ``mode: flag, fraction: 0.1``: its kept set is the ``label_suspect == false`` rows, exactly what
  ``mode: drop`` keeps; flag mode also gives the probability the ``deita`` arm uses).
- ``random90``: a seeded random 90%.
- ``margin``: ``pairs``-style margin filtering.  hh-rlhf has no scores, so the score is the cross-fitted RM
  margin (the audit's ``label_margin``: the mean ``r(chosen) - r(rejected)`` of ensembles that never saw the
  pair): pairs whose ``|margin|`` is among the smallest 10% are left out (``pairs``' ``min_margin`` with the
  margin set at the 10th percentile: the ambiguous pairs); the human orientation is kept.  Filtering on the
  *signed* margin instead would be the ``label_audit`` arm again (both drop the pairs the RM most disagrees
  with).
- ``subsample_<method>`` for entropy, kcenter, deita, random: the real ``subsample`` stage keeping 10%
  (Khera et al. 2024), on the prompt text (``on: prompt``, the stage's default).  ``deita`` needs a quality
  score and hh-rlhf has none (running ``deita_score``'s LLM on 2k pairs is not CPU-sized), so its score is
  the audit's confidence in the label, ``1 - label_flip_p``; say so when quoting it.

Evaluation per arm and seed: accuracy on the held-out pairs (``P(chosen wins) > 0.5``; 0.5 counts half) and on
OASST rankings (../shared/data/oasst_en_100_trees/en_100_tree.jsonl: every two ranked sibling replies of a
prompt with different ranks give a pair, the better-ranked reply chosen).  Five seeds (``--seeds``); the table
and the JSON give the mean and a 95% t-interval over seeds per arm, and the mean paired difference to ``all``
with its interval (the same split and seed for every arm, so differences are paired).

    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/curation_gain.py [--seeds 5 --cache DIR]

Last line: one JSON object ``{"arms": {arm: {"heldout": {"mean", "ci95", "per_seed"}, "oasst": {...},
"diff_vs_all": {...}, "train_pairs"}}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import math
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
from scipy import stats

from curate import Context
from curate.io import load
from curate.reward.bradley_terry import fit_bt
from curate.schema import conform, hash_expr
from curate.stages.label_audit import LabelAudit, preference_features
from curate.stages.subsample import Subsample

HH = DATA / "hh_rlhf_harmless_base_test" / "test.jsonl.gz"
OASST = DATA / "oasst_en_100_trees" / "en_100_tree.jsonl"
SUBSAMPLE = ("entropy", "kcenter", "deita", "random")
ARMS = ("all", "label_audit", "random90", "margin", *(f"subsample_{m}" for m in SUBSAMPLE))


def oasst_pairs() -> pl.DataFrame:
    """Every two ranked sibling replies with different ranks, the better-ranked one chosen (score = -rank)."""
    groups = load(OASST).frame.select("prompt", "responses").collect()
    rows = []
    for prompt, responses in groups.iter_rows():
        for i, a in enumerate(responses):
            for b in responses[i + 1:]:
                if a["score"] is None or b["score"] is None or a["score"] == b["score"]:
                    continue
                best, worst = (a, b) if a["score"] > b["score"] else (b, a)
                rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": best["content"]}],
                             "rejected": [{"role": "assistant", "content": worst["content"]}]})
    return conform(pl.DataFrame(rows).lazy(), "preference").collect()


def accuracy(model, xc: np.ndarray, xr: np.ndarray) -> float:
    p = model.prob_chosen(xc, xr)
    return float(np.where(p > 0.5, 1.0, np.where(p == 0.5, 0.5, 0.0)).mean())


def interval(values: list[float]) -> dict:
    """Mean and 95% t-interval over seeds."""
    v = np.asarray(values, float)
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"mean": round(float(v.mean()), 4), "ci95": [round(float(v.mean()) - half, 4),
                                                       round(float(v.mean()) + half, 4)],
            "per_seed": [round(float(x), 4) for x in v]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--heldout", type=float, default=0.2, help="share of distinct prompts held out")
    parser.add_argument("--head", default="linear", choices=["linear", "mlp"])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--C", type=float, default=None, help="linear head's L2 setting (default: fit_bt's)")
    parser.add_argument("--cache", default=None, help="vector cache folder (default: a temporary one)")
    args = parser.parse_args()
    started = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="curate-curation-gain-") if args.cache is None else None
    cache = Path(args.cache or tmp.name)  # type: ignore[union-attr]
    cache.mkdir(parents=True, exist_ok=True)

    pairs = load(HH).frame.drop("_line").collect()
    oasst = oasst_pairs()
    ctx = Context(cache_dir=cache)
    t0 = time.perf_counter()
    xc, xr = preference_features(ctx, "embed", pairs)
    oc, orr = preference_features(ctx, "embed", oasst)
    encode_seconds = time.perf_counter() - t0
    position = {pid: k for k, pid in enumerate(pairs.get_column("id"))}
    prompt_key = pairs.select(hash_expr(pl.struct("prompt").struct.json_encode())).to_series().to_numpy()
    distinct = np.unique(prompt_key)

    hyper = {"C": args.C} if args.C is not None else {}
    results: dict[str, dict[str, list[float]]] = {a: {"heldout": [], "oasst": [], "train_pairs": []} for a in ARMS}
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        held_prompts = set(rng.choice(distinct, round(args.heldout * len(distinct)), replace=False))
        held = np.array([k in held_prompts for k in prompt_key])
        train_idx = np.flatnonzero(~held)
        train = pairs[train_idx]
        sctx = Context(cache_dir=cache, seed=seed)
        audited = LabelAudit(mode="flag", fraction=0.1)(train.lazy(), sctx).collect()
        flip_p = audited.get_column("label_flip_p").to_numpy()
        chosen: dict[str, np.ndarray] = {
            "all": train_idx,
            "label_audit": train_idx[~audited.get_column("label_suspect").to_numpy()],
            "random90": np.sort(rng.choice(train_idx, math.ceil(0.9 * len(train_idx)), replace=False)),
        }
        margin = np.abs(audited.get_column("label_margin").to_numpy())
        chosen["margin"] = train_idx[margin > np.quantile(margin, 0.1)]
        scored = audited.with_columns((1.0 - pl.col("label_flip_p")).alias("audit_confidence"))
        for method in SUBSAMPLE:
            stage = Subsample(method=method, fraction=0.1, score="audit_confidence")
            kept = stage(scored.lazy(), Context(cache_dir=cache, seed=seed)).select("id").collect()
            chosen[f"subsample_{method}"] = np.sort([position[i] for i in kept.get_column("id")])
        for arm in ARMS:
            idx = chosen[arm]
            model = fit_bt(xc[idx], xr[idx], head=args.head, members=args.members, seed=seed, **hyper)
            results[arm]["heldout"].append(accuracy(model, xc[held], xr[held]))
            results[arm]["oasst"].append(accuracy(model, oc, orr))
            results[arm]["train_pairs"].append(len(idx))
        line = {arm: [round(results[arm]["heldout"][-1], 4), round(results[arm]["oasst"][-1], 4)] for arm in ARMS}
        print(json.dumps({"seed": seed, "train": len(train_idx), "heldout": int(held.sum()),
                          "audit_cv_accuracy": sctx.stats.get("label_audit", {}).get("cv_accuracy"),
                          "mean_flip_p": round(float(flip_p.mean()), 4), "heldout_oasst": line}), flush=True)

    base = np.asarray(results["all"]["heldout"])
    summary_arms = {}
    print(f"{'arm':22} {'train':>6} {'held-out acc (95% CI)':>26} {'OASST acc (95% CI)':>26} {'diff vs all':>22}")
    for arm in ARMS:
        h, o = interval(results[arm]["heldout"]), interval(results[arm]["oasst"])
        d = interval(list(np.asarray(results[arm]["heldout"]) - base))
        summary_arms[arm] = {"train_pairs": int(np.mean(results[arm]["train_pairs"])), "heldout": h, "oasst": o,
                             "diff_vs_all": d}
        print(f"{arm:22} {summary_arms[arm]['train_pairs']:>6} "
              f"{h['mean']:>8.4f} [{h['ci95'][0]:.4f}, {h['ci95'][1]:.4f}] "
              f"{o['mean']:>8.4f} [{o['ci95'][0]:.4f}, {o['ci95'][1]:.4f}] "
              f"{d['mean']:>+7.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]")
    summary = {
        "benchmark": "curation_gain", "data": "hh-rlhf harmless-base test, split by prompt; OASST ranked siblings",
        "pairs": pairs.height, "oasst_pairs": oasst.height, "seeds": args.seeds, "heldout_share": args.heldout,
        "head": args.head, "members": args.members, "C": args.C, "arms": summary_arms,
        "encode_seconds": round(encode_seconds, 1), "seconds": round(time.perf_counter() - started, 1),
    }
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
