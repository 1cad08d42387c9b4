"""Dedup scope (global / across_prompts / within_prompt) and the removed-share warning, on the real Magpie
best-of-5 example (5 instructions x 5 sampled responses, read by the multi_response adapter) with the real
all-MiniLM-L6-v2 encoder (issue 17: samples of one prompt are not duplicates of each other)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import curate
from curate import Context
from curate.schema import conform
from curate.stages.embed_dedup import EmbedDedup
from curate.stages.minhash_dedup import MinHashDedup

MAGPIE = Path("/work/shared/data/magpie_po_example/example_instructions_5res.json")
pytestmark = [pytest.mark.skipif(not MAGPIE.is_file(), reason="shared data not mounted"), pytest.mark.slow]


def best_of_5() -> tuple[list[list[dict[str, str]]], list[str]]:
    """One conversation row per (instruction, sampled response): 25 rows, 5 per prompt."""
    cand = curate.read(str(MAGPIE)).collect()
    rows = [[*prompt, {"role": "assistant", "content": r["content"]}]
            for prompt, responses in zip(cand["prompt"].to_list(), cand["responses"].to_list(), strict=True)
            for r in responses]
    return rows, [r[-1]["content"] for r in rows]


def frame(rows: list[list[dict[str, str]]]) -> pl.LazyFrame:
    return conform(pl.DataFrame({"messages": rows}).lazy(), "conversation")


def with_planted(rows: list[list[dict[str, str]]]) -> list[list[dict[str, str]]]:
    """The 25 rows plus the first response copied under another (real) prompt and, with a '!' added (not an
    identical row, which the canonical check sets aside first), under its own prompt."""
    first = rows[0]
    other_prompt = rows[5][:-1]
    again = {"role": "assistant", "content": first[-1]["content"] + "!"}
    return [*rows, [*other_prompt, first[-1]], [*first[:-1], again]]


def ctx_with(encoder: Any) -> Context:
    ctx = Context.ephemeral()
    ctx.models.register("embed", encoder, {"path": "default"})
    return ctx


def test_default_scope_follows_on() -> None:
    from curate.stages._keep import resolve_scope

    assert resolve_scope(None, "response") == "across_prompts"
    assert resolve_scope(None, "prompt") == resolve_scope(None, "full") == "global"
    assert resolve_scope("within_prompt", "response") == "within_prompt"


def test_embed_samples_of_one_prompt_are_not_duplicates(encoder: Any, caplog: pytest.LogCaptureFixture) -> None:
    rows, _ = best_of_5()
    lf = frame(rows)
    # global at 0.9: 5 of the 25 distinct samples go (all pairs are within one prompt) and the stage warns
    ctx = ctx_with(encoder)
    with caplog.at_level(logging.WARNING, logger="curate"):
        out = lf.pipe(EmbedDedup(on="response", threshold=0.9, scope="global"), ctx).collect()
    notes = ctx.stats["embed_dedup"]
    assert (out.height, notes["duplicates"], notes["removed_share"]) == (20, 5, 0.2)
    assert "removed 5 of 25 rows (20%" in notes["warning"] and "removed 5 of 25 rows" in caplog.text
    # the default for on: response compares across prompts only: nothing goes, no warning
    ctx = ctx_with(encoder)
    out = lf.pipe(EmbedDedup(on="response", threshold=0.9), ctx).collect()
    assert out.height == 25 and ctx.stats["embed_dedup"]["scope"] == "across_prompts"
    assert "warning" not in ctx.stats["embed_dedup"]
    # within_prompt finds the same 5 as global here (no cross-prompt pair)
    ctx = ctx_with(encoder)
    assert lf.pipe(EmbedDedup(on="response", threshold=0.9, scope="within_prompt"), ctx).collect().height == 20


def test_embed_scope_on_planted_copies(encoder: Any) -> None:
    rows = with_planted(best_of_5()[0])
    lf = frame(rows)
    ids = lf.select("id").collect()["id"].to_list()
    kept = {}
    for scope in ("global", "across_prompts", "within_prompt"):
        ctx = ctx_with(encoder)
        out = lf.pipe(EmbedDedup(on="response", threshold=0.99, scope=scope), ctx).collect()
        kept[scope] = set(out["id"].to_list())
        quarantined = ctx.quarantine_frame()
        assert set(quarantined["duplicate_of"].to_list()) <= {ids[0]}
    # copies: row 25 (other prompt), row 26 (same prompt as row 0); both are copies of row 0
    assert set(ids) - kept["global"] == {ids[25], ids[26]}
    assert set(ids) - kept["across_prompts"] == {ids[25]}
    assert set(ids) - kept["within_prompt"] == {ids[26]}


def test_minhash_scope_on_planted_copies(caplog: pytest.LogCaptureFixture) -> None:
    rows = with_planted(best_of_5()[0])
    lf = frame(rows)
    ids = lf.select("id").collect()["id"].to_list()
    dropped = {}
    for scope in ("global", "across_prompts", "within_prompt"):
        ctx = Context.ephemeral()
        out = lf.pipe(MinHashDedup(on="response", scope=scope), ctx).collect()
        dropped[scope] = set(ids) - set(out["id"].to_list())
    assert dropped == {"global": {ids[25], ids[26]}, "across_prompts": {ids[25]}, "within_prompt": {ids[26]}}
    # the default for on: response is across_prompts; 1 of 27 removed is under the 10% warning
    ctx = Context.ephemeral()
    with caplog.at_level(logging.WARNING, logger="curate"):
        assert lf.pipe(MinHashDedup(on="response"), ctx).collect().height == 26
    assert ctx.stats["minhash_dedup"]["scope"] == "across_prompts" and "warning" not in ctx.stats["minhash_dedup"]
    assert "warn_share" not in caplog.text
    # warn_share is the stage's parameter: 1 of 27 (3.7%) is over 2%
    ctx = Context.ephemeral()
    lf.pipe(MinHashDedup(on="response", warn_share=0.02), ctx).collect()
    assert ctx.stats["minhash_dedup"]["warning"].startswith("removed 1 of 27 rows (4%, more than warn_share 2%)")


def test_report_shows_the_warning(tmp_path: Path) -> None:
    from curate.report.sections import dedup

    warning = "removed 5 of 25 rows (20%, more than warn_share 10%): check the threshold and the scope"
    manifest = {"stages": [{"label": "02-embed_dedup", "notes": {"clusters": 2, "duplicates": 5, "warning": warning}}]}
    _, _, body = dedup(tmp_path, manifest, None)
    assert f"<b>warning</b> 02-embed_dedup: {warning}" in body


def test_exact_dedup_warns_through_the_same_helper() -> None:
    from curate.stages.exact_dedup import ExactDedup

    rows, _ = best_of_5()
    # every prompt's 5 rows share the prompt text: on: prompt removes 20 of 25 and warns
    ctx = Context.ephemeral()
    out = frame(rows).pipe(ExactDedup(on="prompt"), ctx).collect()
    notes = ctx.stats["exact_dedup"]
    assert out.height == 5 and notes["removed_share"] == 0.8
    assert notes["warning"].startswith("removed 20 of 25 rows (80%, more than warn_share 10%)")
    ctx = Context.ephemeral()
    frame(rows).pipe(ExactDedup(on="response"), ctx).collect()
    assert ctx.stats["exact_dedup"]["removed_share"] == 0.0 and "warning" not in ctx.stats["exact_dedup"]
