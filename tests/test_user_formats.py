"""Formats a user brings (issue 17): a list-valued ``output`` is multi_response, an unknown format's error says
which adapter and options would read it; on real files from /work/shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

import curate
from curate.errors import InputDataError
from curate.io.adapters import detect

DATA = Path("/work/shared/data")
MAGPIE = DATA / "magpie_po_example" / "example_instructions_5res.json"
GSM8K = DATA / "gsm8k" / "test.jsonl"
pytestmark = pytest.mark.skipif(not MAGPIE.is_file(), reason="shared data not mounted")


def test_list_valued_output_is_multi_response(tmp_path: Path) -> None:
    """Magpie's 5 instructions with their 5 responses under ``output`` (as many best-of-n dumps name it): every
    row was rejected as alpaca before (an output must be text); now 5 candidate rows of 5 responses."""
    rows = json.loads(MAGPIE.read_text())
    path = tmp_path / "best_of_5.jsonl"
    path.write_text("".join(json.dumps({"instruction": r["instruction"], "output": r["responses"]}) + "\n"
                            for r in rows))
    loaded = curate.io.load(path)
    assert (loaded.adapter, loaded.table) == ("multi_response", "candidates")
    assert loaded.rejected.collect().height == 0
    df = loaded.frame.collect()
    assert df["responses"].list.len().to_list() == [5] * 5
    assert df["responses"][0][0]["content"] == rows[0]["responses"][0]


def test_text_output_stays_alpaca() -> None:
    import polars as pl

    assert detect(["instruction", "output"], "f", {"instruction": pl.String, "output": pl.String})[0] == "alpaca"
    name, implied = detect(["prompt", "outputs"], "f", {"prompt": pl.String, "outputs": pl.List(pl.String)})
    assert (name, implied) == ("multi_response", {"prompt_field": "prompt", "responses_field": "outputs"})


def test_unknown_format_suggests_adapter_and_options() -> None:
    with pytest.raises(InputDataError) as err:
        curate.read(str(GSM8K))
    message = str(err.value)
    assert "cannot tell the format from its columns ['answer', 'question']" in message
    assert "Try adapter: alpaca, options: {instruction_field: question, output_field: answer}" in message
    # and the suggestion reads the file
    df = curate.read(str(GSM8K), adapter="alpaca", instruction_field="question", output_field="answer").collect()
    assert df.height == 1319 and df["messages"][0][1]["content"].startswith("Janet sells 16 - 3 - 4")


def test_unknown_format_with_a_list_of_answers_suggests_multi_response() -> None:
    import polars as pl

    with pytest.raises(InputDataError, match=r"Try adapter: multi_response, options: \{prompt_field: question, "
                                             r"responses_field: answers\}"):
        detect(["question", "answers"], "f", {"question": pl.String, "answers": pl.List(pl.String)})


MGSM = DATA / "mgsm" / "mgsm_en.tsv"  # question<TAB>answer, no header row (as MMLU's CSV question files)


def test_headerless_tsv_reads_with_columns() -> None:
    # read as before, its first question becomes the header and one row is lost
    assert curate.io.read_raw(MGSM).frame.collect().height == 249
    df = curate.read(str(MGSM), adapter="alpaca", header=False, columns=["question", "answer"],
                     instruction_field="question", output_field="answer").collect()
    assert df.height == 250
    assert df["messages"][0][0]["content"].startswith("Janet’s ducks lay 16 eggs per day.")
    assert df["messages"][0][1]["content"] == "18"
    with pytest.raises(InputDataError, match="header: false needs columns"):
        curate.read(str(MGSM), header=False)
    with pytest.raises(InputDataError, match="add header: false"):
        curate.read(str(MGSM), columns=["question", "answer"])
    with pytest.raises(InputDataError, match=r"expected 3 fields \(as the columns option names\), got 2"):
        curate.read(str(MGSM), header=False, columns=["question", "answer", "extra"])
    with pytest.raises(InputDataError, match="applies to a CSV or TSV file only"):
        curate.read(str(GSM8K), header=False, columns=["question"])


def test_recipe_input_without_header(tmp_path: Path) -> None:
    from curate.runner import run_recipe

    recipe = tmp_path / "mgsm.yaml"
    recipe.write_text(
        "name: mgsm\n"
        "input:\n"
        f"  - path: {MGSM}\n"
        "    header: false\n"
        "    columns: [question, answer]\n"
        "    adapter: alpaca\n"
        "    options: {instruction_field: question, output_field: answer}\n"
        "stages:\n"
        "  - exact_dedup: {}\n"
    )
    # validate reads the input by the run's rules: the named columns, not the first question as a header
    from curate.contract import recipe_input
    from curate.recipe import load_recipe

    assert recipe_input(load_recipe(recipe))[0] == "conversation"
    result = run_recipe(recipe, out=tmp_path / "run")
    data = pl.read_parquet(next((tmp_path / "run" / "data").glob("*.parquet")))
    assert data.height == 250 and result is not None


def test_audit_reference_without_header_and_through_an_adapter() -> None:
    from curate.stages.audit import Reference, load_reference

    plain = load_reference(Reference(path=str(MGSM), header=False, columns=["question", "answer"], text="question"))
    assert plain.height == 250 and plain["reference_text"][0].startswith("Janet’s ducks")
    adapted = load_reference(Reference(path=str(MGSM), header=False, columns=["question", "answer"], adapter="alpaca",
                                       options={"instruction_field": "question"}))
    assert adapted.height == 250 and adapted["reference_text"][0] == plain["reference_text"][0]
    # GSM8K's question/answer JSONL through the alpaca adapter and its options
    gsm = load_reference(Reference(path=str(GSM8K), adapter="alpaca",
                                   options={"instruction_field": "question", "output_field": "answer"}))
    assert gsm.height == 1319
    with pytest.raises(InputDataError, match="options are an adapter's"):
        load_reference(Reference(path=str(GSM8K), text="question", options={"instruction_field": "question"}))


MT_BENCH = DATA / "mt_bench"


def test_joined_mt_bench_questions_and_reference_answers(tmp_path: Path) -> None:
    """MT-Bench ships its 80 questions and GPT-4's reference answers (30 of them) as two files keyed by
    question_id: joined, the turns adapter interleaves user and answer turns."""
    join = {"on": "question_id", "files": [str(MT_BENCH / "reference_answer_gpt-4.jsonl")]}
    df = curate.read(str(MT_BENCH / "question.jsonl"), join=join, assistant_field="choices.0.turns").collect()
    assert df.height == 80
    lengths = df["messages"].list.len().value_counts().sort("messages").rows()
    assert lengths == [(1, 50), (4, 30)]  # questions without a reference answer: their first turn, a prompt
    row = df.filter(pl.col("question_id") == "101").row(0, named=True)
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant"]
    assert row["messages"][1]["content"].startswith("If you have just overtaken the second person")
    inner = curate.read(str(MT_BENCH / "question.jsonl"), join={**join, "how": "inner"},
                        assistant_field="choices.0.turns").collect()
    assert inner.height == 30
    with pytest.raises(InputDataError, match="no column 'qid' to join on"):
        curate.read(str(MT_BENCH / "question.jsonl"), join={"on": "qid", "files": join["files"]})
    # as a recipe input, the joined file relative to the recipe
    recipe = tmp_path / "mt.yaml"
    recipe.write_text(
        "name: mt\ninput:\n"
        f"  - path: {MT_BENCH / 'question.jsonl'}\n"
        "    adapter: turns\n"
        "    options: {assistant_field: choices.0.turns}\n"
        f"    join: {{on: question_id, how: inner, files: [{MT_BENCH / 'reference_answer_gpt-4.jsonl'}]}}\n"
        "stages:\n  - exact_dedup: {}\n"
    )
    from curate.contract import recipe_input
    from curate.recipe import load_recipe
    from curate.runner import run_recipe

    assert "choices" in recipe_input(load_recipe(recipe))[1]  # validate sees the joined file's columns too
    run_recipe(recipe, out=tmp_path / "run")
    data = pl.read_parquet(next((tmp_path / "run" / "data").glob("*.parquet")))
    assert data.height == 30 and set(data["messages"].list.len().to_list()) == {4}


HH = DATA / "hh_rlhf_harmless_base_test" / "test.jsonl.gz"


def test_inspect_reads_raw_files_and_prints_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    from curate import cli

    # a 200-column terminal: the CLI's console fixes its width when curate.cli is first imported (from COLUMNS
    # when the environment has it), so setting COLUMNS for this call alone is not enough
    monkeypatch.setattr(cli, "out", Console(soft_wrap=True, width=200))
    runner = CliRunner()
    result = runner.invoke(cli.app, ["inspect", str(HH), "--head", "2"])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.endswith("2,303 rows, table: preference, adapter: hh_rlhf, 9 rows rejected"), first
    header = next(line for line in result.output.splitlines() if "prompt" in line)
    assert header.split() == ["id", "prompt", "chosen", "rejected"]  # side by side
    assert "what are some pranks with a pen" in result.output
    # --sample is seeded; --json carries the rows shown; an MT-Bench question file is read by the turns adapter
    as_json = runner.invoke(cli.app, ["inspect", str(HH), "--sample", "3", "--seed", "1", "--json"])
    shown = json.loads(as_json.output)["rows_shown"]
    assert len(shown) == 3 and set(shown[0]) == {"id", "prompt", "chosen", "rejected"}
    again = runner.invoke(cli.app, ["inspect", str(HH), "--sample", "3", "--seed", "1", "--json"])
    assert json.loads(again.output)["rows_shown"] == shown
    summary = json.loads(runner.invoke(cli.app, ["inspect", str(MT_BENCH / "question.jsonl"), "--json"]).output)
    assert (summary["adapter"], summary["table"], summary["rows"]) == ("turns", "conversation", 80)
    bad = runner.invoke(cli.app, ["inspect", str(GSM8K)])
    assert bad.exit_code != 0 and "Try adapter: alpaca" in bad.output
