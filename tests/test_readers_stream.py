"""Streamed reading of large JSONL / CSV files (curate.io.readers): same result as reading the file whole.

Each test lowers ``BLOCK_BYTES`` so that a small file spans many blocks, then compares with the whole-file
path (``_read_jsonl`` / ``_read_csv`` on the file's bytes, which is what a file smaller than a block takes).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from curate.errors import InputDataError
from curate.io import load, read_raw, readers
from curate.io.readers import Limits, RawInput


def write(path: Path, lines: list[str | bytes], end: bytes = b"\n") -> Path:
    data = end.join(line if isinstance(line, bytes) else line.encode() for line in lines) + end
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def whole(path: Path, limits: Limits = readers.DEFAULT_LIMITS) -> RawInput:
    """Today's whole-file result: the reader given every byte at once."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    fmt = readers.format_of(path) or ""
    read = readers._read_jsonl if fmt == "jsonl" else readers._read_csv
    return read(path, data, fmt, limits)


def streamed(path: Path, monkeypatch: pytest.MonkeyPatch, block: int, limits: Limits | None = None) -> RawInput:
    with monkeypatch.context() as m:
        m.setattr(readers, "BLOCK_BYTES", block)
        raw = read_raw(path, limits)
    assert raw.spill is not None and raw.spill.is_dir()
    return raw


def _sorted_dtype(dtype: pl.DataType) -> pl.DataType:
    if isinstance(dtype, pl.Struct):
        return pl.Struct({f.name: _sorted_dtype(f.dtype) for f in sorted(dtype.fields, key=lambda f: f.name)})
    if isinstance(dtype, pl.List):
        return pl.List(_sorted_dtype(dtype.inner))
    return dtype


def assert_same(a: RawInput, b: RawInput) -> None:
    """Same rows, values, dtypes and bad lines.  Column (and struct field) order is compared separately:
    Polars orders the columns of a whole-file read by its hash set of row types, blocks by first sight."""
    fa, fb = a.frame.collect(), b.frame.collect()
    assert {k: _sorted_dtype(v) for k, v in fa.schema.items()} == {k: _sorted_dtype(v) for k, v in fb.schema.items()}
    assert fa.to_dicts() == fb.to_dicts()
    assert_frame_equal(a.bad_lines, b.bad_lines)


def assert_identical(a: RawInput, b: RawInput) -> None:
    """:func:`assert_same`, column order included (files whose rows all list their keys in one order)."""
    assert_same(a, b)
    assert_frame_equal(a.frame.collect(), b.frame.collect())


def rec(i: int, **extra: object) -> str:
    return json.dumps({"prompt": f"question {i}", "n": i, **extra})


# -- JSON Lines ------------------------------------------------------------------------------------------


def test_bad_line_in_third_block_keeps_its_file_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [rec(i) for i in range(30)]
    lines[22] = '{"prompt": "broken",, }'
    path = write(tmp_path / "d.jsonl", lines)
    raw = streamed(path, monkeypatch, 256)  # about 8 lines a block
    assert raw.bad_lines["_line"].to_list() == [23]
    assert raw.bad_lines["reason"][0].startswith("malformed JSON")
    assert raw.frame.collect()["_line"].to_list() == [i for i in range(1, 31) if i != 23]
    assert "parquet" in raw.frame.explain().lower()  # a scan of spilled blocks, not an in-memory frame
    assert_identical(raw, whole(path))


def test_field_first_seen_in_a_later_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [rec(i) for i in range(30)]
    lines[25] = rec(25, late={"k": [1, 2]}, tag="x")
    path = write(tmp_path / "d.jsonl", lines)
    raw = streamed(path, monkeypatch, 200)
    frame = raw.frame.collect()
    assert frame.columns == ["prompt", "n", "late", "tag", "_line"]
    assert frame["tag"].to_list()[25] == "x" and frame["tag"].null_count() == 29
    assert_identical(raw, whole(path))


