"""Fuzz the read stage (issue 18): random JSONL, JSON-array and CSV inputs with invalid UTF-8, deep nesting,
huge values, NUL characters, lone surrogates, wrong types, malformed lines and repeated rows, read by the
runner's read stage in ``on_error: quarantine`` mode.

Asserted for every input: nothing but curate's own errors (``CurateError``) escapes; every row written is
either in the stage's output or in its quarantine with a reason, exactly once; the counts add up.  Rows are
told apart by a ``k`` field (kept as metadata in the output, in the raw row of an identical-content repeat)
and, for rows the reader or adapter rejected, by the ``FILE, row N`` their reason names.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curate.errors import CurateError
from curate.recipe import load_recipe
from curate.runner import Runner

MAX_NESTING = 6
MAX_LINE_BYTES = 4000  # max_line_mb below is this many bytes
#: Deeper than Python's JSON parser can recurse (about 1,000): only a check without recursion gets past it.
DEEP = '{"instruction": "d", "output": "o", "z": ' + "[" * 1500 + "]" * 1500 + "}"

_texts = st.one_of(
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r"), max_size=12),
    st.sampled_from(["a\x00b", "\x00", "\ud800", "x\udfff", "\ud83d\ude00", "😀 ok", "\\u0000", "", "  ",
                     'quote " and , comma', "multi\nline"]),
)
_wrong = st.sampled_from([5, 2.5, [1, 2], {"a": 1}, None, True])


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"n": value}
    return value


# One row: (kind, payload).  The kind decides how it is written; the payload is the row's fields.
_rows = st.one_of(
    st.builds(lambda i, o: ("good", {"instruction": i, "output": o}), _texts, _texts),
    st.builds(lambda w: ("good", {"instruction": "q", "output": w}), _wrong),
    st.builds(lambda d: ("good", {"instruction": "deep", "output": "o", "z": _nested(d)}), st.integers(1, 9)),
    st.builds(lambda n: ("good", {"instruction": "huge", "output": "h" * n}), st.integers(100, 8000)),
    st.just(("deep", DEEP)),
    st.just(("repeat", {})),  # the content of the row before it (an identical-content duplicate)
    st.just(("bad_bytes", {"instruction": "bytes", "output": "BAD"})),  # BAD becomes invalid UTF-8
    st.sampled_from([("raw", '{"instruction": "cut'), ("raw", "[1, 2]"), ("raw", "7"),
                      ("raw", '{"instruction": "a", "output": "b",}')]),
    st.builds(lambda n: ("fields", n), st.sampled_from([2, 4])),  # CSV: a record with the wrong field count
)


def _materialise(rows: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Number the rows (``k``) and resolve repeats; rows become ``(kind, dict or raw text)``."""
    out: list[tuple[str, Any]] = []
    last: dict[str, Any] = {"instruction": "first", "output": "row"}
    for k, (kind, payload) in enumerate(rows):
        if kind == "repeat":
            out.append(("good", {**last, "k": k}))
        elif kind in ("good", "bad_bytes"):
            out.append((kind, {**payload, "k": k}))
            last = dict(payload)
        else:
            out.append((kind, payload))
    return out


