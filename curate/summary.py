"""What ``curate inspect`` shows: rows, schema, nulls, text-length and score distributions, and rows themselves.

``inspect`` reads curate's Parquet (a file, a folder, a run directory) and any raw file curate reads
(JSONL, JSON, CSV/TSV, through the adapters: the summary is then of the canonical table the file gives,
with the adapter it picked and the rows it would reject)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import InputDataError
from curate.schema import TABLES, detect_table, prompt_text, response_texts

_QUANTILES = (0.1, 0.5, 0.9)


def inspect_frame(path: Path, adapter: str = "auto") -> tuple[pl.LazyFrame, dict[str, Any]]:
    """The frame ``inspect`` looks at and what it says about where it came from: curate's Parquet as it is
    (``files``), a raw file through :func:`curate.io.load` (``adapter``, ``rejected`` row count)."""
    from curate.io.loading import load
    from curate.io.readers import format_of

    if path.is_file() and (adapter != "auto" or format_of(path) not in (None, "parquet")):
        loaded = load(path, adapter)
        frame = loaded.frame
        internal = [c for c in ("_line", "_file") if c in frame.collect_schema().names()]
        rejected = loaded.rejected.select(pl.len()).collect().item()
        return frame.drop(internal), {"adapter": loaded.adapter, "rejected": rejected}
    files = resolve_parquet(path)
    return pl.scan_parquet(files), {"files": [str(f) for f in files]}


def rows_text(df: pl.DataFrame, table: str | None, width: int = 400) -> list[dict[str, str]]:
    """Rows as short texts to print: preference rows as prompt / chosen / rejected side by side, candidates as
    prompt / responses, conversations as their turns; other frames column by column."""
    def cut(text: Any) -> str:
        text = "" if text is None else str(text)
        return text if len(text) <= width else text[:width] + " …"

    def turns(messages: Any) -> str:
        return "\n".join(f"{m['role']}: {m['content']}" for m in (messages or []))

    out = []
    for row in df.iter_rows(named=True):
        if table == "preference":
            out.append({"id": cut(row.get("id"))[:12], "prompt": cut(turns(row["prompt"])),
                        "chosen": cut(turns(row["chosen"])), "rejected": cut(turns(row["rejected"]))})
        elif table == "candidates":
            out.append({"id": cut(row.get("id"))[:12], "prompt": cut(turns(row["prompt"])), "responses": cut(
                "\n---\n".join(f"[{r.get('score')}] {r['content']}" for r in row["responses"] or []))})
        elif table == "conversation":
            out.append({"id": cut(row.get("id"))[:12], "messages": cut(turns(row["messages"]))})
        else:
            out.append({k: cut(v) for k, v in row.items()})
    return out


def resolve_parquet(path: Path) -> list[Path]:
    """A Parquet file, a folder of them, or a run directory (its ``data/``)."""
    if not path.exists():
        raise InputDataError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix != ".parquet":
            raise InputDataError(f"{path}: not a Parquet file (inspect reads Parquet, run directories and the files "
                                 "curate reads: JSONL, JSON, CSV/TSV)")
        return [path]
    folder = path / "data" if (path / "data").is_dir() else path
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise InputDataError(f"{path}: no Parquet files here (a run directory has them under data/)")
    return files


def _distribution(series: pl.Series) -> dict[str, Any]:
    values = series.drop_nulls()
    if values.is_empty():
        return {"count": 0}
    out: dict[str, Any] = {
        "count": values.len(),
        "mean": round(float(values.mean()), 3),  # type: ignore[arg-type]
        "min": values.min(),
        "max": values.max(),
    }
    for q in _QUANTILES:
        out[f"p{int(q * 100)}"] = values.quantile(q, interpolation="nearest")
    return out


def summarize(path: str | Path, adapter: str = "auto") -> dict[str, Any]:
    lf, origin = inspect_frame(Path(path), adapter)
    schema = lf.collect_schema()
    df = lf.collect()
    summary: dict[str, Any] = {
        "path": str(path),
        **origin,
        "rows": df.height,
        "schema": {name: str(dtype) for name, dtype in schema.items()},
        "nulls": {name: int(count) for name, count in df.null_count().row(0, named=True).items() if count},
    }
    try:
        table = detect_table(schema)
    except InputDataError:
        table = None
    summary["table"] = table
    lengths: dict[str, Any] = {}
    if table is not None and set(TABLES[table]) - {"id", "source"} <= set(schema.names()):
        texts = df.select(
            prompt_text(table).str.len_chars().alias("prompt_chars"),
            response_texts(table).alias("_responses"),
        )
        lengths["prompt_chars"] = _distribution(texts.get_column("prompt_chars"))
        lengths["response_chars"] = _distribution(
            texts.get_column("_responses").explode().str.len_chars()
        )
        if table == "conversation":
            lengths["turns"] = _distribution(df.get_column("messages").list.len())
    summary["lengths"] = lengths
    scores: dict[str, Any] = {}
    for name, dtype in schema.items():
        if dtype.is_numeric() and ("score" in name or "reward" in name):
            scores[name] = _distribution(df.get_column(name))
    if table == "candidates":
        scores["responses.score"] = _distribution(
            df.get_column("responses").explode().struct.field("score")
        )
    summary["scores"] = scores
    manifest = Path(path) / "manifest.json"
    if manifest.is_file():  # a run directory: what its model calls used and cost (curate.progress)
        import json

        try:
            summary["model_usage"] = json.loads(manifest.read_text()).get("model_usage")
        except (OSError, ValueError):
            summary["model_usage"] = None
    return summary
