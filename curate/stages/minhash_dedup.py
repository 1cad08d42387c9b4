"""Near-duplicate removal with MinHash signatures and LSH banding (docs/architecture.md, ``minhash_dedup``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import polars as pl
import xxhash
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

from curate.contract import Needs
from curate.dedup import minhash
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
    scope_clusters,
    scope_losers,
)

if TYPE_CHECKING:
    from pathlib import Path

    from curate.distributed.plane import Block, Plane

#: Default weight of false negatives in the band choice when candidates are verified: a band false positive
#: then costs one signature comparison, not a wrong drop, so the bands lean to recall (14 x 9 at 128/0.8).
VERIFIED_FALSE_NEGATIVE_WEIGHT = 0.9

#: Rows per chunk when the global phase streams the signature shards back.
_READ_CHUNK = 65536


@dataclass(config=ConfigDict(extra="forbid"))
class MinHashDedup(Stage):
    """Drop rows whose text is a near duplicate (estimated Jaccard similarity of word n-gram shingles
    ``>= threshold``) of another row's, keeping one row per cluster.

    MinHash (Broder 1997) with LSH banding (Leskovec, Rajaraman & Ullman, *Mining of Massive Datasets*,
    ch. 3), as in datasketch's ``MinHashLSH`` and the near-dedup step of Lee et al. 2022.

    - **Text**: ``on`` picks ``prompt`` (system + user turns), ``response`` or ``full``; normalised by
      NFKC, lower case, punctuation/symbols/control characters -> space.  Shingles are word ``ngram``-grams;
      a text with fewer than ``ngram`` words gives one shingle, the whole text (so a short text only matches
      texts with the same words in the same order); empty texts all have the same (empty) signature and are
      duplicates of each other, as in ``exact_dedup``.
    - **Signatures** (batch phase): ``num_perm`` affine permutations drawn from ``seed``, computed with numpy
      over whole batches (:mod:`curate.dedup.minhash`) and cached as Parquet shards keyed by the parameters
      that change them (``on``, ``ngram``, ``num_perm``, ``seed``): a killed run resumes at the first missing
      shard, and changing only ``threshold``, ``bands``, ``verify`` or ``keep`` reuses every shard.
    - **Bands**: ``bands x rows`` as given, or chosen for ``threshold`` by minimising the weighted integral of
      false positive and false negative probability (datasketch's ``_optimal_param``).  Without ``verify`` the
      weights are datasketch's 0.5/0.5 (9 bands of 13 rows at 128 permutations and 0.8).  With ``verify`` a
      band false positive is only a candidate that the signature check then rejects, so the default
      ``false_negative_weight`` is 0.9 (14 bands of 9 rows): collision probability 0.975 at Jaccard 0.85
      instead of 0.69, and the verified result is a sharper step at the threshold than banding alone.
    - **Clusters** (global phase, reading only band hashes, then the signatures of rows that share a bucket):
      rows sharing a bucket in any band are candidate pairs; with ``verify`` (default) a pair counts only if
      its estimated Jaccard (share of equal signature positions) is ``>= threshold``, which removes LSH false
      positives at the cost of pairs just above the threshold whose estimate falls below it; clusters are
      the connected components.  The partition into clusters does not depend on row order.  Under
      ``--executor ray`` (``scope: global``) the stage runs its keyed form on the data plane
      (:meth:`run_on_plane`): signatures per block, band buckets, verified edges and connected components per
      hash partition (:mod:`curate.dedup.minhash_keyed`): the same partition, while ``candidate_pairs`` /
      ``verified_pairs`` also count pairs an earlier band had joined already.
    - **Keep**: one row per cluster by ``keep``: ``first``, ``longest`` (characters of the selected text) or
      ``highest:<column>``; every other row goes to quarantine with ``near duplicate (minhash, jaccard J) of
      <kept id>`` (``J`` estimated between that row and the kept one).
    - **Scope** (as in ``embed_dedup``): ``global`` compares every row, ``across_prompts`` (default for ``on:
      response``) only rows of different prompts, ``within_prompt`` only rows of one prompt.  MinHash's
      clusters come from buckets, not pairs, so the scope applies to clusters: ``within_prompt`` splits each
      cluster by prompt, ``across_prompts`` keeps a row whose kept row has its own prompt.  Removing more than
      ``warn_share`` (default 10%) of the input logs a warning and notes it in the manifest and report.

    The output is the input without the dropped ids (an anti-join on the dropped ids, which equals a
    semi-join on the kept ids: rows with one id have the same content and land in one cluster; when a
    dropped row has the kept row's id, both stay).  Memory of the global phase: 8 bytes per band per row
    (112 B at 14 bands), then ``4 * num_perm`` bytes (512 B) plus the id of each *candidate* row (one that
    shares a bucket); texts are never held beyond one batch.
    """

    name: ClassVar[str] = "minhash_dedup"
    kind: ClassVar = "global"
    shape: ClassVar[Shape] = "shuffle"
    version: ClassVar[int] = 2  # 2: bucket members sorted stably (the same clusters on every CPU)
    paper: ClassVar[str] = "Broder 1997 (MinHash); Leskovec et al., Mining of Massive Datasets ch. 3 (LSH); datasketch"

    on: Literal["prompt", "response", "full"] = "prompt"
    threshold: float = Field(0.8, gt=0.0, le=1.0)
    ngram: int = Field(5, ge=1)
    num_perm: int = Field(128, ge=2, le=4096)
    seed: int = Field(1, ge=0)
    bands: int | None = Field(None, ge=1)
    rows: int | None = Field(None, ge=1)
    false_negative_weight: float | None = Field(None, ge=0.0, le=1.0)
    verify: bool = True
    keep: KeepRule = "first"
    #: Rows per signature batch (one cached shard each).
    batch_size: int = Field(8192, ge=1)
    scope: Scope | None = None
    warn_share: float = Field(WARN_SHARE, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_bands(self) -> MinHashDedup:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither (then they are chosen for the threshold)")
        if self.bands is not None and self.rows is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self

    def requires(self, table: str) -> list[Needs]:
        return keep_needs(self.keep)

    def band_params(self) -> tuple[int, int]:
        """``(bands, rows)``: as given, or the optimum for ``threshold`` and ``num_perm``."""
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        weight = self.false_negative_weight
        if weight is None:
            weight = VERIFIED_FALSE_NEGATIVE_WEIGHT if self.verify else 0.5
        return minhash.optimal_bands(self.threshold, self.num_perm, weight)

    def signature_key(self) -> str:
        """Cache key of the signature shards: only the parameters that change a signature."""
        payload = {
            "stage": self.name,
            "version": self.version,
            "hash_version": minhash.HASH_VERSION,
            "on": self.on,
            "ngram": self.ngram,
            "num_perm": self.num_perm,
            "seed": self.seed,
        }
        return xxhash.xxh3_128_hexdigest(json.dumps(payload, sort_keys=True).encode())

    def _signature_batch(self, batch: pl.DataFrame) -> pl.DataFrame:
        texts = batch.get_column("_text")
        sig = minhash.text_signatures(texts, ngram=self.ngram, num_perm=self.num_perm, seed=self.seed)
        return pl.DataFrame(
            {
                "id": batch.get_column("id"),
                "_len": texts.str.len_chars().fill_null(0).cast(pl.UInt32),
                "_sig": pl.Series("_sig", sig, dtype=pl.Array(pl.UInt32, self.num_perm)),
            }
        )

    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        table = self.table_of(lf)
        names = lf.collect_schema().names()
        ranking = rank_expr(self.keep, names)  # fails now, not after the signatures, on a missing column
        bands, rows = self.band_params()
        ctx.note("bands", bands)
        ctx.note("rows", rows)

        source = lf.select("id", text_for(table, self.on).alias("_text"))
        shards = ctx.map_batches(
            source, self._signature_batch, self.signature_key(), batch_size=self.batch_size, desc=self.name
        )

        # Pass 1: band hashes of every row (8 bytes per band per row); keep the rows that share a bucket.
        total = shards.select(pl.len()).collect().item()
        hashes = np.empty((total, bands), dtype=np.uint64)
        offset = 0
        for chunk in shards.select("_sig").collect_batches(chunk_size=_READ_CHUNK):
            hashes[offset : offset + chunk.height] = minhash.band_hashes(
                chunk.get_column("_sig").to_numpy(), bands, rows
            )
            offset += chunk.height
        candidates = minhash.candidate_mask(hashes)
        del hashes
        positions = np.flatnonzero(candidates)
        ctx.note("candidates", len(positions))

        # Pass 2: signatures, ids and text lengths of the candidate rows only.
        sig = np.empty((len(positions), self.num_perm), dtype=np.uint32)
        frames, offset, filled = [], 0, 0
        if len(positions):
            for chunk in shards.collect_batches(chunk_size=_READ_CHUNK):
                take = np.flatnonzero(candidates[offset : offset + chunk.height])
                if len(take):
                    sig[filled : filled + len(take)] = chunk.get_column("_sig").to_numpy()[take]
                    frames.append(chunk.select("id", "_len")[take])
                    filled += len(take)
                offset += chunk.height
        labels, figures = minhash.cluster(sig, bands=bands, rows=rows, threshold=self.threshold, verify=self.verify)
        for key, value in figures.items():
            ctx.note(key, value)

        members = pl.DataFrame(
            {"_ci": np.arange(len(positions)), "_pos": positions, "_cluster": labels},
            schema={"_ci": pl.Int64, "_pos": pl.Int64, "_cluster": pl.Int64},
        )
        if frames:
            members = pl.concat([members, pl.concat(frames).rename({"_len": "_text_len"})], how="horizontal")
        else:
            members = members.with_columns(id=pl.lit(None, pl.String), _text_len=pl.lit(None, pl.UInt32))
        members = members.filter(pl.len().over("_cluster") > 1)
        members = self._with_keep_columns(lf, members)
        scope = resolve_scope(self.scope, self.on)
        ctx.note("scope", scope)
        if scope != "global":  # prompt keys of the cluster members, read by position
            keys = (lf.select(prompt_key(table)).with_row_index("_pos").with_columns(pl.col("_pos").cast(pl.Int64))
                    .join(members.lazy().select("_pos"), on="_pos", how="semi").collect())
            members = scope_clusters(members.join(keys, on="_pos", how="left"), scope)

        ranked = members.sort(ranking)
        winners = ranked.unique("_cluster", keep="first", maintain_order=True).select(
            "_cluster", pl.col("id").alias("_dup_of"), pl.col("_ci").alias("_wi")
        )
        losers = members.join(winners, on="_cluster").filter(pl.col("_ci") != pl.col("_wi"))
        if scope == "across_prompts":
            wkeys = members.select(pl.col("_ci").alias("_wi"), pl.col("_pkey").alias("_wkey"))
            losers = losers.join(wkeys, on="_wi", how="left", maintain_order="left")
            losers = losers.filter(pl.Series(scope_losers(losers.get_column("_pkey").to_numpy(),
                                                          losers.get_column("_wkey").to_numpy(), scope)))
            winners = winners.filter(pl.col("_cluster").is_in(losers.get_column("_cluster").implode()))
        jaccard = minhash.estimate_jaccard(
            sig[losers.get_column("_ci").to_numpy()], sig[losers.get_column("_wi").to_numpy()]
        )
        return drop_cluster_losers(lf, ctx, losers, winners, jaccard, "minhash, jaccard", total=total,
                                   warn_share=self.warn_share)

    #: What the distributed form runs where (the log and the manifest's ``ran_on``).
    plane_steps: ClassVar[str] = ("signatures per block, band buckets, verified edges and connected components per "
                                  "hash partition, keep decisions per cluster partition, the rest per block")

    def has_plane_form(self) -> bool:
        """The keyed form covers ``scope: global``; the prompt scopes regroup clusters on the driver."""
        return resolve_scope(self.scope, self.on) == "global"

    def run_on_plane(self, plane: Plane, blocks: list[Block], folder: Path, ctx: Context, table: str,
                     names: list[str]) -> Path:
        """The distributed form (:mod:`curate.distributed.minhash_plane`): the same kept rows and quarantine."""
        from curate.distributed.minhash_plane import run_minhash

        return run_minhash(self, plane, blocks, folder, ctx, table, names)

    def _with_keep_columns(self, lf: pl.LazyFrame, members: pl.DataFrame) -> pl.DataFrame:
        """Add the input columns the keep rule ranks by, read for the cluster members only (by position)."""
        columns = keep_columns(self.keep)
        if not columns:
            return members
        values = (
            lf.select(pl.col("id").alias("_id_check"), *columns)
            .with_row_index("_pos")
            .with_columns(pl.col("_pos").cast(pl.Int64))
            .join(members.lazy().select("_pos"), on="_pos", how="semi")
            .collect()
        )
        out = members.join(values, on="_pos", how="left")
        if out.filter(pl.col("id") != pl.col("_id_check")).height:
            raise RuntimeError(f"{self.name}: the input changed order between two reads; keep={self.keep!r}")
        return out.drop("_id_check")
