"""Data-scaling curve: fit the exponential plateau of score against subset size (``curate scaling``).

Khera et al. 2024, "Efficient Alignment of Large Language Models via Data Sampling", observe that alignment
quality as a function of the number of training rows rises fast and then saturates, and model it as an
exponential plateau::

    P(n) = P_max - (P_max - P_0) * exp(-k * n)

``P_max`` is the score the data can reach, ``P_0`` the score with no data (the base model), ``k`` the rate.
Why fit it: from a few small runs (e.g. ``subsample`` at 5%, 10%, 25%) the curve says how many rows reach a
chosen share of ``P_max`` (:func:`size_for`), which is the fraction to keep instead of a guess.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import CurateError, InputDataError
from curate.words import count, plural

#: Column names recognised for the subset size and the score, in order of preference.
SIZE_NAMES = ("size", "n", "subset_size", "rows", "n_rows", "samples", "fraction")
SCORE_NAMES = ("score", "metric", "accuracy", "reward_accuracy", "value", "win_rate")


def plateau(n: np.ndarray, p_max: float, p_0: float, k: float) -> np.ndarray:
    """The exponential plateau ``P(n) = P_max - (P_max - P_0) e^{-k n}``."""
    return p_max - (p_max - p_0) * np.exp(-k * n)


@dataclass
class PlateauFit:
    """Fitted parameters, their standard errors (from the covariance of the fit), goodness of fit, and the
    size that reaches ``target`` x ``P_max`` (``None`` when the curve never does: flat or falling)."""

    p_max: float
    p_0: float
    k: float
    p_max_err: float | None
    p_0_err: float | None
    k_err: float | None
    r2: float
    rmse: float
    points: int
    target: float
    size_at_target: float | None
    note: str = ""

    def predict(self, n: float | np.ndarray) -> float | np.ndarray:
        return plateau(np.asarray(n, dtype=np.float64), self.p_max, self.p_0, self.k)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def size_for(p_max: float, p_0: float, k: float, target: float) -> float | None:
    """Smallest ``n >= 0`` with ``P(n) >= target * P_max``; ``None`` when the curve never gets there (``k <= 0``,
    ``P_max <= P_0``, or ``P_max <= 0`` so that a fraction of it is not a goal above ``P_0``)."""
    goal = target * p_max
    if p_0 >= goal:
        return 0.0
    if k <= 0 or p_max <= p_0 or p_max <= 0:
        return None
    ratio = (p_max - goal) / (p_max - p_0)
    if ratio <= 0:
        return None
    return -math.log(ratio) / k


def read_points(path: Path, size: str | None = None, score: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(sizes, scores) from a CSV, a JSON list of objects (or ``{"points": [...]}``) or JSON lines.  Columns by
    name (``size``/``score`` or the first of :data:`SIZE_NAMES` / :data:`SCORE_NAMES` present)."""
    import polars as pl

    if not path.is_file():
        raise InputDataError(f"{path}: metrics file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pl.read_csv(path)
        elif suffix in (".jsonl", ".ndjson"):
            frame = pl.read_ndjson(path)
        elif suffix == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                data = data.get("points", data)
            if isinstance(data, dict):  # {size: score, ...}
                data = [{"size": float(k), "score": v} for k, v in data.items()]
            frame = pl.DataFrame(data)
        else:
            raise InputDataError(f"{path}: metrics must be .csv, .json or .jsonl (got '{suffix}')")
    except InputDataError:
        raise
    except Exception as exc:
        raise InputDataError(f"{path}: cannot read metrics ({type(exc).__name__}: {exc})") from None

    def pick(wanted: str | None, names: tuple[str, ...], what: str) -> str:
        if wanted is not None:
            if wanted not in frame.columns:
                raise InputDataError(f"{path}: no column '{wanted}' (columns: {frame.columns})")
            return wanted
        for name in names:
            if name in frame.columns:
                return name
        raise InputDataError(f"{path}: no {what} column (looked for {', '.join(names)}; columns: {frame.columns})")

    x_name, y_name = pick(size, SIZE_NAMES, "size"), pick(score, SCORE_NAMES, "score")
    try:
        pts = frame.select(pl.col(x_name).cast(pl.Float64), pl.col(y_name).cast(pl.Float64)).drop_nulls()
    except Exception as exc:
        raise InputDataError(f"{path}: columns '{x_name}' and '{y_name}' must be numbers ({exc})") from None
    x, y = pts.get_column(x_name).to_numpy(), pts.get_column(y_name).to_numpy()
    finite = np.isfinite(x) & np.isfinite(y)
    return x[finite], y[finite]


def fit_plateau(
    sizes: np.ndarray | list[float], scores: np.ndarray | list[float], *, target: float = 0.95
) -> PlateauFit:
    """Least-squares fit of the exponential plateau (``scipy.optimize.curve_fit``, trust-region with ``k >= 0``).

    Sizes are scaled to ``[0, 1]`` by the largest size for the fit (so ``k`` starts near 1 whatever the unit),
    and several starting rates are tried (``k`` from 0.3 to 30 on the scaled axis, ``P_max`` just above the
    best score, ``P_0`` at the score of the smallest subset), keeping the lowest squared error: a plateau fit
    from one start often stalls on a flat line.  Needs at least 3 points at distinct sizes (3 parameters).
    """
    try:
        from scipy.optimize import curve_fit
    except ImportError as exc:  # pragma: no cover - scipy comes with the embed extra (scikit-learn needs it)
        raise CurateError("the scaling fit needs scipy: pip install 'curate[embed]' (or scipy)") from exc

    if not 0.0 < target < 1.0:
        raise InputDataError(f"target must be a fraction of P_max in (0, 1), got {target}")
    x = np.asarray(sizes, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    if x.shape != y.shape:
        raise InputDataError("sizes and scores must have the same length")
    if len(np.unique(x)) < 3:
        raise InputDataError(
            f"the plateau fit needs at least 3 points at distinct sizes (it has 3 parameters), got {len(x)} "
            f"{plural('point', len(x))} at {count(len(np.unique(x)), 'size')}"
        )
    if np.any(x < 0):
        raise InputDataError("subset sizes must be >= 0")
    scale = float(x.max())
    t = x / scale
    span = float(y.max() - y.min()) or max(abs(float(y.max())), 1.0) * 1e-3
    order = np.argsort(x)
    best: tuple[float, np.ndarray, np.ndarray | None] | None = None
    for k0 in (0.3, 1.0, 3.0, 10.0, 30.0):
        p0 = [float(y.max()) + 0.05 * span, float(y[order[0]]) - 0.05 * span, k0]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params, cov = curve_fit(plateau, t, y, p0=p0, bounds=([-np.inf, -np.inf, 0.0], np.inf),
                                        method="trf", maxfev=20_000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((plateau(t, *params) - y) ** 2))
        if best is None or sse < best[0] - 1e-15:
            best = (sse, params, cov)
    if best is None:
        raise InputDataError("the plateau fit did not converge on these points")
    sse, params, cov = best
    p_max, p_0, k_scaled = (float(v) for v in params)
    k = k_scaled / scale
    errs: list[float | None] = [None, None, None]
    if cov is not None and np.all(np.isfinite(np.diag(cov))) and len(x) > 3:
        errs = [float(math.sqrt(max(v, 0.0))) for v in np.diag(cov)]
        errs[2] = errs[2] / scale if errs[2] is not None else None
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - sse / total if total > 0 else 1.0
    note = ""
    if k_scaled < 1e-6:
        note = "the fitted rate is ~0: the points show no saturation (collect larger subsets)"
    elif k_scaled > 1e3:
        note = "the curve saturates before the smallest size measured: P_0 and k are poorly determined"
    reach = size_for(p_max, p_0, k, target)
    if reach is None and not note:
        note = f"the curve never reaches {target:g} x P_max (flat or falling scores)"
    return PlateauFit(
        p_max=p_max, p_0=p_0, k=k, p_max_err=errs[0], p_0_err=errs[1], k_err=errs[2], r2=r2,
        rmse=math.sqrt(sse / len(x)), points=len(x), target=target, size_at_target=reach, note=note,
    )


def fit_file(path: Path, *, target: float = 0.95, size: str | None = None, score: str | None = None) -> PlateauFit:
    """Read ``path`` (:func:`read_points`) and fit it (:func:`fit_plateau`)."""
    x, y = read_points(path, size=size, score=score)
    return fit_plateau(x, y, target=target)


def plot_fit(path: Path, out: Path, *, target: float = 0.95, size: str | None = None,
             score: str | None = None) -> PlateauFit:
    """Fit ``path`` and draw the measured points, the fitted plateau and the target size to a PNG ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    x, y = read_points(path, size=size, score=score)
    fit = fit_plateau(x, y, target=target)
    fig = Figure(figsize=(6.4, 4.0), dpi=110)
    ax = fig.add_subplot()
    grid = np.linspace(0.0, float(x.max()) * 1.15, 200)
    ax.scatter(x, y, color="#333333", zorder=3, label="measured")
    ax.plot(grid, fit.predict(grid), color="#4c72b0", label=f"fit: P_max={fit.p_max:.4g}, k={fit.k:.3g}")
    ax.axhline(fit.p_max * target, color="#dd8452", linestyle="--", linewidth=1, label=f"{target:g} x P_max")
    if fit.size_at_target is not None:
        ax.axvline(fit.size_at_target, color="#dd8452", linestyle=":", linewidth=1,
                   label=f"size {fit.size_at_target:.4g}")
    ax.set_xlabel("subset size")
    ax.set_ylabel("score")
    ax.set_title("data scaling: P(n) = P_max - (P_max - P_0) e^(-k n)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return fit
