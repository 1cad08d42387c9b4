from __future__ import annotations

import polars as pl
import pytest
from pydantic import ValidationError

from curate import Context
from curate.schema import conform
from curate.stages import Filter


def conv(user: str, assistant: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def run(rows: list[list[dict[str, str]]], stage: Filter) -> tuple[pl.DataFrame, pl.DataFrame]:
    ctx = Context.ephemeral()
    lf = conform(pl.DataFrame({"messages": rows}).lazy(), "conversation")
    kept = lf.pipe(stage, ctx).collect()
    return kept, ctx.quarantine_frame()


def test_lengths_and_reasons() -> None:
    rows = [conv("Write a poem about the sea", "Waves fold over waves."), conv("Hi", "Hello there!"),
            conv("Tell me everything", "x" * 50)]
    kept, dropped = run(rows, Filter(min_prompt_chars=5, max_response_chars=40))
    assert kept.height == 1
    assert sorted(dropped["reason"]) == ["prompt shorter than 5 chars", "response longer than 40 chars"]
    assert kept.height + dropped.height == len(rows)


def test_empty_and_whitespace() -> None:
    kept, dropped = run([conv("   ", "fine"), conv("ok?", " \n"), conv("ok?", "fine")], Filter())
    assert kept.height == 1
    assert sorted(dropped["reason"]) == ["empty or whitespace-only prompt message", "empty or whitespace-only response"]


def test_regex_include_exclude() -> None:
    rows = [conv("Write SQL", "SELECT 1;"), conv("Write Python", "print(1)"), conv("Say hi", "hi")]
    kept, dropped = run(rows, Filter(include=[r"(?i)write"], exclude=[r"SELECT"]))
    assert [m[0]["content"] for m in kept["messages"].to_list()] == ["Write Python"]
    assert set(dropped["reason"]) == {"matches exclude pattern 'SELECT'", "does not match include pattern '(?i)write'"}


def test_refusal_heuristic_only_when_enabled() -> None:
    rows = [conv("Do a bad thing", "I'm sorry, but I can't help with that."), conv("Add 2+2", "4.")]
    kept, _ = run(rows, Filter())
    assert kept.height == 2
    kept, dropped = run(rows, Filter(refusals=True))
    assert kept.height == 1 and dropped["reason"].to_list() == ["refusal"]


def test_refusal_only_at_start() -> None:
    kept, _ = run([conv("Q", "The answer is 4. As an AI language model I computed it.")], Filter(refusals=True))
    assert kept.height == 1


def test_truncated_heuristics() -> None:
    rows = [conv("code", "```python\nprint(1)\n"), conv("long", "word " * 60 + "and then"),
            conv("long ok", "word " * 60 + "end."), conv("short", "no stop")]
    kept, dropped = run(rows, Filter(truncated=True, truncated_min_chars=100))
    assert kept.height == 2
    assert sorted(dropped["reason"]) == [
        "truncated response (no end-of-sentence punctuation)", "truncated response (unclosed code fence)"]


def test_first_failing_check_is_the_reason() -> None:
    _, dropped = run([conv("", "")], Filter(min_prompt_chars=3, min_response_chars=3))
    assert dropped["reason"].to_list() == ["empty or whitespace-only prompt message"]


def test_preference_checks_both_sides() -> None:
    df = pl.DataFrame({
        "prompt": [[{"role": "user", "content": "Q1"}], [{"role": "user", "content": "Q2"}]],
        "chosen": [[{"role": "assistant", "content": "good answer"}], [{"role": "assistant", "content": "fine"}]],
        "rejected": [[{"role": "assistant", "content": "ok"}], [{"role": "assistant", "content": "also fine"}]],
    })
    ctx = Context.ephemeral()
    kept = conform(df.lazy(), "preference").pipe(Filter(min_response_chars=3), ctx).collect()
    assert kept.height == 1
    assert ctx.quarantine_frame()["reason"].to_list() == ["response shorter than 3 chars"]


def test_quarantine_keeps_raw_row_and_id() -> None:
    _, dropped = run([conv("", "x")], Filter())
    assert dropped.columns == ["stage", "code", "reason", "id", "duplicate_of", "row"]
    assert dropped["stage"][0] == "filter"
    assert dropped["code"][0] == "empty_prompt"
    assert dropped["row"][0]["messages"][0]["content"] == ""  # the removed row as a struct (one schema)
    assert len(dropped["id"][0]) == 32


def test_stays_lazy() -> None:
    lf = conform(pl.DataFrame({"messages": [conv("a", "b")]}).lazy(), "conversation")
    assert isinstance(lf.pipe(Filter(min_prompt_chars=1)), pl.LazyFrame)


def test_bad_parameters() -> None:
    with pytest.raises(ValidationError, match="invalid regular expression"):
        Filter(exclude=["(unclosed"])
    with pytest.raises(ValidationError, match=">= 0"):
        Filter(min_prompt_chars=-1)