def test_top_level_type_drift_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 'output' is text in most rows, but a whole later block has numbers: the majority decides, file-wide.
    lines = [json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) for i in range(40)]
    for i in (31, 32, 33):
        lines[i] = json.dumps({"instruction": f"q{i}", "output": i})
    path = write(tmp_path / "d.jsonl", lines)
    raw = streamed(path, monkeypatch, 120)
    assert raw.bad_lines.select("_line", "reason").to_dicts() == [
        {"_line": n, "reason": f"column 'output': expected a string (as in most rows), got a number: {n - 1}"}
        for n in (32, 33, 34)
    ]
    assert raw.frame.collect_schema()["output"] == pl.String
    assert_identical(raw, whole(path))


def test_minority_kind_in_first_block_is_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first block alone looks clean (numbers); only the later blocks show that text is the norm.
    lines = [json.dumps({"x": i}) for i in range(3)] + [json.dumps({"x": f"s{i}"}) for i in range(30)]
    path = write(tmp_path / "d.jsonl", lines)
    raw = streamed(path, monkeypatch, 30)
    assert raw.bad_lines["_line"].to_list() == [1, 2, 3]
    assert_identical(raw, whole(path))


def test_numbers_and_nested_types_unify_like_polars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [json.dumps({"n": i, "meta": {"k": i}, "tags": [], "o": None}) for i in range(12)]
    lines += [json.dumps({"n": i + 0.5, "meta": {"k": "text", "j": {"deep": [1]}}, "tags": ["a"]}) for i in range(12)]
    lines += [json.dumps({"n": 1, "meta": {"k": {"obj": 1}}, "tags": [{"t": 1}], "o": {}}) for _ in range(3)]
    path = write(tmp_path / "d.jsonl", lines)
    raw = streamed(path, monkeypatch, 150)
    frame = raw.frame.collect()
    assert frame.schema["n"] == pl.Float64 and frame.schema["meta"] == pl.Struct(
        {"k": pl.String, "j": pl.Struct({"deep": pl.List(pl.Int64)})}
    )
    assert frame["meta"].struct.field("k").to_list()[-1] == '{"obj": 1}'  # Polars' text for an object
    assert_identical(raw, whole(path))


def test_struct_fields_keep_first_seen_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [json.dumps({"x": {"a": i, "b": "s"}}) for i in range(10)]
    lines += [json.dumps({"x": {"b": "t", "a": i, "c": True}}) for i in range(10)]
    raw = streamed(write(tmp_path / "d.jsonl", lines), monkeypatch, 100)
    assert raw.frame.collect_schema()["x"] == pl.Struct({"a": pl.Int64, "b": pl.String, "c": pl.Boolean})
    assert raw.frame.collect()["x"].to_list()[-1] == {"a": 9, "b": "t", "c": True}


def test_always_empty_objects_in_a_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Parquet cannot hold a struct without fields: such blocks are spilled as Arrow IPC instead.
    lines = ['{"o": {}, "l": []}'] * 5 + ['{"o": {"a": 1}, "l": [{"x": 1}]}'] * 5
    path = write(tmp_path / "d.jsonl", lines)
    raw = streamed(path, monkeypatch, 30)
    assert {f.suffix for f in raw.spill.iterdir()} == {".arrow", ".parquet"}  # type: ignore[union-attr]
    assert_identical(raw, whole(path))


def test_message_content_mixing_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def row(content: object) -> str:
        return json.dumps({"messages": [{"role": "user", "content": content}]})

    lines = [row(f"plain {i}") for i in range(10)] + [row([{"type": "text", "text": "parts"}])] * 3
    path = write(tmp_path / "d.jsonl", lines)
    raw = streamed(path, monkeypatch, 100)
    first = raw.frame.collect()["messages"].to_list()[0][0]["content"]
    assert first == [{"type": "text", "text": "plain 0"}]
    assert_identical(raw, whole(path))


@pytest.mark.parametrize("end", [b"\n", b"\r\n"])
def test_bom_blank_lines_and_line_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, end: bytes) -> None:
    lines: list[str | bytes] = [b"\xef\xbb\xbf" + rec(0).encode()]
    for i in range(1, 25):
        lines += [rec(i)] + ([""] if i % 4 == 0 else []) + (["   "] if i % 7 == 0 else [])
    path = write(tmp_path / "d.jsonl", lines, end)
    raw = streamed(path, monkeypatch, 90)
    assert raw.frame.collect()["_line"].to_list()[:6] == [1, 2, 3, 4, 5, 7]
    assert raw.bad_lines.is_empty()
    assert_identical(raw, whole(path))


