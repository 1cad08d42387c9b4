"""The command line's polish (issue 19): help without type noise on flags, ``curate init`` listing its starters
and the clean-sft starter end to end, plain-text ``curate stages NAME``, the export table, plurals, ``validate``
reporting every error at once, and "did you mean" for recipe paths from any folder."""

from __future__ import annotations

import re
from pathlib import Path

import click
import polars as pl
import pytest
import typer.main
from typer.testing import CliRunner

from curate.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


def _commands(group: click.Command, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the CLI (``()`` is ``curate`` itself, ``("rm", "fit")`` a subcommand)."""
    paths = [prefix]
    for name, command in getattr(group, "commands", {}).items():
        paths += _commands(command, (*prefix, name))
    return paths


# -- --help ------------------------------------------------------------------------------------------------
def test_no_help_text_shows_a_type_beside_a_flag() -> None:
    paths = _commands(typer.main.get_command(app))
    assert ("rm", "fit") in paths and ("export",) in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, (path, result.output)
    # value options still name their type
    assert "<int>" in runner.invoke(app, ["export", "--help"]).output


# -- curate stages NAME ------------------------------------------------------------------------------------
def test_stage_pages_are_plain_text_with_a_line_per_parameter() -> None:
    from curate.stagedoc import default_text
    from curate.stages import STAGES

    for name, cls in STAGES.items():
        result = runner.invoke(app, ["stages", name])
        assert result.exit_code == 0, (name, result.output)
        text = result.output
        for markup in ("``", ":func:", ":class:", ":mod:", ":meth:", "**"):
            assert markup not in text, (name, markup)
        lines = text.split("parameters (name, type, default, what it does):\n", 1)[1].splitlines()
        fields = cls.__pydantic_fields__
        assert len(lines) == max(1, len(fields)), (name, lines)
        for line, (field, info) in zip(lines, fields.items(), strict=False):
            cells = line.split()
            assert cells[0] == field, (name, line)
            assert default_text(info).split()[0] in line, (name, line)
    page = runner.invoke(app, ["stages", "minhash_dedup"]).output
    line = next(x for x in page.splitlines() if x.split()[:1] == ["on"])
    assert "prompt | response | full" in line and "prompt (system + user turns)" in line
    assert "scope" in page and "global | across_prompts | within_prompt | None" in page
    assert "(curate.dedup.minhash)" in page  # a :mod: role becomes its target's name
    batch = next(x for x in page.splitlines() if x.split()[:1] == ["batch_size"])
    assert batch.split()[1:3] == ["int", "8192"] and "one cached shard" in batch


# -- curate init -------------------------------------------------------------------------------------------
def test_init_without_a_use_lists_the_starters() -> None:
    from curate.starter import STARTERS

    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:] if line.strip()}
    assert set(lines) == set(STARTERS) and "clean-sft" in lines
    for line in lines.values():
        assert len(line.split(maxsplit=1)[1]) > 20, line  # a one-line summary beside each name


@pytest.mark.slow
def test_init_clean_sft_then_run_cleans_its_sample_end_to_end(tmp_path: Path) -> None:
    written = runner.invoke(app, ["init", "clean-sft", str(tmp_path / "proj")])
    assert written.exit_code == 0, written.output
    recipe = tmp_path / "proj" / "clean_sft.yaml"
    assert (tmp_path / "proj" / "data" / "chats.jsonl").is_file()
    result = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    data = pl.read_parquet(tmp_path / "run" / "data" / "conversation.parquet")
    quarantine = pl.read_parquet(tmp_path / "run" / "quarantine" / "*.parquet")
    # every planted fault is set aside with its code: an empty answer (read), a refusal and a cut-off answer
    # (filter), a prompt repeated with other case and spacing (exact) and a near-duplicate prompt (MinHash)
    assert sorted(quarantine["code"]) == sorted(
        ["invalid_field", "refusal", "truncated", "exact_duplicate", "near_duplicate"])
    assert data.height == 16 - 5
    assert data["deita_score"].null_count() == 0 and data["deita_score"].min() > 0
    assert pl.read_parquet(tmp_path / "run" / "export" / "sft" / "train.parquet").height == data.height


# -- curate export -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sft_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """recipes/clean_sft.yaml (no model: seconds) run into a temporary folder."""
    run_dir = tmp_path_factory.mktemp("sft") / "run"
    result = runner.invoke(app, ["run", str(ROOT / "recipes" / "clean_sft.yaml"), "--out", str(run_dir), "-q"])
    assert result.exit_code == 0, result.output
    return run_dir


def test_export_prints_a_table_of_what_it_wrote(sft_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft"
    result = runner.invoke(app, ["export", str(sft_run), "--format", "sft", "--out", str(out), "--test-size", "0.3"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["format", "split", "rows", "path"]
    rows = {cells[1]: cells for cells in (line.split() for line in lines[1:3])}
    assert set(rows) == {"train", "test"}
    for split, (fmt, _, count, path) in rows.items():
        assert fmt == "sft" and path == str(out / f"{split}.parquet")
        assert pl.read_parquet(path).height == int(count.replace(",", "")) > 0
    assert f"settings and sources: {out / 'export.json'}" in result.output


# -- plurals -----------------------------------------------------------------------------------------------
def test_counted_nouns_agree_with_their_number() -> None:
    from curate.words import count, listed

    assert [count(n, "row") for n in (0, 1, 2, 1204)] == ["0 rows", "1 row", "2 rows", "1,204 rows"]
    assert (count(1, "cache entry"), count(3, "cache entry"), count(2, "match")) == (
        "1 cache entry", "3 cache entries", "2 matches")
    assert (listed("key", ["a"]), listed("key", ["a", "b"])) == ("key 'a'", "keys 'a', 'b'")


def test_cli_output_says_1_row_and_1_input(tmp_path: Path) -> None:
    one = tmp_path / "one.parquet"
    pl.DataFrame({"prompt": ["Say hi."], "chosen": ["Hi!"], "rejected": ["No."]}).write_parquet(one)
    shown = runner.invoke(app, ["inspect", str(one)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0].startswith(f"{one}: 1 row, table:"), shown.output
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\ninput: {one}\nstages: [{{filter: {{}}}}]\n")
    checked = runner.invoke(app, ["validate", str(recipe)])
    assert checked.exit_code == 0 and "ok (1 input;" in checked.output, checked.output


def test_run_summary_says_1_row(tmp_path: Path) -> None:
    data = tmp_path / "two.jsonl"
    data.write_text('{"instruction": "Name a colour.", "output": "Blue."}\n'
                    '{"instruction": "Name a colour.", "output": "Green."}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\ninput: {data}\nstages: [{{exact_dedup: {{on: prompt}}}}]\n")
    result = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert ": 1 conversation row -> " in result.output and "set aside: 1 row in " in result.output, result.output


def test_no_maybe_plural_left_in_messages() -> None:
    """No ``row(s)``-style noun in a string of the modules the CLI prints from (the report's HTML aside)."""
    import io
    import tokenize

    found = []
    for path in sorted((ROOT / "curate").rglob("*.py")):
        if "report" in path.parts or path.name == "progress.py":  # HTML; and a module in progress elsewhere
            continue
        for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if token.type == tokenize.STRING and re.search(r"\b(?!type\()[a-z]+\((?:s|es)\)", token.string) \
                    and not token.string.startswith(('"""', "'''")):
                found.append(f"{path.relative_to(ROOT)}:{token.start[0]}: {token.string[:60]}")
    assert not found, "\n".join(found)


# -- curate validate ---------------------------------------------------------------------------------------
PAIRS = ROOT / "sample_data" / "pairs_pairwise.jsonl"


def _validate(tmp_path: Path, body: str) -> tuple[int, str]:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\n" + body)
    result = runner.invoke(app, ["validate", str(recipe)])
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output  # every problem, on one line
    return result.exit_code, lines[0]


def test_validate_reports_every_problem_at_once(tmp_path: Path) -> None:
    code, line = _validate(tmp_path, f"""input:
  - {PAIRS}
  - nope_one.jsonl
  - nope_two.jsonl
models:
  gen: {{backend: transformers, path: models/not-here}}
stages:
  - exact_dedup: {{keep: "highest:no_such_column"}}
  - judge: {{model: gen, mode: pointwise}}
  - respond: {{model: undefined_handle}}
""")
    assert code == 2  # recipe mistakes among them: a bad recipe, however many input files are missing too
    assert "5 problems:" in line
    for fragment in ("'nope_one.jsonl' not found", "'nope_two.jsonl' not found", "no_such_column",
                     "models.gen.path", "not-here not found", "model 'undefined_handle' is not defined"):
        assert fragment in line, (fragment, line)


def test_validate_reports_a_bad_parameter_and_a_missing_input_together(tmp_path: Path) -> None:
    code, line = _validate(tmp_path, "input: [gone.jsonl]\nstages:\n  - filter: {min_prompt_chars: many}\n"
                                     "  - exact_dedup: {onn: prompt}\n")
    assert code == 2 and "3 problems:" in line
    assert "min_prompt_chars" in line and "unknown key 'onn'" in line and "'gone.jsonl' not found" in line


def test_validate_missing_inputs_only_is_exit_3_listing_each(tmp_path: Path) -> None:
    code, line = _validate(tmp_path, "input: [a.jsonl, b.jsonl]\nstages: []\n")
    assert code == 3 and "'a.jsonl' not found" in line and "'b.jsonl' not found" in line


def test_validate_missing_model_path_is_a_recipe_error(tmp_path: Path) -> None:
    code, line = _validate(tmp_path, f"input: [{PAIRS}]\nmodels:\n  gen: {{backend: transformers, path: nowhere}}\n"
                                     "stages:\n  - judge: {model: gen}\n")
    assert code == 2 and "models.gen.path" in line and "2 problems" not in line


# -- did you mean (recipe paths) ---------------------------------------------------------------------------
@pytest.mark.parametrize(("where", "typed", "suggested"), [
    (".", "quickstart.yaml", "recipes/quickstart.yaml"),
    ("tests", "quickstart.yaml", "../recipes/quickstart.yaml"),
    ("tests", "quikstart.yml", "../recipes/quickstart.yaml"),
    (".", "recipe/clean-sft.yaml", "recipes/clean_sft.yaml"),
    (None, "quickstart.yaml", str(ROOT / "recipes" / "quickstart.yaml")),  # a folder outside the checkout
])
def test_a_mistyped_recipe_path_suggests_the_recipe_from_any_folder(
        where: str | None, typed: str, suggested: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT / where if where is not None else tmp_path)
    for command in ("run", "validate"):
        result = runner.invoke(app, [command, typed])
        assert result.exit_code == 2, result.output
        assert f"no such recipe file; did you mean {suggested}?" in result.output.replace("\n", ""), result.output


def test_a_stage_given_by_its_bare_name_takes_its_defaults(tmp_path: Path) -> None:
    from curate.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\ninput: {PAIRS}\nstages: [filter, exact_dedup]\n")
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 0 and "stages: filter, exact_dedup;" in result.output, result.output
    assert load_recipe(recipe).stages == [{"filter": {}}, {"exact_dedup": {}}]
    assert load_recipe(recipe, ["filter.min_prompt_chars=3"]).stage_objects[0].min_prompt_chars == 3
