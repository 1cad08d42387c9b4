"""Every recipe in recipes/ that runs without a GPU gives the same output on ``--executor ray`` as locally: the
same rows in the same order, the same quarantine (stage, code, reason, id, row).  Minutes of work (model stages
run twice), so outside ``make test``: ``pytest -m recipes_ray tests/test_ray_recipes.py``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import polars as pl
import pytest

from curate.errors import ModelError
from curate.runner import run_recipe

pytestmark = [pytest.mark.slow, pytest.mark.recipes_ray, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

if importlib.util.find_spec("ray") is None:
    pytest.skip("ray not installed (pip install 'curate[dist]')", allow_module_level=True)

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))


def needs_gpu(recipe: Path) -> bool:
    text = recipe.read_text()
    return "backend: vllm" in text or "device: cuda" in text


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def outputs(run: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    data = pl.read_parquet(next((run / "data").glob("*.parquet")))
    files = sorted((run / "quarantine").glob("*.parquet"))
    quarantine = pl.concat([pl.read_parquet(p) for p in files]) if files else pl.DataFrame()
    return data, quarantine


@pytest.mark.parametrize("recipe", [r for r in RECIPES if not needs_gpu(r)], ids=lambda r: r.stem)
def test_recipe_on_ray_equals_local(recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_RAY_BLOCK_ROWS", "64")  # several blocks even on the sample data
    try:
        run_recipe(recipe, tmp_path / "local")
    except ModelError as exc:  # a recipe for the user's own model (reward_kto: /models/your-reward-model)
        if "not found" not in str(exc):
            raise
        pytest.skip(f"{recipe.name} needs a model this machine does not have: {exc}")
    run_recipe(recipe, tmp_path / "ray", executor="ray")
    (data_l, q_l), (data_r, q_r) = outputs(tmp_path / "local"), outputs(tmp_path / "ray")
    assert data_r.equals(data_l)
    assert q_r.equals(q_l)
    stages = json.loads((tmp_path / "ray" / "manifest.json").read_text())["stages"]
    assert all("ran_on" in s["notes"] for s in stages[1:] if not s["cached"])
