"""Hostile inputs at the read stage (issue 18, items 1, 3, 4 and 11): deep nesting, folders of mixed files,
inputs that never end, lines too long to hold, lone surrogates and NUL characters.

Each rule is checked on the whole-file path and on the streamed path (``BLOCK_BYTES`` lowered), and through
the runner where the issue is about what a run does (exit code, quarantine, manifest).
"""

from __future__ import annotations

import gzip
import json
import os
import threading
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from curate.errors import InputDataError
from curate.io import adapt, load, read_raw, readers
from curate.io.readers import Limits
from curate.runner import run_recipe


def write(path: Path, lines: list[str | bytes]) -> Path:
    data = b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n"
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def alpaca(i: int, **extra: Any) -> str:
    return json.dumps({"instruction": f"question {i}", "output": f"answer {i}", **extra})


def deep(depth: int) -> str:
    """A JSON array nested ``depth`` levels deep."""
    return "[" * depth + "]" * depth


def recipe(tmp_path: Path, inputs: list[dict[str, Any]], on_error: str = "quarantine") -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "edges", "on_error": on_error, "input": inputs, "stages": []}))
    return path


def quarantined(run_dir: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(f) for f in sorted((run_dir / "quarantine").glob("*.parquet"))])


@pytest.fixture(params=["whole", "streamed"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the whole-file path and again with 64-byte blocks (every file streams)."""
    if request.param == "streamed":
        monkeypatch.setattr(readers, "BLOCK_BYTES", 64)
    return str(request.param)


# -- 1. deep nesting -------------------------------------------------------------------------------------


def test_deep_json_array_file_names_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text(deep(200_000))
    raw = read_raw(path)
    assert raw.bad_lines.select("_line", "reason").row(0) == (1, "nested more than 100 levels deep "
                                                               "(raise the input's max_nesting to read it)")
    with pytest.raises(InputDataError, match=r"deep\.json, row 1: nested more than 100 levels deep") as info:
        load(path)
    assert info.value.exit_code == 3


def test_deep_row_among_good_rows_is_a_bad_line(tmp_path: Path, mode: str) -> None:
    lines = [alpaca(1), alpaca(2), '{"instruction": "x", "output": "y", "z": ' + deep(100_000) + "}",
             alpaca(4), alpaca(5)]
    raw = read_raw(write(tmp_path / "d.jsonl", lines))
    assert raw.frame.collect()["_line"].to_list() == [1, 2, 4, 5]
    assert raw.bad_lines["_line"].to_list() == [3]
    assert raw.bad_lines["reason"][0].startswith("nested more than 100 levels deep")


def test_deep_element_of_a_json_array_is_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text("[" + ",".join([alpaca(1), '{"z": ' + deep(150) + "}", alpaca(3)]) + "]")
    raw = read_raw(path)  # json.loads can parse this one: the limit, not Python's stack, rejects it
    assert raw.frame.collect()["_line"].to_list() == [1, 3]
    assert raw.bad_lines["reason"].to_list() == ["nested more than 100 levels deep "
                                                 "(raise the input's max_nesting to read it)"]
    path.write_text("[" + ",".join([alpaca(1), '{"z": ' + deep(100_000) + "}", alpaca(3)]) + "]")
    raw = read_raw(path)  # too deep for json.loads: the elements are found without recursion
    assert raw.frame.collect()["_line"].to_list() == [1, 3]
    assert raw.bad_lines["_line"].to_list() == [2]


def test_max_nesting_can_be_raised(tmp_path: Path, mode: str) -> None:
    path = write(tmp_path / "d.jsonl", [alpaca(1, z=json.loads(deep(120))), alpaca(2)])
    assert read_raw(path).bad_lines["_line"].to_list() == [1]
    raw = read_raw(path, Limits(max_nesting=200))
    assert raw.bad_lines.is_empty() and raw.frame.collect().height == 2


def test_deep_row_in_a_run(tmp_path: Path) -> None:
    data = write(tmp_path / "d.jsonl", [alpaca(1), alpaca(2), '{"instruction": ' + deep(100_000) + "}",
                                        alpaca(4)])
    result = run_recipe(recipe(tmp_path, [{"path": str(data)}]), tmp_path / "run")
    assert result.rows == 3
    q = quarantined(result.run_dir)
    assert q["reason"].to_list() == ["d.jsonl, row 3: nested more than 100 levels deep "
                                     "(raise the input's max_nesting to read it)"]
    with pytest.raises(InputDataError, match=r"d\.jsonl, row 3: nested more than 100") as info:
        run_recipe(recipe(tmp_path, [{"path": str(data)}], on_error="raise"), tmp_path / "run2")
    assert info.value.exit_code == 3
    raised = recipe(tmp_path, [{"path": str(data), "max_nesting": 200_000}], on_error="raise")
    with pytest.raises(InputDataError, match=r"row 3: .*too deep"):
        run_recipe(raised, tmp_path / "run3")  # past what the JSON parsers can take: still a row error


def test_nested_kinds_polars_cannot_unify_read_as_text(tmp_path: Path, mode: str) -> None:
    """A number in one row and a list of objects in another under one nested key ended in a SchemaError
    (exit 1, found by the fuzz test); both values are now the field's text, on either path."""
    path = write(tmp_path / "d.jsonl", ['{"a": "x", "n": {"n": 1}}', '{"a": "x", "n": {"n": [{"n": 1}]}}'])
    assert read_raw(path).frame.collect()["n"].to_list() == [{"n": "1"}, {"n": '[{"n": 1}]'}]


# -- 4. inputs that never end, lines too long --------------------------------------------------------------


def _returns_within(seconds: float, fn: Any) -> Any:
    """``fn()``'s result or exception; fails (instead of hanging the suite) when it blocks."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed back to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked reading a non-regular file"
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_and_devices_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "d.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(InputDataError, match=r"d\.jsonl: not a regular file \(a FIFO\)"):
        _returns_within(20, lambda: read_raw(fifo))
    with pytest.raises(InputDataError, match=r"/dev/zero: not a regular file \(a character device\)"):
        _returns_within(20, lambda: read_raw("/dev/zero"))
    link = tmp_path / "zero.jsonl"
    link.symlink_to("/dev/zero")
    with pytest.raises(InputDataError, match="not a regular file"):
        _returns_within(20, lambda: read_raw(link))
    # The runner hashes inputs before reading them: it must refuse first, not block in the hash.
    with pytest.raises(InputDataError, match="not a regular file") as info:
        _returns_within(20, lambda: run_recipe(recipe(tmp_path, [{"path": str(fifo)}]), tmp_path / "run"))
    assert info.value.exit_code == 3


def test_line_longer_than_the_limit_is_a_bad_line(tmp_path: Path, mode: str) -> None:
    long = alpaca(2, pad="x" * 5000)
    path = write(tmp_path / "d.jsonl", [alpaca(1), long, alpaca(3)])
    assert read_raw(path).bad_lines.is_empty()
    raw = read_raw(path, Limits(max_line_bytes=1000))
    assert raw.frame.collect()["_line"].to_list() == [1, 3]
    line, reason, row = raw.bad_lines.row(0)
    assert line == 2
    assert reason == (f"the line holds {len(long):,} bytes, more than max_line_mb allows (1,000 bytes); "
                      "raise the input's max_line_mb to read it")
    assert row.startswith('{"instruction": "question 2"') and row.endswith("…") and len(row) <= 201


def test_endless_line_is_cut_without_holding_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that is one 8 MB line (no newline at all) read in 4 KiB blocks with a 64 KiB limit."""
    monkeypatch.setattr(readers, "BLOCK_BYTES", 4096)
    path = tmp_path / "d.jsonl"
    path.write_bytes(alpaca(1).encode() + b"\n" + b"0" * (8 << 20))
    raw = read_raw(path, Limits(max_line_bytes=64 << 10))
    assert raw.frame.collect()["_line"].to_list() == [1]
    assert raw.bad_lines["_line"].to_list() == [2]
    assert raw.bad_lines["reason"][0].startswith("the line holds 8,388,608 bytes, more than max_line_mb")


def test_csv_long_field_does_not_end_the_file(tmp_path: Path, mode: str) -> None:
    """Python's csv module stops at a 128 KiB field by default; the rows after it were lost."""
    path = tmp_path / "d.csv"
    path.write_text(f"instruction,output\nq1,a1\nq2,{'y' * 200_000}\nq3,a3\n")
    raw = read_raw(path)
    assert raw.frame.collect()["_line"].to_list() == [2, 3, 4]
    raw = read_raw(path, Limits(max_line_bytes=1000))
    assert raw.frame.collect()["_line"].to_list() == [2, 4]
    assert raw.bad_lines.select("_line", "reason").rows() == [
        (3, "the line holds 200,003 characters, more than max_line_mb allows (1,000 bytes); "
            "raise the input's max_line_mb to read it")
    ]


def test_csv_error_keeps_reading(tmp_path: Path, mode: str) -> None:
    """A quoted field that grows past the limit is one bad record; the records after it are still read."""
    path = tmp_path / "d.csv"
    path.write_text('instruction,output\nq1,a1\nq2,"' + "z" * 600 + "\n" + "z" * 600 + '"\nq3,a3\nq4,a4\n')
    raw = read_raw(path, Limits(max_line_bytes=1000))
    assert raw.frame.collect()["_line"].to_list() == [2, 5, 6]
    assert raw.bad_lines.select("_line", "reason").rows() == [
        (3, "a field of this record is longer than max_line_mb allows (1,000 bytes); "
            "raise the input's max_line_mb to read it")
    ]


def test_csv_record_with_a_long_inner_line_is_bad_whole(tmp_path: Path, mode: str) -> None:
    """A too-long line inside a quoted multi-line field: the record is bad (at its start line), never kept
    with that line missing from its field."""
    path = tmp_path / "d.csv"
    path.write_text('instruction,output\nq1,a1\nq2,"first\n' + "x" * 3000 + '\nlast"\nq3,a3\n')
    raw = read_raw(path, Limits(max_line_bytes=1000))
    assert raw.frame.collect()["_line"].to_list() == [2, 6]
    assert raw.bad_lines.select("_line", "reason").rows() == [
        (3, "the line holds 3,000 characters, more than max_line_mb allows (1,000 bytes); "
            "raise the input's max_line_mb to read it")
    ]


def test_long_line_quarantined_in_a_run(tmp_path: Path) -> None:
    data = write(tmp_path / "d.jsonl", [alpaca(1), alpaca(2, pad="p" * 3000), alpaca(3)])
    result = run_recipe(recipe(tmp_path, [{"path": str(data), "max_line_mb": 0.001}]), tmp_path / "run")
    assert result.rows == 2
    assert quarantined(result.run_dir)["reason"].str.contains(r"d\.jsonl, row 2: the line holds").all()


# -- 3. folders of mixed files ---------------------------------------------------------------------------


def test_mixed_folder_reads_every_supported_file(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    write(folder / "a.jsonl", [alpaca(1), alpaca(2)])
    (folder / "b.csv").write_text("instruction,output\ncsv q,csv a\n")
    write(folder / "sub" / "c.jsonl", [alpaca(3)])
    (folder / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "README.md").write_text("# data\n")
    loaded = load(folder)
    frame = loaded.frame.collect()
    assert sorted(zip(frame["_file"], frame["_line"], strict=True)) == [
        ("a.jsonl", 1), ("a.jsonl", 2), ("b.csv", 2), ("sub/c.jsonl", 1)
    ]
    assert loaded.skipped == [("README.md", "unsupported file type (.md)"), ("img.png", "unsupported file type (.png)")]

    result = run_recipe(recipe(tmp_path, [{"path": str(folder)}]), tmp_path / "run")
    assert result.rows == 4
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["inputs"][0]["skipped"] == [
        {"path": "README.md", "reason": "unsupported file type (.md)"},
        {"path": "img.png", "reason": "unsupported file type (.png)"},
    ]
    assert manifest["stages"][0]["notes"]["skipped_files"] == 2


def test_folder_of_different_formats_is_refused_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    write(folder / "a.jsonl", [alpaca(1)])
    (folder / "b.json").write_text(json.dumps([{"conversations": [{"from": "human", "value": "hi"},
                                                                  {"from": "gpt", "value": "hello"}]}]))
    with pytest.raises(InputDataError) as info:
        load(folder)
    message = str(info.value)
    assert "\n" not in message
    assert "a.jsonl (alpaca)" in message and "b.json (sharegpt)" in message
    # A column that is text in one file and a list in another would be mangled by concatenation.
    (folder / "b.json").unlink()
    write(folder / "c.jsonl", [json.dumps({"instruction": "q", "output": "a", "tags": ["x"]})])
    (folder / "d.csv").write_text("instruction,output,tags\nq2,a2,x\n")
    with pytest.raises(InputDataError, match=r"column 'tags' .*c\.jsonl.*d\.csv"):
        load(folder)


def test_hf_folder_metadata_is_skipped_and_recorded(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    (folder / "data").mkdir(parents=True)
    pl.DataFrame({"instruction": ["q1", "q2"], "output": ["a1", "a2"]}).write_parquet(
        folder / "data" / "train-00000-of-00001.parquet"
    )
    (folder / "dataset_info.json").write_text(json.dumps({"features": {"instruction": "string"}}))
    (folder / ".gitattributes").write_text("*.parquet filter=lfs\n")
    loaded = load(folder)
    assert loaded.frame.collect().height == 2
    assert [name for name, _ in loaded.skipped] == [".gitattributes", "dataset_info.json"]
    assert "not rows" in dict(loaded.skipped)["dataset_info.json"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_inside_a_folder_is_skipped_and_recorded(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    write(folder / "a.jsonl", [alpaca(1)])
    os.mkfifo(folder / "b.jsonl")
    loaded = _returns_within(20, lambda: load(folder))
    assert loaded.skipped == [("b.jsonl", "not a regular file (a FIFO)")]


# -- 11. lone surrogates and NUL characters --------------------------------------------------------------


SURROGATE = '{"instruction": "a\\ud800b", "output": "c"}'
NUL_ESCAPED = '{"instruction": "n\\u0000ul", "output": "x"}'
PAIR = '{"instruction": "emoji \\ud83d\\ude00", "output": "ok"}'


def test_jsonl_lone_surrogate_and_nul_are_bad_lines(tmp_path: Path, mode: str) -> None:
    path = write(tmp_path / "d.jsonl", [SURROGATE, NUL_ESCAPED, PAIR, alpaca(4),
                                        '{"k\\u0000": "v", "instruction": "q", "output": "a"}'])
    raw = read_raw(path)
    frame = raw.frame.collect()
    assert frame["_line"].to_list() == [3, 4]
    assert frame["instruction"][0] == "emoji \U0001f600"  # a valid surrogate pair is one character
    assert raw.bad_lines.select("_line", "reason").rows() == [
        (1, "column 'instruction': a lone surrogate (\\ud800) is not valid Unicode"),
        (2, "column 'instruction': contains a NUL character (U+0000)"),
        (5, "key 'k\\x00': contains a NUL character (U+0000)"),
    ]


def test_json_array_lone_surrogate_and_nul_are_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text("[" + ",".join([SURROGATE, NUL_ESCAPED, PAIR]) + "]")
    raw = read_raw(path)
    assert raw.frame.collect()["_line"].to_list() == [3]
    assert raw.bad_lines["reason"].to_list() == [
        "column 'instruction': a lone surrogate (\\ud800) is not valid Unicode",
        "column 'instruction': contains a NUL character (U+0000)",
    ]


def test_csv_nul_is_a_bad_line(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"instruction,output\nq1,a\x00b\nq2,a2\n")
    raw = read_raw(path)
    assert raw.frame.collect()["_line"].to_list() == [3]
    assert raw.bad_lines.select("_line", "reason").rows() == [
        (2, "column 'output': contains a NUL character (U+0000)")
    ]


def test_parquet_and_frames_with_nul_are_row_errors(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pl.DataFrame({"instruction": ["q1", "q\x002"], "output": ["a1", "a2"], "meta": [["x"], ["y\x00"]]}).write_parquet(
        path
    )
    rejected = load(path).rejected.collect()
    assert rejected.select("_line", "reason").rows() == [
        (2, "column 'instruction': contains a NUL character (U+0000)")
    ]
    frame = pl.LazyFrame({"instruction": ["q1", "q2"], "output": ["a1", "a2"], "meta": [{"k": "v"}, {"k": "\x00"}]})
    adapted, _ = adapt(frame, file="<frame>")
    assert adapted.collect()["_error"].to_list() == [None, "column 'meta': contains a NUL character (U+0000)"]


def test_nul_row_quarantined_in_a_run(tmp_path: Path) -> None:
    data = write(tmp_path / "d.jsonl", [alpaca(1), NUL_ESCAPED, SURROGATE])
    result = run_recipe(recipe(tmp_path, [{"path": str(data)}]), tmp_path / "run")
    assert result.rows == 1
    assert sorted(quarantined(result.run_dir)["reason"].to_list()) == [
        "d.jsonl, row 2: column 'instruction': contains a NUL character (U+0000)",
        "d.jsonl, row 3: column 'instruction': a lone surrogate (\\ud800) is not valid Unicode",
    ]
