"""Read a data file (or an HF-style folder of them) into raw Polars columns, keeping line numbers.

Formats, by extension: ``.parquet``; ``.jsonl`` / ``.ndjson`` (and ``.gz``); ``.json`` (an array of objects,
or JSON Lines content); ``.csv`` / ``.tsv`` (header row required; and ``.gz``).  A directory is read as the
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
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
#: Which files of a folder are read when it holds several kinds (HF folders carry ``dataset_info.json``).
_FOLDER_PREFERENCE = ("parquet", "jsonl", "csv", "tsv", "json")

BAD_LINES_SCHEMA: dict[str, pl.DataType] = {"_line": pl.Int64(), "reason": pl.String(), "row": pl.String()}
_BOM = b"\xef\xbb\xbf"
# A blank (or whitespace-only) line before some data line: it shifts Polars' row numbers off the lines.
_BLANK_LINE = re.compile(rb"(?:^|\n)[ \t\r]*\n")


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


def read_raw(path: str | Path) -> RawInput:
    """Read ``path`` (file or folder) into a :class:`RawInput`; ``InputDataError`` when it cannot be read.

    Errors: no such file; unsupported extension; no rows (empty file, header only, blank lines only); a JSON
    file whose top level is not an array of objects; a folder with no data files.  A file whose every line
    is bad is *not* an error here: ``frame`` is then empty and ``bad_lines`` says why.
    """
    p = Path(path)
    if not p.exists():
        raise InputDataError(f"{p}: no such file or directory")
    if p.is_dir():
        return _read_folder(p)
    fmt = format_of(p)
    if fmt is None:
        raise InputDataError(f"{p}: unsupported file type (supported: {supported_extensions()})")
    if fmt == "parquet":
        return _read_parquet(p)
    data = _read_bytes(p)
    if not data.strip() or data.strip() == _BOM:
        raise InputDataError(f"{p} has no rows (the file is empty)")
    reader = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "tsv": _read_csv}[fmt]
    raw = reader(p, data, fmt)
    if raw.bad_lines.is_empty() and raw.frame.select(pl.len()).collect().item() == 0:
        raise InputDataError(f"{p} has no rows")
    return raw


# -- helpers ---------------------------------------------------------------------------------------------


def _read_bytes(p: Path) -> bytes:
    try:
        if p.suffix.lower() == ".gz":
            with gzip.open(p, "rb") as fh:
                return fh.read()
        return p.read_bytes()
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
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


def _check_type_drift(data: bytes) -> None:
    """Raise ``_TypeDrift`` when a field's JSON type varies between lines (pyarrow is strict; Polars not)."""
    try:
        pa_json.read_json(io.BytesIO(data), read_options=pa_json.ReadOptions(block_size=1 << 26))
    except Exception as exc:  # only type changes matter; other pyarrow limits are not our problem
        if "changed from" in str(exc):
            raise _TypeDrift(str(exc)) from exc


def _read_jsonl(p: Path, data: bytes, fmt: str = "jsonl") -> RawInput:
    if not data.startswith(_BOM) and not _BLANK_LINE.search(data.rstrip()):
        try:
            frame = pl.read_ndjson(data, infer_schema_length=None)
            _check_type_drift(data)
            return RawInput(p, _with_lines(frame), _bad_frame([]), fmt)
        except (pl.exceptions.PolarsError, _TypeDrift):
            pass
    return _read_jsonl_lines(p, data, fmt)


