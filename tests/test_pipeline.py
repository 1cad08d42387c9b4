from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from curate import Context, Pipeline
from curate.checkpoint import RunLock, publish_dir, write_parquet_atomic
from curate.errors import LockHeldError
from curate.schema import conform
from curate.stages import ExactDedup, Filter


def conversations(n: int) -> pl.LazyFrame:
    rows = [[{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
            for i in range(n)]
    return conform(pl.DataFrame({"messages": rows}).lazy(), "conversation")


def test_map_batches_caches_shards_and_preserves_order(tmp_path: Path) -> None:
    calls: list[int] = []

    def work(batch: pl.DataFrame) -> pl.DataFrame:
        calls.append(batch.height)
        return batch.select("id", pl.col("id").str.len_chars().alias("n"))

    ctx = Context(cache_dir=tmp_path, batch_size=7, stage_label="s")
    lf = conversations(30)
    first = ctx.map_batches(lf, work, key="k" * 32).collect()
    assert calls == [7, 7, 7, 7, 2]
    assert first["id"].to_list() == lf.collect()["id"].to_list()
    assert ctx.stats["s"]["batches_computed"] == 5 and ctx.stats["s"]["batches_cached"] == 0
    assert ctx.stats["s"]["shard_dirs"] == ["k" * 32]

    ctx2 = Context(cache_dir=tmp_path, batch_size=7, stage_label="s")
    again = ctx2.map_batches(lf, work, key="k" * 32).collect()
    assert calls == [7, 7, 7, 7, 2]  # nothing recomputed
    assert ctx2.stats["s"]["batches_computed"] == 0 and ctx2.stats["s"]["batches_cached"] == 5
    assert again.equals(first)

    # A grown input computes only its new rows.
    ctx3 = Context(cache_dir=tmp_path, batch_size=7, stage_label="s")
    ctx3.map_batches(conversations(37), work, key="k" * 32).collect()
    assert calls[5:] == [7]  # only the 7 new rows (results are reused per row id), in one batch


def test_map_batches_on_empty_input(tmp_path: Path) -> None:
    ctx = Context(cache_dir=tmp_path)
    out = ctx.map_batches(conversations(0), lambda b: b.select("id"), key="e" * 32).collect()
    assert out.height == 0 and out.columns == ["id"]


def test_pipeline_runs_stages_in_order_with_labels() -> None:
    ctx = Context.ephemeral()
    lf = conform(pl.DataFrame({"messages": [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}],
        [{"role": "user", "content": "same"}, {"role": "assistant", "content": "a"}],
        [{"role": "user", "content": "SAME"}, {"role": "assistant", "content": "b"}],
    ]}).lazy(), "conversation")
    out = Pipeline([Filter(), ExactDedup()]).run(lf, ctx).collect()
    assert out.height == 1
    q = ctx.quarantine_frame()
    assert q["stage"].to_list() == ["01-filter", "02-exact_dedup"]


def test_stage_accepts_eager_frame_and_no_context() -> None:
    df = conversations(3).collect()
    out = ExactDedup()(df)
    assert isinstance(out, pl.DataFrame) and out.height == 3  # DataFrame in, DataFrame out


def test_fingerprint_depends_on_parameters() -> None:
    assert Filter().fingerprint() == Filter().fingerprint()
    assert Filter().fingerprint() != Filter(min_prompt_chars=1).fingerprint()


def test_lock_excludes_second_run(tmp_path: Path) -> None:
    with RunLock(tmp_path), pytest.raises(LockHeldError, match="another curate run is writing here"):
        RunLock(tmp_path).acquire()
    RunLock(tmp_path).acquire().release()  # released on exit


def test_publish_dir_replaces_whole_directory(tmp_path: Path) -> None:
    final = tmp_path / "data"
    final.mkdir()
    (final / "old.parquet").write_text("old")
    staging = tmp_path / "staging"
    staging.mkdir()
    write_parquet_atomic(pl.DataFrame({"a": [1]}), staging / "new.parquet")
    publish_dir(staging, final)
    assert sorted(p.name for p in final.iterdir()) == ["new.parquet"]
    assert not staging.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_map_rows_computes_only_new_ids_wherever_they_are(tmp_path: Path) -> None:
    seen: list[str] = []

    def work(batch: pl.DataFrame) -> pl.DataFrame:
        seen.extend(batch["id"].to_list())
        return batch.select("id", pl.col("messages").list.len().alias("turns"))

    base = conversations(20).collect()
    ctx = Context(cache_dir=tmp_path, batch_size=6, stage_label="s")
    first = ctx.map_rows(base.lazy(), work, key="r" * 32).collect()
    assert first["id"].to_list() == base["id"].to_list() and len(seen) == 20
    # 5 new rows inserted in the middle and 3 old rows removed: only the 5 are computed, order follows input.
    extra = conversations(25).collect().slice(20, 5)
    grown = pl.concat([base.slice(0, 10), extra, base.slice(13, 7)])
    ctx2 = Context(cache_dir=tmp_path, batch_size=6, stage_label="s")
    out = ctx2.map_rows(grown.lazy(), work, key="r" * 32).collect()
    assert seen[20:] == extra["id"].to_list()
    assert out["id"].to_list() == grown["id"].to_list()
    assert ctx2.stats["s"]["rows_computed"] == 5 and ctx2.stats["s"]["rows_cached"] == 17


def test_map_rows_rejects_non_one_to_one_functions(tmp_path: Path) -> None:
    ctx = Context(cache_dir=tmp_path, stage_label="s")
    with pytest.raises(RuntimeError, match="one output row per input id"):
        ctx.map_rows(conversations(3), lambda b: b.head(1).select("id"), key="x" * 32).collect()
