from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from curate.errors import InputDataError
from curate.schema import TABLES, conform, detect_table, validate_schema, with_ids

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("table", sorted(TABLES))
def test_json_schema_mirrors_canonical_table(table: str) -> None:
    doc = json.loads((ROOT / "schemas" / f"{table}.schema.json").read_text())
    assert set(doc["properties"]) == set(TABLES[table])
    optional = {"source", "score_chosen", "score_rejected"}
    assert set(doc["required"]) == set(TABLES[table]) - optional


def test_id_is_stable_content_hash() -> None:
    # Pinned: a change here invalidates every cache and every published id, so it must be deliberate.
    df = pl.DataFrame({"messages": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]]})
    out = conform(df.lazy(), "conversation").collect()
    assert out["id"][0] == "ccac30d301dff31d189696e024e8cfac"
    with_meta = conform(df.with_columns(source=pl.lit("x"), extra=pl.lit(1)).lazy(), "conversation").collect()
    assert with_meta["id"][0] == out["id"][0]  # metadata is not identity


def test_candidate_scores_are_not_identity() -> None:
    def candidates(score: float) -> pl.LazyFrame:
        return pl.DataFrame({
            "prompt": [[{"role": "user", "content": "q"}]],
            "responses": [[{"content": "a", "model": "m", "score": score}]],
        }).lazy()

    a = with_ids(conform(candidates(1.0), "candidates"), "candidates").collect()["id"][0]
    b = with_ids(conform(candidates(2.0), "candidates"), "candidates").collect()["id"][0]
    assert a == b


def test_detect_and_validate() -> None:
    df = conform(pl.DataFrame({"messages": [[{"role": "user", "content": "q"}]]}).lazy(), "conversation")
    assert detect_table(df.collect_schema()) == "conversation"
    validate_schema(df.collect_schema(), "conversation")
    with pytest.raises(InputDataError, match="column 'messages' has type"):
        validate_schema({"id": pl.String(), "messages": pl.String(), "source": pl.String()}, "conversation", "f")
    with pytest.raises(InputDataError, match="match no canonical table"):
        detect_table({"foo": pl.String()})
