"""Bradley-Terry reward heads on frozen feature vectors, fitted as seeded ensembles (numpy, scikit-learn, torch).

A pair (chosen, rejected) with feature vectors ``x_c``, ``x_r`` has ``P(chosen > rejected) = sigmoid(r(x_c) -
r(x_r))`` (Bradley & Terry 1952), ``r`` one reward function shared by both sides, so a fitted head scores a
single response, not only a pair.  Sun et al. 2025 ("Reusing Embeddings: Reproducible Reward Model Research in
LLM Alignment without GPUs") show that such heads on frozen embeddings, and ensembles of them, are a CPU-sized
reward model that is reproducible in seconds; this module is that fitting code, with no I/O and no Polars, so
the embedding RM folder (:mod:`curate.reward.embedding_rm`), the label audit and the benchmarks share it.

Heads (``head=``):

- ``linear``: ``r(x) = w . z(x)``, ``z`` the standardised features.  The BT likelihood of a linear ``r`` is a
  logistic regression on the differences ``z(x_c) - z(x_r)`` with no intercept (an intercept would say "the
  first side wins" and cannot exist for a symmetric pair); L2 penalty ``C`` (scikit-learn's convention: larger
  is weaker).  Each difference enters as ``(d, 1)`` and ``(-d, 0)``, so the fit is exactly invariant to
  swapping the two sides with the label flipped.
- ``mlp``: ``r(x) = v . relu(W z(x) + b)``, one hidden layer, trained in torch with AdamW on the pairwise
  logistic loss.  scikit-learn's ``MLPClassifier`` was measured too (see benchmarks/embedding_rm.py): it can
  only learn ``f(x_c - x_r)``, which is not a per-response reward, and was slower on the same pairs.

Ensembles: ``members`` heads, each on a seeded resample of the pairs (one member = all pairs): by default
``folds`` (member k leaves out the k-th of ``members`` seeded folds), which measured 1-1.5 points more accurate
than bootstrap resamples on hh-rlhf (each bootstrap member sees only ~63% of the distinct pairs); the
members' disagreement (``mean_std``) is the uncertainty that ``pairs: min_margin_std`` and the label audit use.
Everything is deterministic for a given ``seed`` (torch runs with its own seeded generator).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curate.words import listed

HEADS = ("linear", "mlp")

#: Defaults per head, chosen by five-fold accuracy on hh-rlhf harmless (benchmarks/embedding_rm.py).
DEFAULTS: dict[str, dict[str, Any]] = {
    "linear": {"C": 3e-4, "standardize": True},
    "mlp": {"hidden": 64, "epochs": 10, "lr": 1e-3, "weight_decay": 0.1, "batch_size": 256, "standardize": True},
}


@contextmanager
def single_thread(torch_too: bool) -> Iterator[None]:
    """One BLAS (and torch) thread while fitting.  Why: these are small matrices (hundreds of columns), where
    threads buy nothing and, on a shared machine, spin against each other; measured on the 2-core CI machine
    under load, a 5-member linear fit on 2,303 pairs took 9.6 s with the default thread pools and 0.6 s with
    one thread, a 1-member MLP 20 s and 0.4 s.  The previous settings are restored afterwards."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        if not torch_too:
            yield
            return
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


