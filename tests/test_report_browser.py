"""The report as a place to look at the data: the row browser, hostile text, plot and layout rules, screenshots.

A hand-made run directory (a preference table of 120 rows, quarantine files of three stages, the stage caches a
kept twin is looked up in) checks the browser's bounds and escaping on the HTML in milliseconds; headless
chromium checks what only a browser can tell (the search works, nothing injected runs, no horizontal scroll
at 1000 px, tick labels in every plot).  The slow tests run the quickstart and two preference-cleaning runs
and keep their screenshots (``CURATE_SCREENSHOTS=DIR``, or ``=1`` for /tmp/curate-report-shots).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import browser  # tests/browser.py
import numpy as np
import polars as pl
import pytest

from curate.report import browser as row_browser
from curate.report import plots, write_report
from curate.runner import run_recipe

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = ('<img src=x onerror="window.__pwned=1"></script><script>window.__pwned=2</script>'
           '"><svg onload="window.__pwned=3"><a href="javascript:window.__pwned=4">x</a>')
N = 120


def _msgs(role: str, text: str) -> list[dict[str, str]]:
    return [{"role": role, "content": text}]


def _row(i: int) -> dict:
    prompt = HOSTILE if i == 0 else ("find the needle-in-row-3 here" if i == 3 else f"question {i}: explain item {i}")
    chosen = ("long " * 600) if i % 7 == 0 else f"a good and complete answer to question {i}"
    return {"id": f"{i:032x}", "prompt": _msgs("user", prompt), "chosen": _msgs("assistant", chosen),
            "rejected": _msgs("assistant", HOSTILE if i == 1 else f"no {i}"), "score_chosen": 1.0 + i / 100,
            "score_rejected": 0.5, "source": "hand"}


def _hand_run(run: Path) -> Path:
    """A finished preference run: 120 output rows; quarantine: 30 near duplicates (their twins in the output, one
    only in the dedup stage's cached input), 5 malformed lines with hostile text, 3 refusals."""
    for sub in ("data", "quarantine", "cache/stages/00-read-x", "cache/stages/01-minhash_dedup-x"):
        (run / sub).mkdir(parents=True)
    out = pl.DataFrame([_row(i) for i in range(N)])
    out.write_parquet(run / "data" / "preference.parquet")
    twin_only_in_input = _row(500)
    pl.concat([out, pl.DataFrame([twin_only_in_input])]).write_parquet(run / "cache/stages/00-read-x/data.parquet")
    out.write_parquet(run / "cache/stages/01-minhash_dedup-x/data.parquet")
    dups = [{"stage": "01-minhash_dedup", "code": "near_duplicate", "reason": f"near duplicate (minhash) of {twin}",
             "id": f"{1000 + k:032x}", "duplicate_of": twin,
             "row": json.dumps({**_row(k % N), "id": f"{1000 + k:032x}"})}
            for k, twin in enumerate([f"{k % N:032x}" for k in range(29)] + [twin_only_in_input["id"]])]
    pl.DataFrame(dups).write_parquet(run / "quarantine" / "01-minhash_dedup.parquet")
    bad = [{"stage": "00-read", "code": "malformed_json", "reason": f"in.jsonl, row {k}: malformed JSON",
            "id": None, "duplicate_of": None, "row": json.dumps({"row": HOSTILE + str(k)})} for k in range(5)]
    pl.DataFrame(bad, schema={k: pl.String for k in bad[0]}).write_parquet(run / "quarantine" / "00-read.parquet")
    refusals = [{"stage": "02-filter", "code": "refusal", "reason": "refusal: I cannot", "id": f"{2000 + k:032x}",
                 "duplicate_of": None, "row": json.dumps(_row(k))} for k in range(3)]
    pl.DataFrame(refusals, schema={k: pl.String for k in refusals[0]}).write_parquet(
        run / "quarantine" / "02-filter.parquet")
    stages = [
        {"label": "00-read", "name": "read", "kind": "input", "rows_in": 156, "rows_out": 151, "quarantined": 5,
         "seconds": 0.1, "cached": False, "notes": {}, "cache_dir": "00-read-x"},
        {"label": "01-minhash_dedup", "name": "minhash_dedup", "kind": "global", "rows_in": 151, "rows_out": 121,
         "quarantined": 30, "seconds": 0.2, "cached": False, "notes": {"clusters": 29, "duplicates": 30},
         "cache_dir": "01-minhash_dedup-x"},
        {"label": "02-filter", "name": "filter", "kind": "row", "rows_in": 123, "rows_out": N, "quarantined": 3,
         "seconds": 0.1, "cached": False, "notes": {}, "cache_dir": "gone"},
    ]
    (run / "manifest.json").write_text(json.dumps({
        "recipe": {"name": "hand"}, "recipe_hash": "h", "seed": 7, "versions": {"curate": "0"}, "stages": stages,
        "output": {"path": "data/preference.parquet", "table": "preference", "rows": N}, "quarantined": 38,
        "inputs": [],
    }))
    return run


@pytest.fixture(scope="module")
def hand_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(_hand_run(tmp_path_factory.mktemp("browse") / "run"))


def _section(html: str, sid: str) -> str:
    start = html.index(f'<section id="{sid}">')
    return html[start:html.index("</section>", start)]


def test_browser_rows_are_bounded_seeded_and_side_by_side(hand_page: Path, tmp_path: Path) -> None:
    html = hand_page.read_text()
    rows = _section(html, "rows")
    assert rows.count('class="rec" data-group="first"') == row_browser.FIRST
    assert rows.count('class="rec" data-group="sample"') == row_browser.SAMPLE
    shown = [int(n) for n in re.findall(r'<div class="meta">row (\d+)</div>', rows)]
    assert shown[:10] == list(range(10)) and all(n >= 10 for n in shown[10:]) and len(set(shown)) == len(shown)
    assert "Random sample of 40 more rows (seed 7; rows 10 to 119)" in rows
    # chosen and rejected side by side, with scores, the margin and lengths
    assert ('score margin <b>0.52</b> · length margin <b>+36</b> chars</div><div class="cols"><div><div class="meta">'
            '<b>chosen</b> · 40 chars · score 1.02</div>') in rows  # row 2
    assert '<div><div class="meta"><b>rejected</b> · 4 chars · score 0.5</div>' in rows
    # long texts cut with an ellipsis and the full length; the page stays small
    assert "[3,000 chars in all]" in rows and "long " * 300 not in html
    assert len(html) < 1_000_000
    # the same run gives the same page (the sample is drawn with the run's seed)
    assert write_report(hand_page.parent, tmp_path / "again.html").read_text() == html


def test_set_aside_rows_per_code_with_the_kept_twin(hand_page: Path) -> None:
    setaside = _section(hand_page.read_text(), "setaside")
    per_code = max(row_browser.PER_CODE_MIN, row_browser.SET_ASIDE // 3)
    for code, total in (("near_duplicate", 30), ("malformed_json", 5), ("refusal", 3)):
        assert f'data-group="{code}">{code}: {min(per_code, total)} of {total} set-aside rows</h3>' in setaside
        assert setaside.count(f'class="rec" data-group="{code}"') == min(per_code, total)
    # every duplicate shown stands beside its kept twin: from the output or, here, the dedup stage's input
    assert setaside.count("<b>kept twin</b>") == per_code and "is neither in the output" not in setaside
    assert '<option value="refusal">refusal (3)</option>' in setaside


def test_hostile_text_is_escaped_everywhere(hand_page: Path) -> None:
    html = hand_page.read_text()
    assert html.count("<script>") == 1 and "window.__pwned=2</script>" not in html
    assert "<img" not in html and "<svg onload" not in html and 'href="javascript:' not in html
    assert "&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;" in html  # shown as text, in rows and set-aside
    assert html.count("&lt;/script&gt;&lt;script&gt;window.__pwned=2") >= 3


def test_plots_label_every_axis_outline_overlaps_and_normalise() -> None:
    rng = np.random.default_rng(0)
    narrow = plots.histograms({"before": rng.uniform(40, 160, 2000), "after": rng.uniform(40, 160, 30)},
                              "prompt length", "characters (log scale)", log=True)
    assert 'width="960px"' in narrow  # at least 900 px wide
    for axis in ("xtick", "ytick"):  # a narrow log axis keeps labelled ticks (matplotlib's default: none)
        labels = re.findall(rf'<g id="[^"]*-{axis}_\d+">.*?<text[^>]*>([^<]+)</text>', narrow, re.S)
        assert len(labels) >= 3 and all(t.strip() for t in labels), (axis, labels)
    assert ">50<" in narrow and ">100<" in narrow
    # counts 2000 vs 30 (over 10x): shares, said in the title and the axis; outlines with a legend saying so
    assert "share of rows" in narrow and "(shares: counts differ 67x)" in narrow
    assert "outlines overlap" in narrow and narrow.count("fill: none") >= 2
    close = plots.histograms({"before": rng.normal(size=50), "after": rng.normal(size=40)}, "score", "score")
    assert "share of rows" not in close and ">rows<" in close
    assert plots.log_ticks(3, 30_000) == [10.0, 100.0, 1000.0, 10000.0]
    assert len(plots.log_ticks(101, 109)) >= 3


def test_no_plot_twice_and_empty_sections_listed_once_at_the_end(hand_page: Path) -> None:
    html = hand_page.read_text()
    svgs = re.findall(r'<svg class="plot".*?</svg>', html, re.S)
    bodies = [re.sub(r'(id="|#)f[0-9a-f]{10}-', r"\1", s) for s in svgs]
    titles = re.findall(r'<svg class="plot" role="img" aria-label="([^"]*)"', html)
    assert len(svgs) >= 4 and len(set(bodies)) == len(bodies) and len(set(titles)) == len(titles), titles
    sections = re.findall(r'<section id="([^"]+)"><h2>[^<]*</h2>\n(.*?)\n</section>', html, re.S)
    assert not [sid for sid, body in sections if re.fullmatch(r'\s*<p class="none">[^<]*</p>\s*', body)]
    absent = _section(html, "absent")
    assert sections[-1][0] == "absent" and html.count('<section id="absent">') == 1
    for sid in ("languages", "audit", "embeddings"):
        assert absent.count(f'<li data-section="{sid}">') == 1 and f'<section id="{sid}">' not in html


@pytest.mark.browser
def test_nothing_injected_runs_and_search_filters_rows(hand_page: Path, tmp_path: Path) -> None:
    setaside = _section(hand_page.read_text(), "setaside").split('<div class="rec"')[1:]
    hostile = sum("window.__pwned=1" in rec for rec in setaside)
    assert hostile >= 5 + 2  # the malformed lines, and refusals of rows 0 and 1 (their texts hold it)
    result = browser.probe(hand_page, """
      var rows = document.getElementById('rows'), q = rows.querySelector('.tools input');
      var visible = function () { return rows.querySelectorAll('.rec:not([hidden])').length; };
      var out = {pwned: window.__pwned === undefined ? null : window.__pwned, title: document.title,
                 imgs: document.images.length, handlers: document.querySelectorAll('[onerror],[onload]').length,
                 all: visible()};
      q.value = 'NEEDLE-in-row-3'; q.dispatchEvent(new Event('input'));
      out.needle = visible(); out.counter = rows.querySelector('.shown').textContent;
      q.value = ''; q.dispatchEvent(new Event('input'));
      var g = rows.querySelector('.tools select'); g.value = 'sample'; g.dispatchEvent(new Event('change'));
      out.sample = visible();
      var sa = document.getElementById('setaside'), sq = sa.querySelector('.tools input');
      sq.value = 'window.__pwned=1'; sq.dispatchEvent(new Event('input'));
      out.hostile_setaside = sa.querySelectorAll('.rec:not([hidden])').length;
      return out;""", tmp_path / "profile")
    assert result == {"pwned": None, "title": "curate report: hand", "imgs": 0, "handlers": 0,
                      "all": row_browser.FIRST + row_browser.SAMPLE, "needle": 1, "counter": "1 shown",
                      "sample": row_browser.SAMPLE, "hostile_setaside": hostile}


LAYOUT = """
  var w = document.documentElement.clientWidth, out = {width: w, scroll: document.documentElement.scrollWidth,
      plots: [], wide: [], warnings_first: null};
  document.querySelectorAll('svg.plot').forEach(function (s) {
    var ticks = function (axis) {
      return Array.prototype.filter.call(s.querySelectorAll('g[id*="-' + axis + 'tick_"] text'),
                                         function (t) { return t.textContent.trim(); }).length; };
    out.plots.push({title: s.getAttribute('aria-label'), px: Math.round(s.getBoundingClientRect().width),
                    x: ticks('x'), y: ticks('y')});
  });
  document.querySelectorAll('table, pre, .rec, .warn').forEach(function (t) {
    if (t.getBoundingClientRect().right > w + 0.5) out.wide.push(t.tagName + ' ' + t.textContent.slice(0, 60));
  });
  var warn = document.getElementById('warnings'), nav = document.querySelector('nav');
  if (warn) out.warnings_first = warn.getBoundingClientRect().top < nav.getBoundingClientRect().top;
  return out;"""


def _check_layout(page: Path, profile: Path) -> dict:
    """At 1000 px: no horizontal scroll, nothing wider than the window, every plot >= 900 px with labelled ticks on
    both axes."""
    found = browser.probe(page, LAYOUT, profile, size=(1000, 3000))
    assert "error" not in found, found
    assert found["scroll"] <= found["width"], found
    assert not found["wide"], found["wide"]
    assert found["plots"], found
    for plot in found["plots"]:
        assert plot["px"] >= 900 and plot["x"] >= 2 and plot["y"] >= 2, plot
    return found


@pytest.mark.browser
def test_layout_at_1000px_plots_wide_with_tick_labels(hand_page: Path, tmp_path: Path) -> None:
    _check_layout(hand_page, tmp_path / "profile")


def _keep_screenshot(page: Path, png: Path, profile: Path) -> Path:
    """A full-page PNG (window as tall as the page, at most 30,000 px); copied to ``CURATE_SCREENSHOTS``."""
    height = browser.probe(page, "return document.documentElement.scrollHeight;", profile, size=(1280, 2000))
    shot = browser.screenshot(page, png, profile, size=(1280, min(int(height) + 40, 30_000)))
    assert png.is_file() and png.stat().st_size > 50_000, shot.stderr[-2000:]
    assert "Uncaught" not in shot.stdout + shot.stderr
    assert browser.distinct_colours(png) > 50
    keep = os.environ.get("CURATE_SCREENSHOTS")
    if keep:
        folder = Path("/tmp/curate-report-shots" if keep == "1" else keep)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(png, folder / png.name)
    return png


HH_RECIPE = """
name: hh_preference_clean
description: Human hh-rlhf pairs -> refusals and duplicates set aside -> re-scored by the shipped reward model.
seed: 0
on_error: quarantine
input:
  - path: {data}/hh_rlhf_harmless_base_test/test.jsonl.gz
output:
  table: preference
stages:
  - filter:
      min_response_chars: 40         # sets aside a third of the first 40 pairs (short human-written replies)
      refusals: true
  - exact_dedup:
      on: prompt
  - minhash_dedup:
      on: prompt
      threshold: 0.5
  - reward_score:
      path: default
"""


def _check_and_keep(run: Path, name: str, tmp_path: Path) -> dict:
    page = run / "report.html"
    html = page.read_text()
    assert '<section id="rows">' in html and '<section id="setaside">' in html, name
    assert "<b>chosen</b>" in _section(html, "rows") and "<b>rejected</b>" in _section(html, "rows")
    found = _check_layout(page, tmp_path / f"profile-{name}")
    _keep_screenshot(page, tmp_path / f"report-{name}.png", tmp_path / f"profile-{name}")
    return found


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.screenshots  # a second full quickstart run (tests/test_quickstart.py runs it): outside make test
def test_screenshot_of_the_quickstart(tmp_path: Path) -> None:
    """The quickstart (Magpie -> DPO pairs with the embedded SmolLM2 on sample_data): the report passes the layout
    checks and is kept as a full-page PNG (about 80 s on an idle 2-core machine)."""
    _check_and_keep(run_recipe(ROOT / "recipes" / "quickstart.yaml", tmp_path / "quickstart").run_dir, "quickstart",
                    tmp_path)


@pytest.mark.slow
@pytest.mark.browser
def test_screenshots_of_preference_cleaning(tmp_path: Path, shared_data: Path) -> None:
    """The shipped preference_clean recipe (sample pairs whose chosen side is always longer: warned at the top)
    and 40 real hh-rlhf pairs (short replies set aside) re-scored by the shipped reward model: layout checks and
    full-page PNGs."""
    found = _check_and_keep(run_recipe(ROOT / "recipes" / "preference_clean.yaml", tmp_path / "pc").run_dir,
                            "preference_clean", tmp_path)
    assert found["warnings_first"] is True
    assert 'data-code="length_bias"' in (tmp_path / "pc" / "report.html").read_text()
    hh = tmp_path / "hh.yaml"
    hh.write_text(HH_RECIPE.format(data=shared_data))
    _check_and_keep(run_recipe(hh, tmp_path / "hh", limit=40).run_dir, "hh_preference_clean", tmp_path)


def test_heavy_dedup_counts_a_stages_noted_duplicates() -> None:
    """magpie sets aside truncated instructions too, and dedups its samples, not the input rows it ignores: the
    warning counts its noted duplicates against its samples (the quickstart: 4 truncated of 208 rows, no warning)."""
    from curate.report.findings import findings

    def magpie(duplicates: int) -> dict:
        return {"stages": [{"label": "01-magpie", "name": "magpie", "rows_in": 208, "quarantined": 4 + duplicates,
                            "notes": {"samples": 20, "duplicates": duplicates}}]}

    assert findings(magpie(0), None) == []
    (warned,) = findings(magpie(5), None)
    assert warned.code == "heavy_dedup" and "5 of 20 samples (25.0%)" in warned.figure
