"""Readers: each format, line numbers, bad lines and input errors (curate.io.readers)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from curate.errors import InputDataError
from curate.io import load, read, read_raw


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    data = b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n"
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def rows(lf: pl.LazyFrame) -> list[dict]:
    return lf.collect().to_dicts()


# -- formats -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["d.jsonl", "d.ndjson", "d.jsonl.gz", "d.json"])
def test_json_lines_formats(tmp_path: Path, name: str) -> None:
    path = write_lines(tmp_path / name, ['{"a": "x", "n": 1}', '{"a": "y", "n": 2}'])
    raw = read_raw(path)
    assert rows(raw.frame) == [{"a": "x", "n": 1, "_line": 1}, {"a": "y", "n": 2, "_line": 2}]
    assert raw.bad_lines.is_empty()


def test_blank_lines_keep_true_line_numbers(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", ["", '{"a": 1}', "   ", "", '{"a": 2}', "\r", '{"a": 3}'])
    raw = read_raw(path)
    assert [r["_line"] for r in rows(raw.frame)] == [2, 5, 7]
    assert raw.bad_lines.is_empty()


def test_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n{"a": 2}\r\n')
    assert rows(read_raw(path).frame) == [{"a": 1, "_line": 1}, {"a": 2, "_line": 2}]


def test_columns_first_seen_late_are_kept(tmp_path: Path) -> None:
    lines = ['{"a": "x"}'] * 300 + ['{"a": "y", "late": 5}']
    frame = read_raw(write_lines(tmp_path / "d.jsonl", lines)).frame.collect()
    assert frame["late"].to_list()[-1] == 5 and frame.height == 301


def test_json_array_numbers_elements(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"a": 1}, {"a": 2, "b": "z"}], indent=2))
    assert rows(read_raw(path).frame) == [{"a": 1, "b": None, "_line": 1}, {"a": 2, "b": "z", "_line": 2}]


def test_json_array_with_non_objects(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"a": 1}, 7, {"a": 3}]))
    raw = read_raw(path)
    assert [r["_line"] for r in rows(raw.frame)] == [1, 3]
    assert raw.bad_lines.to_dicts() == [
        {"_line": 2, "reason": "expected a JSON object, got a number", "row": "7"}
    ]


def test_csv_lines_are_record_start_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('instruction,output\n"multi\nline",x\n\nplain,y\nshort\n')
    raw = read_raw(path)
    assert rows(raw.frame) == [
        {"instruction": "multi\nline", "output": "x", "_line": 2},
        {"instruction": "plain", "output": "y", "_line": 5},
    ]
    assert raw.bad_lines.to_dicts() == [
        {"_line": 6, "reason": "expected 2 fields (as in the header), got 1", "row": "short"}
    ]


def test_tsv_and_empty_fields_are_null(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("instruction\tinput\toutput\nq\t\ta\n")
    assert rows(read_raw(path).frame) == [{"instruction": "q", "input": None, "output": "a", "_line": 2}]


def test_parquet_is_lazy_and_numbered(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pl.DataFrame({"a": ["x", "y", "z"]}).write_parquet(path)
    raw = read_raw(path)
    assert "parquet" in raw.frame.explain().lower()  # a scan, not an in-memory frame
    assert raw.frame.collect()["_line"].to_list() == [1, 2, 3]
    assert raw.frame.collect_schema()["_line"] == pl.Int64


def test_hf_folder_concatenates_shards(tmp_path: Path) -> None:
    data = tmp_path / "ds" / "data"
    data.mkdir(parents=True)
    pl.DataFrame({"a": ["x", "y"]}).write_parquet(data / "train-00000-of-00002.parquet")
    pl.DataFrame({"a": ["z"]}).write_parquet(data / "train-00001-of-00002.parquet")
    pl.DataFrame({"a": []}, schema={"a": pl.String}).write_parquet(data / "test-00000-of-00001.parquet")
    (tmp_path / "ds" / "dataset_info.json").write_text('{"features": {}}')
    (tmp_path / "ds" / ".cache").mkdir()
    raw = read_raw(tmp_path / "ds")
    assert rows(raw.frame) == [
        {"a": "x", "_line": 1, "_file": "data/train-00000-of-00002.parquet"},
        {"a": "y", "_line": 2, "_file": "data/train-00000-of-00002.parquet"},
        {"a": "z", "_line": 1, "_file": "data/train-00001-of-00002.parquet"},
    ]
    assert raw.format == "parquet"


def test_jsonl_folder_reports_bad_lines_with_file(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.jsonl", ['{"a": 1}'])
    write_lines(tmp_path / "b.jsonl", ['{"a": 2}', "{oops"])
    raw = read_raw(tmp_path)
    assert raw.frame.collect().height == 2
    assert raw.bad_lines.select("_file", "_line").to_dicts() == [{"_file": "b.jsonl", "_line": 2}]


# -- bad lines -------------------------------------------------------------------------------------------


def test_malformed_json_line_is_kept_aside(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", ['{"a": 1}', '{"a": 2,, }', "", '{"a": 3}'])
    raw = read_raw(path)
    assert [r["_line"] for r in rows(raw.frame)] == [1, 4]
    bad = raw.bad_lines.row(0, named=True)
    assert bad["_line"] == 2 and bad["reason"].startswith("malformed JSON: Expecting property name")
    assert bad["row"] == '{"a": 2,, }'


def test_malformed_line_message_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", ['{"instruction": "q", "output": "a"}', '{"instruction": "q2"'])
    with pytest.raises(InputDataError, match=r"d\.jsonl, row 2: malformed JSON"):
        read(path)
    loaded = load(path)
    assert loaded.frame.collect().height == 1
    assert loaded.rejected.collect()["_line"].to_list() == [2]


def test_invalid_utf8_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", ['{"a": "ok"}', b'{"a": "bad \xff byte"}'])
    raw = read_raw(path)
    assert rows(raw.frame) == [{"a": "ok", "_line": 1}]
    assert raw.bad_lines.to_dicts() == [
        {"_line": 2, "reason": "invalid UTF-8 at byte 11 of the line", "row": '{"a": "bad \ufffd byte"}'}
    ]


def test_invalid_utf8_in_csv_and_json_array(tmp_path: Path) -> None:
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes(b"a,b\nx,y\nbad\xfe,z\n")
    raw = read_raw(csv_path)
    assert raw.frame.collect().height == 1
    assert raw.bad_lines.select("_line", "reason").to_dicts() == [{"_line": 3, "reason": "invalid UTF-8"}]
    json_path = tmp_path / "d.json"
    json_path.write_bytes(b'[{"a": "x"}, {"a": "\xff"}]')
    raw = read_raw(json_path)
    assert raw.frame.collect().height == 1 and raw.bad_lines["_line"].to_list() == [2]


def test_mixed_type_column_does_not_crash(tmp_path: Path) -> None:
    lines = [json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) for i in range(5)]
    lines[3] = '{"instruction": "q3", "output": 42}'
    path = write_lines(tmp_path / "d.jsonl", lines)
    raw = read_raw(path)
    assert raw.frame.collect().height == 4
    assert raw.bad_lines.select("_line", "reason").to_dicts() == [
        {"_line": 4, "reason": "column 'output': expected a string (as in most rows), got a number: 42"}
    ]
    loaded = load(path)
    assert loaded.frame.collect().height == 4
    assert loaded.rejected.collect()["reason"].to_list() == [raw.bad_lines["reason"][0]]


def test_non_object_line(tmp_path: Path) -> None:
    raw = read_raw(write_lines(tmp_path / "d.jsonl", ['{"a": 1}', '"just a string"', "[1, 2]"]))
    assert raw.bad_lines["reason"].to_list() == [
        "expected a JSON object, got a string",
        "expected a JSON object, got an array",
    ]


# -- errors ----------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match=r"nope\.jsonl: no such file"):
        read_raw(tmp_path / "nope.jsonl")


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "d.xlsx"
    path.write_text("x")
    with pytest.raises(
        InputDataError, match=r"d\.xlsx: unsupported file type \(supported: \.parquet, \.jsonl"
    ):
        read_raw(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [("e.jsonl", b""), ("e.jsonl", b"\n  \n\n"), ("e.csv", b"a,b\n"), ("e.json", b"[]"), ("e.json", b"")],
)
def test_empty_input_has_no_rows(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputDataError, match=r"e\.\w+ has no rows"):
        read_raw(path)
    with pytest.raises(InputDataError, match="has no rows"):
        read(path)


def test_empty_parquet_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pl.DataFrame({"a": []}, schema={"a": pl.String}).write_parquet(path)
    with pytest.raises(InputDataError, match="has no rows"):
        read_raw(path)


def test_json_top_level_object_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "x"}]}, indent=1))
    with pytest.raises(InputDataError, match=r"squad\.json: the top level is a JSON object with keys"):
        read_raw(path)


def test_json_array_of_scalars_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text("[1, 2]")
    with pytest.raises(InputDataError, match="not an array of objects"):
        read_raw(path)


def test_malformed_json_document(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[{"a": 1},\n {"a": }]')
    with pytest.raises(InputDataError, match=r"d\.json: malformed JSON at line 2, column 8"):
        read_raw(path)


def test_folder_without_data(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("hi")
    with pytest.raises(InputDataError, match="holds no data files"):
        read_raw(tmp_path)


def test_all_lines_bad_is_reported_by_load(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", ["{bad", "[1]"])
    raw = read_raw(path)
    assert raw.frame.collect().height == 0 and raw.bad_lines.height == 2
    with pytest.raises(
        InputDataError, match=r"d\.jsonl has no usable rows: none of its 2 lines .*row 1: malformed"
    ):
        load(path)


# -- real files ------------------------------------------------------------------------------------------

REAL = {
    "code_alpaca/code_alpaca_2k.json": 2017,
    "code_alpaca/seed_tasks.jsonl": 21,
    "self_instruct/seed_tasks.jsonl": 175,
    "self_instruct/user_oriented_instructions.jsonl": 252,
    "self_instruct/predictions_davinci.jsonl": 252,
    "magpie_po_example/example_instructions.jsonl": 5,
    "magpie_po_example/example_instructions_5res.json": 5,
    "magpie_po_example/example_instructions_5res_armorm.json": 5,
    "hh_rlhf_harmless_base_test/test.jsonl.gz": 2312,
    "oasst_en_100_trees/en_100_tree.jsonl": 100,
    "gsm8k/test.jsonl": 1319,
    "humaneval/HumanEval.jsonl.gz": 164,
}


@pytest.mark.parametrize(("name", "count"), sorted(REAL.items()))
def test_real_files_read_completely(shared_data: Path, name: str, count: int) -> None:
    raw = read_raw(shared_data / name)
    assert raw.bad_lines.is_empty()
    frame = raw.frame.collect()
    assert frame.height == count
    assert frame["_line"].to_list() == list(range(1, count + 1))


def test_real_scalar_lines_are_bad_lines(shared_data: Path) -> None:
    raw = read_raw(shared_data / "oasst_en_100_trees/prompt_lottery_en_250_text.jsonl")
    assert raw.bad_lines.height == 250 and raw.bad_lines["reason"].unique().to_list() == [
        "expected a JSON object, got a string"
    ]


def test_real_squad_file_is_rejected_clearly(shared_data: Path) -> None:
    with pytest.raises(InputDataError, match=r"xquad\.en\.json: the top level is a JSON object with keys"):
        read_raw(shared_data / "xquad/xquad.en.json")


def test_empty_objects_next_to_an_unreadable_line_keep_their_rows(tmp_path: Path) -> None:
    # Polars rejects the huge number, so the reader bisects; halves of `{}` lines have rows but no columns.
    path = write_lines(tmp_path / "d.jsonl", ["{}", "{}", '{"a": 1234567890123456789012345678901234567890123}', "{}"])
    raw = read_raw(path)
    assert raw.frame.collect()["_line"].to_list() == [1, 2, 4]
    assert raw.bad_lines["_line"].to_list() == [3]
