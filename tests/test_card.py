"""The dataset card (``RUN/data/README.md``) and the run's warnings, which the card and the report share."""

from __future__ import annotations

import json
from pathlib import Path

import browser  # tests/browser.py
import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml

from curate.errors import RecipeError
from curate.export import export
from curate.recipe import load_recipe
from curate.report import write_report
from curate.report.card import features, write_card
from curate.report.findings import findings
from curate.runner import collect_garbage, run_recipe
from curate.summary import summarize

ROOT = Path(__file__).resolve().parents[1]


def _header(card: Path) -> dict:
    text = card.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("card_runs")
    return {name: run_recipe(ROOT / "recipes" / f"{name}.yaml", root / name).run_dir
            for name in ("clean_sft", "preference_clean")}


@pytest.mark.parametrize("name", ["clean_sft", "preference_clean"])
def test_card_loads_with_datasets_both_ways(runs: dict[str, Path], name: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_dataset(RUN/data)`` (through the card) and ``load_dataset("parquet", ...)`` give the same rows and
    types; the card's features are the ones ``datasets`` derives from the Parquet schema."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    data = runs[name] / "data"
    card = data / "README.md"
    head = _header(card)
    parquet = sorted(data.glob("*.parquet"))
    assert [p.name for p in parquet] == head["configs"][0]["data_files"][0]["path"]
    assert head["dataset_info"]["features"] == datasets.Features.from_arrow_schema(
        pq.read_schema(parquet[0]))._to_yaml_list()
    through_card = datasets.load_dataset(str(data), split="train")
    direct = datasets.load_dataset("parquet", data_files=str(data / "*.parquet"), split="train")
    assert through_card.features == direct.features
    assert through_card.to_list() == direct.to_list() == pl.read_parquet(parquet).to_dicts()
    manifest = json.loads((runs[name] / "manifest.json").read_text())
    text = card.read_text()
    for item in manifest["inputs"]:  # provenance: inputs with hashes, stages with counts and parameters
        assert item["xxh3"] in text
    for stage in manifest["stages"]:
        assert f"| {stage['label']} | {stage['rows_in']} | {stage['quarantined']} | {stage['rows_out']} |" in text
    assert "### Set-aside rows by reason code" in text and "refusal" in text
    # the tools that read data/ see Parquet only
    assert summarize(runs[name])["files"] == [str(p) for p in parquet]
    assert collect_garbage(runs[name], dry_run=True)[0] == []


def test_preference_card_and_report_warn_on_length(runs: dict[str, Path], tmp_path: Path) -> None:
    """The sample pairs' chosen side is longer in every pair: the card and the top of the report both say so."""
    text = (runs["preference_clean"] / "data" / "README.md").read_text()
    assert "**Chosen longer than rejected**: in 100.0% of 40 pairs" in text
    html = (runs["preference_clean"] / "report.html").read_text()
    assert html.index('<div id="warnings"') < html.index("<nav>")
    assert 'data-code="length_bias"' in html
    assert "None of curate's checks fired" in (runs["clean_sft"] / "data" / "README.md").read_text()
    done = export(runs["preference_clean"], "dpo", tmp_path / "dpo")
    assert done.splits == {"train": 40}


def test_recipe_card_section(tmp_path: Path) -> None:
    """``card:`` sets license, tags, title and description; an unknown key is refused like the rest."""
    recipe = (ROOT / "recipes" / "preference_clean.yaml").read_text()
    recipe = recipe.replace("../sample_data", str(ROOT / "sample_data"))
    good = tmp_path / "good.yaml"
    good.write_text(recipe + "card:\n  license: cc-by-4.0\n  tags: [dpo, english]\n  pretty_name: Clean pairs\n"
                    "  description: Sample pairs, cleaned.\n")
    plain = tmp_path / "plain.yaml"
    plain.write_text(recipe)
    before = load_recipe(plain).hash()
    assert load_recipe(good).hash() == before  # the card does not change the data, so not its key either
    result = run_recipe(good, tmp_path / "run")
    card = result.run_dir / "data" / "README.md"
    head = _header(card)
    assert head["license"] == "cc-by-4.0" and head["tags"] == ["curate", "dpo", "english"]
    assert head["pretty_name"] == "Clean pairs"
    assert "# Clean pairs\n\nSample pairs, cleaned." in card.read_text()
    first = card.read_text()
    run_recipe(good, tmp_path / "run")  # a re-run writes the same card (no times in it): a folder input's hash holds
    assert card.read_text() == first
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe + "card:\n  licence: mit\n")
    with pytest.raises(RecipeError, match=r"card\.licence: unknown key 'licence'; did you mean 'license'"):
        load_recipe(bad)


