"""The command-line finish of issue 9: ``curate init``, ``--help`` examples, errors that suggest the fix, and
the notebook API (``_repr_html_``, ``Pipeline.run(progress=True)``)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import typer.main
from typer.testing import CliRunner

import curate
from curate.cli import app
from curate.errors import ModelError, RecipeError
from curate.recipe import load_recipe
from curate.stages import STAGES
from curate.starter import STARTERS, write_starter

runner = CliRunner()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- curate init -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use", sorted(STARTERS))
def test_init_writes_a_recipe_that_validates(use: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", use, str(tmp_path / "proj")])
    assert result.exit_code == 0, result.output
    recipe = tmp_path / "proj" / f"{use.replace('-', '_')}.yaml"
    assert recipe.is_file() and f"wrote {recipe}" in result.output
    checked = runner.invoke(app, ["validate", str(recipe)])
    assert checked.exit_code == 0, checked.output
    assert "ok (1 input;" in checked.output
    loaded = load_recipe(recipe)
    assert loaded.stage_objects  # a starter has stages, not just comments
    assert loaded.name == use.replace("-", "_")


def test_init_shares_sample_data_refuses_to_overwrite_and_forces(tmp_path: Path) -> None:
    write_starter("magpie-dpo", tmp_path)
    write_starter("audit", tmp_path)  # same sample instructions: shared, not a conflict
    (tmp_path / "audit.yaml").write_text("# mine\n")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    refused = runner.invoke(app, ["init", "audit", str(tmp_path)])
    assert refused.exit_code == 2 and "--force" in refused.output
    assert (tmp_path / "audit.yaml").read_text() == "# mine\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    forced = runner.invoke(app, ["init", "audit", str(tmp_path), "--force", "--name", "decontam"])
    assert forced.exit_code == 0, forced.output
    assert load_recipe(tmp_path / "audit.yaml").name == "decontam"


def test_init_unknown_use_suggests_the_nearest() -> None:
    result = runner.invoke(app, ["init", "audti"])
    assert result.exit_code == 2
    assert "did you mean 'audit'?" in result.output


# -- --help ------------------------------------------------------------------------------------------------
def test_every_command_has_help_with_examples() -> None:
    names = [c.name or c.callback.__name__ for c in typer.main.get_command(app).commands.values()]
    assert {"run", "validate", "init", "report", "inspect"} <= set(names)
    for name in names:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Examples" in result.output and f"curate {name}" in result.output, name


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"curate {curate.__version__}"


# -- errors that suggest the fix ---------------------------------------------------------------------------
INPUT = Path(__file__).resolve().parents[1] / "sample_data" / "pairs_pairwise.jsonl"


@pytest.mark.parametrize(("body", "expected"), [
    ("input: [{path: X}]\nstages: [{filtr: {}}]", "unknown stage 'filtr'; did you mean 'filter'?"),
    ("input: [{path: X}]\nstages: [{exact_dedup: {onn: prompt}}]",
     "stages[0].exact_dedup.onn: unknown key 'onn'; did you mean 'on'?"),
    ("inputs: [{path: X}]\nstages: []", "inputs: unknown key 'inputs'; did you mean 'input'?"),
    ("input: [{path: X, adaptr: pairwise}]\nstages: []",
     "input[0].adaptr: unknown key 'adaptr'; did you mean 'adapter'?"),
])
def test_recipe_mistakes_suggest_the_nearest_name(tmp_path: Path, body: str, expected: str) -> None:
    recipe = _write(tmp_path / "r.yaml", "name: t\n" + body.replace("X", str(INPUT)) + "\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe)
    assert expected in str(info.value)
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2 and expected in result.output.replace("\n", "")


def test_missing_model_path_says_how_to_get_the_default(tmp_path: Path) -> None:
    recipe = _write(tmp_path / "r.yaml", f"""name: t
input: [{{path: {INPUT}}}]
models:
  gen: {{backend: transformers, path: models/not-here}}
  embed: {{backend: sentence-transformers, path: /nowhere/minilm}}
stages:
  - judge: {{model: gen, mode: pointwise}}
  - embed_dedup: {{model: embed}}
""")
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == RecipeError.exit_code, result.output  # the recipe names the path: exit 2, not 5
    text = result.output.replace("\n", "")
    assert "models.gen.path" in text and "not-here not found" in text
    assert "`path: default` for the embedded SmolLM2-135M-Instruct" in text
    assert "models.embed.path" in text and "all-MiniLM-L6-v2" in text
    # and at run time, from the loader itself
    from curate.llm import load_llm

    with pytest.raises(ModelError, match="path: default"):
        load_llm({"backend": "transformers", "path": "models/not-here"}, base_dir=tmp_path)


def test_missing_recipe_file_suggests_a_near_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "clean_sft.yaml", "name: x\n")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", "clean-sft.yaml"])
    assert result.exit_code == 2 and "did you mean clean_sft.yaml?" in result.output
    result = runner.invoke(app, ["run", "zzzz.yaml"])
    assert result.exit_code == 2 and "curate init" in result.output


# -- notebook API ------------------------------------------------------------------------------------------
def test_stage_and_pipeline_show_their_parameters() -> None:
    stage = STAGES["filter"](min_response_chars=5, refusals=True)
    assert "min_response_chars=5" in repr(stage)
    assert stage.changed_params() == {"min_response_chars": 5, "refusals": True}
    page = stage._repr_html_()
    assert "<b>5</b>" in page and "<code>max_prompt_chars</code>" in page and stage.paper.split()[0] in page
    pipeline = curate.Pipeline([stage, STAGES["exact_dedup"]()])
    assert "Filter(" in repr(pipeline) and "ExactDedup(" in repr(pipeline)
    table = pipeline._repr_html_()
    assert table.count("<tr>") == 3 and "min_response_chars=5" in table and "<i>defaults</i>" in table


def test_pipeline_run_with_progress_matches_without(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # `curate run` invoked earlier in this process without a terminal set TQDM_DISABLE (for model libraries'
    # bars); progress=True shows its bar all the same
    monkeypatch.setenv("TQDM_DISABLE", "1")
    lf = curate.read(Path(curate.__file__).parent / "templates" / "sample_instructions.jsonl")
    assert isinstance(lf, pl.LazyFrame)
    pipeline = curate.Pipeline([STAGES["filter"](min_response_chars=60), STAGES["exact_dedup"](on="full")])
    quiet = pipeline.run(lf).collect()
    shown = pipeline.run(lf, progress=True).collect()
    assert quiet.equals(shown) and 0 < quiet.height < 16  # the filter set short answers aside
    assert "2/2" in capsys.readouterr().err  # the stage bar reached the end


def test_inspect_rounds_distributions_to_fit_a_terminal(tmp_path: Path) -> None:
    msgs = [{"role": "user", "content": "q"}]
    pl.DataFrame({
        "id": ["a" * 32, "b" * 32], "prompt": [msgs, msgs],
        "chosen": [[{"role": "assistant", "content": "yes"}]] * 2,
        "rejected": [[{"role": "assistant", "content": "no"}]] * 2,
        "score_chosen": [3.2706891234, 3.61507123], "score_rejected": [0.000571234567, 3.5924131],
    }).write_parquet(tmp_path / "p.parquet")
    result = runner.invoke(app, ["inspect", str(tmp_path / "p.parquet")])
    assert result.exit_code == 0, result.output
    assert "3.271" in result.output and "0.0005712" in result.output
    assert "3.2706891234" not in result.output and "…" not in result.output
