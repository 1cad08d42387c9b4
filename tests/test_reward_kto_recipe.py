"""recipes/reward_kto.yaml end to end: oasst candidates -> reward_score -> combine_scores -> pairs -> KTO export.

Why: the recipe points at a reward model the user supplies; this runs it as a user would (``--set
models.reward.path=...``) with the tiny random three-head reward model of ``tests/tiny_reward.py``, whose head
names are the ones the recipe's ``combine_scores`` weighs, and checks the KTO files a trainer would load.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.runner import run_recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "reward_kto.yaml"
LABELS = ["helpfulness", "harmlessness", "verbosity"]  # the recipe's combine_scores weights name these heads


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_reward import build_tiny_reward

    # Long enough positions that oasst replies fit: the recipe is about scores, not truncation.
    return build_tiny_reward(tmp_path_factory.mktemp("rm") / "three", labels=LABELS, max_position_embeddings=4096)


def test_reward_kto_recipe_exports_balanced_kto_rows(shared_data: Path, reward_model: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    result = run_recipe(
        RECIPE, tmp_path / "run", limit=12,
        overrides=[f"models.reward.path={reward_model}", "models.reward.device=cpu"],
    )
    assert result.table == "preference" and result.rows > 0

    stages = {s["name"]: s for s in json.loads(result.manifest_path.read_text())["stages"]}
    assert stages["reward_score"]["notes"]["scored"] > 0
    assert stages["combine_scores"]["notes"]["coefficients"] == {"helpfulness": 1.0, "harmlessness": 0.5,
                                                                 "verbosity": -0.25}
    notes = stages["pairs"]["notes"]  # what the length controls did, before/after, lands in the manifest
    assert notes["pairs"] == result.rows
    assert set(notes["length_control"]) == {"before", "after", "changed"}
    assert notes["length_control"]["after"]["pairs"] == result.rows
    dropped = sum(v for k, v in notes.items() if k.startswith("dropped_"))
    assert dropped == stages["pairs"]["quarantined"] == 12 - result.rows
    out_dir = tmp_path / "run" / "export" / "kto"
    kto = datasets.load_dataset("parquet", data_files=str(out_dir / "train.parquet"), split="train")
    assert set(kto.column_names) == {"id", "prompt", "completion", "label"}
    labels = kto["label"]
    assert len(labels) == 2 * result.rows
    assert sum(labels) == len(labels) - sum(labels)  # balanced: one desirable, one undesirable per pair
    assert labels[:4] == [True, False, True, False]
    row = kto[0]
    assert row["prompt"][-1]["role"] == "user" and row["completion"][0]["role"] == "assistant"
    report = json.loads((out_dir / "export.json").read_text())
    assert report["desirable"] == report["undesirable"] == result.rows
