"""What ``curate inspect`` shows: rows, schema, nulls, text-length and score distributions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import InputDataError
from curate.schema import TABLES, detect_table, prompt_text, response_texts

_QUANTILES = (0.1, 0.5, 0.9)


def resolve_parquet(path: Path) -> list[Path]:
    """A Parquet file, a folder of them, or a run directory (its ``data/``)."""
    if not path.exists():
        raise InputDataError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix != ".parquet":
            raise InputDataError(f"{path}: inspect reads Parquet files or run directories")
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


def summarize(path: str | Path) -> dict[str, Any]:
    files = resolve_parquet(Path(path))
    lf = pl.scan_parquet(files)
    schema = lf.collect_schema()
    df = lf.collect()
    summary: dict[str, Any] = {
        "path": str(path),
        "files": [str(f) for f in files],
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
    return summary
