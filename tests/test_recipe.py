from __future__ import annotations

from pathlib import Path

import pytest

from curate.errors import RecipeError
from curate.recipe import apply_overrides, load_recipe, parse_recipe
from curate.stages import ExactDedup, Filter

BASE = {"name": "t", "input": "in.jsonl", "stages": [{"filter": {"min_prompt_chars": 3}}, {"exact_dedup": None}]}


def test_parse_builds_stage_objects_in_order() -> None:
    recipe = parse_recipe(BASE)
    assert [type(s) for s in recipe.stage_objects] == [Filter, ExactDedup]
    assert recipe.stage_objects[0].min_prompt_chars == 3
    assert recipe.input[0].path == "in.jsonl" and recipe.input[0].adapter == "auto"


def test_unknown_stage_suggests_nearest() -> None:
    with pytest.raises(RecipeError, match=r"stages\[0\]: unknown stage 'filtr'; did you mean 'filter'"):
        parse_recipe({**BASE, "stages": [{"filtr": {}}]})


def test_wrong_parameter_type_names_path() -> None:
    with pytest.raises(RecipeError, match=r"stages\[1\]\.exact_dedup\.lowercase: Input should be a valid boolean"):
        parse_recipe({**BASE, "stages": [{"filter": {}}, {"exact_dedup": {"lowercase": "maybe"}}]})


def test_unknown_parameter_rejected() -> None:
    with pytest.raises(RecipeError, match=r"filter\.bogus"):
        parse_recipe({**BASE, "stages": [{"filter": {"bogus": 1}}]})


def test_every_mistake_reported_once() -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe({"input": "x", "seed": "abc", "stages": [{"nope": {}}]})
    message = str(info.value)
    assert "name: Field required" in message
    assert "seed:" in message
    assert "unknown stage 'nope'" in message


def test_stage_entry_shape_is_checked() -> None:
    with pytest.raises(RecipeError, match="one key"):
        parse_recipe({**BASE, "stages": [{"filter": {}, "exact_dedup": {}}]})


def test_overrides_by_stage_name_and_index() -> None:
    data = apply_overrides(BASE, ["filter.min_prompt_chars=10", "stages.1.exact_dedup.on=full", "seed=5"])
    recipe = parse_recipe(data)
    assert recipe.stage_objects[0].min_prompt_chars == 10
    assert recipe.stage_objects[1].on == "full"
    assert recipe.seed == 5
    assert BASE["stages"][0]["filter"]["min_prompt_chars"] == 3  # the original is not mutated


def test_override_errors() -> None:
    with pytest.raises(RecipeError, match="expected key=value"):
        apply_overrides(BASE, ["seed"])
    with pytest.raises(RecipeError, match="not a list index"):
        apply_overrides(BASE, ["stages.9.filter.x=1"])


def test_override_value_is_validated() -> None:
    with pytest.raises(RecipeError, match="min_prompt_chars"):
        parse_recipe(apply_overrides(BASE, ["filter.min_prompt_chars=lots"]))


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\ninput: x\n")
    with pytest.raises(RecipeError, match="invalid YAML"):
        load_recipe(path)


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ninput: [a\nstages: []\n")
    with pytest.raises(RecipeError, match=r"invalid YAML at line \d+"):
        load_recipe(path)


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "nope.yaml")


def test_paths_resolve_relative_to_recipe(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.yaml"
    path.parent.mkdir()
    path.write_text("name: r\ninput: ../data.jsonl\nstages: []\n")
    recipe = load_recipe(path)
    assert recipe.resolve(recipe.input[0].path).resolve() == (tmp_path / "data.jsonl").resolve()


def test_hash_changes_with_parameters_not_output_dir() -> None:
    a = parse_recipe(BASE)
    b = parse_recipe({**BASE, "output": {"dir": "elsewhere"}})
    c = parse_recipe(apply_overrides(BASE, ["filter.min_prompt_chars=4"]))
    assert a.hash() == b.hash()
    assert a.hash() != c.hash()


def test_shipped_recipes_validate() -> None:
    for path in sorted(Path(__file__).resolve().parents[1].joinpath("recipes").glob("*.yaml")):
        recipe = load_recipe(path)
        assert recipe.stage_objects, path


def test_yaml_on_is_a_key_not_a_boolean(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("name: r\ninput: x.jsonl\nstages:\n  - exact_dedup:\n      on: full\n      lowercase: false\n")
    recipe = load_recipe(path)
    assert recipe.stage_objects[0].on == "full"
    assert recipe.stage_objects[0].lowercase is False