def _msgs(role: str, text: str) -> list[dict[str, str]]:
    return [{"role": role, "content": text}]


def _hand_run(run: Path, *, chosen: list[str], rejected: list[str], margins: list[float], std: list[float] | None,
              stages: list[dict]) -> Path:
    """A run directory written by hand: a preference Parquet and a manifest whose stages carry the notes."""
    (run / "data").mkdir(parents=True)
    n = len(chosen)
    columns = {"id": [f"{i:032x}" for i in range(n)], "prompt": [_msgs("user", f"q{i}") for i in range(n)],
               "chosen": [_msgs("assistant", t) for t in chosen], "rejected": [_msgs("assistant", t) for t in rejected],
               "score_chosen": [1.0 + m for m in margins], "score_rejected": [1.0] * n, "source": ["t"] * n}
    if std is not None:
        columns |= {"reward_std_chosen": std, "reward_std_rejected": std}
    pl.DataFrame(columns).write_parquet(run / "data" / "preference.parquet")
    read = {"label": "00-read", "name": "read", "rows_in": n, "rows_out": n, "quarantined": 0, "seconds": 0.1,
            "notes": {}, "cache_dir": "gone"}
    labelled = [{"rows_out": n, "seconds": 0.1, "cache_dir": "gone", "quarantined": 0, "rows_in": n,
                 "label": f"{i + 1:02d}-{s['name']}", **s} for i, s in enumerate(stages)]
    (run / "manifest.json").write_text(json.dumps({
        "recipe": {"name": "hand", "stages": [{s["name"]: {}} for s in stages]}, "recipe_hash": "h", "seed": 0,
        "versions": {"curate": "0"}, "stages": [read, *labelled], "inputs": [{"path": "x", "xxh3": "abc"}],
        "output": {"path": "data/preference.parquet", "table": "preference", "rows": n}, "quarantined": 0,
    }))
    return run


def test_each_warning_fires_with_its_figure(tmp_path: Path) -> None:
    run = _hand_run(tmp_path / "bad", chosen=["long answer"] * 4, rejected=["short", "no", "long answer!!", "x"],
                    margins=[0.01, 0.02, 0.03, 0.5], std=[0.1] * 4, stages=[
                        {"name": "minhash_dedup", "rows_in": 10, "quarantined": 3, "notes": {"clusters": 2}},
                        {"name": "judge", "notes": {"position_bias": 0.97, "swap_consistency": 0.2}},
                        {"name": "reward_score", "notes": {"mean_reward_std": 0.1}},
                        {"name": "audit", "notes": {"rows_matched": 2, "matches": 3, "texts_audited": 4}},
                    ])
    found = {f.code: f.figure for f in findings(json.loads((run / "manifest.json").read_text()),
                                                pl.scan_parquet(run / "data" / "preference.parquet"))}
    assert set(found) == {"length_bias", "margin_below_noise", "degenerate_judge", "heavy_dedup", "audit_matches"}
    assert "in 75.0% of 4 pairs" in found["length_bias"]
    # median margin 0.025 < median std of a margin sqrt(0.1² + 0.1²) = 0.1414, from the RM's reward_std
    assert "median score margin 0.025 is below the noise 0.1414" in found["margin_below_noise"]
    assert "reward_std" in found["margin_below_noise"]
    assert "position_bias 0.97" in found["degenerate_judge"] and "swap_consistency 0.2" in found["degenerate_judge"]
    assert "3 of 10 input rows (30.0%)" in found["heavy_dedup"]
    assert "2 row(s) of 4 audited" in found["audit_matches"]
    html = write_report(run).read_text()
    for code in found:
        assert f'data-code="{code}"' in html
    card = write_card(run / "data", json.loads((run / "manifest.json").read_text())).read_text()
    assert all(figure in card for figure in found.values())


