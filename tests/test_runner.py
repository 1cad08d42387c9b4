"""End-to-end: recipes through the runner into run directories."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import jsonschema
import polars as pl
import pytest

from curate.checkpoint import RunLock
from curate.errors import InputDataError, LockHeldError
from curate.runner import run_recipe

ROOT = Path(__file__).resolve().parents[1]


def reasons(run_dir: Path) -> list[str]:
    files = sorted((run_dir / "quarantine").glob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files])["reason"].to_list() if files else []


def test_clean_sft_end_to_end(tmp_path: Path) -> None:
    result = run_recipe(ROOT / "recipes" / "clean_sft.yaml", tmp_path / "run")
    manifest = json.loads(result.manifest_path.read_text())
    stages = manifest["stages"]
    assert [s["name"] for s in stages] == ["read", "filter", "exact_dedup", "minhash_dedup"]
    for before, after in itertools.pairwise(stages):
        assert after["rows_in"] == before["rows_out"]
    for stage in stages:  # nothing silently dropped
        assert stage["rows_in"] == stage["rows_out"] + stage["quarantined"], stage
        assert stage["quarantined"] > 0, f"sample data should exercise {stage['name']}"
    out = pl.read_parquet(result.output)
    assert out.height == result.rows == manifest["output"]["rows"]
    assert out["id"].is_unique().all()
    why = " | ".join(reasons(result.run_dir))
    for expected in ("malformed JSON", "instruction", "identical content", "refusal", "truncated",
                     "exact duplicate", "near duplicate"):
        assert expected in why, expected
    assert manifest["recipe_hash"] and manifest["versions"]["polars"]
    assert manifest["inputs"][1]["adapter"] == "sharegpt"
    schema = json.loads((ROOT / "schemas" / "conversation.schema.json").read_text())
    for row in out.head(20).to_dicts():
        jsonschema.validate(row, schema)


def test_rerun_is_cached_and_identical(tmp_path: Path) -> None:
    first = run_recipe(ROOT / "recipes" / "clean_sft.yaml", tmp_path / "run")
    data_first = pl.read_parquet(first.output)
    second = run_recipe(ROOT / "recipes" / "clean_sft.yaml", tmp_path / "run")
    assert all(s.cached for s in second.stages)
    assert pl.read_parquet(second.output).equals(data_first)
    # A changed parameter recomputes that stage and the ones after it, not the ones before.
    third = run_recipe(ROOT / "recipes" / "clean_sft.yaml", tmp_path / "run",
                       overrides=["minhash_dedup.threshold=0.9"])
    assert [s.cached for s in third.stages] == [True, True, True, False]
    fresh = run_recipe(ROOT / "recipes" / "clean_sft.yaml", tmp_path / "run", resume=False)
    assert not any(s.cached for s in fresh.stages)
    assert pl.read_parquet(fresh.output).equals(data_first)


def test_limit(tmp_path: Path) -> None:
    result = run_recipe(ROOT / "recipes" / "clean_sft.yaml", tmp_path / "run", limit=50)
    assert result.stages[0].rows_out <= 50
    full = run_recipe(ROOT / "recipes" / "clean_sft.yaml", tmp_path / "full")
    assert full.stages[0].rows_out > 50


def test_preference_output_loads_in_datasets_as_trl_format(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    result = run_recipe(ROOT / "recipes" / "preference_clean.yaml", tmp_path / "run")
    assert result.table == "preference"
    ds = datasets.load_dataset("parquet", data_files=str(result.output))["train"]
    assert len(ds) == result.rows > 0
    row = ds[0]
    assert isinstance(row["prompt"], list) and row["prompt"][-1]["role"] == "user"
    for side in ("chosen", "rejected"):
        assert len(row[side]) == 1 and row[side][0]["role"] == "assistant"
        assert isinstance(row[side][0]["content"], str)
    assert "tie" in " ".join(reasons(result.run_dir))
    schema = json.loads((ROOT / "schemas" / "preference.schema.json").read_text())
    for item in ds:
        jsonschema.validate(item, schema)


def test_lock_held(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with RunLock(run_dir), pytest.raises(LockHeldError, match="another curate run"):
        run_recipe(ROOT / "recipes" / "clean_sft.yaml", run_dir)


def test_all_rows_rejected_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"instruction": "x"\n{"oops": 1\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\non_error: quarantine\ninput: bad.jsonl\nstages: []\n")
    with pytest.raises(InputDataError, match="no usable rows"):
        run_recipe(recipe, tmp_path / "run")


def test_inputs_must_share_a_table(tmp_path: Path) -> None:
    shutil.copy(ROOT / "sample_data" / "pairs_pairwise.jsonl", tmp_path / "p.jsonl")
    (tmp_path / "a.jsonl").write_text('{"instruction": "q", "output": "a"}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\non_error: quarantine\ninput: [a.jsonl, p.jsonl]\nstages: []\n")
    with pytest.raises(InputDataError, match="one recipe works on one table"):
        run_recipe(recipe, tmp_path / "run")


def test_gc_keeps_what_the_manifest_uses(tmp_path: Path) -> None:
    from curate.runner import collect_garbage

    run_dir = tmp_path / "run"
    run_recipe(ROOT / "recipes" / "clean_sft.yaml", run_dir, overrides=["minhash_dedup.ngram=3"])
    final = run_recipe(ROOT / "recipes" / "clean_sft.yaml", run_dir)
    before = pl.read_parquet(final.output)
    doomed, freed = collect_garbage(run_dir, dry_run=True)
    names = sorted(p.parent.name + "/" + p.name[:16] for p in doomed)
    # the old minhash stage output and its ngram=3 signature shards
    assert len(doomed) == 2 and freed > 0, names
    assert any(n.startswith("stages/03-minhash_dedup") for n in names)
    assert all(p.exists() for p in doomed)
    collect_garbage(run_dir)
    assert not any(p.exists() for p in doomed)
    again = run_recipe(ROOT / "recipes" / "clean_sft.yaml", run_dir)
    assert all(s.cached for s in again.stages)
    assert pl.read_parquet(again.output).equals(before)
