"""Read a data file (or an HF-style folder of them) into raw Polars columns, keeping line numbers.

Formats, by extension: ``.parquet``; ``.jsonl`` / ``.ndjson`` (and ``.gz``); ``.json`` (an array of objects,
or JSON Lines content); ``.csv`` / ``.tsv`` (a header row, or ``columns=[...]`` naming the columns of a file
without one, such as MGSM's or MMLU's question files; and ``.gz``).  A directory is read as the
concatenation of its data files (``data/train-*.parquet`` and the like), with a ``_file`` column naming each
row's file (relative to the directory).

Every frame gets ``_line`` (Int64, 1-based) so that a rejected row can be found in an editor:

- JSONL: the line number in the (decompressed) file; blank lines are skipped but still counted.
- CSV/TSV: the line on which the record starts (the header is line 1, so the first record is line 2).
- JSON array: the element's index + 1.
- Parquet: the row index + 1.

Why two paths: Polars' readers are fast but all-or-nothing (one malformed line fails the whole file) and they
number rows, not lines.  So JSONL is read by Polars when the file is clean, and otherwise line by line in
Python, where each bad line is kept in ``bad_lines`` with its reason and the rest is still read.

Type drift: Polars silently turns a JSON field whose type varies between rows into text (``42`` -> ``"42"``,
``{"a": 1}`` -> ``'{"a": 1}'``).  To catch that, clean JSONL is also checked with pyarrow's strict JSON reader
(which fails on such drift); when a top-level field's type varies, the rows whose value has a different type
than most rows go to ``bad_lines`` ("column 'output': expected a string (as in most rows), got a number: 42").
Drift nested inside lists/objects is left to Polars' rule (text), except message ``content`` that is a string
in some messages and a list of parts in others (OpenAI logs): strings are then wrapped as one text part.

Streaming: a JSONL or CSV/TSV file larger than :data:`BLOCK_BYTES` (decompressed) is read in blocks cut at a
line end (see ``_read_jsonl_blocks``): each block is parsed as above and spilled to Parquet in a
temporary folder, and ``frame`` scans the spilled blocks, so memory stays bounded by a block, not the file.
The result is the same as reading the whole file at once: decisions that depend on every row (which type a
drifting column should have, whether message contents need wrapping, each column's final type) are taken
after a first pass, and only the blocks they change are read again.

Hostile input (the same rules on both paths, each broken row a bad line with its reason, the rest still read):

- Only regular files and folders are read: a FIFO or a device (``/dev/zero``) is refused up front
  (:func:`check_input`), since it may never end and cannot be hashed for the cache.
- A line (a CSV line, a JSON array element) may hold at most ``Limits.max_line_bytes``; a longer one is
  cut out while reading, so memory stays bounded even by a file that is one endless line.
- A row may nest arrays/objects at most ``Limits.max_nesting`` deep (the row object is level 1).  The
  depth is checked without recursion before a line is parsed, so a 100,000-deep line is a bad line, not a
  ``RecursionError`` that ends the run.
- Text must be valid Unicode without NUL: invalid UTF-8, an escaped lone surrogate (``"\\ud800"``, which
  Polars would silently read as U+0000) and a NUL character (``"\\u0000"``, a raw NUL in CSV) make the
  row bad, with the column named.  Nothing is repaired silently.
- A folder is read whole: every file of a supported format (see :func:`folder_files`); other files, empty
  files and JSON files that hold an object instead of rows are listed in ``RawInput.skipped`` with why.
"""

from __future__ import annotations

import atexit
import csv
import gzip
import io
import json
import os
import re
import shutil
import stat
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import polars as pl
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from curate.errors import InputDataError

#: Extension -> format.  ``.gz`` may follow any of these except ``.parquet``.
FORMATS: dict[str, str] = {
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
}

BAD_LINES_SCHEMA: dict[str, pl.DataType] = {"_line": pl.Int64(), "reason": pl.String(), "row": pl.String()}
_BOM = b"\xef\xbb\xbf"
# A blank (or whitespace-only) line before some data line: it shifts Polars' row numbers off the lines.
# (Two patterns, not ``(?:^|\n)...``: one starting with a literal newline is searched 20x faster by ``re``.)
_BLANK_FIRST_LINE = re.compile(rb"[ \t\r]*\n")
_BLANK_LINE = re.compile(rb"\n[ \t\r]*\n")
#: Files larger than this (decompressed) are read in blocks of about this size and spilled to Parquet.
#: Tests lower it to exercise many blocks on small files.
BLOCK_BYTES = 32 << 20
#: How much of a rejected line's text a bad line keeps (a preview, not the whole of a too-long line).
PREVIEW_CHARS = 200


@dataclass(frozen=True)
class Limits:
    """What a single row may hold; a row beyond a limit is a bad line naming the limit.

    ``max_nesting``: arrays/objects nested in one row (the row object is level 1).  Real SFT/DPO rows nest a
    handful of levels (messages, tool calls, their JSON arguments); 100 leaves room for odd metadata while
    keeping Python's JSON parser and Polars' types (both recursive) far from their stack limits.
    ``max_line_bytes``: bytes of one line (JSONL, CSV) or one JSON array element; characters for CSV, whose
    lines are read decoded.  64 MiB is far above any real conversation and bounds what one row can cost.
    Raise them per input in a recipe (``max_nesting:``, ``max_line_mb:``) or pass ``Limits(...)``.
    """

    max_nesting: int = 100
    max_line_bytes: int = 64 << 20

    def nesting_reason(self) -> str:
        return f"nested more than {self.max_nesting} levels deep (raise the input's max_nesting to read it)"

    def line_reason(self, size: int, unit: str = "bytes") -> str:
        return (
            f"the line holds {size:,} {unit}, more than max_line_mb allows ({self.line_limit_text()}); "
            "raise the input's max_line_mb to read it"
        )

    def line_limit_text(self) -> str:
        mib = self.max_line_bytes / (1 << 20)
        return f"{mib:g} MiB" if mib >= 1 and mib == int(mib) else f"{self.max_line_bytes:,} bytes"


DEFAULT_LIMITS = Limits()
#: A row Python's or Polars' JSON parser cannot take even within ``max_nesting`` (the limit was raised).
_PARSER_DEPTH = "nested too deep for the JSON parser ({}); lower the nesting or split the value"


@dataclass
class RawInput:
    """A file's raw columns plus ``_line``, and the lines that could not be parsed.

    ``bad_lines`` has ``_line`` (Int64), ``reason`` (String) and ``row`` (the raw line, lossily decoded);
    both frames also carry ``_file`` when ``path`` is a directory.
    """

    path: Path
    frame: pl.LazyFrame
    bad_lines: pl.DataFrame
    format: str = ""
    #: The folder holding the spilled blocks that ``frame`` scans (streamed inputs only).  It lives until the
    #: process exits, because derived lazy frames keep reading it; a caller done with them may delete it.
    spill: Path | None = field(default=None, repr=False)
    #: Folder inputs: the files read (relative path -> their data columns' schema) ...
    files: dict[str, pl.Schema] = field(default_factory=dict)
    #: ... and the entries not read, ``(relative path, why)``, in path order.
    skipped: list[tuple[str, str]] = field(default_factory=list)


def supported_extensions() -> str:
    return ", ".join([*FORMATS, "(+ .gz except .parquet)", "or a folder of such files"])


