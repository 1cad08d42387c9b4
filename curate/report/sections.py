"""The report's sections: each reads what a finished run directory holds and returns (id, title, html).

A section that has nothing to show returns only its one :func:`curate.report.html.none` line; the page
gathers those into one "Not in this run" list at the end (each with its reason), so a reader (or a test)
can still tell "no data" from "the report forgot it" without scrolling past empty sections.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curate.errors import InputDataError
from curate.pipeline import scan_quarantine
from curate.report import plots
from curate.report.findings import DEDUP_STAGES
from curate.report.html import esc, none, table
from curate.schema import detect_table, hash_expr, prompt_text, response_texts, text_for

Section = tuple[str, str, str]


def _scan(path: Path) -> pl.LazyFrame | None:
    return pl.scan_parquet(path) if path.is_file() else None


def _collect(lf: pl.LazyFrame) -> pl.DataFrame:
    """Collect with the streaming engine: sections reduce texts to numbers, so memory stays bounded by the
    result, whatever the number of rows."""
    return lf.collect(engine="streaming")


def _columns(lf: pl.LazyFrame | None) -> list[str]:
    return lf.collect_schema().names() if lf is not None else []


def _read_stage_output(run_dir: Path, manifest: dict[str, Any]) -> pl.LazyFrame | None:
    """The rows as read (the read stage's cached output), or None when that cache is gone."""
    stages = manifest.get("stages", [])
    if not stages or not stages[0].get("cache_dir"):
        return None
    return _scan(run_dir / "cache" / "stages" / stages[0]["cache_dir"] / "data.parquet")


def _lengths(lf: pl.LazyFrame) -> tuple[list[int], list[int]] | None:
    """Prompt chars per row and response chars per response, via the shared schema expressions."""
    try:
        table_name = detect_table(lf.collect_schema())
    except InputDataError:
        return None
    sizes = _collect(lf.select(
        prompt_text(table_name).str.len_chars().alias("p"),
        response_texts(table_name).list.eval(pl.element().str.len_chars()).alias("r"),
    ))
    return sizes["p"].drop_nulls().to_list(), sizes["r"].explode().drop_nulls().to_list()


def _stats_rows(name: str, values: list[float]) -> list[Any]:
    s = pl.Series(values, dtype=pl.Float64)
    if s.is_empty():
        return [name, 0, "", "", "", "", ""]
    return [name, s.len(), float(s.mean()), float(s.quantile(0.1, "nearest")), float(s.median()),  # type: ignore[arg-type]
            float(s.quantile(0.9, "nearest")), float(s.max())]  # type: ignore[arg-type]


_STAT_HEAD = ["", "count", "mean", "p10", "median", "p90", "max"]


def funnel(run_dir: Path, manifest: dict[str, Any]) -> Section:
    """Rows in/out per stage and why rows were set aside (reasons with ids and numbers folded together)."""
    stages = manifest.get("stages", [])
    if not stages:
        return "funnel", "Stage funnel", none("The manifest lists no stages.")
    labels = [s["label"] for s in stages]
    body = plots.funnel_chart(labels, [s["rows_in"] for s in stages], [s["rows_out"] for s in stages])
    body += table(["stage", "rows in", "set aside", "consumed", "created", "rows out", "flagged", "unaccounted",
                   "seconds", "cached"],
                  [[s["label"], s["rows_in"], s["quarantined"], s.get("consumed", 0), s.get("created", 0),
                    s["rows_out"], ", ".join(f"{n} {c}" for c, n in (s.get("flagged") or {}).items()),
                    s.get("unaccounted", 0), s["seconds"], "yes" if s.get("cached") else "no"] for s in stages])
    uses = [f"{s['label']}: input rows {s['notes']['input_use']}" for s in stages
            if (s.get("notes") or {}).get("input_use")]
    body += "".join(f"<p>{esc(text)}</p>" for text in uses)
    reasons: list[list[Any]] = []
    for path in sorted((run_dir / "quarantine").glob("*.parquet")):
        q = scan_quarantine(path).select("stage", "code", "reason").collect()
        for stage in q["stage"].unique(maintain_order=True).to_list():
            mine = q.filter(pl.col("stage") == stage)
            counts = Counter(mine["code"].to_list())
            example = dict(zip(mine["code"].to_list(), mine["reason"].to_list(), strict=True))
            reasons += [[stage, code, n, example[code]] for code, n in counts.most_common(5)]
    body += "<h3>Top quarantine reasons per stage</h3>"
    body += table(["stage", "code", "rows", "example reason"], reasons) if reasons else none(
        "No rows were quarantined.")
    return "funnel", "Stage funnel", body


def lengths(run_dir: Path, manifest: dict[str, Any], data: pl.LazyFrame | None) -> Section:
    """Prompt and response lengths before (the read stage's output) and after the pipeline."""
    after = _lengths(data) if data is not None else None
    if after is None:
        return "lengths", "Length distributions", none("No output table with prompts and responses.")
    read = _read_stage_output(run_dir, manifest)
    before = _lengths(read) if read is not None else None
    body = "" if before else none("The read stage's cached output is gone (cache removed): showing after only.")
    rows = []
    for i, what in enumerate(("prompt", "response")):
        series = {"after": after[i]} if before is None else {"before": before[i], "after": after[i]}
        body += plots.histograms(series, f"{what} length", "characters (log scale)", log=True)
        rows += [_stats_rows(f"{what} {name}", vals) for name, vals in series.items()]
    return "lengths", "Length distributions", body + table(["chars", *_STAT_HEAD[1:]], rows)


def _score_columns(data: pl.LazyFrame) -> dict[str, list[float]]:
    schema = data.collect_schema()
    numeric = [n for n, dtype in schema.items() if dtype.is_numeric() and ("score" in n or "reward" in n)]
    exprs = [pl.col(n).cast(pl.Float64) for n in numeric]
    if "responses" in schema:
        exprs.append(pl.col("responses").list.eval(pl.element().struct.field("score")).alias("responses[].score"))
    if not exprs:
        return {}
    found = _collect(data.select(exprs))
    out = {n: found[n].drop_nulls().to_list() for n in numeric}
    if "responses" in schema:
        out["responses[].score"] = found["responses[].score"].explode().drop_nulls().cast(pl.Float64).to_list()
    return {k: v for k, v in out.items() if v}


def _score_series(found: dict[str, list[float]]) -> list[tuple[str, dict[str, list[float]]]]:
    """One plot per score: ``X_chosen`` and ``X_rejected`` (or ``score_chosen``/``score_rejected``) overlaid on
    one figure, every other column alone; ``score_margin`` is left to the margins section, which plots it."""
    plots_: list[tuple[str, dict[str, list[float]]]] = []
    done: set[str] = set()
    for name in found:
        if name in done or (name == "score_margin" and {"score_chosen", "score_rejected"} <= set(found)):
            continue
        if name.endswith("_chosen") and f"{name[:-7]}_rejected" in found:
            other = f"{name[:-7]}_rejected"
            plots_.append((f"{name[:-7]} of chosen and rejected", {"chosen": found[name], "rejected": found[other]}))
            done |= {name, other}
        elif name.endswith("_rejected") and f"{name[:-9]}_chosen" in found:
            continue  # drawn with its _chosen twin
        else:
            plots_.append((name, {name: found[name]}))
            done.add(name)
    return plots_


def scores(data: pl.LazyFrame | None) -> Section:
    """Every judge / deita / reward score column of the output, as histograms and summary stats (chosen and
    rejected of one score on one figure, so they compare at a glance)."""
    found = _score_columns(data) if data is not None else {}
    if not found:
        return "scores", "Score distributions", none("No score columns in the output.")
    body = "".join(plots.histograms(series, title, "score") for title, series in _score_series(found))
    body += table(_STAT_HEAD, [_stats_rows(k, v) for k, v in found.items()])
    return "scores", "Score distributions", body


def _flat(notes: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested stage notes (``length_control.before.pairs``) as dotted scalar rows."""
    rows: list[tuple[str, Any]] = []
    for key, value in notes.items():
        if isinstance(value, dict):
            rows += _flat(value, f"{prefix}{key}.")
        elif isinstance(value, int | float | str) and not isinstance(value, bool) and key != "report":
            rows.append((f"{prefix}{key}", value))
    return rows


def margins(data: pl.LazyFrame | None, manifest: dict[str, Any]) -> Section:
    """Chosen-vs-rejected length and score margins: a preference set whose chosen side is nearly always
    longer teaches a DPO model to be verbose (length bias), so the share is stated outright, next to what
    the pairs and judge stages noted (length ratio and length control before/after)."""
    title = "Chosen vs rejected (length bias)"
    noted = [[s["label"], k, v] for s in manifest.get("stages", []) if s.get("name") in ("pairs", "judge")
             for k, v in _flat(s.get("notes", {}))]
    notes = ("<h3>Pairs and judge stage notes</h3>" + table(["stage", "note", "value"], noted)) if noted else ""
    columns = _columns(data)
    if data is None or not {"chosen", "rejected"} <= set(columns):
        return "margins", title, none("Not a preference table: no chosen/rejected pairs.") + notes

    def chars(col: str) -> pl.Expr:  # signed: len_chars is UInt32 and a negative margin must not wrap
        text = pl.col(col).list.eval(pl.element().struct.field("content")).list.join("\n")
        return text.str.len_chars().cast(pl.Int64)

    exprs = [(chars("chosen") - chars("rejected")).alias("length_margin")]
    if {"score_chosen", "score_rejected"} <= set(columns):
        exprs.append((pl.col("score_chosen") - pl.col("score_rejected")).alias("score_margin"))
    m = _collect(data.select(exprs))
    values = m["length_margin"].drop_nulls().cast(pl.Float64).to_list()
    longer = sum(v > 0 for v in values) / len(values) if values else 0.0
    series = {"length margin (chars)": values}
    if "score_margin" in m.columns:
        series["score margin"] = m["score_margin"].drop_nulls().cast(pl.Float64).to_list()
    body = f"<p>Chosen response is longer in <b>{longer:.1%}</b> of {len(values):,} pairs.</p>"
    body += "".join(plots.histograms({k: v}, k, "chosen - rejected") for k, v in series.items() if v)
    body += table(_STAT_HEAD, [_stats_rows(k, v) for k, v in series.items()])
    return "margins", title, body + notes


def languages(data: pl.LazyFrame | None) -> Section:
    """The language mix when a stage tagged rows with ``lang`` (translate, language filter)."""
    col = next((c for c in ("lang", "language") if c in _columns(data)), None)
    if data is None or col is None:
        return "languages", "Language mix", none("No lang column in the output.")
    counts = _collect(data.select(pl.col(col).fill_null("(none)").cast(pl.String))
                      .group_by(col).len("count").sort(["count", col], descending=[True, False]).head(20))
    labels, n = counts[col].to_list(), counts["count"].to_list()
    body = plots.horizontal_bars(labels, n, "rows per language") + table(["lang", "rows"], zip(labels, n, strict=True))
    return "languages", "Language mix", body


def dedup(run_dir: Path, manifest: dict[str, Any], data: pl.LazyFrame | None) -> Section:
    """Cluster counts from the dedup stages' notes; the removed rows themselves, each beside its kept twin, are
    in the set-aside browser (:func:`curate.report.browser.set_aside_rows`), which this section links to."""
    stages = [s for s in manifest.get("stages", []) if "clusters" in s.get("notes", {})
              or "duplicates" in s.get("notes", {})]
    if not stages:
        return "dedup", "Deduplication", none("No dedup stage in this run.")
    def shown(stage: dict[str, Any], key: str) -> bool:  # a stage that also dedups (magpie): its dedup notes only
        return stage.get("name") in DEDUP_STAGES or any(w in key for w in ("dup", "cluster", "samples"))

    body = table(["stage", "note", "value"], [[s["label"], k, v] for s in stages for k, v in s["notes"].items()
                                               if isinstance(v, int | float) and not isinstance(v, bool)
                                               and shown(s, k)])
    body += "".join(f"<p><b>warning</b> {esc(s['label'])}: {esc(s['notes']['warning'])}</p>" for s in stages
                    if s["notes"].get("warning"))  # removed more than the stage's warn_share of its input
    removed = sum(int(s["notes"]["duplicates"]) if isinstance(s["notes"].get("duplicates"), int | float)
                  else int(s.get("quarantined") or 0) for s in stages)
    if removed:
        body += (f"<p>{removed:,} row(s) removed as duplicates: a sample, each beside the row it duplicates, is "
                 'under <a href="#setaside">Set-aside rows</a>.</p>')
    return "dedup", "Deduplication", body


def audit(run_dir: Path) -> Section:
    """Contamination matches the audit stage published under ``reports/`` (both texts and scores)."""
    files = sorted((run_dir / "reports").glob("*audit*.parquet"))
    if not files:
        return "audit", "Audit matches", none("No audit report in this run.")
    df = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    if df.is_empty():
        return "audit", "Audit matches", none("The audit found no matches.")
    body = f"<p>{df.height:,} match(es) in {', '.join(esc(f.name) for f in files)}.</p>"
    shown = df.head(20).with_columns(pl.col(pl.String).str.slice(0, 300))
    rows = [[fmt_cell(v) for v in r] for r in shown.iter_rows()]
    return "audit", "Audit matches", body + table(shown.columns, rows)


def fmt_cell(value: Any) -> Any:
    """Keep numbers numeric (aligned right); anything nested becomes short text."""
    return value if isinstance(value, int | float | str) or value is None else str(value)[:300]


def summary(manifest: dict[str, Any]) -> Section:
    """Recipe, hash, seed, versions and timings: what is needed to reproduce or compare this run."""
    recipe = manifest.get("recipe", {}) or {}
    out = manifest.get("output", {}) or {}
    body = table(["field", "value"], [
        ["recipe", recipe.get("name", "")], ["description", recipe.get("description", "")],
        ["recipe hash", manifest.get("recipe_hash", "")], ["seed", manifest.get("seed", "")],
        ["finished", manifest.get("finished_at", "")], ["seconds", manifest.get("seconds", "")],
        ["output", f"{out.get('path', '')} ({out.get('table', '')}, {out.get('rows', '')} rows)"],
        ["quarantined", manifest.get("quarantined", "")], ["limit", manifest.get("limit")],
        ["command", " ".join(manifest.get("command") or [])],
    ])
    body += "<h3>Timings</h3>" + table(["stage", "kind", "seconds", "cached"], [
        [s["label"], s.get("kind", ""), s.get("seconds", ""), "yes" if s.get("cached") else "no"]
        for s in manifest.get("stages", [])])
    body += "<h3>Inputs</h3>" + table(["path", "adapter", "xxh3"], [
        [i.get("path"), i.get("adapter"), i.get("xxh3")] for i in manifest.get("inputs", [])])
    body += "<h3>Versions</h3>" + table(["package", "version"], sorted(manifest.get("versions", {}).items()))
    return "manifest", "Manifest summary", body


_MAP_ROWS = 5000


def _pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components (numpy SVD: no extra dependency, deterministic up to sign)."""
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def embedding_map(run_dir: Path, manifest: dict[str, Any], data: pl.LazyFrame | None) -> Section:
    """Prompts on the first two principal components of the run's own cached embeddings, coloured by whether
    the pipeline kept them (or by source when it kept all).  No model is loaded: the vectors are the ones an
    embedding stage (embed_dedup, audit, deita_select, subsample) already stored in the run's cache."""
    title = "Embedding map"
    folders = [f for f in (run_dir / "cache" / "embeddings").glob("*") if f.is_dir() and any(f.glob("*.parquet"))]
    if not folders:
        return "embeddings", title, none("No embedding stage ran, so there are no cached vectors to map.")
    before = _read_stage_output(run_dir, manifest)
    rows = before if before is not None else data
    if rows is None or "id" not in _columns(rows):
        return "embeddings", title, none("Neither the read stage's cache nor the output holds rows to map.")
    try:
        table_name = detect_table(rows.collect_schema())
    except InputDataError:
        return "embeddings", title, none("The rows are not a canonical table.")
    source = pl.col("source") if "source" in _columns(rows) else pl.lit("").alias("source")
    candidates = []  # the stage may have embedded prompts, responses or whole rows: map what it embedded
    for on in ("prompt", "full", "response"):
        text = text_for(table_name, on).fill_null("")
        hashed = rows.head(_MAP_ROWS).select("id", source, hash_expr(text).alias("h")).collect()
        for folder in folders:  # count hits on the hash column alone; vectors are read once, for the best
            hits = (pl.scan_parquet(folder / "*.parquet").select("h").join(hashed.lazy().select("h"), on="h",
                                                                            how="semi").unique().select(pl.len())
                    .collect().item())
            candidates.append((hits, on, folder, hashed))
    hits, on, folder, hashed = max(candidates, key=lambda t: t[0])
    if hits < 3:
        return "embeddings", title, none("The cached vectors are of texts no longer in the run: nothing to map.")
    vectors_found = (pl.scan_parquet(folder / "*.parquet").join(hashed.lazy().select("h"), on="h", how="semi")
                     .unique("h").collect())
    found = hashed.join(vectors_found, on="h", how="inner", maintain_order="left")
    vectors = np.asarray(found["v"].to_list(), dtype=np.float32)
    kept = (found.lazy().join(data.select("id"), on="id", how="semi").select("id").collect()["id"]
            if data is not None and "id" in _columns(data) else pl.Series(dtype=pl.String))
    groups = found.select(pl.when(pl.col("id").is_in(kept.implode())).then(pl.lit("kept"))
                          .otherwise(pl.lit("set aside"))).to_series().to_list()
    colour_by = "selection"
    if len(set(groups)) == 1 and found["source"].n_unique() > 1:
        groups, colour_by = [str(s) for s in found["source"].to_list()], "source"
    what = {"prompt": "prompts", "full": "rows", "response": "responses"}[on]
    body = plots.scatter_groups(_pca_2d(vectors), groups, f"{what} by {colour_by} (PCA of {found.height} vectors)")
    note = f"{found.height:,} of {hashed.height:,} input {what} have cached vectors ({folder.name[:12]})"
    return "embeddings", title, f"<p>{esc(note)}; colour: {colour_by}.</p>" + body


def models(manifest: dict[str, Any]) -> Section:
    """Time per stage, and what each model stage did: rows computed vs reused from the cache, tokens, texts."""
    stages = manifest.get("stages", [])
    if not stages:
        return "models", "Models and time", none("The manifest lists no stages.")
    body = plots.horizontal_bars([s["label"] for s in stages], [float(s.get("seconds") or 0) for s in stages],
                                 "seconds per stage", xlabel="seconds", color=plots.COLORS[0])
    keys = ("model_rows_computed", "model_rows_reused", "rows_computed", "rows_cached", "texts_encoded",
            "texts_cached")
    rows = []
    for s in stages:
        notes = s.get("notes") or {}
        tokens = sum(v for k, v in notes.items() if "token" in k and isinstance(v, int | float))
        if any(k in notes for k in keys) or tokens:
            rows.append([s["label"], s.get("seconds", ""), *[notes.get(k, "") for k in keys], tokens or ""])
    recipe_models = (manifest.get("recipe") or {}).get("models") or {}
    body += table(["stage", "seconds", "model rows computed", "model rows reused", "rows computed", "rows cached",
                   "texts encoded", "texts cached", "tokens"], rows) if rows else none("No model stage ran.")
    usage = manifest.get("model_usage")
    if usage:  # requests, tokens and cost (models with a price_per_million; curate.progress)
        from curate.progress import format_cost

        def cost(value: Any) -> str:
            return format_cost(float(value)) if value is not None else "no price"

        body += "<h3>Requests, tokens and cost</h3>" + table(
            ["stage", "requests", "from request cache", "tokens in", "tokens out", "cost"],
            [[label, u["model_requests"], u["requests_cached"], u["tokens_in"], u["tokens_out"],
              cost(u.get("cost")) + (" (earlier run)" if u.get("cached") else "")]
             for label, u in usage["stages"].items()]
            + [["total (this run)", usage["model_requests"], usage["requests_cached"], usage["tokens_in"],
                usage["tokens_out"], cost(usage.get("cost"))]])
    if recipe_models:
        body += "<h3>Models</h3>" + table(["handle", "spec"], [[h, json.dumps(s)] for h, s in recipe_models.items()])
    return "models", "Models and time", body


def recipe(manifest: dict[str, Any]) -> Section:
    """The recipe as it ran (after ``--set`` overrides), so the page alone says how the data was made."""
    import yaml

    content = manifest.get("recipe") or {}
    if not content:
        return "recipe", "Recipe", none("The manifest holds no recipe.")
    text = yaml.safe_dump(content, sort_keys=False, allow_unicode=True, width=110)
    return "recipe", "Recipe", f"<pre>{esc(text)}</pre>"
