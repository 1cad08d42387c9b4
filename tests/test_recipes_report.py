"""Every recipe in recipes/ runs (shrunk: tiny models, a dozen rows) and its report renders in a real browser.

Why: a recipe that no test runs rots (a renamed parameter, a moved data file), and the report must cope with
whatever each recipe produces (conversation, preference, audit flags, scores or none).  Models are swapped for
the tiny ones the tests build (``--set models.H=...`` as a user would); the stages, data and report are real.
Set ``CURATE_SCREENSHOTS=DIR`` to keep each page's PNG.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import browser  # tests/browser.py
import pytest

from curate.recipe import yaml_load
from curate.runner import run_recipe

pytestmark = [pytest.mark.slow, pytest.mark.browser]
ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes").glob("*.yaml") if yaml_load(p.read_text()).get("stages"))
SECTIONS = ("funnel", "lengths", "scores", "margins", "languages", "dedup", "audit", "embeddings", "models",
            "manifest", "recipe")
EMBEDDING_STAGES = {"embed_dedup", "audit", "deita_select", "subsample"}
MODEL_STAGES = {"magpie", "respond", "judge", "deita_score", "reward_score"}
REWARD_LABELS = ["helpfulness", "harmlessness", "verbosity"]  # the heads recipes/reward_kto.yaml weighs


@pytest.fixture(scope="module")
def tiny_reward(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_reward import build_tiny_reward

    return build_tiny_reward(tmp_path_factory.mktemp("rm") / "rm", labels=REWARD_LABELS, max_position_embeddings=4096)


def shrink(recipe: dict, tiny_llm: Path, tiny_reward: Path) -> list[str]:
    """``--set`` overrides that keep a recipe's stages but make it a seconds-long CPU run."""
    overrides = []
    stage_names = [next(iter(s)) if isinstance(s, dict) else s for s in recipe["stages"]]
    handles = set(recipe.get("models") or {})
    for entry in recipe["stages"]:
        params = next(iter(entry.values())) if isinstance(entry, dict) else {}
        handles |= {v for k, v in (params or {}).items() if k in ("model", "probe_model") and isinstance(v, str)}
    for handle in sorted(handles):
        spec = (recipe.get("models") or {}).get(handle, {})
        if spec.get("backend") == "sentence-transformers" or handle == "embed":
            continue  # the bundled MiniLM is small enough
        tiny = tiny_reward if "reward_score" in stage_names and handle == "reward" else tiny_llm
        overrides.append(f"models.{handle}={{backend: transformers, path: '{tiny}', device: cpu}}")
    if stage_names.count("magpie") == 1:
        overrides.append("magpie.count=4")
    return overrides


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_runs_and_its_report_renders(recipe: Path, tmp_path: Path, tiny_llm_path: Path,
                                            tiny_reward: Path, shared_data: Path) -> None:
    overrides = shrink(yaml_load(recipe.read_text()), tiny_llm_path, tiny_reward)
    result = run_recipe(recipe, tmp_path / "run", overrides=overrides, limit=12)
    assert result.output.is_file()
    page = tmp_path / "run" / "report.html"
    html = page.read_text()
    for sid in SECTIONS:  # a section with nothing to show is listed once under "Not in this run"
        assert f'<section id="{sid}">' in html or f'<li data-section="{sid}">' in html, sid
    stages = {s["name"] for s in json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]}
    if stages & EMBEDDING_STAGES:  # the map is drawn from the run's own cached vectors
        assert re.search(r"(prompts|rows|responses) by (selection|source) \(PCA of \d+ vectors\)", html)
    if stages & MODEL_STAGES:
        assert "model rows computed" in html and "No model stage ran." not in html
    assert "<pre>name: " in html  # the recipe as it ran
    png = tmp_path / f"{recipe.stem}.png"
    shot = browser.screenshot(page, png, tmp_path / "profile")
    assert png.is_file() and png.stat().st_size > 20_000, shot.stderr[-2000:]
    assert "Uncaught" not in shot.stdout + shot.stderr
    assert browser.distinct_colours(png) > 50
    page_dom = browser.dom(page, tmp_path / "profile")
    assert all(f'id="{sid}"' in page_dom or f'data-section="{sid}"' in page_dom for sid in SECTIONS)
    keep = os.environ.get("CURATE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(keep) / png.name)
