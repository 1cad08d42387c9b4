"""``curate report``: a self-contained HTML page per run, written by every ``curate run`` too."""

from __future__ import annotations

import json
import re
from pathlib import Path

import browser  # tests/browser.py
import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.report import write_report
from curate.runner import run_recipe

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("funnel", "rows", "setaside", "lengths", "scores", "margins", "languages", "dedup", "audit", "embeddings",
            "models", "manifest", "recipe")


def _check_self_contained(html: str) -> None:
    """Every section is on the page, or listed once under "Not in this run"; nothing is loaded from outside;
    the only script is the inline one of the data browser."""
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html or f'<li data-section="{sid}">' in html, sid
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)
    assert refs and not [r for r in refs if r.startswith(("http://", "https://", "//"))]
    assert "<link" not in html and "http://" not in html and "https://" not in html.replace("https://evil", "")
    assert html.count("<script") == 1 and "<script>" in html  # inline, no src
    assert html.count('<svg class="plot"') >= 3  # funnel + prompt and response lengths


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two model-free recipes, run once for the module (each takes about a second)."""
    root = tmp_path_factory.mktemp("report_runs")
    return {name: run_recipe(ROOT / "recipes" / f"{name}.yaml", root / name).run_dir
            for name in ("clean_sft", "preference_clean")}


def test_run_writes_report_for_sft(runs: dict[str, Path]) -> None:
    html = (runs["clean_sft"] / "report.html").read_text()
    _check_self_contained(html)
    # near-duplicate examples show both the removed and the kept text, in the set-aside browser
    setaside = html[html.index('<section id="setaside">'):]
    assert "near duplicate (minhash" in setaside and setaside.count("<b>kept twin</b>") >= 2
    assert "is neither in the output" not in html
    assert '<li data-section="languages"><b>Language mix</b>: No lang column' in html  # listed once, at the end
    assert "Not a preference table" in html


def test_run_writes_report_for_preferences(runs: dict[str, Path]) -> None:
    html = (runs["preference_clean"] / "report.html").read_text()
    _check_self_contained(html)
    assert "Chosen response is longer in" in html
    assert "No audit report in this run." in html


def test_cli_report_to_file_and_missing_run(runs: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "out" / "r.html"
    result = CliRunner().invoke(app, ["report", str(runs["clean_sft"]), "--out", str(target)])
    assert result.exit_code == 0, result.output
    _check_self_contained(target.read_text())
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert missing.exit_code != 0


def test_report_without_cache_scores_lang_audit_and_escaping(tmp_path: Path) -> None:
    """A hand-made run: scores, lang and an audit report appear; hostile row text is escaped."""
    run = tmp_path / "run"
    for sub in ("data", "quarantine", "reports"):
        (run / sub).mkdir(parents=True)

    def msgs(role: str, text: str) -> list[dict[str, str]]:
        return [{"role": role, "content": text}]

    hostile = "<script>alert(1)</script><img src=https://evil.example/x.png>"
    kept = "a" * 32
    pl.DataFrame({
        "id": [kept, "b" * 32, "c" * 32],
        "prompt": [msgs("user", hostile), msgs("user", "q2"), msgs("user", "q3")],
        "chosen": [msgs("assistant", "long answer here"), msgs("assistant", "yes!"), msgs("assistant", "ok")],
        "rejected": [msgs("assistant", "no"), msgs("assistant", "nope"), msgs("assistant", "not ok at all")],
        "score_chosen": [8.0, 7.0, 9.0], "score_rejected": [2.0, 3.0, 1.0],
        "deita_score": [1.5, 2.5, 3.5], "lang": ["en", "de", "en"], "source": ["t", "t", "t"],
    }).write_parquet(run / "data" / "preference.parquet")
    removed = {"id": "d" * 32, "prompt": msgs("user", hostile + " again")}
    pl.DataFrame({"stage": ["01-embed_dedup"], "reason": [f"near duplicate (embedding, cos 0.97) of {kept}"],
                  "id": ["d" * 32], "row": [json.dumps(removed)]}).write_parquet(
        run / "quarantine" / "01-embed_dedup.parquet")
    pl.DataFrame({"id": [kept], "reference": ["mt_bench"], "cosine": [0.97], "text": [hostile],
                  "reference_text": ["a benchmark question"]}).write_parquet(run / "reports" / "02-audit.parquet")
    stages = [
        {"label": "00-read", "name": "read", "kind": "input", "rows_in": 4, "rows_out": 4, "quarantined": 0,
         "seconds": 0.1, "cached": False, "notes": {}, "cache_dir": "00-read-gone"},
        {"label": "01-embed_dedup", "name": "embed_dedup", "kind": "global", "rows_in": 4, "rows_out": 3,
         "quarantined": 1, "seconds": 0.2, "cached": False, "notes": {"clusters": 1, "duplicates": 1},
         "cache_dir": "x"},
        {"label": "02-pairs", "name": "pairs", "kind": "global", "rows_in": 3, "rows_out": 3, "quarantined": 0,
         "seconds": 0.1, "cached": False, "cache_dir": "y",
         "notes": {"length_ratio_mean": 1.8, "length_control": {"before": {"pairs": 3}, "after": {"pairs": 3}}}},
    ]
    (run / "manifest.json").write_text(json.dumps({
        "recipe": {"name": "<b>hand</b>"}, "recipe_hash": "abc", "seed": 1, "versions": {"curate": "0"},
        "stages": stages, "output": {"path": "data/preference.parquet", "table": "preference", "rows": 3},
        "quarantined": 1, "inputs": [],
    }))
    html = write_report(run).read_text()
    _check_self_contained(html)
    assert html.count("<script>") == 1 and "<script>alert" not in html and "&lt;script&gt;alert" in html
    assert "<b>hand</b>" not in html
    assert "deita_score" in html and "score_chosen" in html
    assert "rows per language" in html
    assert "length_control.before.pairs" in html
    assert "<td class=\"num\">-11</td>" in html  # "ok" vs "not ok at all": negative margins stay negative
    assert "1 match(es)" in html and "a benchmark question" in html
    assert "cache removed" in html  # before-lengths need the read stage's cache: says so instead
    assert f"<b>kept twin</b> {kept}" in html


@pytest.mark.browser
def test_report_renders_in_chromium(runs: dict[str, Path], tmp_path: Path) -> None:
    """Headless chromium renders the page to a non-blank PNG, with every section in the DOM and no JS errors."""
    page = runs["preference_clean"] / "report.html"
    png = tmp_path / "report.png"
    shot = browser.screenshot(page, png, tmp_path / "profile")
    assert png.is_file() and png.stat().st_size > 20_000, shot.stderr[-2000:]
    assert "Uncaught" not in shot.stdout + shot.stderr
    assert browser.distinct_colours(png) > 50  # text, tables and plots, not a blank page
    page_dom = browser.dom(page, tmp_path / "profile")
    for sid in SECTIONS:
        assert f'id="{sid}"' in page_dom or f'data-section="{sid}"' in page_dom, sid
