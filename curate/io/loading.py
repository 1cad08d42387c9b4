"""Read + adapt in one call: :func:`load` for the runner, :func:`read` in notebooks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import InputDataError, where
from curate.io.adapters import INTERNAL, adapt, detect_adapter
from curate.io.readers import read_raw

REJECTED_SCHEMA: dict[str, pl.DataType] = {"_line": pl.Int64(), "reason": pl.String(), "row": pl.String()}


@dataclass
class Loaded:
    """An input file as a canonical table.

    ``frame``: good rows, the table's columns + metadata + ``_line``.  ``rejected``: ``_line``, ``reason``,
    ``row`` (the raw line for lines that did not parse, else the raw row as JSON), sorted by line; a folder
    input adds ``_file`` (the file inside the folder) to both, last.  Both are lazy over one adapted plan:
    ``pl.collect_all([frame, rejected])`` computes them in one pass.
    """

    path: Path
    adapter: str
    table: str
    frame: pl.LazyFrame
    rejected: pl.LazyFrame


def load(
    path: str | Path,
    adapter: str = "auto",
    options: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> Loaded:
    """Read ``path`` and adapt it; reader bad lines and adapter row errors both end in ``rejected``.

    Raises ``InputDataError`` for what :func:`read_raw` and :func:`adapt` raise, and when no line of the file
    could be parsed at all (then no columns exist to detect a format from).
    """
    raw = read_raw(path)
    file = str(raw.path)
    schema = raw.frame.collect_schema()
    data_columns = [c for c in schema.names() if c not in INTERNAL]
    if not data_columns:
        first = raw.bad_lines.row(0, named=True)
        raise InputDataError(
            f"{file} has no usable rows: none of its {raw.bad_lines.height} lines could be parsed "
            f"({where(_file_of(file, first), first['_line'])}: {first['reason']})"
        )
    name = detect_adapter(data_columns, file) if adapter == "auto" else adapter
    adapted, table = adapt(raw.frame, name, file=file, options=options, source=source)
    keys = ["_file", "_line"] if "_file" in schema else ["_line"]
    frame = adapted.filter(pl.col("_error").is_null()).drop("_error")
    errors = adapted.filter(pl.col("_error").is_not_null()).select(*keys, pl.col("_error").alias("reason"))
    # Encode only the rejected rows' raw columns (a semi-join first), not the whole input.
    raw_rows = raw.frame.join(errors.select(keys).unique(), on=keys, how="semi").select(
        *keys, _row_json(data_columns, schema).alias("row")
    )
    row_errors = errors.join(raw_rows, on=keys, how="left", maintain_order="left")
    bad_lines = raw.bad_lines.lazy().select(*keys, "reason", "row")
    order = ["_line", "reason", "row", *(["_file"] if "_file" in schema else [])]
    rejected = (
        pl.concat([bad_lines, row_errors], how="vertical_relaxed")
        .sort(keys, maintain_order=True)
        .select(order)
    )
    return Loaded(raw.path, name, table, frame, rejected)


def read(path: str | Path, adapter: str = "auto", **options: Any) -> pl.LazyFrame:
    """The good rows of ``path`` as a canonical LazyFrame (notebook use).

    Strict: raises ``InputDataError`` "FILE, row N: REASON" at the first rejected row (use :func:`load` to
    keep going and inspect ``rejected``).  Options are the adapter's (e.g. ``output_field="response"``).
    """
    loaded = load(path, adapter, options or None)
    first = loaded.rejected.head(1).collect()
    if first.height:
        row = first.row(0, named=True)
        raise InputDataError(f"{where(_file_of(str(loaded.path), row), row['_line'])}: {row['reason']}")
    internal = [c for c in ("_line", "_file") if c in loaded.frame.collect_schema().names()]
    return loaded.frame.drop(internal)


def _row_json(columns: list[str], schema: pl.Schema) -> pl.Expr:
    """The raw row as JSON (binary columns as base64: Polars cannot write them to JSON)."""
    parts = [pl.col(c).bin.encode("base64") if schema[c] == pl.Binary else pl.col(c) for c in columns]
    return pl.struct(parts).struct.json_encode()


def _file_of(file: str, row: Mapping[str, Any]) -> str:
    """The file a rejected row came from: the input, or the file inside an input folder."""
    return f"{file}/{row['_file']}" if row.get("_file") else file
