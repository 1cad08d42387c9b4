"""The command line: outputs, and one clear line plus an exit code for every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def recipe_for(tmp_path: Path, data_name: str, content: bytes | str, stages: str = "[]",
               extra: str = "") -> Path:
    data = tmp_path / data_name
    data.write_bytes(content if isinstance(content, bytes) else content.encode())
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\ninput: {data_name}\n{extra}stages: {stages}\n")
    return recipe


def assert_one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    text = result.stderr.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    for fragment in fragments:
        assert fragment in text, text


def test_run_prints_stage_summary_and_output(tmp_path: Path) -> None:
    result = invoke("run", str(ROOT / "recipes" / "clean_sft.yaml"), "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    for label in ("00-read", "01-filter", "02-exact_dedup", "03-minhash_dedup"):
        assert label in result.output
    assert "conversation.parquet" in result.output
    again = invoke("run", str(ROOT / "recipes" / "clean_sft.yaml"), "--out", str(tmp_path / "run"))
    assert "(cached)" in again.output


def test_log_json(tmp_path: Path) -> None:
    result = invoke("run", str(ROOT / "recipes" / "clean_sft.yaml"), "--out", str(tmp_path / "run"), "--log-json")
    events = [json.loads(line) for line in result.output.strip().splitlines()]
    assert events[0]["event"] == "run_start" and events[-1]["event"] == "run_done"
    assert {e["label"] for e in events if e["event"] == "stage_done"} >= {"00-read", "03-minhash_dedup"}


def test_inspect(tmp_path: Path) -> None:
    invoke("run", str(ROOT / "recipes" / "clean_sft.yaml"), "--out", str(tmp_path / "run"), "--quiet")
    result = invoke("inspect", str(tmp_path / "run"), "--json")
    summary = json.loads(result.output)
    assert summary["table"] == "conversation"
    assert summary["rows"] > 100
    assert summary["lengths"]["prompt_chars"]["min"] > 0
    text = invoke("inspect", str(tmp_path / "run" / "data" / "conversation.parquet"))
    assert text.exit_code == 0 and "response_chars" in text.output


def test_validate_and_stages() -> None:
    assert invoke("validate", str(ROOT / "recipes" / "clean_sft.yaml")).exit_code == 0
    listing = invoke("stages")
    assert "minhash_dedup" in listing.output and "exact_dedup" in listing.output
    detail = invoke("stages", "minhash_dedup")
    assert "threshold" in detail.output


def test_missing_input_file(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ninput: nope.jsonl\nstages: []\n")
    assert_one_line_error(invoke("run", str(recipe), "--out", str(tmp_path / "o")), 3, "nope.jsonl", "no such file")


def test_missing_recipe(tmp_path: Path) -> None:
    assert_one_line_error(invoke("run", str(tmp_path / "x.yaml")), 2, "no such recipe file")


def test_unknown_stage(tmp_path: Path) -> None:
    recipe = recipe_for(tmp_path, "d.jsonl", '{"instruction": "q", "output": "a"}\n', "[{exact_dedupe: {}}]")
    assert_one_line_error(invoke("run", str(recipe)), 2, "unknown stage 'exact_dedupe'", "exact_dedup")


def test_wrong_parameter_type(tmp_path: Path) -> None:
    recipe = recipe_for(tmp_path, "d.jsonl", '{"instruction": "q", "output": "a"}\n',
                        "[{filter: {min_prompt_chars: many}}]")
    assert_one_line_error(invoke("validate", str(recipe)), 2, "stages[0].filter.min_prompt_chars")


def test_malformed_json_line_names_file_and_row(tmp_path: Path) -> None:
    content = '{"instruction": "q", "output": "a"}\n{"instruction": "broken"\n'
    recipe = recipe_for(tmp_path, "d.jsonl", content)
    assert_one_line_error(invoke("run", str(recipe), "--out", str(tmp_path / "o")), 3, "d.jsonl", "row 2")


def test_malformed_json_line_quarantined_when_asked(tmp_path: Path) -> None:
    content = '{"instruction": "q", "output": "a"}\n{"instruction": "broken"\n'
    recipe = recipe_for(tmp_path, "d.jsonl", content, extra="on_error: quarantine\n")
    result = invoke("run", str(recipe), "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert "1 set aside" in result.output


def test_wrong_column_types(tmp_path: Path) -> None:
    recipe = recipe_for(tmp_path, "d.jsonl", '{"instruction": "q", "output": 5}\n{"instruction": "r", "output": 6}\n',
                        extra="")
    result = invoke("run", str(recipe), "--out", str(tmp_path / "o"))
    assert_one_line_error(result, 3, "d.jsonl", "output")


def test_invalid_utf8(tmp_path: Path) -> None:
    content = b'{"instruction": "q", "output": "a"}\n{"instruction": "\xff\xfe", "output": "b"}\n'
    recipe = recipe_for(tmp_path, "d.jsonl", content)
    assert_one_line_error(invoke("run", str(recipe), "--out", str(tmp_path / "o")), 3, "d.jsonl", "row 2", "UTF-8")


def test_empty_input(tmp_path: Path) -> None:
    recipe = recipe_for(tmp_path, "d.jsonl", "")
    assert_one_line_error(invoke("run", str(recipe), "--out", str(tmp_path / "o")), 3, "d.jsonl", "no rows")


def test_undetectable_format(tmp_path: Path) -> None:
    recipe = recipe_for(tmp_path, "d.jsonl", '{"foo": 1, "bar": 2}\n')
    assert_one_line_error(invoke("run", str(recipe), "--out", str(tmp_path / "o")), 3, "d.jsonl", "foo")


@pytest.mark.parametrize("args", [["run", "--help"], ["--version"]])
def test_help_and_version(args: list[str]) -> None:
    assert invoke(*args).exit_code == 0
