"""The data plane (curate/distributed/plane.py) run in this process: block by block, keyed steps over files, the
same kept rows and quarantine as each stage's single-process ``apply`` (tests/test_ray.py runs it on Ray)."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest

from curate import Context
from curate.distributed.plane import Plane, run_here
from curate.schema import conform
from curate.stages import ExactDedup, Filter, MinHashDedup

WORDS = "alpha beta gamma delta epsilon zeta river stone cloud light paper glass metal forest ocean".split()


def conversations(n: int, seed: int = 0) -> pl.LazyFrame:
    rng = random.Random(seed)
    prompts: list[str] = []
    for i in range(n):
        if prompts and i % 5 == 4:  # a near duplicate of an earlier prompt
            words = rng.choice(prompts).split()
            words[rng.randrange(len(words))] = "changed"
            prompts.append(" ".join(words))
        elif prompts and i % 7 == 6:  # an exact duplicate up to case and spacing
            prompts.append("  " + rng.choice(prompts).upper())
        else:
            prompts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))))
    answers = ["ok" if i % 11 == 3 else f"answer {i}" for i in range(n)]  # filter (min 4 chars) drops "ok"
    messages = [[{"role": "user", "content": p}, {"role": "assistant", "content": a}]
                for p, a in zip(prompts, answers, strict=True)]
    return conform(pl.DataFrame({"messages": messages, "score": [rng.random() for _ in prompts]}).lazy(),
                   "conversation")


def local_and_plane(stage, lf: pl.LazyFrame, tmp_path: Path, rows_per_block: int):
    local_ctx = Context.ephemeral(stage_label="s")
    local = stage(lf, local_ctx).collect()
    local_q = local_ctx.quarantine_frame(row="json")
    source = tmp_path / "prev" / "data.parquet"
    source.parent.mkdir(parents=True)
    lf.collect().write_parquet(source)
    ctx = Context(cache_dir=tmp_path / "cache", stage_label="s", trusted_ids=True)
    plane = Plane(run_here, cpus=3, rows_per_block=rows_per_block)
    plane.run_stage(stage, source, tmp_path / "out", ctx, "conversation")
    out = pl.read_parquet(tmp_path / "out" / "data.parquet")
    quarantine = pl.read_parquet(tmp_path / "out" / "quarantine.parquet")
    plane.close()
    return local, local_q, out, quarantine, ctx.stats.get("s", {}), local_ctx.stats.get("s", {})


def test_row_stage_block_by_block(tmp_path: Path) -> None:
    local, local_q, out, quarantine, notes, _ = local_and_plane(Filter(min_response_chars=4), conversations(300),
                                                                tmp_path, 64)
    assert out.equals(local) and quarantine.equals(local_q) and quarantine.height > 10
    assert notes["blocks"] == 5


@pytest.mark.parametrize("keep", ["first", "longest", "highest:score"])
def test_exact_dedup_keyed_form(tmp_path: Path, keep: str) -> None:
    local, local_q, out, quarantine, notes, local_notes = local_and_plane(
        ExactDedup(on="prompt", keep=keep), conversations(400, seed=1), tmp_path, 50)
    assert out.equals(local) and quarantine.equals(local_q) and quarantine.height > 20
    assert notes["partitions"] == 3 and notes["duplicates"] == local_notes["duplicates"]
    assert notes["groups_with_duplicates"] == local_notes["groups_with_duplicates"]


@pytest.mark.parametrize("keep", ["first", "longest", "highest:score"])
@pytest.mark.parametrize("verify", [True, False])
def test_minhash_keyed_form(tmp_path: Path, keep: str, verify: bool) -> None:
    stage = MinHashDedup(on="prompt", threshold=0.7, ngram=3, keep=keep, verify=verify, batch_size=64)
    local, local_q, out, quarantine, notes, local_notes = local_and_plane(stage, conversations(500, seed=2),
                                                                          tmp_path, 70)
    assert quarantine.height > 50  # the test has teeth
    assert out.equals(local)
    assert quarantine.equals(local_q)
    assert notes["duplicates"] == local_notes["duplicates"] and notes["clusters"] == local_notes["clusters"]
    assert notes["blocks"] == 8 and notes["batches_computed"] >= 8


def test_minhash_prompt_scope_stays_on_the_driver() -> None:
    plane = Plane(run_here)
    assert plane.handles(MinHashDedup(on="prompt"))
    assert not plane.handles(MinHashDedup(on="response", scope="within_prompt"))


def test_exact_dedup_resumed_with_fewer_partitions(tmp_path: Path) -> None:
    """A run stopped after writing its keys for 3 partitions, resumed on a cluster with 2 CPUs: the resume does not
    read the 3-partition files as 2 partitions (a third of the keys would go undecided), it partitions anew."""
    import xxhash

    from curate.distributed.plane import KeysBlock, blocks_of

    lf = conversations(400, seed=1)
    local = ExactDedup(on="prompt")(lf, Context.ephemeral(stage_label="s")).collect()
    source = tmp_path / "prev" / "data.parquet"
    source.parent.mkdir(parents=True)
    lf.collect().write_parquet(source)
    stage = ExactDedup(on="prompt")
    key = xxhash.xxh3_64_hexdigest(f"{source.parent.name}|{stage.fingerprint()}|50".encode())
    stopped = KeysBlock(stage, "conversation", str(tmp_path / "cache" / "ray" / f"s-{key}"), 3)
    stopped_3 = KeysBlock(stage, "conversation", str(tmp_path / "cache" / "ray" / f"s-{key}" / "partitions-3"), 3)
    for block in blocks_of(source, 50):  # the stopped run's keys, wherever a 3-partition run keeps them
        stopped(block)
        stopped_3(block)
    ctx = Context(cache_dir=tmp_path / "cache", stage_label="s", trusted_ids=True)
    Plane(run_here, cpus=2, rows_per_block=50).run_stage(stage, source, tmp_path / "out", ctx, "conversation")
    assert pl.read_parquet(tmp_path / "out" / "data.parquet").equals(local)
    assert ctx.stats["s"]["partitions"] == 2


def test_blocks_of_another_size_are_not_reused(tmp_path: Path) -> None:
    """Parts written with 64-row blocks are not taken for the parts of 100-row blocks (CURATE_RAY_BLOCK_ROWS
    changed between a stopped run and its resume)."""
    lf = conversations(300)
    stage = Filter(min_response_chars=4)
    local = stage(lf, Context.ephemeral(stage_label="s")).collect()
    source = tmp_path / "prev" / "data.parquet"
    source.parent.mkdir(parents=True)
    lf.collect().write_parquet(source)
    for rows in (64, 100):  # no close between: the first run's parts stay in the cache
        ctx = Context(cache_dir=tmp_path / "cache", stage_label="s", trusted_ids=True)
        Plane(run_here, cpus=2, rows_per_block=rows).run_stage(stage, source, tmp_path / "out", ctx, "conversation")
        assert pl.read_parquet(tmp_path / "out" / "data.parquet").equals(local)
