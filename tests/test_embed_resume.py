"""Embedding work survives a kill: the vector cache is written every few seconds of encoding (not every 16,384
texts), a resumed run encodes only what the killed one had not saved, and its output is the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curate.embed import EmbedStats, embed_texts
from curate.embed.cache import CHUNK_TOKENS, cache_dir_for, chunk_starts

TEXTS = [f"Write a short note number {i} about {topic}." for i, topic in enumerate(
    ["rivers", "mountains", "sorting algorithms", "bread", "the moon", "tax forms", "chess", "volcanoes"] * 40)]


def test_chunks_restart_the_same_way_at_any_chunk_start() -> None:
    texts = pl.Series([t * (1 + i % 7) for i, t in enumerate(TEXTS)])  # lengths 1x..7x
    starts = chunk_starts(texts, 512)
    assert len(starts) > 5
    for start in starts[1:]:  # what a run killed after a chunk would have left
        assert chunk_starts(texts.slice(start), 512) == [s - start for s in starts if s >= start]


def test_flushes_are_small_then_compacted(encoder, tmp_path: Path) -> None:
    stats = EmbedStats()
    vectors = embed_texts(encoder, TEXTS, tmp_path, chunk_tokens=600, flush_every=0.0, stats=stats)
    assert stats.encoded == len(TEXTS) and stats.chunks > 3 and stats.shards_written == stats.chunks
    folder = cache_dir_for(tmp_path, encoder)
    assert len(list(folder.glob("*.parquet"))) == 1  # the small flushes merged into one file
    again = EmbedStats()
    assert np.array_equal(embed_texts(encoder, TEXTS, tmp_path, stats=again), vectors)
    assert again.encoded == 0 and again.cached == len(TEXTS)
    assert CHUNK_TOKENS <= 4096


def curate_run(recipe: Path, out: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "curate.cli", "run", str(recipe), "--out", str(out), "--quiet"],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stage_notes(run: Path) -> dict:
    manifest = json.loads((run / "manifest.json").read_text())
    return next(s for s in manifest["stages"] if s["name"] == "embed_dedup")["notes"]


@pytest.mark.slow
def test_sigkill_during_embedding_resumes_with_only_the_rest(shared_data: Path, tmp_path: Path) -> None:
    source = json.loads((shared_data / "code_alpaca" / "code_alpaca_2k.json").read_text())[:700]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in source))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: embed_kill\non_error: quarantine\ninput: {path: in.jsonl, adapter: alpaca}\n"
                      "stages:\n  - embed_dedup: {on: prompt, threshold: 0.9}\n")
    # A cache write after every chunk (about 50 instructions): the run below is killed between two of them.
    flush = {"CURATE_EMBED_FLUSH_SECONDS": "0"}

    run = tmp_path / "killed"
    proc = curate_run(recipe, run, **flush)
    embeddings = run / "cache" / "embeddings"
    deadline = time.monotonic() + 600
    while not list(embeddings.glob("*/*.parquet")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # a real kill, mid-stage
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "manifest.json").exists()
    saved = pl.scan_parquet(embeddings / "*" / "*.parquet").select(pl.col("h").n_unique()).collect().item()

    resumed = curate_run(recipe, run, **flush)
    assert resumed.wait(timeout=600) == 0, resumed.communicate()
    reference = tmp_path / "reference"
    uninterrupted = curate_run(recipe, reference)
    assert uninterrupted.wait(timeout=600) == 0, uninterrupted.communicate()

    total = stage_notes(reference)["texts_encoded"]
    notes = stage_notes(run)
    assert 0 < saved < total
    assert notes["texts_cached"] == saved and notes["texts_encoded"] == total - saved  # only the rest
    names = sorted(str(p.relative_to(reference)) for p in reference.glob("[dq]*/*.parquet"))
    assert "quarantine/01-embed_dedup.parquet" in names  # the stage did set near-duplicates aside
    assert names == sorted(str(p.relative_to(run)) for p in run.glob("[dq]*/*.parquet"))
    for name in names:
        assert pl.read_parquet(run / name).equals(pl.read_parquet(reference / name)), name
    assert len(list(embeddings.glob("*/*.parquet"))) == 1  # killed run's and resumed run's flushes merged
