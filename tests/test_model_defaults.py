"""Recipes that name no models use the embedded defaults; stage caches follow what the output depends on."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from curate.errors import RecipeError
from curate.models import DEFAULT_SPECS, ModelRegistry
from curate.runner import run_recipe

ROOT = Path(__file__).resolve().parents[1]


def test_registry_defaults_and_overrides() -> None:
    registry = ModelRegistry({"gen": {"backend": "openai", "path": "m"}})
    assert registry.spec("embed") == DEFAULT_SPECS["embed"]
    assert registry.spec("gen") == {"backend": "openai", "path": "m"}
    with pytest.raises(RecipeError, match="model 'reward' is not defined"):
        registry.spec("reward")


def test_audit_without_models_section_and_reference_edits(tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text(
        '{"instruction": "Compose an engaging travel blog post about a recent trip to Hawaii.", "output": "Aloha."}\n'
        '{"instruction": "Name three primary colours.", "output": "Red, yellow, blue."}\n'
    )
    reference = tmp_path / "ref.jsonl"
    reference.write_text('{"text": "Write a limerick about a cat."}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: r\ninput: data.jsonl\nstages:\n"
        "  - audit: {references: [{path: ref.jsonl, name: ref, text: text}], mode: flag}\n"
    )
    first = run_recipe(recipe, tmp_path / "run")
    out = pl.read_parquet(first.output)
    assert out["contaminated"].to_list() == [False, False]
    assert (tmp_path / "run" / "reports" / "01-audit.parquet").exists()
    # The reference file changes in place (same path): the audit must run again, not reuse its cache.
    reference.write_text('{"text": "Compose an engaging travel blog post about a recent trip to Hawaii."}\n')
    second = run_recipe(recipe, tmp_path / "run")
    assert not second.stages[-1].cached
    assert pl.read_parquet(second.output)["contaminated"].to_list() == [True, False]
