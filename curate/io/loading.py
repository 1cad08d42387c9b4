"""Read + adapt in one call: :func:`load` for the runner, :func:`read` in notebooks."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError

from curate.errors import InputDataError, where
from curate.io.adapters import INTERNAL, adapt, detect
from curate.io.readers import Limits, RawInput, read_raw
from curate.words import count

if TYPE_CHECKING:
    from curate.pipeline import Context

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
    #: Folder inputs: the entries not read, ``(path relative to the folder, why)`` (README.md, images, ...).
    skipped: list[tuple[str, str]] = field(default_factory=list)

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
    limits: Limits | None = None,
    columns: Sequence[str] | None = None,
    join: Join | Mapping[str, Any] | None = None,
) -> Loaded:
    """Read ``path`` and adapt it; reader bad lines and adapter row errors both end in ``rejected``.

    ``columns``: the column names of a CSV/TSV file without a header row (:func:`read_raw`).
    ``join``: files joined to this one on a key column before the adapter sees the rows (:class:`Join`).

    Raises ``InputDataError`` for what :func:`read_raw` and :func:`adapt` raise, when no line of the file
    could be parsed at all (then no columns exist to detect a format from), and for a folder whose files
    the ``auto`` adapter would read as different formats (one line naming each file's format).
    """
    raw = read_raw(path, limits, columns)
    if join is not None:
        raw = join_files(raw, join if isinstance(join, Join) else Join.parse(join, str(path)), limits)
    file = str(raw.path)
    schema = raw.frame.collect_schema()
    data_columns = [c for c in schema.names() if c not in INTERNAL]
    if not data_columns:
        first = raw.bad_lines.row(0, named=True)
        raise InputDataError(
            f"{file} has no usable rows: none of its {raw.bad_lines.height} lines could be parsed "
            f"({where(_file_of(file, first), first['_line'])}: {first['reason']})"
        )
    if adapter == "auto" and len(raw.files) > 1:
        _check_one_format(file, raw.files)
    # detection by column names and types; the options it implies (a list-valued output's column) under the user's
    name, implied = detect(data_columns, file, schema) if adapter == "auto" else (adapter, {})
    # JSON and CSV readers already rejected NUL text line by line; Parquet (and any frame) is checked here.
    checked = raw.format in ("jsonl", "json", "csv", "tsv")
    adapted, table = adapt(raw.frame, name, file=file, options={**implied, **(options or {})}, source=source,
                           text_checked=checked)
    return Loaded(raw.path, name, table, adapted, raw.bad_lines, raw.frame, data_columns, list(raw.skipped))


def _check_one_format(folder: str, files: Mapping[str, pl.Schema]) -> None:
    """Refuse a folder whose files the column-based detection reads as different formats: their rows would
    otherwise be mixed into one adapter's table and most of them rejected, or worse, misread."""
    formats: dict[str, str] = {}
    for name, schema in files.items():
        columns = [c for c in schema.names() if c not in INTERNAL]
        try:
            formats[name] = detect(columns, f"{folder}/{name}", schema)[0] if columns else "no columns"
        except InputDataError:
            formats[name] = f"unknown format, columns {sorted(columns)}"
    if len({f for f in formats.values() if f != "no columns"}) > 1:
        listed = ", ".join(f"{name} ({fmt})" for name, fmt in formats.items())
        raise InputDataError(
            f"{folder}: the folder's files hold different formats: {listed}; give each format its own input "
            "(reading only some of them would skip the others' rows)"
        )


def read(path: str | Path, adapter: str = "auto", *, limits: Limits | None = None,
         on_error: Literal["raise", "quarantine"] = "raise", ctx: Context | None = None,
         header: bool = True, columns: Sequence[str] | None = None, join: Mapping[str, Any] | None = None,
         **options: Any) -> pl.LazyFrame:
    """The good rows of ``path`` as a canonical LazyFrame (notebook use).

    ``on_error="raise"`` (default, as a recipe's ``on_error``): raises ``InputDataError`` "FILE, row N: REASON"
    at the first rejected row.  ``on_error="quarantine"``: returns the good rows and sets the bad ones aside,
    as ``curate run`` does, in ``ctx`` (``ctx.quarantine_frame(stage="read")``: ``code`` such as
    ``malformed_json``, the reason with file and row, the raw row); without a ``ctx`` they are counted in a
    warning (:func:`load` gives them as ``rejected``).  Options are the adapter's (e.g.
    ``output_field="response"``); ``limits`` the reader's (:class:`curate.io.readers.Limits`).  A CSV/TSV
    without a header row: ``header=False, columns=["question", "answer"]``.  Questions and answer files
    joined on a key: ``join={"on": "question_id", "files": ["answers.jsonl"]}`` (:class:`Join`).
    """
    if on_error not in ("raise", "quarantine"):
        raise ValueError(f"on_error={on_error!r}: choose 'raise' or 'quarantine'")
    loaded = load(path, adapter, options or None, limits=limits, columns=reader_columns(path, header, columns),
                  join=join)
    internal = [c for c in ("_line", "_file") if c in loaded.frame.collect_schema().names()]
    if on_error == "quarantine":
        _set_aside(loaded, ctx)
        return loaded.frame.drop(internal)
    first = loaded.rejected.head(1).collect()
    if first.height:
        row = first.row(0, named=True)
        raise InputDataError(f"{where(_file_of(str(loaded.path), row), row['_line'])}: {row['reason']} "
                             "(on_error='quarantine' sets such rows aside and reads the rest)")
    return loaded.frame.drop(internal)


class JoinFile(BaseModel):
    """A file joined to an input: its path (relative to the recipe in a recipe) and the prefix its columns get
    where their names clash with the input's (default: the file's stem and ``_``)."""

    model_config = ConfigDict(extra="forbid")

    path: str
    prefix: str | None = None


class Join(BaseModel):
    """``join:`` of an input: benchmark releases ship questions, model answers and reviews as separate files
    sharing a key (MT-Bench: ``question.jsonl`` and ``reference_answer/gpt-4.jsonl`` on ``question_id``).  Each
    of ``files`` is read as an input is and joined to the input's rows on ``on`` (compared as text): ``how:
    left`` (default) keeps every input row (null columns where a file has no row for its key), ``inner``
    keeps rows every file has.  A file with several rows for one key gives one row per match (answers of
    several models).  Lines of a joined file that do not parse are rejected with the input's bad lines."""

    model_config = ConfigDict(extra="forbid")

    on: str
    files: list[JoinFile]
    how: Literal["left", "inner"] = "left"

    @classmethod
    def parse(cls, value: Mapping[str, Any], where_: str) -> Join:
        files = value.get("files")
        if isinstance(files, str):
            files = [files]
        items = [{"path": f} if isinstance(f, str) else f for f in (files or [])]
        try:
            return cls.model_validate({**value, "files": items})
        except ValidationError as exc:
            raise InputDataError(f"{where_}: join: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None


def join_files(raw: RawInput, join: Join, limits: Limits | None = None, base_dir: Path | None = None) -> RawInput:
    """``raw`` with the columns of ``join.files`` joined on ``join.on`` (see :class:`Join`)."""
    frame = raw.frame
    names = frame.collect_schema().names()
    if join.on not in names:
        raise InputDataError(f"{raw.path}: join: no column '{join.on}' to join on (columns: {names})")
    frame = frame.with_columns(pl.col(join.on).cast(pl.String))
    bad = [raw.bad_lines]
    for item in join.files:
        path = Path(item.path) if base_dir is None or Path(item.path).is_absolute() else base_dir / item.path
        other = read_raw(path, limits)
        columns = [c for c in other.frame.collect_schema().names() if c not in INTERNAL]
        if join.on not in columns:
            raise InputDataError(f"{path}: join: no column '{join.on}' to join on (columns: {columns})")
        prefix = item.prefix if item.prefix is not None else path.name.split(".")[0] + "_"
        taken = set(frame.collect_schema().names())
        renamed = {c: (prefix + c if c in taken else c) for c in columns if c != join.on}
        right = other.frame.select(pl.col(join.on).cast(pl.String), *[pl.col(c).alias(n) for c, n in renamed.items()])
        frame = frame.join(right, on=join.on, how=join.how, maintain_order="left", nulls_equal=False)
        if other.bad_lines.height:
            bad.append(other.bad_lines.with_columns(pl.format("{}: {}", pl.lit(str(path)), pl.col("reason"))
                                                    .alias("reason")))
    return dataclasses.replace(raw, frame=frame, bad_lines=pl.concat(bad, how="diagonal_relaxed"))


def reader_columns(path: str | Path, header: bool, columns: Sequence[str] | None) -> list[str] | None:
    """The column names to give the CSV reader: ``columns`` for a file without a header (``header: false``),
    ``None`` for one with; ``InputDataError`` for one without the other."""
    if header and columns is not None:
        raise InputDataError(f"{path}: columns names the columns of a file without a header row: add header: false")
    if not header and not columns:
        raise InputDataError(f"{path}: header: false needs columns: [name, ...] (the names of the file's columns)")
    return None if header else list(columns or [])


def _set_aside(loaded: Loaded, ctx: Context | None) -> None:
    """The rejected rows of ``loaded`` into ``ctx``'s quarantine under ``00-read``, as the runner's read stage."""
    from curate.pipeline import QUARANTINE_SCHEMA, reason_code

    rejected = loaded.rejected.collect()
    if not rejected.height:
        return
    if ctx is None:
        logging.getLogger("curate").warning(
            "%s: %s set aside (pass ctx= to see them in ctx.quarantine_frame(), or use curate.io.load)",
            loaded.path, count(rejected.height, "row"))
        return
    where_from = (pl.lit(f"{loaded.path}/") + pl.col("_file") if "_file" in rejected.columns
                  else pl.lit(loaded.path.name))
    frame = rejected.select(
        pl.lit("00-read").alias("stage"),
        reason_code(pl.col("reason")).alias("code"),
        pl.format("{}, row {}: {}", where_from, pl.col("_line"), pl.col("reason")).alias("reason"),
        pl.lit(None, dtype=pl.String).alias("id"),
        pl.lit(None, dtype=pl.String).alias("duplicate_of"),
        pl.col("row").cast(pl.String),
    ).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]
    ctx.quarantined.append(("00-read", frame.lazy()))


def _row_json(columns: list[str], schema: pl.Schema) -> pl.Expr:
    """The raw row as JSON (binary columns as base64: Polars cannot write them to JSON)."""
    parts = [pl.col(c).bin.encode("base64") if schema[c] == pl.Binary else pl.col(c) for c in columns]
    return pl.struct(parts).struct.json_encode()


def _file_of(file: str, row: Mapping[str, Any]) -> str:
    """The file a rejected row came from: the input, or the file inside an input folder."""
    return f"{file}/{row['_file']}" if row.get("_file") else file
