"""Held-out preference metrics of a DPO-trained policy (docs/architecture.md).

DPO's implicit reward of a response is ``r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))`` (Rafailov et al.
2023, eq. 5).  On held-out pairs:

- ``reward_accuracy``: share of pairs with ``r(chosen) > r(rejected)``; a tie counts one half, so the
  untrained model (policy == reference, every margin exactly 0) scores 0.5, the chance level.  TRL's own
  ``rewards/accuracies`` counts ties as wrong (0.0 before training), which reads like a bug in a report.
- ``reward_margin``: mean of ``r(chosen) - r(rejected)``.
- ``chosen_logp_drift`` / ``rejected_logp_drift``: mean change of ``log pi(y|x)`` from the reference for chosen
  and for rejected responses.  DPO is known to push both down (e.g. Pal et al. 2024, "Smaug"); a chosen drift
  far below zero says the model is unlearning the good answers too.
- ``logp_accuracy``: share of pairs where the policy itself gives the chosen response the higher log-prob
  (no reference; length-biased, but it says what the base model already preferred).
- ``loss``: the training loss (sigmoid / ipo / hinge) on the held-out pairs.

All are computed from summed completion log-probs (``curate.train.refs.sequence_logps``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def pair_loss(loss: str, beta: float, delta: float) -> float:
    """The loss of one pair whose log-ratio difference is ``delta`` (TRL's definitions)."""
    if loss == "sigmoid":  # -log sigmoid(beta * delta), computed stably
        z = beta * delta
        return math.log1p(math.exp(-z)) if z > -30 else -z
    if loss == "ipo":  # (delta - 1 / (2 beta))^2
        return (delta - 1.0 / (2.0 * beta)) ** 2
    if loss == "hinge":  # relu(1 - beta * delta)
        return max(0.0, 1.0 - beta * delta)
    raise ValueError(f"unknown loss {loss!r}")


def preference_metrics(
    policy_chosen: Sequence[float],
    policy_rejected: Sequence[float],
    ref_chosen: Sequence[float],
    ref_rejected: Sequence[float],
    *,
    beta: float,
    loss: str = "sigmoid",
) -> dict[str, float]:
    n = len(policy_chosen)
    if n == 0:
        return {"rows": 0}
    acc = margin = dc_sum = dr_sum = lp_acc = loss_sum = 0.0
    for pc, pr, rc, rr in zip(policy_chosen, policy_rejected, ref_chosen, ref_rejected, strict=True):
        dc, dr = pc - rc, pr - rr
        m = beta * (dc - dr)
        acc += 1.0 if m > 0 else 0.5 if m == 0 else 0.0
        margin += m
        dc_sum += dc
        dr_sum += dr
        lp_acc += 1.0 if pc > pr else 0.5 if pc == pr else 0.0
        loss_sum += pair_loss(loss, beta, dc - dr)
    return {
        "rows": n,
        "reward_accuracy": round(acc / n, 4),
        "reward_margin": round(margin / n, 5),
        "chosen_logp_drift": round(dc_sum / n, 4),
        "rejected_logp_drift": round(dr_sum / n, 4),
        "logp_accuracy": round(lp_acc / n, 4),
        "loss": round(loss_sum / n, 5),
    }


def before_metrics(ref_chosen: Sequence[float], ref_rejected: Sequence[float], *, beta: float,
                   loss: str) -> dict[str, float]:
    """The metrics of the untrained model: the policy *is* the reference."""
    return preference_metrics(ref_chosen, ref_rejected, ref_chosen, ref_rejected, beta=beta, loss=loss)


#: Per-pair held-out results of a run (``_key``, ``margin``, ``correct``): what a comparison pairs arms on.
EVAL_PAIRS = "eval_pairs.parquet"


def write_eval_pairs(path: Path, keys: Sequence[str], policy_chosen: Sequence[float], policy_rejected: Sequence[float],
                     ref_chosen: Sequence[float], ref_rejected: Sequence[float], *, beta: float) -> None:
    """Each held-out pair's implicit-reward margin and whether it ranks chosen first (1, tie 0.5, 0)."""
    import polars as pl

    from curate import checkpoint

    margins = [beta * ((pc - rc) - (pr - rr))
               for pc, pr, rc, rr in zip(policy_chosen, policy_rejected, ref_chosen, ref_rejected, strict=True)]
    frame = pl.DataFrame({"_key": list(keys), "margin": margins,
                          "correct": [1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins]},
                         schema={"_key": pl.String, "margin": pl.Float64, "correct": pl.Float64})
    checkpoint.write_parquet_atomic(frame, path)


def paired_difference(first: Path, second: Path, column: str = "correct") -> dict[str, Any] | None:
    """Mean of ``column`` in ``first`` minus ``second`` over the held-out pairs both scored, with a 95% interval.

    The arms are scored on the same pairs, so the difference is paired: d_i = a_i - b_i, mean d, interval
    mean d +- 1.96 * sd(d) / sqrt(n) (normal approximation; with few pairs, read it as rough; none for one pair).
    None when a file is missing or no pair is shared."""
    import polars as pl

    if not first.is_file() or not second.is_file():
        return None
    a = pl.read_parquet(first).unique("_key", keep="first")
    b = pl.read_parquet(second).unique("_key", keep="first")
    both = a.join(b, on="_key", suffix="_b")
    n = both.height
    if n == 0:
        return None
    d = (both[column] - both[f"{column}_b"]).to_list()
    mean = sum(d) / n
    if n < 2:  # one pair has no spread to estimate: no interval
        return {"n": n, "diff": round(mean, 4), "ci_low": None, "ci_high": None}
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = 1.96 * sd / math.sqrt(n)
    return {"n": n, "diff": round(mean, 4), "ci_low": round(mean - half, 4), "ci_high": round(mean + half, 4)}


def describe_model(folder: Path, gguf_file: str | None, precision: str) -> str:
    """Which weights were trained, in words: the GGUF file and its quantisation (trained de-quantized), or the
    folder."""
    if not gguf_file:
        return f"{folder} ({precision})"
    quant = re.search(r"[.-](I?Q\d\w*|F16|F32|BF16)\.gguf$", gguf_file, re.IGNORECASE)
    kind = f"GGUF {quant.group(1).upper()}" if quant else "GGUF"
    return f"{gguf_file} ({kind}, de-quantized and trained in {precision}; {folder})"
