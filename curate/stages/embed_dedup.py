"""Semantic deduplication with sentence embeddings and FAISS (docs/architecture.md, ``embed_dedup``)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import polars as pl
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from curate.contract import Needs
from curate.embed import build_index, embed_for_stage, pairs_above
from curate.execution import Shape
from curate.pipeline import Context, Stage
from curate.schema import text_for
from curate.stages._keep import (
    WARN_SHARE,
    KeepRule,
    Scope,
    drop_cluster_losers,
    keep_columns,
    keep_needs,
    prompt_key,
    rank_expr,
    resolve_scope,
    scope_edges,
    scope_losers,
)


@dataclass(config=ConfigDict(extra="forbid"))
class EmbedDedup(Stage):
    """Drop rows whose text means the same as another row's: cosine similarity of their sentence embeddings
    ``>= threshold`` (default 0.95), one row kept per cluster.

    SemDeDup (Abbas et al. 2023, "SemDeDup: Data-efficient learning at web-scale through semantic
    deduplication") removes pairs above a cosine threshold; Magpie (Xu et al. 2024) filters its generated
    instructions the same way with a sentence encoder.  Why on top of ``minhash_dedup``: paraphrases share
    meaning, not n-grams, and MinHash does not see them.

    - **Text** ``on``: ``prompt`` (default; what Magpie deduplicates), ``response`` or ``full``, embedded by the
      ``model`` handle (``models: {embed: ...}``; the bundled all-MiniLM-L6-v2 when undefined) through the
      per-text cache, so a re-run or a refresh encodes only new texts.
    - **Pairs**: ``search: range`` (default) finds every pair at or above the threshold on an exact index;
      ``knn`` looks at the ``k`` nearest neighbours of each row only (bounded work when huge clusters exist).
      Above ``exact_max`` rows the index is HNSW and its measured recall is noted.
    - **Clusters**: connected components of the pair graph (so a chain a~b~c is one cluster even when a and
      c are below the threshold, as in SemDeDup's pairwise removal applied transitively).
    - **Scope**: which pairs count.  ``global``: every pair; ``across_prompts``: only rows with different
      prompts; ``within_prompt``: only rows with the same prompt.  Default: ``across_prompts`` for ``on:
      response`` (samples of one prompt, as in best-of-n data or several pairs per prompt, resemble each other
      by design and are not duplicates: ``global`` removed 23% of such rows, nearly all distinct answers),
      ``global`` for ``prompt`` and ``full``.  Under ``across_prompts`` a row whose kept row has its own prompt
      stays (it joined the cluster through another prompt's row).
    - **Keep**: ``first``, ``longest`` (characters of the text) or ``highest:<column>``; the others go to
      quarantine with ``near duplicate (embedding, cos C) of <kept id>``, ``C`` the cosine to the kept row.
    - **Warning**: removing more than ``warn_share`` (default 10%) of the input logs a warning and notes it
      in the manifest and report.
    """

    name: ClassVar[str] = "embed_dedup"
    kind: ClassVar = "global"
    shape: ClassVar[Shape] = "driver"
    driver_reason: ClassVar[str] = (
        "one FAISS index over every vector; encoding and the search run on workers, the clusters and the "
        "decision on the driver"
    )
    paper: ClassVar[str] = "Abbas et al. 2023, SemDeDup; Xu et al. 2024, Magpie"
    model_params: ClassVar[tuple[str, ...]] = ("model",)

    on: Literal["prompt", "response", "full"] = "prompt"
    threshold: float = Field(0.95, gt=0.0, le=1.0)
    search: Literal["range", "knn"] = "range"
    k: int = Field(16, ge=2)
    keep: KeepRule = "first"
    model: str = "embed"
    index: Literal["auto", "flat", "hnsw", "ivf"] = "auto"
    exact_max: int = Field(100_000, ge=1)
    scope: Scope | None = None
    warn_share: float = Field(WARN_SHARE, ge=0.0, le=1.0)

    def requires(self, table: str) -> list[Needs]:
        return keep_needs(self.keep)

    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        table = self.table_of(lf)
        names = lf.collect_schema().names()
        ranking = rank_expr(self.keep, names)  # a missing keep column fails before any encoding
        scope = resolve_scope(self.scope, self.on)
        ctx.note("scope", scope)
        rows = (
            lf.select("id", text_for(table, self.on).fill_null("").alias("_text"), prompt_key(table),
                      *keep_columns(self.keep))
            .with_row_index("_pos")
            .collect()
        )
        vectors = embed_for_stage(ctx, self.model, rows.get_column("_text"))
        index = build_index(vectors, kind=self.index, exact_max=self.exact_max, seed=ctx.seed)
        for key, value in index.describe().items():
            ctx.note(key, value)
        # On Ray the query chunks are searched by workers against the index broadcast once; same pairs.
        left, right, _ = pairs_above(index, vectors, self.threshold, search=self.search, k=self.k,
                                     compute=ctx.compute_shared)
        keys = rows.get_column("_pkey").to_numpy()
        other = (left != right) & scope_edges(left, right, keys, scope)
        left, right = left[other], right[other]
        ctx.note("pairs", len(left) // 2 if self.search == "range" else len(left))
        n = rows.height
        labels = connected_components(
            coo_matrix((np.ones(len(left), np.int8), (left, right)), shape=(n, n)).tocsr(), directed=False
        )[1]
        members = rows.with_columns(
            _cluster=pl.Series(labels, dtype=pl.Int64), _text_len=pl.col("_text").str.len_chars()
        ).filter(pl.len().over("_cluster") > 1)
        winners = (
            members.sort(ranking)
            .unique("_cluster", keep="first", maintain_order=True)
            .select("_cluster", pl.col("id").alias("_dup_of"), pl.col("_pos").alias("_wpos"))
        )
        losers = members.join(winners, on="_cluster").filter(pl.col("_pos") != pl.col("_wpos"))
        losers = losers.filter(pl.Series(scope_losers(keys[losers.get_column("_pos").to_numpy()],
                                                      keys[losers.get_column("_wpos").to_numpy()], scope)))
        winners = winners.filter(pl.col("_cluster").is_in(losers.get_column("_cluster").implode()))
        lpos = losers.get_column("_pos").to_numpy()
        wpos = losers.get_column("_wpos").to_numpy()
        cosine = np.einsum("ij,ij->i", vectors[lpos], vectors[wpos]) if len(lpos) else np.empty(0, np.float32)
        return drop_cluster_losers(lf, ctx, losers, winners, cosine, "embedding, cos", total=n,
                                   warn_share=self.warn_share)