def test_gzip_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [rec(i) for i in range(50)]
    lines[40] = "[1, 2]"
    path = write(tmp_path / "d.jsonl.gz", lines)
    raw = streamed(path, monkeypatch, 128)
    assert raw.bad_lines["_line"].to_list() == [41]
    assert_identical(raw, whole(path))


def test_line_longer_than_a_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [rec(i) for i in range(10)]
    lines[4] = rec(4, long="x" * 1000)
    lines[7] = '{"long": "' + "y" * 900  # a long bad line, too
    path = write(tmp_path / "d.jsonl", lines)
    raw = streamed(path, monkeypatch, 64)
    assert raw.frame.collect()["long"][4] == "x" * 1000
    assert raw.bad_lines["_line"].to_list() == [8]
    assert_identical(raw, whole(path))


def test_large_file_of_only_bad_or_blank_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = write(tmp_path / "bad.jsonl", ["{nope"] * 40)
    raw = streamed(bad, monkeypatch, 32)
    assert raw.frame.collect().height == 0 and raw.bad_lines.height == 40
    blank = write(tmp_path / "blank.jsonl", [" "] * 200)
    with monkeypatch.context() as m:
        m.setattr(readers, "BLOCK_BYTES", 32)
        with pytest.raises(InputDataError, match=r"blank\.jsonl has no rows \(the file is empty\)"):
            read_raw(blank)


def test_truncated_gzip_is_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "d.jsonl.gz", [rec(i) for i in range(200)])
    path.write_bytes(path.read_bytes()[:-40])
    with monkeypatch.context() as m:
        m.setattr(readers, "BLOCK_BYTES", 256)
        with pytest.raises(InputDataError, match="cannot read the file"):
            read_raw(path)


def test_streamed_preference_file_loads_like_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [
        json.dumps({"prompt": f"Question number {i}?", "chosen": f"good {i}", "rejected": f"bad {i}"})
        for i in range(40)
    ]
    lines[17] = json.dumps({"prompt": "p", "chosen": 5, "rejected": "r"})
    path = write(tmp_path / "prefs.jsonl", lines)
    expected = load(path)
    with monkeypatch.context() as m:
        m.setattr(readers, "BLOCK_BYTES", 300)
        got = load(path)
        assert_frame_equal(got.adapted.collect(), expected.adapted.collect())
        assert_frame_equal(got.rejected.collect(), expected.rejected.collect())


# -- CSV / TSV -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["d.csv", "d.tsv", "d.csv.gz"])
def test_csv_streamed_like_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    sep = "\t" if ".tsv" in name else ","
    lines = ["\ufeffinstruction" + sep + "output"]
    for i in range(60):
        lines.append(f'"multi\nline {i}"{sep}x{i}' if i % 9 == 0 else f"plain {i}{sep}y{i}")
        if i % 13 == 0:
            lines += ["", "short"]
    path = write(tmp_path / name, lines)
    raw = streamed(path, monkeypatch, 100)
    assert "parquet" in raw.frame.explain().lower()
    assert raw.bad_lines["reason"].unique().to_list() == ["expected 2 fields (as in the header), got 1"]
    assert_identical(raw, whole(path))


# -- property: any JSONL-ish file, any block size, same result as whole ------------------------------------

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(-2, 2, allow_nan=False).map(lambda f: round(f, 2)),
    st.text("ab é", max_size=4),
    st.lists(st.integers(0, 3), max_size=2),
    st.fixed_dictionaries({}, optional={"k": st.integers(0, 3), "s": st.text("xy", max_size=2)}),
    # nested drift that Polars reads as text (a number or an object where other lines have text)
    st.fixed_dictionaries({"k": st.one_of(st.integers(0, 3), st.text("xy", max_size=2))}),
    st.fixed_dictionaries({"j": st.one_of(st.text("xy", max_size=2), st.just({"z": 1}))}),
)
_messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.just("user"),
            "content": st.one_of(st.text("pq", max_size=2), st.just([{"type": "text", "text": "t"}])),
        }
    ),
    min_size=1,
    max_size=2,
)
_objects = st.builds(
    lambda fields, messages: json.dumps({**fields, **({"m": messages} if messages else {})}),
    st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), _values, max_size=4),
    st.one_of(st.none(), _messages),
)
def _nested(depth: int) -> object:
    value: object = 1
    for level in range(depth):
        value = [value] if level % 2 else {"n": value}
    return value


