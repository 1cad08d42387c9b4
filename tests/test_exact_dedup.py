from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from curate import Context
from curate.schema import conform
from curate.stages import ExactDedup


def frame(prompts: list[str], answers: list[str] | None = None, **extra: list) -> pl.LazyFrame:
    answers = answers or [f"answer {i}" for i in range(len(prompts))]
    rows = [
        [{"role": "user", "content": p}, {"role": "assistant", "content": a}]
        for p, a in zip(prompts, answers, strict=True)
    ]
    return conform(pl.DataFrame({"messages": rows, **extra}).lazy(), "conversation")


def test_normalised_duplicates_removed_first_kept() -> None:
    ctx = Context.ephemeral()
    out = frame(["Hello  World", "hello world", "HELLO WORLD ", "other"]).pipe(ExactDedup(), ctx).collect()
    prompts = [m[0]["content"] for m in out["messages"].to_list()]
    assert prompts == ["Hello  World", "other"]
    q = ctx.quarantine_frame()
    assert q.height == 2
    assert all(r.startswith("exact duplicate (prompt) of " + out["id"][0]) for r in q["reason"])
    notes = ctx.stats["exact_dedup"]
    assert {k: notes[k] for k in ("duplicates", "groups_with_duplicates", "removed_share")} == {
        "duplicates": 2, "groups_with_duplicates": 1, "removed_share": 0.5}
    assert notes["warning"].startswith("removed 2 of 4 rows (50%, more than warn_share 10%)")  # the dedup guard


def test_punctuation_only_when_asked() -> None:
    lf = frame(["Hello, world!", "hello world"])
    assert lf.pipe(ExactDedup()).collect().height == 2
    assert lf.pipe(ExactDedup(strip_punctuation=True)).collect().height == 1


def test_on_full_and_response() -> None:
    lf = frame(["same", "same"], ["a", "b"])
    assert lf.pipe(ExactDedup(on="prompt")).collect().height == 1
    assert lf.pipe(ExactDedup(on="full")).collect().height == 2
    assert frame(["p1", "p2"], ["same", "SAME"]).pipe(ExactDedup(on="response")).collect().height == 1


def test_keep_longest_and_highest() -> None:
    lf = frame(["q", "q", "q"], ["short", "the longest answer", "mid answer"], score=[0.1, 0.2, 0.9])
    longest = lf.pipe(ExactDedup(on="prompt", keep="longest")).collect()
    # longest is decided on the deduplicated text (the prompt here), so ties resolve to the first row
    assert longest["messages"][0][1]["content"] == "short"
    full_longest = frame(["q", "Q"], ["a", "bb"]).pipe(ExactDedup(on="prompt", keep="longest")).collect()
    assert full_longest.height == 1
    best = lf.pipe(ExactDedup(keep="highest:score")).collect()
    assert best["score"].to_list() == [0.9]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["a b", "A  b", "c", "d e f", "D E F", "g"]), min_size=1, max_size=25))
def test_kept_texts_unique_and_nothing_lost(prompts: list[str]) -> None:
    ctx = Context.ephemeral()
    lf = frame(prompts)
    out = lf.pipe(ExactDedup(), ctx).collect()
    normalised = [" ".join(m[0]["content"].lower().split()) for m in out["messages"].to_list()]
    assert len(normalised) == len(set(normalised))
    assert set(normalised) == {" ".join(p.lower().split()) for p in prompts}
    assert out.height + ctx.quarantine_frame().height == len(prompts)