@pytest.mark.browser
def test_warned_report_renders_in_chromium(tmp_path: Path) -> None:
    """The page with its warning box still renders in headless chromium, warnings in the DOM, no JS errors."""
    run = _hand_run(tmp_path / "bad", chosen=["long answer"] * 4, rejected=["short", "no", "x", "y"],
                    margins=[0.01] * 4, std=[0.1] * 4, stages=[{"name": "judge", "notes": {"position_bias": 1.0}}])
    page = write_report(run)
    png = tmp_path / "warned.png"
    shot = browser.screenshot(page, png, tmp_path / "profile")
    assert png.is_file() and png.stat().st_size > 10_000, shot.stderr[-2000:]
    assert "Uncaught" not in shot.stdout + shot.stderr
    page_dom = browser.dom(page, tmp_path / "profile")
    assert 'id="warnings"' in page_dom
    for code in ("length_bias", "margin_below_noise", "degenerate_judge"):
        assert f'data-code="{code}"' in page_dom


def test_judge_noise_and_quiet_runs(tmp_path: Path) -> None:
    """Without reward_std the judge's swap inconsistency is the noise (said so); a balanced run warns of nothing."""
    run = _hand_run(tmp_path / "judge", chosen=["a", "bbb", "cc"], rejected=["aa", "b", "ccc"],
                    margins=[0.1, 0.2, 0.3], std=None,
                    stages=[{"name": "judge", "notes": {"position_bias": 0.55, "swap_consistency": 0.7}}])
    found = {f.code: f.figure for f in findings(json.loads((run / "manifest.json").read_text()),
                                                pl.scan_parquet(run / "data" / "preference.parquet"))}
    assert list(found) == ["margin_below_noise"]  # 0.2 < 1 - 0.7; position 0.55 and consistency 0.7 are fine
    assert "swap inconsistency 1 - 0.7" in found["margin_below_noise"]
    quiet = _hand_run(tmp_path / "quiet", chosen=["a", "bbb", "cc"], rejected=["aa", "b", "ccc"],
                      margins=[0.5, 0.6, 0.7], std=[0.1] * 3,
                      stages=[{"name": "exact_dedup", "rows_in": 10, "quarantined": 1, "notes": {"duplicates": 1}}])
    assert findings(json.loads((quiet / "manifest.json").read_text()),
                    pl.scan_parquet(quiet / "data" / "preference.parquet")) == []
    assert '<div id="warnings"' not in write_report(quiet).read_text()


def test_features_match_datasets_for_nested_types(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    path = tmp_path / "t.parquet"
    pl.DataFrame({"r": [[{"content": "x", "score": 1.0}]], "v": [[[1.0, 2.0]]], "b": [True], "i": [1],
                  "s": [{"a": 1, "b": "x"}], "f": [1.5]},
                 schema_overrides={"f": pl.Float32}).write_parquet(path)
    schema = pq.read_schema(path)
    assert features(schema) == datasets.Features.from_arrow_schema(schema)._to_yaml_list()


def test_run_prints_card_and_report_paths(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from curate.cli import app

    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(ROOT / "recipes" / "preference_clean.yaml"), "--out", str(run)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"  card:      {run / 'data' / 'README.md'}" in lines
    assert lines[-1] == f"  report:    {run / 'report.html'}"  # the last line: where to look next