# Hostile lines (issue 18): nesting past the limit, lines past the size limit, text that decodes to NUL or a
# lone surrogate (or looks like it and is not), invalid UTF-8.
_hostile = st.one_of(
    st.integers(1, 7).map(lambda d: json.dumps({"a": "x", "n": _nested(d)})),
    st.integers(20, 160).map(lambda n: json.dumps({"a": "L" * n})),
    st.sampled_from(
        ['{"a": "\\u0000"}', '{"a": "x\\ud800"}', '{"a": "\\udc00y"}', '{"a": "\\ud83d\\ude00"}',
         '{"a": "\\\\ud800"}', '{"a": "\\\\\\ud800\\udc00"}', '{"k\\u0000": 1}', b'{"a": "\xff"}',
         '{"a": "[[[[[[[[[[", "b": "{{{{{{{{{{"}']
    ),
)
_lines = st.lists(
    st.one_of(
        _objects,
        _objects,
        _objects,
        st.sampled_from(["", "  ", "{bad", "[1]", '"s"', "\r", '{"a": 1,}', '{"a": 123456789012345678901234567890}']),
        _hostile,
    ),
    min_size=1,
    max_size=40,
)
_limits = st.builds(
    Limits, max_nesting=st.sampled_from([3, 5, 100]), max_line_bytes=st.sampled_from([45, 120, 64 << 20])
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=_lines, block=st.integers(8, 200), crlf=st.booleans(), limits=_limits)
def test_random_files_stream_like_whole(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    lines: list[str],
    block: int,
    crlf: bool,
    limits: Limits,
) -> None:
    path = write(tmp_path_factory.mktemp("prop") / "d.jsonl", list(lines), b"\r\n" if crlf else b"\n")
    if path.stat().st_size <= block:
        block = max(1, path.stat().st_size // 3)
    try:
        expected = whole(path, limits)
        if expected.bad_lines.is_empty() and expected.frame.collect().height == 0:
            raise InputDataError("no rows")
    except InputDataError:
        with pytest.raises(InputDataError, match="has no rows"):
            streamed(path, monkeypatch, block, limits)
        return
    got = streamed(path, monkeypatch, block, limits)
    assert_same(got, expected)
    for text in got.frame.collect().select(pl.col(pl.String)).iter_rows():  # no NUL or surrogate got through
        assert not any(v and ("\x00" in v or any("\ud800" <= c <= "\udfff" for c in v)) for v in text)


_csv_fields = st.one_of(
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r"), max_size=8),
    st.sampled_from(["a\x00b", "multi\nline", 'q"uote', "x" * 60, "y\n" + "z" * 130 + "\nw", "BAD"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(st.lists(_csv_fields, min_size=2, max_size=3), min_size=1, max_size=25),
    block=st.integers(8, 200),
    limit=st.sampled_from([50, 100, 64 << 20]),
)
def test_random_csv_streams_like_whole(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    records: list[list[str]],
    block: int,
    limit: int,
) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["instruction", "output", "extra"])
    writer.writerows(records)
    path = tmp_path_factory.mktemp("csvprop") / "d.csv"
    path.write_bytes(out.getvalue().encode().replace(b"BAD", b"B\xffD"))
    block = min(block, max(1, path.stat().st_size // 3))
    limits = Limits(max_line_bytes=limit)
    try:
        expected = whole(path, limits)
    except InputDataError as exc:
        with pytest.raises(InputDataError, match=re.escape(str(exc).split(": ", 1)[1])):
            streamed(path, monkeypatch, block, limits)
        return
    got = streamed(path, monkeypatch, block, limits)
    assert_identical(got, expected)
    kept = got.frame.collect()
    assert kept.height + got.bad_lines.height == len(records)  # every record kept or a bad line, once