@dataclass
class BTEnsemble:
    """A fitted ensemble: the standardisation and each member's parameters (plain arrays, saved without pickle).

    ``params`` holds ``w`` ``(members, d)`` for ``linear``; ``W`` ``(members, hidden, d)``, ``b``
    ``(members, hidden)``, ``v`` ``(members, hidden)`` for ``mlp``.
    """

    head: str
    mean: np.ndarray
    scale: np.ndarray
    params: dict[str, np.ndarray]
    hyper: dict[str, Any] = field(default_factory=dict)
    fit_seconds: float = 0.0

    @property
    def members(self) -> int:
        return int(next(iter(self.params.values())).shape[0])

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def _z(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features must have shape (n, {self.dim}), got {x.shape}")
        return (x - self.mean) / self.scale

    def reward(self, x: np.ndarray) -> np.ndarray:
        """Each member's reward of each row: ``float64[members, n]``."""
        z = self._z(x).astype(np.float64)
        if self.head == "linear":
            return self.params["w"].astype(np.float64) @ z.T
        hidden = np.einsum("mhd,nd->mnh", self.params["W"].astype(np.float64), z) + self.params["b"][:, None, :]
        return np.einsum("mnh,mh->mn", np.maximum(hidden, 0.0), self.params["v"].astype(np.float64))

    def mean_std(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean reward and the members' standard deviation (0 with one member), one per row."""
        r = self.reward(x)
        return r.mean(axis=0), (r.std(axis=0, ddof=1) if r.shape[0] > 1 else np.zeros(r.shape[1]))

    def margins(self, x_chosen: np.ndarray, x_rejected: np.ndarray) -> np.ndarray:
        """Each member's ``r(x_c) - r(x_r)``: ``float64[members, n]``."""
        return self.reward(x_chosen) - self.reward(x_rejected)

    def prob_chosen(self, x_chosen: np.ndarray, x_rejected: np.ndarray) -> np.ndarray:
        """``P(chosen > rejected)`` per pair: the mean over members of ``sigmoid(margin)``."""
        return _sigmoid(self.margins(x_chosen, x_rejected)).mean(axis=0)

    # -- saving (np.savez without pickle) ------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for ``np.savez``; :meth:`from_arrays` reads them back (``allow_pickle=False`` works)."""
        out = {"head": np.array(self.head), "mean": self.mean, "scale": self.scale}
        out.update({f"p_{k}": v for k, v in self.params.items()})
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> BTEnsemble:
        head = str(np.asarray(arrays["head"]))
        if head not in HEADS:
            raise ValueError(f"unknown Bradley-Terry head {head!r} in the saved arrays")
        params = {k[2:]: np.asarray(arrays[k], dtype=np.float32) for k in arrays if k.startswith("p_")}
        return cls(head=head, mean=np.asarray(arrays["mean"], dtype=np.float32),
                   scale=np.asarray(arrays["scale"], dtype=np.float32), params=params)


# -- fitting -------------------------------------------------------------------------------------------------


def _fit_linear(dz: np.ndarray, weight: np.ndarray, C: float) -> np.ndarray:
    """L2-regularised logistic regression on differences, no intercept, by L-BFGS with the exact gradient.

    Objective: scikit-learn's ``LogisticRegression(C, fit_intercept=False)`` on the doubled data ``(d, 1)``,
    ``(-d, 0)``, divided by ``2C``: ``sum_i w_i softplus(-beta . d_i) + ||beta||^2 / (4C)``; the doubled rows
    are not materialised (same optimum, half the work).  Measured against scikit-learn's solver and a Newton
    solver on the same pairs: the same coefficients (max difference 1e-7), and several times faster.
    """
    from scipy.optimize import minimize

    x = dz.astype(np.float64)
    wt = weight.astype(np.float64)
    lam = 1.0 / (2.0 * C)

    def objective(beta: np.ndarray) -> tuple[float, np.ndarray]:
        margin = x @ beta
        value = float(wt @ np.logaddexp(0.0, -margin) + 0.5 * lam * beta @ beta)
        grad = -(x.T @ (wt * _sigmoid(-margin))) + lam * beta
        return value, grad

    result = minimize(objective, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B",
                      options={"maxiter": 5000, "gtol": 1e-7, "ftol": 1e-13})
    return result.x.astype(np.float32)


def _fit_mlp(zc: np.ndarray, zr: np.ndarray, weight: np.ndarray, seed: int, hidden: int, epochs: int, lr: float,
             weight_decay: float, batch_size: int) -> dict[str, np.ndarray]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    d = zc.shape[1]
    first = torch.nn.Linear(d, hidden)
    second = torch.nn.Linear(hidden, 1, bias=False)  # a bias cancels in r(x_c) - r(x_r)
    with torch.no_grad():
        bound = 1.0 / math.sqrt(d)
        first.weight.uniform_(-bound, bound, generator=gen)
        first.bias.uniform_(-bound, bound, generator=gen)
        bound = 1.0 / math.sqrt(hidden)
        second.weight.uniform_(-bound, bound, generator=gen)
    net = torch.nn.Sequential(first, torch.nn.ReLU(), second)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    xc, xr = torch.from_numpy(zc), torch.from_numpy(zr)
    w = torch.from_numpy(weight.astype(np.float32))
    n = len(zc)
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            margin = (net(xc[idx]) - net(xr[idx])).squeeze(-1)
            loss = (torch.nn.functional.softplus(-margin) * w[idx]).sum() / w[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {
        "W": first.weight.detach().numpy().copy(),
        "b": first.bias.detach().numpy().copy(),
        "v": second.weight.detach().numpy()[0].copy(),
    }


def fit_bt(
    x_chosen: np.ndarray,
    x_rejected: np.ndarray,
    *,
    head: str = "linear",
    members: int = 5,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
    resample: str = "folds",
    **hyper: Any,
) -> BTEnsemble:
    """Fit ``members`` Bradley-Terry heads, each on a seeded resample of the pairs (one member: all pairs).

    ``resample``: ``bootstrap`` (n draws with replacement per member) or ``folds`` (the pairs dealt into
    ``members`` seeded folds, member k trained on all but fold k: each member sees (k-1)/k of the pairs).

    ``x_chosen``/``x_rejected``: ``(n, d)`` features of the preferred and the other response of each pair.
    ``hyper`` overrides :data:`DEFAULTS` of the head (``C``; ``hidden``, ``epochs``, ``lr``, ``weight_decay``,
    ``batch_size``; ``standardize`` for both).  ``sample_weight`` weights pairs in the loss.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    unknown = set(hyper) - set(DEFAULTS[head])
    if unknown:
        raise ValueError(f"unknown {head} {listed('hyperparameter', sorted(unknown))} "
                         f"(known: {sorted(DEFAULTS[head])})")
    if members < 1:
        raise ValueError("members must be >= 1")
    if resample not in ("bootstrap", "folds"):
        raise ValueError(f"resample must be bootstrap or folds, got {resample!r}")
    xc = np.asarray(x_chosen, dtype=np.float32)
    xr = np.asarray(x_rejected, dtype=np.float32)
    if xc.shape != xr.shape or xc.ndim != 2 or len(xc) < 2:
        raise ValueError(f"x_chosen and x_rejected must be (n >= 2, d) of one shape, got {xc.shape}, {xr.shape}")
    weight = np.ones(len(xc)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    settings = {**DEFAULTS[head], **hyper}
    started = time.perf_counter()
    both = np.concatenate([xc, xr])
    if settings["standardize"]:
        mean = both.mean(axis=0)
        scale = both.std(axis=0)
        scale = np.where(scale > 1e-8, scale, 1.0).astype(np.float32)
    else:
        mean, scale = np.zeros(xc.shape[1], np.float32), np.ones(xc.shape[1], np.float32)
    zc, zr = (xc - mean) / scale, (xr - mean) / scale
    rng = np.random.default_rng(seed)
    with single_thread(torch_too=head == "mlp"):
        fitted = _fit_members(zc, zr, weight, head, members, seed, settings, rng, resample)
    params = {k: np.stack([f[k] for f in fitted]).astype(np.float32) for k in fitted[0]}
    return BTEnsemble(head=head, mean=mean.astype(np.float32), scale=scale, params=params, hyper=settings,
                      fit_seconds=time.perf_counter() - started)


def _fit_members(zc: np.ndarray, zr: np.ndarray, weight: np.ndarray, head: str, members: int, seed: int,
                 settings: dict[str, Any], rng: np.random.Generator, resample: str) -> list[dict[str, np.ndarray]]:
    fitted: list[dict[str, np.ndarray]] = []
    member_fold = fold_ids(len(zc), members, seed) if members > 1 and resample == "folds" else None
    for member in range(members):
        if members == 1:
            idx = np.arange(len(zc))
        elif member_fold is not None:
            idx = np.flatnonzero(member_fold != member)
        else:
            idx = rng.integers(0, len(zc), len(zc))
        if head == "linear":
            fitted.append({"w": _fit_linear(zc[idx] - zr[idx], weight[idx], float(settings["C"]))})
        else:
            fitted.append(_fit_mlp(
                zc[idx], zr[idx], weight[idx], seed=seed * 1000 + member, hidden=int(settings["hidden"]),
                epochs=int(settings["epochs"]), lr=float(settings["lr"]),
                weight_decay=float(settings["weight_decay"]), batch_size=int(settings["batch_size"]),
            ))
    return fitted


# -- cross-validation ----------------------------------------------------------------------------------------


def fold_ids(n: int, folds: int, seed: int = 0, groups: np.ndarray | None = None) -> np.ndarray:
    """Fold of each pair (``int[n]``): a seeded shuffle dealt round-robin; with ``groups`` (e.g. a prompt hash)
    every pair of one group lands in one fold, so a prompt is never both trained on and tested."""
    if folds < 2 or folds > n:
        raise ValueError(f"folds must be in [2, {n}], got {folds}")
    rng = np.random.default_rng(seed)
    if groups is None:
        out = np.empty(n, dtype=np.int64)
        out[rng.permutation(n)] = np.arange(n) % folds
        return out
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(inverse.max()) + 1
    group_fold = np.empty(n_groups, dtype=np.int64)
    group_fold[rng.permutation(n_groups)] = np.arange(n_groups) % folds
    return group_fold[inverse]


def out_of_fold(
    x_chosen: np.ndarray, x_rejected: np.ndarray, *, folds: int = 5, seed: int = 0,
    groups: np.ndarray | None = None, **fit_kwargs: Any,
) -> dict[str, np.ndarray]:
    """Cross-fitted predictions: each pair scored only by an ensemble that never trained on it.

    Returns ``prob`` (``P(chosen wins)``), ``margin`` (ensemble-mean ``r(x_c) - r(x_r)``), ``margin_std``
    (members' disagreement on the margin) and ``fold``, one per pair; the label audit's flip probability is
    ``1 - prob``.
    """
    xc = np.asarray(x_chosen, dtype=np.float32)
    xr = np.asarray(x_rejected, dtype=np.float32)
    fold = fold_ids(len(xc), folds, seed, groups)
    prob = np.empty(len(xc))
    margin = np.empty(len(xc))
    margin_std = np.empty(len(xc))
    for k in range(folds):
        test = fold == k
        model = fit_bt(xc[~test], xr[~test], seed=seed + k, **fit_kwargs)
        m = model.margins(xc[test], xr[test])
        prob[test] = _sigmoid(m).mean(axis=0)
        margin[test] = m.mean(axis=0)
        margin_std[test] = m.std(axis=0, ddof=1) if m.shape[0] > 1 else 0.0
    return {"prob": prob, "margin": margin, "margin_std": margin_std, "fold": fold}


def wilson_interval(correct: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``correct / n`` (sound near 0 and 1, unlike the normal one)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (centre - half, centre + half)


def cross_val_accuracy(
    x_chosen: np.ndarray, x_rejected: np.ndarray, *, folds: int = 5, seed: int = 0,
    groups: np.ndarray | None = None, **fit_kwargs: Any,
) -> dict[str, Any]:
    """K-fold accuracy of a head (``fit_kwargs`` go to :func:`fit_bt`): share of held-out pairs whose chosen
    side gets the higher ensemble probability (a tie counts half), the 95% Wilson interval over all pairs,
    per-fold accuracies and the mean fit seconds per fold."""
    started = time.perf_counter()
    oof = out_of_fold(x_chosen, x_rejected, folds=folds, seed=seed, groups=groups, **fit_kwargs)
    hit = np.where(oof["prob"] > 0.5, 1.0, np.where(oof["prob"] == 0.5, 0.5, 0.0))
    per_fold = [float(hit[oof["fold"] == k].mean()) for k in range(folds)]
    low, high = wilson_interval(float(hit.sum()), len(hit))
    return {
        "accuracy": float(hit.mean()), "ci95": [low, high], "per_fold": per_fold, "n": len(hit), "folds": folds,
        "seconds": time.perf_counter() - started,
    }