def _read_jsonl_lines(p: Path, data: bytes, fmt: str) -> RawInput:
    """The careful path: parse each line, keep the bad ones with a reason, read the good ones."""
    objects: list[dict[str, Any]] = []
    numbers: list[int] = []
    texts: list[str] = []
    bad: list[tuple[int, str, str]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
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
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            bad.append((number, f"malformed JSON: {exc.msg} (char {exc.pos})", text))
            continue
        if not isinstance(value, dict):
            bad.append((number, f"expected a JSON object, got {_kind(value)}", text))
            continue
        objects.append(value)
        numbers.append(number)
        texts.append(text)
    return _from_objects(p, objects, numbers, texts, bad, fmt)


def _from_objects(
    p: Path,
    objects: list[dict[str, Any]],
    numbers: list[int],
    texts: list[str],
    bad: list[tuple[int, str, str]],
    fmt: str,
) -> RawInput:
    """Build the frame from parsed objects (their JSON ``texts``), moving type-drifting rows to ``bad``."""
    drift = _type_drift(objects)
    keep = [i for i in range(len(objects)) if i not in drift]
    bad.extend((numbers[i], drift[i], texts[i]) for i in drift)
    if _unify_message_content([objects[i] for i in keep]):
        texts = [
            json.dumps(o, ensure_ascii=False) if i not in drift else t
            for i, (o, t) in enumerate(zip(objects, texts, strict=True))
        ]
    good_texts = [texts[i] for i in keep]
    good_numbers = [numbers[i] for i in keep]
    frame, unreadable = _ndjson_frame(good_texts)
    if unreadable:
        bad.extend((good_numbers[i], reason, good_texts[i]) for i, reason in unreadable.items())
        good_numbers = [n for i, n in enumerate(good_numbers) if i not in unreadable]
    bad.sort(key=lambda row: row[0])
    lf = _with_lines(frame, good_numbers) if good_numbers else _empty_frame()
    return RawInput(p, lf, _bad_frame(bad), fmt)


def _type_drift(objects: list[dict[str, Any]]) -> dict[int, str]:
    """Rows whose top-level value has a different JSON type than most rows' value in that column."""
    kinds: dict[str, Counter[str]] = {}
    for obj in objects:
        for key, value in obj.items():
            if value is not None:
                kinds.setdefault(key, Counter())[_kind(value)] += 1
    order = ["a string", "an object", "an array", "a number", "a boolean"]
    expected = {
        key: max(counts, key=lambda k: (counts[k], -order.index(k)))
        for key, counts in kinds.items()
        if len(counts) > 1
    }
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


def _unify_message_content(objects: list[dict[str, Any]]) -> bool:
    """Wrap string contents as ``[{type: text, text}]`` where other messages of the column use part lists.

    OpenAI-style logs mix both (a string system prompt, a list of parts for the user); Polars would turn the
    lists into JSON text.  Wrapping is lossless: the adapters join text parts back into the same string.
    Returns whether anything changed.
    """
    mixed: list[str] = []
    for key in {k for obj in objects for k, v in obj.items() if isinstance(v, list)}:
        kinds = {
            type(m["content"])
            for obj in objects
            if isinstance(obj.get(key), list)
            for m in obj[key]
            if isinstance(m, dict) and isinstance(m.get("content"), str | list)
        }
        if kinds == {str, list}:
            mixed.append(key)
    for key in mixed:
        for obj in objects:
            for m in obj.get(key) or []:
                if isinstance(m, dict) and isinstance(m.get("content"), str):
                    m["content"] = [{"type": "text", "text": m["content"]}]
    return bool(mixed)


def _ndjson_frame(texts: list[str]) -> tuple[pl.DataFrame, dict[int, str]]:
    """Read JSON texts with Polars; isolate lines Polars rejects (huge ints, ...) by bisection."""
    if not texts:
        return pl.DataFrame(), {}
    try:
        return pl.read_ndjson("\n".join(texts).encode(), infer_schema_length=None), {}
    except pl.exceptions.PolarsError as exc:
        if len(texts) == 1:
            return pl.DataFrame(), {0: f"unreadable JSON value: {str(exc).splitlines()[0]}"}
    half = len(texts) // 2
    left, left_bad = _ndjson_frame(texts[:half])
    right, right_bad = _ndjson_frame(texts[half:])
    unreadable = {**left_bad, **{half + i: reason for i, reason in right_bad.items()}}
    frames = [f for f in (left, right) if f.width]
    return (pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()), unreadable


# -- JSON documents --------------------------------------------------------------------------------------


def _read_json(p: Path, data: bytes, fmt: str = "json") -> RawInput:
    body = data[len(_BOM) :] if data.startswith(_BOM) else data
    head = body.lstrip()[:1]
    if head == b"{":
        first = body.lstrip().split(b"\n", 1)[0].strip()
        try:
            is_lines = isinstance(json.loads(first), dict)
        except (json.JSONDecodeError, UnicodeDecodeError):
            is_lines = False
        if is_lines:  # JSON Lines content in a .json file
            return _read_jsonl(p, data, "json")
        raise InputDataError(
            f"{p}: the top level is a JSON object{_keys_hint(body)}, not an array of objects"
        )
    if head != b"[":
        raise InputDataError(f"{p}: the top level is not a JSON array of objects")
    text = body.decode("utf-8", "surrogateescape")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputDataError(
            f"{p}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    if not document:
        raise InputDataError(f"{p} has no rows (an empty array)")
    objects: list[dict[str, Any]] = []
    numbers: list[int] = []
    texts: list[str] = []
    bad: list[tuple[int, str, str]] = []
    for index, value in enumerate(document, start=1):
        dumped = json.dumps(value, ensure_ascii=False) if not _has_surrogates(value) else None
        if dumped is None:
            bad.append((index, "invalid UTF-8 in a string of this element", json.dumps(value)))
        elif not isinstance(value, dict):
            bad.append((index, f"expected a JSON object, got {_kind(value)}", dumped))
        else:
            objects.append(value)
            numbers.append(index)
            texts.append(dumped)
    if not objects and all(not r[1].startswith("invalid UTF-8") for r in bad):
        raise InputDataError(
            f"{p}: the top level is not an array of objects (element 1 is {_kind(document[0])})"
        )
    return _from_objects(p, objects, numbers, texts, bad, fmt)


def _keys_hint(body: bytes) -> str:
    try:
        keys = list(json.loads(body))[:6]
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    return f" with keys {keys} (nested formats such as SQuAD need flattening first)"


def _has_surrogates(value: Any) -> bool:
    """True when a decoded string holds an invalid UTF-8 byte (a lone surrogate from surrogateescape)."""
    if isinstance(value, str):
        return any("\udc80" <= ch <= "\udcff" for ch in value) if not value.isascii() else False
    if isinstance(value, list):
        return any(_has_surrogates(v) for v in value)
    if isinstance(value, dict):
        return any(_has_surrogates(k) or _has_surrogates(v) for k, v in value.items())
    return False


# -- CSV / TSV -------------------------------------------------------------------------------------------


def _read_csv(p: Path, data: bytes, fmt: str) -> RawInput:
    """Python's csv module (C speed): exact start lines, strict field counts, blank lines skipped.

    Polars' CSV reader would silently fill short rows with nulls and turn blank lines into all-null rows.
    All values are strings (CSV has no types); an empty field is null.
    """
    text = data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
    header: list[str] | None = None
    rows: list[list[str]] = []
    numbers: list[int] = []
    bad: list[tuple[int, str, str]] = []
    last = 0
    try:
        for record in reader:
            start, last = last + 1, reader.line_num
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
                    (start, f"expected {len(header)} fields (as in the header), got {len(record)}", raw)
                )
            else:
                rows.append(record)
                numbers.append(start)
    except csv.Error as exc:
        bad.append((last + 1, f"malformed CSV: {exc}", ""))
    if header is None:
        raise InputDataError(f"{p} has no rows (no header line)")
    if not rows:
        if not bad:
            raise InputDataError(f"{p} has no rows (only a header)")
        return RawInput(p, _empty_frame(), _bad_frame(bad), fmt)
    columns = {name: [r[i] or None for r in rows] for i, name in enumerate(header)}
    frame = pl.DataFrame(columns, schema=dict.fromkeys(header, pl.String))
    return RawInput(p, _with_lines(frame, numbers), _bad_frame(bad), fmt)


def _dedupe(names: list[str]) -> list[str]:
    seen: Counter[str] = Counter()
    out = []
    for name in names:
        name = name.strip() or "column"
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


# -- folders ---------------------------------------------------------------------------------------------


def _read_folder(p: Path) -> RawInput:
    """An HF-style folder: every data file of the preferred format, in path order, concatenated."""
    files = [
        f
        for f in sorted(p.rglob("*"))
        if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts) and format_of(f)
    ]
    by_format: dict[str, list[Path]] = {}
    for f in files:
        by_format.setdefault(format_of(f) or "", []).append(f)
    fmt = next((f for f in _FOLDER_PREFERENCE if f in by_format), None)
    if fmt is None:
        raise InputDataError(f"{p}: the folder holds no data files (looked for {', '.join(FORMATS)})")
    frames: list[pl.LazyFrame] = []
    bad: list[pl.DataFrame] = []
    for f in by_format[fmt]:
        try:
            raw = read_raw(f)
        except InputDataError as exc:
            if "has no rows" in str(exc):
                continue  # an empty shard is not an error in a folder
            raise
        name = pl.lit(f.relative_to(p).as_posix(), dtype=pl.String).alias("_file")
        if raw.frame.collect_schema().names() != ["_line"]:
            frames.append(raw.frame.with_columns(name))
        bad.append(raw.bad_lines.with_columns(name))
    if not frames and not any(b.height for b in bad):
        raise InputDataError(f"{p} has no rows (every {fmt} file in it is empty)")
    frame = pl.concat(frames, how="diagonal_relaxed") if frames else _empty_frame()
    return RawInput(p, frame, pl.concat(bad), fmt)
