"""Information-theoretic subsampling and its baselines (docs/architecture.md, ``subsample``)."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

from curate.contract import Needs
from curate.embed import embed_for_stage
from curate.embed.select import greedy_diverse
from curate.errors import ModelError, RecipeError
from curate.execution import Shape
from curate.pipeline import Context, Stage
from curate.schema import text_for

Method = Literal["entropy", "random", "kcenter", "deita"]

#: Candidates per index search in the ``deita`` method (as in deita_select: one batched search against the
#: kept set, then the greedy rule inside the block with the block's own similarity matrix).


def keep_count(n: int, fraction: float | None, count: int | None) -> int:
    """Rows to keep out of ``n``: ``count`` (at most ``n``), or ``ceil(fraction * n)`` so that at least the
    asked fraction survives (the product is rounded to 9 decimals first: ``0.1 * 30`` is 3, not 4)."""
    if count is not None:
        return min(count, n)
    assert fraction is not None
    return min(n, math.ceil(round(fraction * n, 9)))


def pca(vectors: np.ndarray, dims: int) -> np.ndarray:
    """Project centred ``vectors`` on their top ``dims`` principal axes (exact SVD; deterministic: each axis's
    sign is fixed so its largest-magnitude loading is positive)."""
    centred = vectors.astype(np.float64) - vectors.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:dims]
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    axes = axes * np.where(signs == 0, 1.0, signs)[:, None]
    return centred @ axes.T


def fit_mixture(
    points: np.ndarray, ks: list[int], *, covariance: str, seed: int, fit_max: int
) -> tuple[Any, dict[int, float]]:
    """Fit a Gaussian mixture for each ``k`` in ``ks`` and return the one with the lowest BIC (Schwarz 1978)
    and every BIC.  Fitted on at most ``fit_max`` rows sampled with ``seed`` (the density of a few ten
    thousand points is as good as that of all of them, and EM cost is linear in rows x k x runs)."""
    try:
        from sklearn.mixture import GaussianMixture
    except ImportError as exc:  # pragma: no cover - part of the embed extra
        raise ModelError("subsample method entropy needs scikit-learn: pip install 'curate[embed]'") from exc

    rng = np.random.default_rng(seed)
    sample = points if len(points) <= fit_max else points[np.sort(rng.choice(len(points), fit_max, replace=False))]
    best: Any = None
    bics: dict[int, float] = {}
    for k in ks:
        gmm = GaussianMixture(n_components=k, covariance_type=covariance, random_state=seed, max_iter=200,
                              reg_covar=1e-5)
        gmm.fit(sample)
        bics[k] = float(gmm.bic(sample))
        if best is None or bics[k] < bics[best.n_components]:
            best = gmm
    return best, bics


def kcenter_order(vectors: np.ndarray, budget: int, seed: int) -> np.ndarray:
    """Greedy farthest-point traversal (Gonzalez 1985; the k-center core-set of Sener & Savarese 2018): start
    at a seeded random row, then repeatedly take the row farthest (Euclidean) from every row taken so far.
    A 2-approximation of the best covering radius.  O(n x budget x dim) with numpy, no n x n matrix."""
    n = len(vectors)
    if budget <= 0 or n == 0:
        return np.empty(0, np.int64)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.einsum("ij,ij->i", x, x)
    first = int(np.random.default_rng(seed).integers(n))
    chosen = [first]
    nearest = np.maximum(norms + norms[first] - 2.0 * (x @ x[first]), 0.0)
    nearest[first] = -1.0
    for _ in range(1, budget):
        nxt = int(np.argmax(nearest))  # ties: the earliest row
        chosen.append(nxt)
        dist = np.maximum(norms + norms[nxt] - 2.0 * (x @ x[nxt]), 0.0)
        np.minimum(nearest, dist, out=nearest)
        nearest[chosen] = -1.0
    return np.asarray(chosen, np.int64)


@dataclass(config=ConfigDict(extra="forbid"))
class Subsample(Stage):
    """Keep the most informative ``fraction`` (or ``count``) of the rows.

    Khera et al. 2024, "Efficient Alignment of Large Language Models via Data Sampling": alignment quality
    plateaus after a small share of the data, so a subset chosen to carry the most information reaches the
    full-data score at a fraction of the training cost; the data-scaling curve (``curate scaling``) tells how
    large a fraction to keep.  Methods (``method``):

    - ``entropy`` (the paper's information-theoretic sampling): embed the text chosen by ``on``, reduce it
      with PCA to ``pca_dims`` (exact SVD), fit a Gaussian mixture (``k`` components, or the lowest BIC over
      ``k_min..k_max``; covariance ``covariance``; fitted on at most ``fit_max`` seeded rows), and rank rows by
      their contribution to the data's entropy.  **Leave-one-out approximation**: the resubstitution entropy
      is ``H = -(1/n) sum_j log p(x_j)``; taking row ``i`` out moves it by ``(H + log p(x_i)) / (n - 1)`` when
      the density is held fixed, so a row's contribution is, up to constants shared by every row, its
      surprisal ``-log p(x_i)``: rows in low-density regions add the most information, rows in dense regions
      the least.  A text that repeats an earlier row's text adds nothing the first copy does not (its
      leave-one-out density contains its twin), so only the first copy is ranked; the others go to
      quarantine as repeats.  Keeps the top rows (ties by input order).
    - ``random``: a seeded uniform sample, the baseline every selection must beat.
    - ``kcenter``: greedy farthest-point traversal on the embeddings (k-center core-set, Sener & Savarese 2018),
      the geometric coverage baseline.
    - ``deita``: deita's score-first diversity rule (Liu et al. 2024): rows sorted by ``score`` (high first,
      nulls last), kept while their cosine to every kept row is ``<= tau``; re-implemented here on the
      shared embedding helpers (stages never import each other).

    All methods are deterministic under the recipe seed (``ctx.seed``).  Budget: ``fraction`` in (0, 1]
    (``ceil(fraction * n)`` rows; the default, 0.1, when neither is given) or ``count``.  Rows not kept go
    to quarantine with the reason (``subsample entropy: not in top 10%``).  Notes: ``method``, ``k`` (and
    ``bic``), ``pool``, ``budget``, ``kept``.  Global stage: reads ``id`` and the text; returns a semi-join.
    """

    name: ClassVar[str] = "subsample"
    kind: ClassVar = "global"
    shape: ClassVar[Shape] = "driver"
    driver_reason: ClassVar[str] = "a greedy selection over the whole input (encoding runs on workers)"
    paper: ClassVar[str] = "Khera et al. 2024, Efficient Alignment of LLMs via Data Sampling"
    model_params: ClassVar[tuple[str, ...]] = ("model",)

    method: Method = "entropy"
    fraction: float | None = Field(None, gt=0.0, le=1.0)
    count: int | None = Field(None, ge=1)
    on: Literal["prompt", "response", "full"] = "prompt"
    model: str = "embed"
    k: int | None = Field(None, ge=1)
    k_min: int = Field(2, ge=1)
    k_max: int = Field(8, ge=1)
    pca_dims: int = Field(32, ge=0)
    covariance: Literal["full", "diag", "tied", "spherical"] = "full"
    fit_max: int = Field(20_000, ge=100)
    score: str = "deita_score"
    tau: float = Field(0.9, ge=-1.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> Subsample:
        if self.fraction is not None and self.count is not None:
            raise ValueError("give fraction or count, not both")
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must be <= k_max ({self.k_max})")
        return self

    def requires(self, table: str) -> list[Needs]:
        if self.method != "deita":
            return []
        return [Needs.column("score (method deita)", self.score, "number", "score column")]

    def budget_label(self) -> str:
        if self.count is not None:
            return f"top {self.count}"
        return f"top {100 * (self.fraction if self.fraction is not None else 0.1):g}%"

    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        table = self.table_of(lf)
        names = lf.collect_schema().names()
        columns = [pl.col("id"), text_for(table, self.on).fill_null("").alias("_text")]
        if self.method == "deita":
            if self.score not in names:
                raise RecipeError(f"{self.name}: method deita needs a score column '{self.score}' (columns: {names})")
            columns.append(pl.col(self.score).cast(pl.Float64).fill_nan(None).alias("_score"))
        rows = lf.select(columns).collect().unique("id", keep="first", maintain_order=True)
        n = rows.height
        fraction = self.fraction if self.fraction is not None or self.count is not None else 0.1
        budget = keep_count(n, fraction, self.count)
        ctx.note("method", self.method)
        ctx.note("pool", n)
        ctx.note("budget", budget)

        # reason code per row: 0 kept, 1 not in budget, 2 repeat of an earlier text, 3 too similar (deita)
        code = np.ones(n, np.int8)
        other = np.full(n, -1, np.int64)
        sim = np.zeros(n, np.float32)
        if self.method == "random":
            order = np.random.default_rng(ctx.seed).permutation(n)[:budget]
            code[order] = 0
        elif n and budget >= n and self.method != "deita":
            code[:] = 0
        elif n:
            vectors = self._embed(rows.get_column("_text"), ctx)
            if self.method == "entropy":
                self._entropy(rows, vectors, budget, ctx, code, other)
            elif self.method == "kcenter":
                code[kcenter_order(vectors, budget, ctx.seed)] = 0
            else:
                order = rows.with_row_index("_pos").sort(["_score", "_pos"], descending=[True, False],
                                                         nulls_last=True).get_column("_pos").to_numpy().astype(np.int64)
                status, blocker, blocker_sim, _ = greedy_diverse(vectors[order], budget, self.tau)
                code[order] = np.select([status == 1, status == 2], [0, 3], 1).astype(np.int8)
                other[order] = np.where(blocker >= 0, order[np.maximum(blocker, 0)], -1)
                sim[order] = blocker_sim
        ids = rows.get_column("id")
        decided = pl.DataFrame(
            {"id": ids, "_code": code, "_other": ids.gather(np.maximum(other, 0)).to_numpy() if n else [],
             "_sim": np.char.mod("%.2f", sim) if n else []},
            schema_overrides={"id": pl.String, "_code": pl.Int8, "_other": pl.String, "_sim": pl.String},
        )
        kept = decided.filter(pl.col("_code") == 0).select("id")
        ctx.note("kept", kept.height)
        prefix = f"subsample {self.method}: "
        reason = (
            pl.when(pl.col("_code") == 2)
            .then(pl.format(prefix + "repeats the text of {}", pl.col("_other")))
            .when(pl.col("_code") == 3)
            .then(pl.format(prefix + "too similar to {} (cos {})", pl.col("_other"), pl.col("_sim")))
            .otherwise(pl.lit(prefix + f"not in {self.budget_label()}"))
        )
        rejected = decided.filter(pl.col("_code") != 0)
        ctx.quarantine(lf.join(rejected.lazy(), on="id", how="inner", maintain_order="left"), reason)
        return lf.join(kept.lazy(), on="id", how="semi", maintain_order="left")

    def _embed(self, texts: pl.Series, ctx: Context) -> np.ndarray:
        return embed_for_stage(ctx, self.model, texts)

    def _entropy(self, rows: pl.DataFrame, vectors: np.ndarray, budget: int, ctx: Context, code: np.ndarray,
                 other: np.ndarray) -> None:
        """Fill ``code``/``other`` for the entropy method (see the class docstring for the rule)."""
        n = rows.height
        first = (
            rows.with_row_index("_pos").group_by("_text", maintain_order=True).agg(pl.col("_pos").first())
        )
        firsts = first.get_column("_pos").to_numpy().astype(np.int64)
        lookup = rows.select("_text").with_row_index("_pos").join(
            first.rename({"_pos": "_first"}), on="_text", how="left", maintain_order="left"
        )
        first_of = lookup.get_column("_first").to_numpy().astype(np.int64)
        repeats = first_of != np.arange(n)
        code[repeats] = 2
        other[repeats] = first_of[repeats]
        points = vectors[firsts]
        m = len(points)
        if budget >= m or m < 2:
            code[firsts] = 0
            ctx.note("k", 1)
            return
        dims = min(self.pca_dims, m - 1, points.shape[1]) if self.pca_dims else points.shape[1]
        reduced = pca(points, dims) if self.pca_dims else points.astype(np.float64)
        ks = [self.k] if self.k is not None else list(range(min(self.k_min, m), min(self.k_max, m) + 1))
        gmm, bics = fit_mixture(reduced, ks, covariance=self.covariance, seed=ctx.seed, fit_max=self.fit_max)
        ctx.note("k", int(gmm.n_components))
        ctx.note("pca_dims", dims)
        if len(bics) > 1:
            ctx.note("bic", {str(k): round(v, 1) for k, v in bics.items()})
        surprisal = -gmm.score_samples(reduced)
        ctx.note("mean_surprisal", round(float(surprisal.mean()), 4))
        top = np.lexsort((np.arange(m), -surprisal))[:budget]  # highest surprisal first; ties by position
        code[firsts[top]] = 0
