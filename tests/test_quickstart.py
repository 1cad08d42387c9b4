"""The quickstart recipe as a user runs it: SmolLM2 Magpie -> filter -> dedup -> respond -> judge -> pairs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from curate.runner import run_recipe

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_makes_trl_ready_pairs_and_reruns_for_free(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    pytest.importorskip("transformers")
    # Fewer samples than the shipped recipe keeps CI short; every stage and model is the real one.
    overrides = ["magpie.count=8"]
    started = time.perf_counter()
    first = run_recipe(ROOT / "recipes" / "quickstart.yaml", tmp_path / "run", overrides=overrides)
    first_s = time.perf_counter() - started
    assert first.table == "preference"
    assert [s.name for s in first.stages] == ["read", "magpie", "filter", "minhash_dedup", "respond", "judge",
                                             "reward_score", "pairs"]
    for before, after in zip(first.stages[1:], first.stages[2:], strict=False):
        assert after.rows_in == before.rows_out
    # Every stage balances (curate.funnel); magpie's samples replace its input rows, and it says so.
    assert [s.unaccounted for s in first.stages] == [0] * len(first.stages)
    magpie = first.stages[1]
    assert (magpie.consumed, magpie.created) == (first.stages[0].rows_out, 8)
    assert magpie.notes["input_use"] == "ignored (count: 8 samples)"
    ds = datasets.load_dataset("parquet", data_files=str(first.output))["train"]
    assert len(ds) == first.rows
    for row in ds:
        assert row["prompt"][-1]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
        assert row["score_chosen"] > row["score_rejected"]
        # Pairs are ranked by the shipped embedding RM (ensemble mean); its disagreement comes along.
        assert row["reward_std_chosen"] > 0 and row["reward_std_rejected"] > 0

    started = time.perf_counter()
    second = run_recipe(ROOT / "recipes" / "quickstart.yaml", tmp_path / "run", overrides=overrides)
    second_s = time.perf_counter() - started
    assert all(s.cached for s in second.stages)
    assert second_s < 0.05 * first_s, (first_s, second_s)  # no model work: publishing only
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["output"]["table"] == "preference"