def _json_bytes(row: dict[str, Any], ascii_only: bool) -> bytes:
    text = json.dumps(row, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate unescaped is invalid UTF-8, as in the wild


def write_jsonl(path: Path, rows: list[tuple[str, Any]], ascii_only: bool) -> list[int]:
    lines = []
    for kind, payload in rows:
        if kind in ("raw", "deep"):
            lines.append(payload.encode())
        elif kind == "fields":
            lines.append(b'{"instruction": "fields", "output": "n/a"')
        else:
            line = _json_bytes(payload, ascii_only)
            lines.append(line.replace(b"BAD", b"B\xffD") if kind == "bad_bytes" else line)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return list(range(1, len(rows) + 1))


def write_json(path: Path, rows: list[tuple[str, Any]], ascii_only: bool) -> list[int]:
    parts = []
    for kind, payload in rows:
        if kind in ("raw", "fields"):  # a malformed element would make the whole document malformed
            parts.append(b"[1, 2]")
        elif kind == "deep":  # json.loads of the document recurses too deep: elements are found by a scan
            parts.append(payload.encode())
        else:
            part = _json_bytes(payload, ascii_only)
            parts.append(part.replace(b"BAD", b"B\xffD") if kind == "bad_bytes" else part)
    path.write_bytes(b"[\n" + b",\n".join(parts) + b"\n]\n")
    return list(range(1, len(rows) + 1))


def write_csv(path: Path, rows: list[tuple[str, Any]], ascii_only: bool) -> list[int]:
    """CSV rows: values as text (objects as JSON); returns each record's first line (the header is line 1)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["instruction", "output", "k"])
    starts, line = [], 2
    for kind, payload in rows:
        before = out.tell()
        if kind in ("raw", "deep"):
            writer.writerow([payload, "raw", len(starts)])
        elif kind == "fields":
            writer.writerow(["fields"] * payload)
        else:
            writer.writerow([v if isinstance(v, str) else json.dumps(v) for v in
                             (payload["instruction"], payload["output"], payload["k"])])
        starts.append(line)
        line += out.getvalue()[before:].count("\n")
    data = out.getvalue().encode("utf-8", "surrogatepass").replace(b"BAD", b"B\xffD")
    path.write_bytes(data)
    return starts


WRITERS = {"jsonl": write_jsonl, "json": write_json, "csv": write_csv}


def read_stage(tmp: Path, data: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The runner's read stage alone, in quarantine mode: (its output, its quarantine)."""
    spec = {"path": str(data), "adapter": "alpaca", "max_nesting": MAX_NESTING,
            "max_line_mb": MAX_LINE_BYTES / (1 << 20)}
    recipe_path = tmp / "r.yaml"
    recipe_path.write_text(yaml.safe_dump({"name": "fuzz", "on_error": "quarantine", "input": [spec], "stages": []}))
    runner = Runner(load_recipe(recipe_path), tmp / "run", resume=False)
    _, stage_dir, report, _, _ = runner._ingest()
    out = pl.read_parquet(stage_dir / "data.parquet")
    quarantine = pl.read_parquet(stage_dir / "quarantine.parquet")
    assert report.rows_in == out.height + quarantine.height
    assert report.rows_out == out.height and report.quarantined == quarantine.height
    return out, quarantine


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_rows, min_size=1, max_size=12), fmt=st.sampled_from(sorted(WRITERS)), ascii_only=st.booleans())
def test_every_row_is_kept_or_quarantined(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, Any]], fmt: str, ascii_only: bool
) -> None:
    tmp = tmp_path_factory.mktemp("fuzz")
    written = _materialise(rows)
    data = tmp / f"d.{fmt}"
    starts = WRITERS[fmt](data, written, ascii_only)
    try:
        out, quarantine = read_stage(tmp, data)
    except CurateError:
        return  # a whole-input error (every row bad, ...): curate's own, with its exit code
    assert quarantine["reason"].str.len_chars().min() or quarantine.is_empty()

    seen: list[int] = []  # the index of each row found, in the output or in quarantine
    if out.height:
        seen += [int(k) for k in out["k"].to_list()]
    line_to_row = {line: index for index, line in enumerate(starts)}
    for reason, raw in zip(quarantine["reason"], quarantine["row"], strict=True):
        assert reason, "a quarantined row without a reason"
        named = re.match(rf"^{re.escape(data.name)}, row (\d+): ", reason)
        if named:
            seen.append(line_to_row[int(named.group(1))])
        else:
            assert reason.startswith("identical content to "), reason
            seen.append(int(json.loads(raw)["k"]))
    assert sorted(seen) == list(range(len(written))), (seen, quarantine["reason"].to_list())
