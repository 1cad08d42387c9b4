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

    ``adapted``: every row, the table's columns + metadata + ``_line`` (+ ``_file`` for a folder input) +
    ``_error`` (null for a good row).  ``frame``: the good rows, without ``_error``.  ``bad_lines``: lines
    that did not parse at all (``_line``, ``reason``, ``row``).  ``rejected``: bad lines and rows with an
    ``_error``, as ``_line``, ``reason``, ``row`` (the raw line for lines that did not parse, else the raw
    row as JSON), sorted by line, plus ``_file`` last for folder inputs.

    ``rejected`` re-evaluates the adapter over the whole input; a runner that has already written
    ``adapted`` should instead find the error keys there and call :meth:`raw_rows` for just those.
    """

    path: Path
    adapter: str
    table: str
    adapted: pl.LazyFrame
    bad_lines: pl.DataFrame
    raw_frame: pl.LazyFrame
    data_columns: list[str]

    @property
    def keys(self) -> list[str]:
        return ["_file", "_line"] if "_file" in self.raw_frame.collect_schema() else ["_line"]

    @property
    def frame(self) -> pl.LazyFrame:
        return self.adapted.filter(pl.col("_error").is_null()).drop("_error")

    def raw_rows(self, keys: pl.LazyFrame) -> pl.LazyFrame:
        """The raw input rows (as JSON in ``row``) at the given ``_line`` (and ``_file``) keys."""
        schema = self.raw_frame.collect_schema()
        return self.raw_frame.join(keys.select(self.keys).unique(), on=self.keys, how="semi").select(
            *self.keys, _row_json(self.data_columns, schema).alias("row")
        )

    @property
    def rejected(self) -> pl.LazyFrame:
        keys = self.keys
        errors = self.adapted.filter(pl.col("_error").is_not_null()).select(
            *keys, pl.col("_error").alias("reason")
        )
        # Encode only the rejected rows' raw columns (a semi-join first), not the whole input.
        row_errors = errors.join(self.raw_rows(errors), on=keys, how="left", maintain_order="left")
        bad_lines = self.bad_lines.lazy().select(*keys, "reason", "row")
        order = ["_line", "reason", "row", *(["_file"] if "_file" in keys else [])]
        return (
            pl.concat([bad_lines, row_errors], how="vertical_relaxed")
            .sort(keys, maintain_order=True)
            .select(order)
        )


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
    return Loaded(raw.path, name, table, adapted, raw.bad_lines, raw.frame, data_columns)


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
