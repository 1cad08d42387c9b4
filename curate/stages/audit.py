"""Contamination and extraction audit against reference sets (docs/architecture.md, ``audit``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl
import xxhash
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.dataclasses import dataclass

from curate import checkpoint
from curate.checkpoint import file_digest
from curate.dedup import minhash
from curate.embed import EmbedStats, build_index, embed_texts, encoder_from, pairs_above
from curate.errors import InputDataError
from curate.execution import Shape
from curate.pipeline import Context, Stage
from curate.schema import prompt_text, response_texts

#: Columns tried, in order, for a reference file's text when ``text`` is not given.
TEXT_COLUMNS = ("text", "question", "prompt", "instruction", "turns", "query", "input", "content")
#: Columns tried for a reference item's id when ``id`` is not given (else the line number).
ID_COLUMNS = ("id", "task_id", "question_id", "uuid", "_id")

AUDIT_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.String(),
    "field": pl.String(),
    "reference": pl.String(),
    "reference_id": pl.String(),
    "text": pl.String(),
    "reference_text": pl.String(),
    "cosine": pl.Float32(),
    "ngram_shared": pl.Int64(),
    "ngram_overlap": pl.Float64(),
    "embedding_match": pl.Boolean(),
    "ngram_match": pl.Boolean(),
    "match": pl.Boolean(),
}


class Reference(BaseModel):
    """One reference set: a file (JSONL/JSON/Parquet/CSV, ``.gz`` too) with a text column, or any input
    curate.io can adapt (``adapter:``, ``auto`` included, with the adapter's ``options``, as a recipe input;
    then its prompt text is the reference).  A list-of-strings column (MT-Bench ``turns``) gives one reference
    item per element.  A CSV/TSV without a header row (MMLU's or MGSM's question files): ``header: false``
    and ``columns: [question, ...]``."""

    model_config = ConfigDict(extra="forbid")

    path: str
    name: str | None = None
    text: str | None = None
    id: str | None = None
    adapter: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    header: bool = True
    columns: list[str] | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        stem = Path(self.path).name
        return stem.split(".")[0] if stem else self.path


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p


def load_reference(ref: Reference, base_dir: Path = Path(".")) -> pl.DataFrame:
    """``reference, reference_id, reference_text`` of one reference set; ``InputDataError`` naming the path
    when it is missing, unreadable, lacks the text column or holds no text."""
    from curate.io import read, read_raw
    from curate.io.loading import reader_columns

    path = _resolve(ref.path, base_dir)
    if not path.exists():
        raise InputDataError(f"{path}: reference set '{ref.label}' not found (audit references)")
    columns = reader_columns(path, ref.header, ref.columns)
    if ref.adapter:
        lf = read(path, ref.adapter, header=ref.header, columns=columns, **ref.options)
        table = Stage.table_of(lf)
        frame = lf.select(pl.col("id").alias("_rid"), prompt_text(table).alias("_rtext")).collect()
    else:
        if ref.options:
            raise InputDataError(f"{path}: reference set '{ref.label}': options are an adapter's; add adapter: "
                                 "auto (or the adapter's name), or name the text column with text:")
        raw = read_raw(path, columns=columns).frame
        names = raw.collect_schema().names()
        column = ref.text or next((c for c in TEXT_COLUMNS if c in names), None)
        if column is None or column not in names:
            raise InputDataError(
                f"{path}: reference set '{ref.label}' has no text column "
                f"{(repr(ref.text) if ref.text else 'among ' + ', '.join(TEXT_COLUMNS))} (columns: {names})"
            )
        id_column = ref.id or next((c for c in ID_COLUMNS if c in names), "_line")
        if id_column not in names:
            raise InputDataError(f"{path}: reference set '{ref.label}' has no id column '{id_column}'")
        frame = raw.select(pl.col(id_column).cast(pl.String).alias("_rid"), pl.col(column).alias("_rtext")).collect()
        dtype = frame.schema["_rtext"]
        if isinstance(dtype, pl.List):
            frame = (
                frame.with_columns(pl.int_ranges(pl.col("_rtext").list.len()).alias("_k"))
                .explode(["_rtext", "_k"])
                .with_columns(pl.format("{}#{}", pl.col("_rid"), pl.col("_k")).alias("_rid"))
                .drop("_k")
            )
        elif dtype != pl.String:
            raise InputDataError(
                f"{path}: reference set '{ref.label}': column '{column}' holds {dtype}, not text"
            )
    frame = frame.with_columns(pl.col("_rtext").cast(pl.String)).filter(
        pl.col("_rtext").is_not_null() & (pl.col("_rtext").str.strip_chars() != "")
    )
    if frame.height == 0:
        raise InputDataError(f"{path}: reference set '{ref.label}' holds no texts")
    return frame.select(
        pl.lit(ref.label).alias("reference"),
        pl.col("_rid").alias("reference_id"),
        pl.col("_rtext").alias("reference_text"),
    )


def _shingles(texts: pl.Series, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """``(hash, owner)`` per distinct word n-gram of each text (hash shared with ``minhash_dedup``)."""
    tokens, words = minhash.token_hashes(minhash.normalise(texts))
    hashes, counts = minhash.shingle_hashes(tokens, words, ngram)
    owner = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
    return hashes, owner


@dataclass(config=ConfigDict(extra="forbid"))
class Audit(Stage):
    """Find rows whose text appears in a reference set (benchmark contamination, or a model's regurgitation
    of known training data) by embedding similarity and by word n-gram overlap.

    Decontamination practice: a shared 13-gram flags a row (GPT-3, Brown et al. 2020, appendix C; also the
    Llama and Tulu reports); why also embeddings: rephrased or lightly edited benchmark items (changed
    numbers, swapped words) break n-grams but keep meaning (Yang et al. 2023, "Rethinking benchmark and
    contamination for language models with rephrased samples").  Extraction audits (Barbero et al. 2025)
    compare model outputs with training data the same way (``on: response``).

    - ``references``: paths (relative to the recipe) or mappings ``{path, name, text, id, adapter}``.
    - ``on``: ``prompt`` (default), ``response`` (all responses joined) or ``both`` (audited separately).
    - Embedding: the ``k`` most similar reference items of each text (exact FAISS search up to ``exact_max``
      reference items); a match at cosine ``>= threshold`` (default 0.95).
    - N-grams: shared word ``ngram``-grams (default 13; normalised as in ``minhash_dedup``; a text shorter than
      ``ngram`` words is one n-gram), found by hash join and then counted exactly; a match at
      ``>= min_shared`` shared n-grams.  ``ngram_overlap`` = shared / the reference item's n-grams.
    - ``method``: what counts as a match: ``embedding``, ``ngram`` or ``both`` (either; default).
    - Report: every candidate pair (found by either method) with both texts and both scores goes to a Parquet
      file, ``report`` or ``<cache>/audit/<stage label>.parquet`` (in a run: ``RUN/cache/audit/NN-audit.parquet``);
      its path is in the manifest notes as ``report``.
    - ``mode: flag`` adds ``contaminated`` (bool) and ``audit_matches`` (matching (text, reference item) pairs);
      ``drop`` sends matching rows to quarantine with the reference set, item and scores of the best match.
    - ``mode: probe`` audits a model instead of the rows: ``probe_samples`` generations of the ``probe_model``
      handle from only its chat-template prefix before a user message (as Magpie derives it), matched against
      the references (the model's known training data); the rows pass through unchanged, the report and the
      ``matches`` note say what was regurgitated.
    """

    name: ClassVar[str] = "audit"
    kind: ClassVar = "global"
    shape: ClassVar[Shape] = "driver"
    driver_reason: ClassVar[str] = (
        "one FAISS index over the references; encoding and the search run on workers, the decision on the driver"
    )
    paper: ClassVar[str] = "Brown et al. 2020 (13-gram decontamination); Barbero et al. 2025 (extraction)"
    model_params: ClassVar[tuple[str, ...]] = ("model", "probe_model")

    references: list[Reference] = Field(default_factory=list)
    on: Literal["prompt", "response", "both"] = "prompt"
    method: Literal["embedding", "ngram", "both"] = "both"
    threshold: float = Field(0.95, gt=0.0, le=1.0)
    k: int = Field(3, ge=1)
    ngram: int = Field(13, ge=1)
    min_shared: int = Field(1, ge=1)
    mode: Literal["flag", "drop", "probe"] = "flag"
    model: str = "embed"
    probe_model: str | None = None
    probe_samples: int = Field(32, ge=1)
    probe_max_tokens: int = Field(256, ge=1)
    probe_temperature: float = Field(1.0, ge=0.0)
    probe_seed: int = 0
    report: str | None = None
    exact_max: int = Field(100_000, ge=1)

    @field_validator("references", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        if isinstance(value, (str, dict)):
            value = [value]
        if isinstance(value, list):
            return [{"path": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> Audit:
        if not self.references:
            raise ValueError("references: give at least one reference set (a path or {path, name, text, ...})")
        if self.mode == "probe" and not self.probe_model:
            raise ValueError("mode 'probe' needs probe_model: the handle of the LLM to probe (models: in the recipe)")
        return self

    def adds(self, table: str) -> dict[str, pl.DataType | None]:
        return {"audit_matches": pl.UInt32(), "contaminated": pl.Boolean()} if self.mode == "flag" else {}

    def _probe_items(self, ctx: Context) -> pl.DataFrame:
        """Samples of the probed model given only the text its chat template puts before a user message (the
        Magpie pre-query prefix): with nothing to answer, what it writes is what it learned to expect, and
        verbatim training items there are regurgitation (Barbero et al. 2025).  Generated as cached batch
        shards, so a re-run does not sample again."""
        from curate.llm import Sampling
        from curate.synth.templates import derive_template

        assert self.probe_model is not None
        llm = ctx.models.get(self.probe_model, "llm")
        template = derive_template(llm.render)
        sampling = Sampling(temperature=self.probe_temperature, top_p=1.0, max_tokens=self.probe_max_tokens,
                            stop=template.stops, seed=self.probe_seed)

        def generate(batch: pl.DataFrame) -> pl.DataFrame:
            outs = llm.generate([template.pre_query] * batch.height, sampling)
            return batch.with_columns(pl.Series("text", [o[0].text if o else "" for o in outs], dtype=pl.String))

        samples = pl.LazyFrame({"id": [f"probe-{i}" for i in range(self.probe_samples)]})
        key = xxhash.xxh3_128_hexdigest(f"{self.fingerprint()}|{ctx.models.fingerprint(self.probe_model)}".encode())
        done = ctx.map_batches(samples, generate, key, batch_size=64, desc="audit probe").collect()
        ctx.note("probe_samples", done.height)
        return done.select("id", pl.lit("probe").alias("field"), pl.col("text").fill_null("")).filter(
            pl.col("text").str.strip_chars() != ""
        )

    def _items(self, lf: pl.LazyFrame, table: str) -> pl.DataFrame:
        fields = {"prompt": ["prompt"], "response": ["response"], "both": ["prompt", "response"]}[self.on]
        parts = []
        for name in fields:
            expr = prompt_text(table) if name == "prompt" else response_texts(table).list.join("\n")
            parts.append(lf.select("id", pl.lit(name).alias("field"), expr.fill_null("").alias("text")))
        items = pl.concat(parts).collect() if len(parts) > 1 else parts[0].collect()
        return items.filter(pl.col("text").str.strip_chars() != "")

    def _match(self, items: pl.DataFrame, refs: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        """Candidate pairs from either method, then both scores for each (the report's rows)."""
        encoder = encoder_from(ctx.models, self.model)
        stats = EmbedStats()
        ref_vec = embed_texts(encoder, refs.get_column("reference_text"), ctx.cache_dir, stats=stats,
                              compute=ctx.compute_batches)
        item_vec = embed_texts(encoder, items.get_column("text"), ctx.cache_dir, stats=stats,
                              compute=ctx.compute_batches)
        ctx.note("texts_encoded", stats.encoded)

        candidates: list[pl.DataFrame] = []
        if self.method in ("embedding", "both") and items.height:
            index = build_index(ref_vec, exact_max=self.exact_max, seed=ctx.seed)
            for key, value in index.describe().items():
                ctx.note(key, value)
            # The k nearest reference items of each text at cosine >= threshold; on Ray the text chunks are
            # searched by workers against the index broadcast once (same pairs).
            rows, cols, _ = pairs_above(index, item_vec, self.threshold, search="knn", k=self.k,
                                        compute=ctx.compute_shared)
            candidates.append(pl.DataFrame({"_i": rows, "_r": cols}))
        if self.method in ("ngram", "both") and items.height:
            rh, ro = _shingles(refs.get_column("reference_text"), self.ngram)
            ih, io = _shingles(items.get_column("text"), self.ngram)
            pairs = (
                pl.DataFrame({"_g": ih, "_i": io})
                .join(pl.DataFrame({"_g": rh, "_r": ro}), on="_g")
                .group_by("_i", "_r")
                .len()
                .filter(pl.col("len") >= self.min_shared)
                .select("_i", "_r")
            )
            candidates.append(pairs)
        pairs = (
            pl.concat(candidates).unique().sort("_i", "_r")
            if candidates
            else pl.DataFrame(schema={"_i": pl.Int64, "_r": pl.Int64})
        )
        return self._score(pairs, items, refs, item_vec, ref_vec)

    def cache_key_extra(self, ctx: Context) -> str:
        """The reference files' contents: editing a reference set in place re-runs the audit."""
        digests = []
        for ref in self.references:
            path = _resolve(ref.path, ctx.models.base_dir)
            digests.append(file_digest(path) if path.exists() else "missing")
        return "|".join(digests)

    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        table = self.table_of(lf)
        refs = pl.concat([load_reference(r, ctx.models.base_dir) for r in self.references])
        items = self._probe_items(ctx) if self.mode == "probe" else self._items(lf, table)
        ctx.note("reference_items", refs.height)
        ctx.note("texts_audited", items.height)
        found = self._match(items, refs, ctx)
        path = self._write_report(found, ctx)
        matched = found.filter(pl.col("match"))
        ctx.note("report", str(path))
        ctx.note("matches", matched.height)
        ctx.note("rows_matched", matched.get_column("id").n_unique())
        if self.mode == "probe":
            return lf  # the probe audits the model, not the rows
        if self.mode == "flag":
            counts = matched.group_by("id").agg(pl.len().cast(pl.UInt32).alias("audit_matches"))
            return (
                lf.join(counts.lazy(), on="id", how="left", maintain_order="left")
                .with_columns(pl.col("audit_matches").fill_null(0))
                .with_columns((pl.col("audit_matches") > 0).alias("contaminated"))
            )
        best = (
            matched.sort(["cosine", "ngram_shared"], descending=True)
            .unique("id", keep="first", maintain_order=True)
            .select(
                "id",
                pl.format(
                    "contaminated: matches {} item {} ({} of row; cos {}, {}-gram overlap {})",
                    "reference", "reference_id", "field",
                    pl.col("cosine").round(2), pl.lit(self.ngram), pl.col("ngram_overlap").round(2),
                ).alias("_reason"),
            )
        )
        ctx.quarantine(lf.join(best.lazy(), on="id", how="inner", maintain_order="left"), pl.col("_reason"))
        return lf.join(best.lazy().select("id"), on="id", how="anti", maintain_order="left")

    def _score(
        self, pairs: pl.DataFrame, items: pl.DataFrame, refs: pl.DataFrame, item_vec: np.ndarray, ref_vec: np.ndarray
    ) -> pl.DataFrame:
        """Both scores of every candidate pair: cosine, and the exact count of shared n-grams (the hash join
        only proposes; 32-bit hashes can collide)."""
        if pairs.height == 0:
            return pl.DataFrame(schema=AUDIT_SCHEMA)
        i = pairs.get_column("_i").to_numpy()
        r = pairs.get_column("_r").to_numpy()
        cosine = np.einsum("ij,ij->i", item_vec[i], ref_vec[r]).astype(np.float32)
        item_norm = minhash.normalise(items.get_column("text").gather(i)).to_list()
        ref_norm = minhash.normalise(refs.get_column("reference_text").gather(r)).to_list()
        shared = np.empty(len(i), np.int64)
        overlap = np.empty(len(i), np.float64)
        for n, (a, b) in enumerate(zip(item_norm, ref_norm, strict=True)):
            ref_set = minhash.shingle_set(b, self.ngram)
            common = len(minhash.shingle_set(a, self.ngram) & ref_set)
            shared[n] = common
            overlap[n] = common / len(ref_set) if ref_set else 0.0
        emb_match = cosine >= np.float32(self.threshold)
        ngram_match = shared >= self.min_shared
        match = {"embedding": emb_match, "ngram": ngram_match, "both": emb_match | ngram_match}[self.method]
        return pl.concat(
            [
                items.select("id", "field", "text")[i],
                refs[r].select("reference", "reference_id", "reference_text"),
                pl.DataFrame(
                    {
                        "cosine": cosine,
                        "ngram_shared": shared,
                        "ngram_overlap": overlap,
                        "embedding_match": emb_match,
                        "ngram_match": ngram_match,
                        "match": match,
                    }
                ),
            ],
            how="horizontal",
        ).select(list(AUDIT_SCHEMA))

    def _write_report(self, found: pl.DataFrame, ctx: Context) -> Path:
        if self.report:
            path = _resolve(self.report, ctx.models.base_dir)
        else:
            path = ctx.cache_dir / "audit" / f"{ctx.stage_label}.parquet"
        checkpoint.write_parquet_atomic(found, path)
        return path