def format_of(path: Path) -> str | None:
    """The format named by ``path``'s extension (``.gz`` stripped), or None."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
        if suffixes and suffixes[-1] == ".parquet":
            return None
    return FORMATS.get(suffixes[-1]) if suffixes else None


def read_raw(path: str | Path, limits: Limits | None = None, columns: Sequence[str] | None = None) -> RawInput:
    """Read ``path`` (file or folder) into a :class:`RawInput`; ``InputDataError`` when it cannot be read.

    Errors: no such file; not a regular file (a FIFO, a device); unsupported extension; no rows (empty file,
    header only, blank lines only); a JSON file whose top level is not an array of objects; a folder with no
    data files, or whose files do not make one table.  A file whose every line is bad is *not* an error
    here: ``frame`` is then empty and ``bad_lines`` says why.

    ``columns``: a CSV/TSV file without a header row (``header: false`` in a recipe input): the names of its
    columns, in order; every line is then a record (line 1 the first), checked against their number.
    """
    limits = limits or DEFAULT_LIMITS
    p = Path(path)
    is_folder = check_input(p)
    fmt = None if is_folder else format_of(p)
    if columns is not None and (is_folder or fmt not in ("csv", "tsv")):
        raise InputDataError(f"{p}: columns (header: false) applies to a CSV or TSV file only")
    if columns is not None and (not columns or len(set(columns)) != len(columns)):
        raise InputDataError(f"{p}: columns must name each column once, got {list(columns)}")
    if is_folder:
        return _read_folder(p, limits)
    if fmt is None:
        raise InputDataError(f"{p}: unsupported file type (supported: {supported_extensions()})")
    if fmt == "parquet":
        return _read_parquet(p)
    data = _read_head(p) if fmt in ("jsonl", "csv", "tsv") else _read_bytes(p)
    if data is None:  # larger than one block: stream it
        return _read_jsonl_blocks(p, fmt, limits) if fmt == "jsonl" else _read_csv(p, None, fmt, limits, columns)
    if not data.strip() or data.strip() == _BOM:
        raise InputDataError(f"{p} has no rows (the file is empty)")
    if fmt in ("csv", "tsv"):
        raw = _read_csv(p, data, fmt, limits, columns)
    else:
        raw = {"jsonl": _read_jsonl, "json": _read_json}[fmt](p, data, fmt, limits)
    if raw.bad_lines.is_empty() and raw.frame.select(pl.len()).collect().item() == 0:
        raise InputDataError(f"{p} has no rows")
    return raw


def check_input(path: Path) -> bool:
    """True for a folder, False for a regular file; ``InputDataError`` for anything else.

    Called before an input is hashed or opened: a FIFO or a character device (``/dev/zero``, a terminal)
    may never end, so reading it would hang, and it cannot be hashed to key the cache anyway.
    """
    try:
        mode = path.stat().st_mode  # follows symlinks: a link to /dev/zero is /dev/zero
    except FileNotFoundError:
        raise InputDataError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise InputDataError(f"{path}: cannot read it ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        return True
    if not stat.S_ISREG(mode):
        raise InputDataError(
            f"{path}: not a regular file ({_file_kind(mode)}); curate reads files and folders, whose "
            "content it can hash and read again: write the data to a file first"
        )
    return False


def _file_kind(mode: int) -> str:
    kinds = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), "not a file")


# -- helpers ---------------------------------------------------------------------------------------------


def _read_bytes(p: Path) -> bytes:
    try:
        if p.suffix.lower() == ".gz":
            with gzip.open(p, "rb") as fh:
                return fh.read()
        return p.read_bytes()
    except (OSError, EOFError) as exc:
        raise InputDataError(f"{p}: cannot read the file ({exc})") from exc


def _open(p: Path) -> IO[bytes]:
    return gzip.open(p, "rb") if p.suffix.lower() == ".gz" else p.open("rb")


def _read_head(p: Path) -> bytes | None:
    """The whole (decompressed) file when it fits in one block, else None (then it is streamed)."""
    try:
        with _open(p) as fh:
            head = fh.read(BLOCK_BYTES)
            return None if fh.read(1) else head
    except (OSError, EOFError) as exc:
        raise InputDataError(f"{p}: cannot read the file ({exc})") from exc


def _with_lines(frame: pl.DataFrame | pl.LazyFrame, lines: Sequence[int] | None = None) -> pl.LazyFrame:
    """Put ``_line`` last: the given line numbers, or row index + 1."""
    lf = frame.lazy().drop([c for c in ("_line", "_file") if c in frame.collect_schema().names()])
    if lines is None:
        lf = lf.with_row_index("_line", offset=1)
        return lf.select(pl.all().exclude("_line"), pl.col("_line").cast(pl.Int64))
    return lf.with_columns(pl.Series("_line", lines, dtype=pl.Int64))


def _bad_frame(rows: list[tuple[int, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=BAD_LINES_SCHEMA, orient="row")


def _empty_frame() -> pl.LazyFrame:
    return pl.LazyFrame(schema={"_line": pl.Int64})


def _preview(value: Any, limit: int = 40) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (RecursionError, ValueError):  # nested deeper than the encoder goes (a raised max_nesting)
        text = f"<{_kind(value)}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _line_preview(head: bytes | str) -> str:
    """The start of a line a bad line keeps when the whole line is too long to keep."""
    if isinstance(head, str):  # decoded with surrogateescape: its bad bytes back, then replaced like bytes
        head = head.encode("utf-8", "surrogateescape" if _only_escaped(head) else "backslashreplace")
    text = head.decode("utf-8", "replace")
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"


def _only_escaped(text: str) -> bool:
    return text.isascii() or not any("\ud800" <= ch < "\udc80" or "\udcff" < ch <= "\udfff" for ch in text)


# -- limits and text rules ---------------------------------------------------------------------------------

# A JSON string (escapes included) or a bracket: what a depth count must see, strings skipped whole.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_TEXT_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]')
# An escaped surrogate that is not half of a pair.  Lines that match, hold ``\u0000`` or a backslash
# before a ``\u`` (where this pattern could be fooled) are parsed in Python, which keeps lone surrogates
# as they are; Polars would turn them into U+0000 without a word.
_HIGH = rb"\\u[dD][89abAB][0-9a-fA-F]{2}"
_LOW = rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}"
_LONE_SURROGATE = re.compile(_HIGH + rb"(?!" + _LOW + rb")|(?<!" + _HIGH + rb")" + _LOW)


def _may_hold_bad_text(data: bytes) -> bool:
    """Whether some JSON string in ``data`` may decode to a NUL or a lone surrogate (else none can)."""
    if b"\\u" not in data:
        return False
    return b"\\u0000" in data or b"\\\\u" in data or _LONE_SURROGATE.search(data) is not None


def _too_deep(line: bytes, limit: int) -> bool:
    """Whether the JSON on ``line`` nests arrays/objects more than ``limit`` deep; no recursion, and only a
    count of brackets for the (nearly all) lines that have no more brackets than the limit."""
    if line.count(b"[") + line.count(b"{") <= limit:
        return False
    depth = 0
    for match in _TOKENS.finditer(line):
        char = line[match.start()]
        if char in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif char != 0x22:
            depth -= 1
    return False


def _dtype_depth(dtype: pl.DataType) -> int:
    """How deep a column of this type nests (a list or struct is 1 more than what it holds); no recursion."""
    deepest, stack = 0, [(dtype, 0)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, pl.Struct):
            deepest = max(deepest, depth + 1)
            stack.extend((f.dtype, depth + 1) for f in current.fields)
        elif isinstance(current, pl.List | pl.Array):
            deepest = max(deepest, depth + 1)
            stack.append((current.inner, depth + 1))
    return deepest


def _text_problem(value: Any, limits: Limits | None = None, utf8_clean: bool = True) -> str | None:
    """Why a parsed JSON row cannot be kept as text, or None: nesting past ``limits`` (checked first),
    else the first string (key or value) holding a NUL or a surrogate, named by its top-level column.

    Walks with a stack, not recursion.  A surrogate is a lone surrogate from a ``\\u`` escape, except in a
    document that was not valid UTF-8 (``utf8_clean`` False), where U+DC80..U+DCFF stand for its bad bytes.
    """
    text_reason: str | None = None
    stack: list[tuple[str | None, Any, int]] = [(None, value, 1)]
    while stack:
        column, item, depth = stack.pop()
        if isinstance(item, str):
            if text_reason is None and (problem := _string_problem(item, utf8_clean)):
                text_reason = f"column '{column}': {problem}" if column is not None else problem
            continue
        if not isinstance(item, dict | list):
            continue
        if limits is not None and depth > limits.max_nesting:
            return limits.nesting_reason()
        if isinstance(item, dict):
            for key, child in item.items():
                name = key if column is None else column
                if text_reason is None and (problem := _string_problem(key, utf8_clean)):
                    text_reason = f"key {_quoted(key)}: {problem}"
                stack.append((name, child, depth + 1))
        else:
            stack.extend((column, child, depth + 1) for child in item)
    return text_reason


def _quoted(text: str) -> str:
    """``'name'``, with control characters and surrogates escaped so the message stays one printable line."""
    return "'" + text.encode("unicode_escape", "backslashreplace").decode("ascii").replace("'", "\\'") + "'"


def _string_problem(text: str, utf8_clean: bool = True) -> str | None:
    if text.isascii():
        return "contains a NUL character (U+0000)" if "\x00" in text else None
    if "\x00" in text:
        return "contains a NUL character (U+0000)"
    for char in text:
        if "\ud800" <= char <= "\udfff":
            if not utf8_clean and char >= "\udc80":
                return "invalid UTF-8"
            return f"a lone surrogate (\\u{ord(char):04x}) is not valid Unicode"
    return None


def _cap_lines(data: bytes, first: int, limits: Limits) -> tuple[bytes, list[tuple[int, str, str]]]:
    """Cut the lines longer than ``max_line_bytes`` out of ``data`` (each leaves an empty line, so the
    numbering holds) and return them as bad lines."""
    limit = limits.max_line_bytes
    if len(data) <= limit:
        return data, []
    lines = data.split(b"\n")
    if max(map(len, lines)) <= limit:
        return data, []
    bad = []
    for index, line in enumerate(lines):
        if len(line) > limit:
            bad.append((first + index, limits.line_reason(len(line)), _line_preview(line[: PREVIEW_CHARS * 4])))
            lines[index] = b""
    return b"\n".join(lines), bad


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null"


# -- Parquet ---------------------------------------------------------------------------------------------


def _read_parquet(p: Path) -> RawInput:
    try:
        rows = pq.ParquetFile(p).metadata.num_rows
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise InputDataError(f"{p}: not a readable Parquet file ({exc})") from exc
    if rows == 0:
        raise InputDataError(f"{p} has no rows")
    # Lazy: a 1M-row canonical file streams through the adapters without being loaded.
    return RawInput(p, _with_lines(pl.scan_parquet(p)), _bad_frame([]), "parquet")


# -- JSON Lines ------------------------------------------------------------------------------------------


class _TypeDrift(Exception):
    pass


def _check_type_drift(data: bytes) -> bool:
    """Raise ``_TypeDrift`` when a field's JSON type varies between lines (pyarrow is strict; Polars not).

    Returns whether pyarrow read it all (False: it stopped at a limit of its own, so drift nested in a
    value, which Polars turns into text, was not ruled out).
    """
    try:
        pa_json.read_json(io.BytesIO(data), read_options=pa_json.ReadOptions(block_size=1 << 26))
    except Exception as exc:  # only type changes matter; other pyarrow limits are not our problem
        if "changed from" in str(exc):
            raise _TypeDrift(str(exc)) from exc
        return False
    return True


@dataclass
class _Facts:
    """Decisions that depend on every row of a file, imposed on one block of it.

    ``expected``: the JSON kind most rows have, per top-level field whose kind varies; ``wrap``: list
    fields whose message contents mix strings and part lists (None: the block's own); ``schema``: every
    data column's final type (None: the block's own).
    """

    expected: dict[str, str]
    wrap: frozenset[str] | None = None
    schema: pl.Schema | None = None


@dataclass
class _Block:
    """One parsed block (or a whole small file): its rows and what the file-wide decisions need from it."""

    frame: pl.DataFrame  # data columns, then _line
    bad: list[tuple[int, str, str]]
    kinds: dict[str, Counter[str]]  # JSON kinds of the non-null top-level values of every parsed line
    content: dict[str, set[type]]  # message ``content`` types per list field, over the kept lines
    wrapped: frozenset[str]  # fields whose string contents were wrapped as a text part


def _read_jsonl(p: Path, data: bytes, fmt: str = "jsonl", limits: Limits = DEFAULT_LIMITS) -> RawInput:
    block = _parse_block(data, 1, None, limits)
    return RawInput(p, _block_frame(block.frame), _bad_frame(block.bad), fmt)


def _block_frame(frame: pl.DataFrame) -> pl.LazyFrame:
    return frame.lazy() if frame.height else _empty_frame()


def _parse_block(
    data: bytes,
    first: int,
    facts: _Facts | None = None,
    limits: Limits = DEFAULT_LIMITS,
    cut: Sequence[tuple[int, str, str]] = (),
) -> _Block:
    """Parse JSON Lines whose first line is line ``first`` of the file: Polars when clean, else line by line.

    With ``facts`` (a block read again after the whole file was seen) the careful path always runs, so
    that the file-wide decisions apply exactly as when the whole file goes through it.  ``cut``: bad lines
    for lines too long to hold that :func:`_blocks` already cut out (they are empty lines in ``data``).

    The fast path is taken only when it cannot differ from the careful one: no line too long, no escape
    that may decode to a NUL or a lone surrogate, and columns whose types nest no deeper than
    ``max_nesting`` (pyarrow's strict read having shown that no value hides in text, that bounds every row).
    """
    data, long_lines = _cap_lines(data, first, limits)
    cut = sorted([*cut, *long_lines])
    if not data.strip():
        return _Block(pl.DataFrame(schema={"_line": pl.Int64}), cut, {}, {}, frozenset())
    if (
        facts is None
        and not cut
        and not data.startswith(_BOM)
        and not _has_blank_line(data.rstrip())
        and not _may_hold_bad_text(data)
    ):
        try:
            frame = pl.read_ndjson(data, infer_schema_length=None)
            strict = _check_type_drift(data)
        except (pl.exceptions.PolarsError, _TypeDrift):
            pass
        else:
            depth = 1 + max((_dtype_depth(t) for t in frame.schema.dtypes()), default=0)
            if depth <= limits.max_nesting and (strict or not _deep_lines(data, limits)):
                kinds = _frame_kinds(frame, data)
                frame = frame.drop([c for c in ("_line", "_file") if c in frame.columns]).with_columns(
                    pl.int_range(first, first + pl.len(), dtype=pl.Int64).alias("_line")
                )
                return _Block(frame, [], kinds, _frame_content(frame), frozenset())
    return _parse_lines(data, first, facts, limits, cut)


def _has_blank_line(data: bytes) -> bool:
    return _BLANK_FIRST_LINE.match(data) is not None or _BLANK_LINE.search(data) is not None


def _deep_lines(data: bytes, limits: Limits) -> bool:
    """Whether some line of ``data`` nests deeper than the limit (when Polars may have hidden it in text)."""
    return any(_too_deep(line, limits.max_nesting) for line in data.split(b"\n"))


def _frame_kinds(frame: pl.DataFrame, data: bytes) -> dict[str, Counter[str]]:
    """:func:`_kind_counts` for a frame Polars read from clean JSON ``data`` (each column has one kind).

    Fields come in the order of their first non-null value, ties in that line's key order, as
    :func:`_kind_counts` gives them (it decides which column a row drifting in two is reported for).
    """
    counts = {
        name: (kind, frame.height - frame.get_column(name).null_count())
        for name, dtype in frame.schema.items()
        if (kind := _dtype_kind(dtype)) and frame.get_column(name).null_count() < frame.height
    }
    if not counts:
        return {}
    firsts = frame.select(pl.col(list(counts)).is_not_null().arg_max()).row(0)
    first_row = dict(zip(counts, firsts, strict=True))
    key_order: dict[int, list[str]] = {}
    for row in sorted(set(firsts)):
        if firsts.count(row) > 1:
            key_order[row] = list(json.loads(_nth_line(data, row)))
    ranked = sorted(
        counts,
        key=lambda n: (first_row[n], key_order[first_row[n]].index(n) if first_row[n] in key_order else 0),
    )
    return {name: Counter({counts[name][0]: counts[name][1]}) for name in ranked}


def _nth_line(data: bytes, n: int) -> bytes:
    """Line ``n`` (0-based) of ``data``."""
    start = 0
    for _ in range(n):
        start = data.index(b"\n", start) + 1
    end = data.find(b"\n", start)
    return data[start : end if end >= 0 else len(data)]


def _dtype_kind(dtype: pl.DataType) -> str | None:
    """The JSON kind of a column Polars read from clean JSON (one kind per column), None for all-null."""
    if dtype == pl.String:
        return "a string"
    if dtype == pl.Boolean:
        return "a boolean"
    if isinstance(dtype, pl.Struct):
        return "an object"
    if isinstance(dtype, pl.List | pl.Array):
        return "an array"
    return "a number" if dtype.is_numeric() else None


def _frame_content(frame: pl.DataFrame) -> dict[str, set[type]]:
    """:func:`_content_kinds` for a frame Polars read from clean JSON (each field has one type)."""
    out: dict[str, set[type]] = {}
    for name, dtype in frame.schema.items():
        if not (isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct)):
            continue
        fields = {f.name: f.dtype for f in dtype.inner.fields}
        content = fields.get("content")
        kind = str if content == pl.String else list if isinstance(content, pl.List) else None
        if kind is not None and frame.get_column(name).explode().struct.field("content").drop_nulls().len():
            out[name] = {kind}
    return out


def _parse_lines(
    data: bytes, first: int, facts: _Facts | None, limits: Limits = DEFAULT_LIMITS, cut: Sequence = ()
) -> _Block:
    """The careful path: parse each line, keep the bad ones with a reason, read the good ones."""
    objects: list[dict[str, Any]] = []
    numbers: list[int] = []
    texts: list[str] = []
    bad: list[tuple[int, str, str]] = list(cut)
    for number, raw in enumerate(data.split(b"\n"), start=first):
        line = raw.strip()
        if number == 1 and line.startswith(_BOM):
            line = line[len(_BOM) :].strip()
        if not line:
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            offset = exc.start + (len(raw) - len(raw.lstrip()))
            bad.append(
                (number, f"invalid UTF-8 at byte {offset} of the line", raw.decode("utf-8", "replace"))
            )
            continue
        if _too_deep(line, limits.max_nesting):
            bad.append((number, limits.nesting_reason(), _line_preview(text)))
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            bad.append((number, f"malformed JSON: {exc.msg} (char {exc.pos})", text))
            continue
        except RecursionError:
            bad.append((number, _PARSER_DEPTH.format("Python's recursion limit"), _line_preview(text)))
            continue
        if not isinstance(value, dict):
            bad.append((number, f"expected a JSON object, got {_kind(value)}", text))
            continue
        if b"\\u" in line and (problem := _text_problem(value)):
            bad.append((number, problem, text))
            continue
        objects.append(value)
        numbers.append(number)
        texts.append(text)
    return _parse_objects(objects, numbers, texts, bad, facts)


def _from_objects(
    p: Path,
    objects: list[dict[str, Any]],
    numbers: list[int],
    texts: list[str],
    bad: list[tuple[int, str, str]],
    fmt: str,
) -> RawInput:
    block = _parse_objects(objects, numbers, texts, bad, None)
    return RawInput(p, _block_frame(block.frame), _bad_frame(block.bad), fmt)


def _parse_objects(
    objects: list[dict[str, Any]],
    numbers: list[int],
    texts: list[str],
    bad: list[tuple[int, str, str]],
    facts: _Facts | None,
) -> _Block:
    """Build the frame from parsed objects (their JSON ``texts``), moving type-drifting rows to ``bad``.

    The drift and content decisions are this block's own, or the whole file's when ``facts`` is given.
    """
    kinds = _kind_counts(objects)
    drift = _type_drift(objects, facts.expected if facts else _expected_kinds(kinds))
    keep = [i for i in range(len(objects)) if i not in drift]
    bad.extend((numbers[i], drift[i], texts[i]) for i in drift)
    kept = [objects[i] for i in keep]
    content = _content_kinds(kept)
    wrap = facts.wrap if facts and facts.wrap is not None else _mixed(content)
    wrapped = _wrap_content(kept, wrap)
    if wrapped:
        texts = [
            json.dumps(o, ensure_ascii=False) if i not in drift else t
            for i, (o, t) in enumerate(zip(objects, texts, strict=True))
        ]
    good_texts = [texts[i] for i in keep]
    good_numbers = [numbers[i] for i in keep]
    frame, unreadable = _ndjson_frame(good_texts, facts.schema if facts else None)
    if unreadable:
        bad.extend((good_numbers[i], reason, good_texts[i]) for i, reason in unreadable.items())
        good_numbers = [n for i, n in enumerate(good_numbers) if i not in unreadable]
    bad.sort(key=lambda row: row[0])
    if good_numbers:
        frame = frame.drop([c for c in ("_line", "_file") if c in frame.columns]).with_columns(
            pl.Series("_line", good_numbers, dtype=pl.Int64)
        )
    else:
        frame = pl.DataFrame(schema={"_line": pl.Int64})
    return _Block(frame, bad, kinds, content, wrapped)


def _mixed(content: dict[str, set[type]]) -> frozenset[str]:
    return frozenset(key for key, types in content.items() if types == {str, list})


def _kind_counts(objects: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    """How often each top-level field holds each JSON kind (nulls not counted), fields in first-seen order."""
    kinds: dict[str, Counter[str]] = {}
    for obj in objects:
        for key, value in obj.items():
            if value is not None:
                kinds.setdefault(key, Counter())[_kind(value)] += 1
    return kinds


def _expected_kinds(kinds: dict[str, Counter[str]]) -> dict[str, str]:
    """For each field with more than one kind, the kind of most rows (ties: string, object, array, ...)."""
    order = ["a string", "an object", "an array", "a number", "a boolean"]
    return {
        key: max(counts, key=lambda k: (counts[k], -order.index(k)))
        for key, counts in kinds.items()
        if len(counts) > 1
    }


def _type_drift(objects: list[dict[str, Any]], expected: dict[str, str]) -> dict[int, str]:
    """Rows whose top-level value has a different JSON type than ``expected`` (most rows') for its field."""
    drift: dict[int, str] = {}
    if not expected:
        return drift
    for index, obj in enumerate(objects):
        for key, want in expected.items():
            value = obj.get(key)
            if value is not None and _kind(value) != want:
                got = f"{_kind(value)}: {_preview(value)}"
                drift[index] = f"column '{key}': expected {want} (as in most rows), got {got}"
                break
    return drift


def _content_kinds(objects: list[dict[str, Any]]) -> dict[str, set[type]]:
    """Per list field, the types (str, list) of its messages' ``content`` values."""
    out: dict[str, set[type]] = {}
    for key in {k for obj in objects for k, v in obj.items() if isinstance(v, list)}:
        kinds = {
            type(m["content"])
            for obj in objects
            if isinstance(obj.get(key), list)
            for m in obj[key]
            if isinstance(m, dict) and isinstance(m.get("content"), str | list)
        }
        if kinds:
            out[key] = kinds
    return out


def _wrap_content(objects: list[dict[str, Any]], keys: frozenset[str]) -> frozenset[str]:
    """Wrap string contents as ``[{type: text, text}]`` in the messages of ``keys`` (fields that mix both).

    OpenAI-style logs mix both (a string system prompt, a list of parts for the user); Polars would turn the
    lists into JSON text.  Wrapping is lossless: the adapters join text parts back into the same string.
    Returns the fields where something changed.
    """
    changed: set[str] = set()
    for key in keys:
        for obj in objects:
            value = obj.get(key)
            for m in value if isinstance(value, list) else []:
                if isinstance(m, dict) and isinstance(m.get("content"), str):
                    m["content"] = [{"type": "text", "text": m["content"]}]
                    changed.add(key)
    return frozenset(changed)


def _ndjson_frame(texts: list[str], schema: pl.Schema | None = None) -> tuple[pl.DataFrame, dict[int, str]]:
    """Read JSON texts with Polars; isolate lines Polars rejects (huge ints, ...) by bisection."""
    if not texts:
        return pl.DataFrame(), {}
    try:
        return pl.read_ndjson("\n".join(texts).encode(), schema=schema, infer_schema_length=None), {}
    except pl.exceptions.PolarsError as exc:
        if len(texts) == 1:
            return pl.DataFrame(), {0: f"unreadable JSON value: {str(exc).splitlines()[0]}"}
    half = len(texts) // 2
    left, left_bad = _ndjson_frame(texts[:half], schema)
    right, right_bad = _ndjson_frame(texts[half:], schema)
    unreadable = {**left_bad, **{half + i: reason for i, reason in right_bad.items()}}
    if not left.width and not right.width:  # only `{}` lines: rows without columns
        return pl.DataFrame({"_": [None] * (left.height + right.height)}).drop("_"), unreadable
    # A half of `{}` lines has rows but no columns, and Polars' concat would drop its rows.
    left = left if left.width else right.clear(left.height)
    right = right if right.width else left.clear(right.height)
    try:
        return pl.concat([left, right], how="diagonal_relaxed"), unreadable
    except pl.exceptions.PolarsError:
        if schema is not None:
            raise
    # The halves nest values of kinds Polars cannot unify (a number in one, a list of objects in the other,
    # under the same nested key): read the lines again under their merged types (text where they differ),
    # as the streamed path does with its blocks.
    kept = [i for i in range(len(texts)) if i not in unreadable]
    merged = _merge_schemas([left.schema, right.schema])
    frame, again = _ndjson_frame([texts[i] for i in kept], merged)
    return frame, {**unreadable, **{kept[i]: reason for i, reason in again.items()}}


# -- JSON Lines, streamed --------------------------------------------------------------------------------
#
# Pass 1 parses each block on its own (as above) and spills it.  The decisions that need the whole file are
# then taken from what the blocks report (kinds per field, message content types, schemas), and only the
# blocks those decisions change are read again: a pass for blocks with lines of a minority type, one for
# blocks whose message contents must be wrapped, one for blocks whose values Polars must read as text (a
# nested number in a field that is text elsewhere).  Each pass stops after the last block it needs.  A
# missing column, an all-null one or ints next to floats need no re-read: the final concatenation casts
# them, as Polars does when it reads the whole file.
#
# Nested values Polars cannot read together at all (a number in one line, an object in another, under the
# same nested key) become text on both paths: blocks through the merged schema, the whole-file path by
# reading its lines again under the merged types of the halves it split them into (``_ndjson_frame``).


@dataclass
class _Spilled:
    """A parsed block on disk, with what the file-wide decisions need from it."""

    path: Path | None  # None when the block has no rows
    schema: pl.Schema  # data columns, without _line
    bad: list[tuple[int, str, str]]
    kinds: dict[str, Counter[str]]
    content: dict[str, set[type]]
    wrapped: frozenset[str]

    def drifts(self, expected: dict[str, str]) -> bool:
        """Whether some line has a top-level value of another kind than most of the file's lines."""
        return any(kind != want for key, want in expected.items() for kind in self.kinds.get(key, ()))

    def wraps_otherwise(self, wrap: frozenset[str]) -> bool:
        """Whether the file-wide content wrapping changes this block's rows."""
        strings = {key for key, types in self.content.items() if str in types}
        return (wrap & strings) != self.wrapped


def _read_jsonl_blocks(p: Path, fmt: str, limits: Limits = DEFAULT_LIMITS) -> RawInput:
    """Stream a large JSON Lines file: parse it block by block into Parquet files and scan those."""
    spill = _spill_folder()
    blocks: list[_Spilled] = []
    has_content = False
    for index, (first, data, cut) in _each_block(p, limits):
        has_content = has_content or bool(cut) or data.strip() not in (b"", _BOM)
        blocks.append(_spill(_parse_block(data, first, None, limits, cut), spill / f"block-{index:06d}"))
    if not has_content:
        raise InputDataError(f"{p} has no rows (the file is empty)")
    # Drift first (which lines are kept), then content wrapping (over the kept lines), then types.
    kinds: dict[str, Counter[str]] = {}
    for block in blocks:
        for key, counts in block.kinds.items():
            kinds.setdefault(key, Counter()).update(counts)
    facts = _Facts(_expected_kinds(kinds))
    _reread(p, {i for i, b in enumerate(blocks) if b.drifts(facts.expected)}, facts, blocks, spill, limits)
    content: dict[str, set[type]] = {}
    for block in blocks:
        for key, types in block.content.items():
            content.setdefault(key, set()).update(types)
    facts.wrap = _mixed(content)
    rewrap = {i for i, b in enumerate(blocks) if b.wraps_otherwise(facts.wrap)}
    _reread(p, rewrap, facts, blocks, spill, limits)
    facts.schema = _merge_schemas([b.schema for b in blocks if b.path is not None])
    textual = {i for i, b in enumerate(blocks) if b.path and _needs_reread(b.schema, facts.schema)}
    _reread(p, textual, facts, blocks, spill, limits)
    scans = [_scan(b.path) for b in blocks if b.path is not None]
    bad = _bad_frame(sorted((row for b in blocks for row in b.bad), key=lambda row: row[0]))
    if not scans:
        if bad.is_empty():
            raise InputDataError(f"{p} has no rows")
        return RawInput(p, _empty_frame(), bad, fmt, spill)
    frame = pl.concat(scans, how="diagonal_relaxed").select(*facts.schema.names(), "_line")
    if frame.collect_schema() != pl.Schema({**facts.schema, "_line": pl.Int64()}):
        frame = frame.cast(dict(facts.schema))  # the concatenation's struct fields follow a later block
    return RawInput(p, frame, bad, fmt, spill)


_Bad = tuple[int, str, str]


def _each_block(p: Path, limits: Limits = DEFAULT_LIMITS) -> Iterator[tuple[int, tuple[int, bytes, list[_Bad]]]]:
    """``(index, (first line number, block, lines cut out))`` over the (decompressed) file, cut after a
    newline; see :func:`_blocks`."""
    try:
        with _open(p) as fh:
            yield from enumerate(_blocks(fh, BLOCK_BYTES, limits))
    except (OSError, EOFError) as exc:
        raise InputDataError(f"{p}: cannot read the file ({exc})") from exc


class _LongLine:
    """A line being skipped because it outgrew the limit: its size so far and the start of its text."""

    def __init__(self, head: bytes) -> None:
        self.size = len(head)
        self.head = head[: PREVIEW_CHARS * 4]

    def add(self, part: bytes) -> None:
        self.size += len(part)
        if len(self.head) < PREVIEW_CHARS * 4:
            self.head += part[: PREVIEW_CHARS * 4 - len(self.head)]

    def bad(self, line: int, limits: Limits) -> _Bad:
        return (line, limits.line_reason(self.size), _line_preview(self.head))


def _blocks(fh: IO[bytes], size: int, limits: Limits = DEFAULT_LIMITS) -> Iterator[tuple[int, bytes, list[_Bad]]]:
    """Blocks of about ``size`` bytes ending in a newline (a longer line makes a longer block).

    A line that grows past ``max_line_bytes`` before its newline is not held: the rest of it is read and
    dropped, it stays in its block as an empty line (so line numbers hold), and the block comes with its
    bad line.  Memory stays bounded by the block size plus the limit, whatever the file holds.
    """
    limit = limits.max_line_bytes
    line, pending, held = 1, [], 0
    skipping: _LongLine | None = None
    cut: list[_Bad] = []
    while chunk := fh.read(size):
        if skipping is not None:
            end = chunk.find(b"\n")
            if end < 0:
                skipping.add(chunk)
                continue
            skipping.add(chunk[:end])
            cut.append(skipping.bad(line, limits))  # the skipped line is the first of the next block
            skipping, chunk = None, chunk[end:]
        end = chunk.rfind(b"\n")
        if end < 0:
            pending.append(chunk)
            held += len(chunk)
            if held > limit:
                skipping, pending, held = _LongLine(b"".join(pending)), [], 0
            continue
        block = b"".join([*pending, chunk[: end + 1]])
        pending = [chunk[end + 1 :]]
        held = len(pending[0])
        yield line, block, cut
        line += block.count(b"\n")
        cut = []
        if held > limit:
            skipping, pending, held = _LongLine(pending[0]), [], 0
    if skipping is not None:
        cut.append(skipping.bad(line, limits))
    tail = b"".join(pending)
    if tail or cut:
        yield line, tail, cut


def _reread(
    p: Path, indices: set[int], facts: _Facts, blocks: list[_Spilled], spill: Path, limits: Limits = DEFAULT_LIMITS
) -> None:
    """Parse the blocks at ``indices`` again under the file-wide ``facts``, replacing their spilled files."""
    if not indices:
        return
    for index, (first, data, cut) in _each_block(p, limits):
        if index in indices:
            if blocks[index].path is not None:
                blocks[index].path.unlink()
            blocks[index] = _spill(_parse_block(data, first, facts, limits, cut), spill / f"block-{index:06d}")
            if index == max(indices):
                return


def _spill(block: _Block, stem: Path) -> _Spilled:
    """Write the block's rows to ``stem``.parquet (Arrow IPC when Parquet cannot hold a type: ``{}``)."""
    schema = pl.Schema({k: v for k, v in block.frame.schema.items() if k != "_line"})
    path: Path | None = None
    if block.frame.height:
        path = stem.with_suffix(".parquet")
        try:
            block.frame.write_parquet(path)
        except pl.exceptions.InvalidOperationError:  # a struct with no fields (always-empty objects)
            path.unlink(missing_ok=True)
            path = stem.with_suffix(".arrow")
            block.frame.write_ipc(path, compression="lz4")
    return _Spilled(path, schema, block.bad, block.kinds, block.content, block.wrapped)


def _scan(path: Path) -> pl.LazyFrame:
    return pl.scan_parquet(path) if path.suffix == ".parquet" else pl.scan_ipc(path)


def _merge_schemas(schemas: list[pl.Schema]) -> pl.Schema:
    """The type each column gets when Polars reads all blocks' lines at once (columns in first-seen order)."""
    merged: dict[str, pl.DataType] = {}
    for schema in schemas:
        for name, dtype in schema.items():
            merged[name] = _merge_dtype(merged[name], dtype) if name in merged else dtype
    return pl.Schema(merged)


def _merge_dtype(a: pl.DataType, b: pl.DataType) -> pl.DataType:
    """Polars' JSON inference rule: null gives way, ints widen to floats, objects merge, else text."""
    if a == b or b == pl.Null:
        return a
    if a == pl.Null:
        return b
    if a.is_numeric() and b.is_numeric():  # Int64, Int128 (huge ints), Float64
        empty = [pl.DataFrame(schema={"x": t}) for t in (a, b)]
        return pl.concat(empty, how="vertical_relaxed").schema["x"]
    if isinstance(a, pl.Struct) and isinstance(b, pl.Struct):
        fields = {f.name: f.dtype for f in a.fields}
        for f in b.fields:
            fields[f.name] = _merge_dtype(fields[f.name], f.dtype) if f.name in fields else f.dtype
        return pl.Struct(fields)
    if isinstance(a, pl.List) and isinstance(b, pl.List):
        return pl.List(_merge_dtype(a.inner, b.inner))
    return pl.String()


def _needs_reread(src: pl.DataType | pl.Schema, dst: pl.DataType | pl.Schema) -> bool:
    """Whether a block typed ``src`` must be read again as ``dst`` (a cast would not give Polars' text)."""
    if isinstance(src, pl.Schema) and isinstance(dst, pl.Schema):
        return any(_needs_reread(t, dst[name]) for name, t in src.items())
    if src == dst or src == pl.Null:
        return False
    if isinstance(src, pl.Struct) and isinstance(dst, pl.Struct):
        fields = {f.name: f.dtype for f in dst.fields}
        return any(_needs_reread(f.dtype, fields[f.name]) for f in src.fields)
    if isinstance(src, pl.List) and isinstance(dst, pl.List):
        return _needs_reread(src.inner, dst.inner)
    return not (src.is_numeric() and dst.is_float())


_spill_root: Path | None = None


def _spill_folder() -> Path:
    """A new folder for one input's blocks, under a per-process folder removed when the process exits.

    Not tied to the :class:`RawInput`: lazy frames derived from ``frame`` (the adapters', the runner's)
    outlive it and still read the blocks.
    """
    global _spill_root
    if _spill_root is None or not _spill_root.is_dir():
        _spill_root = Path(tempfile.mkdtemp(prefix="curate-spill-"))
        atexit.register(_remove_spill_root, _spill_root, os.getpid())
    return Path(tempfile.mkdtemp(prefix="input-", dir=_spill_root))


def _remove_spill_root(root: Path, owner: int) -> None:
    if os.getpid() == owner:  # not from a forked child that inherited the handler
        shutil.rmtree(root, ignore_errors=True)


# -- JSON documents --------------------------------------------------------------------------------------


def _read_json(p: Path, data: bytes, fmt: str = "json", limits: Limits = DEFAULT_LIMITS) -> RawInput:
    body = data[len(_BOM) :] if data.startswith(_BOM) else data
    head = body.lstrip()[:1]
    if head == b"{":
        first = body.lstrip().split(b"\n", 1)[0].strip()
        try:
            is_lines = isinstance(json.loads(first), dict)
        except (json.JSONDecodeError, UnicodeDecodeError):
            is_lines = False
        except RecursionError:  # a first line nested too deep for Python: lines, each judged on its own
            is_lines = True
        if is_lines:  # JSON Lines content in a .json file
            return _read_jsonl(p, data, "json", limits)
        raise InputDataError(
            f"{p}: the top level is a JSON object{_keys_hint(body)}, not an array of objects"
        )
    if head != b"[":
        raise InputDataError(f"{p}: the top level is not a JSON array of objects")
    try:
        text, utf8_clean = body.decode("utf-8"), True
    except UnicodeDecodeError:
        text, utf8_clean = body.decode("utf-8", "surrogateescape"), False
    try:
        elements: list[tuple[Any, str | None, str]] = [(v, None, "") for v in json.loads(text)]
    except json.JSONDecodeError as exc:
        raise InputDataError(
            f"{p}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    except RecursionError:  # some element nests deeper than Python's stack: find the elements without it
        elements = _split_array(p, text, limits)
    if not elements:
        raise InputDataError(f"{p} has no rows (an empty array)")
    objects: list[dict[str, Any]] = []
    numbers: list[int] = []
    texts: list[str] = []
    bad: list[tuple[int, str, str]] = []
    for index, (value, reason, preview) in enumerate(elements, start=1):
        if reason is not None:
            bad.append((index, reason, preview))
        elif problem := _text_problem(value, limits, utf8_clean):
            bad.append((index, problem, _dumps_for_bad(value)))
        elif not isinstance(value, dict):
            bad.append((index, f"expected a JSON object, got {_kind(value)}", json.dumps(value, ensure_ascii=False)))
        else:
            dumped = json.dumps(value, ensure_ascii=False)
            if len(dumped) > limits.max_line_bytes // 4 and (size := len(dumped.encode())) > limits.max_line_bytes:
                bad.append((index, limits.line_reason(size).replace("the line", "the element"), _line_preview(dumped)))
                continue
            objects.append(value)
            numbers.append(index)
            texts.append(dumped)
    if not objects and all(r[1].startswith("expected a JSON object") for r in bad):
        raise InputDataError(
            f"{p}: the top level is not an array of objects (element 1 is {_kind(elements[0][0])})"
        )
    return _from_objects(p, objects, numbers, texts, bad, fmt)


def _dumps_for_bad(value: Any) -> str:
    """A bad element as JSON with escapes (lone surrogates and NULs stay visible), or its start when it nests
    too deep to encode."""
    try:
        return _line_preview(json.dumps(value)) if isinstance(value, dict | list) else json.dumps(value)
    except (RecursionError, ValueError):
        return f"<{_kind(value)} nested too deep to show>"


def _split_array(p: Path, text: str, limits: Limits) -> list[tuple[Any, str | None, str]]:
    """The elements of a JSON array that ``json.loads`` cannot take whole (it recursed too deep).

    A scan of brackets, commas and strings (no recursion) finds each element and how deep it nests: one
    deeper than ``max_nesting`` is reported without being parsed, the others are parsed one by one.
    Returns ``(value, None, "")`` per good element and ``(None, reason, preview)`` per bad one.
    """
    spans: list[tuple[int, int, int]] = []  # start, end, deepest nesting
    depth, start, deepest, end = 0, 0, 0, -1
    for match in _TEXT_TOKENS.finditer(text):
        char = text[match.start()]
        if char == '"':
            continue
        if char in "[{":
            depth += 1
            if depth == 1:
                start = match.end()
            deepest = max(deepest, depth - 1)
        elif char in "]}":
            depth -= 1
            if depth == 0:
                end = match.end()
                if text[start : match.start()].strip() or spans:
                    spans.append((start, match.start(), deepest))
                break
        elif depth == 1:  # a comma between elements
            spans.append((start, match.start(), deepest))
            start, deepest = match.end(), 0
    if end < 0 or text[end:].strip():
        raise InputDataError(f"{p}: malformed JSON (its brackets do not close, or text follows the array)")
    out: list[tuple[Any, str | None, str]] = []
    for first, last, nesting in spans:
        part = text[first:last]
        if nesting > limits.max_nesting:
            out.append((None, limits.nesting_reason(), _line_preview(part[: PREVIEW_CHARS * 4].strip())))
            continue
        try:
            out.append((json.loads(part), None, ""))
        except json.JSONDecodeError as exc:
            line = text.count("\n", 0, first + exc.pos) + 1
            raise InputDataError(f"{p}: malformed JSON at line {line}: {exc.msg}") from exc
        except RecursionError:
            out.append((None, _PARSER_DEPTH.format("Python's recursion limit"), _line_preview(part[:800].strip())))
    return out


def _keys_hint(body: bytes) -> str:
    try:
        keys = list(json.loads(body))[:6]
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return ""
    return f" with keys {keys} (nested formats such as SQuAD need flattening first)"


def _has_surrogates(value: str) -> bool:
    """True when a decoded string holds an invalid UTF-8 byte (a lone surrogate from surrogateescape)."""
    return any("\udc80" <= ch <= "\udcff" for ch in value) if not value.isascii() else False


# -- CSV / TSV -------------------------------------------------------------------------------------------


def _read_csv(p: Path, data: bytes | None, fmt: str, limits: Limits = DEFAULT_LIMITS,
              columns: Sequence[str] | None = None) -> RawInput:
    """Python's csv module (C speed): exact start lines, strict field counts, blank lines skipped.

    Polars' CSV reader would silently fill short rows with nulls and turn blank lines into all-null rows.
    All values are strings (CSV has no types); an empty field is null.  ``data`` None: the file is larger
    than a block, and is decoded as a stream with the rows spilled to Parquet every ``BLOCK_BYTES``.
    """
    if data is not None:
        text = data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
        return _read_csv_text(p, io.StringIO(text, newline=""), fmt, None, limits, columns)
    try:
        with _open(p) as fh:
            stream = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
            return _read_csv_text(p, stream, fmt, _spill_folder(), limits, columns)
    except (OSError, EOFError) as exc:
        raise InputDataError(f"{p}: cannot read the file ({exc})") from exc


def _capped_lines(stream: IO[str], limits: Limits, cut: list[_Bad]) -> Iterator[str]:
    """The stream's lines for ``csv.reader``; a line longer than ``max_line_bytes`` characters is read past
    (never held whole), replaced by a stand-in (so line numbers hold) and reported in ``cut``.

    The stand-in keeps the parser in step: a line with an odd number of quotes opens or closes a quoted
    field, and so does its stand-in ``"``; otherwise it is an empty line.  The record the line belonged to
    is then rejected whole (see ``_take_cut``), and the records after it are read as they are.
    """
    limit = limits.max_line_bytes
    number = 0
    while line := stream.readline(limit + 1):
        number += 1
        if len(line) <= limit or line.endswith(("\n", "\r")):
            yield line
            continue
        size, head, quotes = len(line), line[:PREVIEW_CHARS], line.count('"')
        while part := stream.readline(1 << 20):
            quotes += part.count('"')
            if part.endswith(("\n", "\r")):
                size += len(part.rstrip("\r\n"))
                break
            size += len(part)
        cut.append((number, limits.line_reason(size, "characters"), _line_preview(head)))
        yield '"\n' if quotes % 2 else "\n"


def _take_cut(cut: list[_Bad], last: int) -> list[_Bad]:
    """Remove and return the lines cut out for their length up to line ``last`` (the record just read)."""
    count = next((i for i, row in enumerate(cut) if row[0] > last), len(cut))
    taken = cut[:count]
    del cut[:count]
    return taken


def _read_csv_text(p: Path, stream: IO[str], fmt: str, spill: Path | None, limits: Limits = DEFAULT_LIMITS,
                   columns: Sequence[str] | None = None) -> RawInput:
    cut: list[_Bad] = []
    reader = csv.reader(_capped_lines(stream, limits, cut), delimiter="\t" if fmt == "tsv" else ",")
    header: list[str] | None = list(columns) if columns is not None else None
    where = "as in the header" if columns is None else "as the columns option names"
    rows: list[list[str]] = []
    numbers: list[int] = []
    bad: list[tuple[int, str, str]] = []
    spilled: list[Path] = []
    size = 0
    last = 0
    field_limit = csv.field_size_limit(limits.max_line_bytes)  # a quoted field may span lines
    try:
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                reason = (
                    f"a field of this record is longer than max_line_mb allows ({limits.line_limit_text()}); "
                    "raise the input's max_line_mb to read it"
                    if "field limit" in str(exc)
                    else f"malformed CSV: {exc}"
                )
                start, last = last + 1, reader.line_num
                long_lines = _take_cut(cut, last)
                bad.append((start, long_lines[0][1] if long_lines else reason, long_lines[0][2] if long_lines else ""))
                continue
            start, last = last + 1, reader.line_num
            # A line cut out for its length belongs to this record (a quoted field may span lines): the
            # record is bad as a whole, under its own start line, never kept with a piece missing.
            long_lines = _take_cut(cut, last)
            if header is None and long_lines:
                first = long_lines[0]
                raise InputDataError(f"{p}, row {first[0]}: {first[1]} (at or before the header line)")
            if long_lines:
                bad.append((start, long_lines[0][1], long_lines[0][2]))
                continue
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if header is None:
                header = _dedupe(record)
                continue
            raw = ("\t" if fmt == "tsv" else ",").join(record)
            if any(_has_surrogates(field) for field in record):
                bad.append(
                    (
                        start,
                        "invalid UTF-8",
                        raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                    )
                )
            elif len(record) != len(header):
                bad.append(
                    (start, f"expected {len(header)} fields ({where}), got {len(record)}", raw)
                )
            elif "\x00" in raw:
                column = next(name for name, value in zip(header, record, strict=True) if "\x00" in value)
                bad.append((start, f"column {_quoted(column)}: contains a NUL character (U+0000)", raw))
            else:
                rows.append(record)
                numbers.append(start)
                size += len(raw)
                if spill is not None and size >= BLOCK_BYTES:
                    spilled.append(_spill_csv_rows(header, rows, numbers, spill / f"block-{len(spilled):06d}"))
                    rows, numbers, size = [], [], 0
    finally:
        csv.field_size_limit(field_limit)
    bad = sorted([*bad, *cut], key=lambda row: row[0])  # ``cut`` is empty unless a record never ended
    if header is None:
        raise InputDataError(f"{p} has no rows (no header line)")
    if spilled:
        if rows:
            spilled.append(_spill_csv_rows(header, rows, numbers, spill / f"block-{len(spilled):06d}"))
        return RawInput(p, pl.scan_parquet(spilled), _bad_frame(bad), fmt, spill)
    if not rows:
        if not bad:
            raise InputDataError(f"{p} has no rows (only a header)")
        return RawInput(p, _empty_frame(), _bad_frame(bad), fmt, spill)
    return RawInput(p, _with_lines(_csv_frame(header, rows), numbers), _bad_frame(bad), fmt, spill)


def _csv_frame(header: list[str], rows: list[list[str]]) -> pl.DataFrame:
    columns = {name: [r[i] or None for r in rows] for i, name in enumerate(header)}
    return pl.DataFrame(columns, schema=dict.fromkeys(header, pl.String))


def _spill_csv_rows(header: list[str], rows: list[list[str]], numbers: list[int], stem: Path) -> Path:
    path = stem.with_suffix(".parquet")
    _csv_frame(header, rows).with_columns(pl.Series("_line", numbers, dtype=pl.Int64)).write_parquet(path)
    return path


def _dedupe(names: list[str]) -> list[str]:
    seen: Counter[str] = Counter()
    out = []
    for name in names:
        name = name.strip() or "column"
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


# -- folders ---------------------------------------------------------------------------------------------


def folder_files(p: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """A folder's data files (supported extension, regular, not hidden) in path order, and the entries
    skipped, ``(path relative to the folder, why)``: hidden entries (one per hidden folder, such as
    ``.cache``), files of other types, and anything that is not a regular file (a FIFO would block)."""
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    hidden: set[str] = set()
    for entry in sorted(p.rglob("*")):
        rel = entry.relative_to(p)
        hidden_at = next((i for i, part in enumerate(rel.parts) if part.startswith(".")), None)
        if hidden_at is not None:
            top = Path(*rel.parts[: hidden_at + 1]).as_posix()
            if top not in hidden:
                hidden.add(top)
                skipped.append((top, "hidden"))
            continue
        try:
            mode = entry.stat().st_mode
        except OSError as exc:
            skipped.append((rel.as_posix(), f"cannot be read ({exc.strerror})"))
            continue
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            skipped.append((rel.as_posix(), f"not a regular file ({_file_kind(mode)})"))
        elif format_of(entry) is None:
            kind = "".join(entry.suffixes[-2:]) if entry.suffix.lower() == ".gz" else entry.suffix
            skipped.append((rel.as_posix(), f"unsupported file type ({kind or 'no extension'})"))
        else:
            files.append(entry)
    return files, skipped


def _read_folder(p: Path, limits: Limits = DEFAULT_LIMITS) -> RawInput:
    """An HF-style folder: every data file in it (subfolders too), in path order, concatenated.

    Files whose tables cannot be concatenated without mangling a column (a list in one file, text in
    another) are refused in one line; :func:`curate.io.load` also refuses files that different adapters
    would read.  Empty files and JSON files holding an object (``dataset_info.json``) are skipped.
    """
    files, skipped = folder_files(p)
    frames: list[pl.LazyFrame] = []
    bad: list[pl.DataFrame] = []
    schemas: dict[str, pl.Schema] = {}
    formats: set[str] = set()
    for f in files:
        name = f.relative_to(p).as_posix()
        if format_of(f) == "json" and _one_object(f):
            skipped.append((name, "not rows (one JSON object: metadata such as dataset_info.json)"))
            continue
        try:
            raw = read_raw(f, limits)
        except InputDataError as exc:
            if "has no rows" in str(exc):
                skipped.append((name, "no rows"))  # an empty shard is not an error in a folder
                continue
            raise
        formats.add(raw.format)
        column = pl.lit(name, dtype=pl.String).alias("_file")
        schema = raw.frame.collect_schema()
        schemas[name] = pl.Schema({k: v for k, v in schema.items() if k not in ("_line", "_file")})
        if schema.names() != ["_line"]:
            frames.append(raw.frame.with_columns(column))
        bad.append(raw.bad_lines.with_columns(column))
    skipped.sort()
    if not schemas:
        listed = "; ".join(f"{name}: {why}" for name, why in skipped[:8]) or "it is empty"
        raise InputDataError(
            f"{p}: the folder holds no data files with rows (read: {', '.join(FORMATS)}; skipped: {listed})"
        )
    _check_columns_agree(p, schemas)
    if not frames and not any(b.height for b in bad):
        raise InputDataError(f"{p} has no rows (every data file in it is empty)")
    frame = pl.concat(frames, how="diagonal_relaxed") if frames else _empty_frame()
    fmt = formats.pop() if len(formats) == 1 else "mixed"
    return RawInput(p, frame, pl.concat(bad), fmt, files=schemas, skipped=skipped)


def _one_object(path: Path) -> bool:
    """Whether a ``.json`` file is one JSON object (metadata, in a folder of data), not rows."""
    try:
        with _open(path) as fh:
            head = fh.read(4096)
    except (OSError, EOFError) as exc:
        raise InputDataError(f"{path}: cannot read the file ({exc})") from exc
    if not head.removeprefix(_BOM).lstrip().startswith(b"{"):
        return False  # an array of rows: not read twice
    data = _read_bytes(path).removeprefix(_BOM)
    try:
        return isinstance(json.loads(data), dict)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # "Extra data": JSON Lines
        return False


def _check_columns_agree(p: Path, schemas: dict[str, pl.Schema]) -> None:
    """Refuse files whose shared column is nested (a list, an object) in one and something else in another:
    concatenating them would turn the nested values into text.  Scalars of different types (CSV's text
    next to JSON's numbers) are left to the adapters, which read numbers from text."""
    seen: dict[str, tuple[str, pl.DataType]] = {}
    for name, schema in schemas.items():
        for column, dtype in schema.items():
            if column not in seen:
                seen[column] = (name, dtype)
                continue
            other, before = seen[column]
            if _clash(before, dtype):
                raise InputDataError(
                    f"{p}: the folder's files do not make one table: column '{column}' is {_describe(before)} in "
                    f"{other} but {_describe(dtype)} in {name}; give them separate inputs (or fix one of them)"
                )
            if before == pl.Null:
                seen[column] = (name, dtype)


def _clash(a: pl.DataType, b: pl.DataType) -> bool:
    if a == pl.Null or b == pl.Null or a == b:
        return False
    if isinstance(a, pl.Struct) and isinstance(b, pl.Struct):
        fields = {f.name: f.dtype for f in a.fields}
        return any(f.name in fields and _clash(fields[f.name], f.dtype) for f in b.fields)
    if isinstance(a, pl.List | pl.Array) and isinstance(b, pl.List | pl.Array):
        return _clash(a.inner, b.inner)
    nested = (pl.Struct, pl.List, pl.Array)
    return isinstance(a, nested) or isinstance(b, nested)


def _describe(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.List | pl.Array):
        return "a list"
    if isinstance(dtype, pl.Struct):
        return "an object"
    return "text" if dtype == pl.String else f"{dtype}"
