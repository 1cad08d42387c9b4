"""respond: n responses for existing prompts of every table; caching; a real tiny model."""

from __future__ import annotations

import polars as pl
import pytest
from pydantic import ValidationError
from synth_fakes import FakeLLM
from tiny_llm import CHATML

from curate import Context
from curate.schema import MESSAGES, RESPONSES, conform, validate_schema
from curate.stages import Respond


def conversations(*convs: list[tuple[str, str]]) -> pl.LazyFrame:
    rows = [[{"role": r, "content": c} for r, c in conv] for conv in convs]
    return conform(pl.DataFrame({"messages": rows, "tag": [str(i) for i in range(len(rows))]},
                                schema={"messages": MESSAGES, "tag": pl.String}).lazy(), "conversation")


def fake_ctx(**kwargs) -> tuple[FakeLLM, Context]:
    llm = FakeLLM(CHATML, **kwargs)
    ctx = Context.ephemeral()
    ctx.models.register("gen", llm)
    return llm, ctx


def test_conversation_to_candidates() -> None:
    data = conversations(
        [("user", "Hi?")],
        [("system", "Be brief."), ("user", "Why?"), ("assistant", "Because."), ("user", "Sure?"), ("assistant", "Yes")],
        [("system", "nothing to answer")],
    )
    llm, ctx = fake_ctx()
    out = Respond(n=3)(data, ctx).collect()
    validate_schema(out.schema, "candidates")
    assert out.height == 2
    assert [r["content"] for r in out["responses"][0]] == ["answer 0 to: Hi?", "answer 1 to: Hi?", "answer 2 to: Hi?"]
    # A conversation ending with an assistant turn is answered anew from its last user turn.
    assert [m["content"] for m in out["prompt"][1]] == ["Be brief.", "Why?", "Because.", "Sure?"]
    assert out["tag"].to_list() == ["0", "1"] and out["parent_id"].null_count() == 0
    assert ctx.quarantine_frame()["reason"].to_list() == ["no user turn to respond to"]
    assert llm.calls == [("chat", 2)]
    assert ctx.stats["respond"]["responses"] == 6


def test_conversation_output_and_empty_responses() -> None:
    _, ctx = fake_ctx(chat_fn=lambda conv, s, k: "" if "blank" in conv[-1]["content"] else "Fine.")
    out = Respond(n=1, output="conversation")(conversations([("user", "Hello")], [("user", "blank")]), ctx).collect()
    expected = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Fine."}]
    assert out["messages"].to_list() == [expected]
    assert ctx.quarantine_frame()["reason"].to_list() == ["the model gave no non-empty response"]
    with pytest.raises(ValidationError):
        Respond(n=2, output="conversation")


def test_append_to_candidates_and_from_preference() -> None:
    cands = conform(pl.DataFrame({
        "prompt": [[{"role": "user", "content": "Q"}]],
        "responses": [[{"content": "old", "model": "x", "score": 2.0}]],
    }, schema={"prompt": MESSAGES, "responses": RESPONSES}).lazy(), "candidates")
    _, ctx = fake_ctx()
    out = Respond(n=1, append=True)(cands, ctx).collect()
    assert [(r["content"], r["score"]) for r in out["responses"][0]] == [("old", 2.0), ("answer 0 to: Q", None)]
    pref = conform(pl.DataFrame({
        "prompt": [[{"role": "user", "content": "Q"}]],
        "chosen": [[{"role": "assistant", "content": "good"}]],
        "rejected": [[{"role": "assistant", "content": "bad"}]],
    }, schema={"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES}).lazy(), "preference")
    out = Respond(n=2, append=True)(pref, ctx).collect()
    assert [r["model"] for r in out["responses"][0]] == ["chosen", "rejected", "fake", "fake"]
    assert "chosen" not in out.columns and "score_chosen" not in out.columns


def test_resume_reuses_batches(tmp_path) -> None:
    data = conversations(*[[("user", f"question {i}")] for i in range(5)])
    stage = Respond(n=2, batch_size=2)
    llm = FakeLLM(CHATML)
    ctx = Context(cache_dir=tmp_path)
    ctx.models.register("gen", llm, spec={"backend": "fake"})
    first = stage(data, ctx).collect()
    assert [n for _, n in llm.calls] == [2, 2, 1]
    again = FakeLLM(CHATML)
    ctx2 = Context(cache_dir=tmp_path)
    ctx2.models.register("gen", again, spec={"backend": "fake"})
    assert stage(data, ctx2).collect().equals(first)
    assert again.calls == []
    other = FakeLLM(CHATML)  # another model spec: the cache of the first does not apply
    ctx3 = Context(cache_dir=tmp_path)
    ctx3.models.register("gen", other, spec={"backend": "fake", "path": "other"})
    stage(data, ctx3).collect()
    assert len(other.calls) == 3


def test_respond_with_tiny_model(tiny_llm_path) -> None:
    ctx = Context.ephemeral()
    ctx.models.specs["gen"] = {"backend": "transformers", "path": str(tiny_llm_path)}
    data = conversations([("user", "Write a short poem about the sea.")], [("user", "What is the capital of France?")])
    out = Respond(n=2, temperature=1.0, max_tokens=8, seed=1)(data, ctx).collect()
    assert out.height + ctx.quarantine_frame().height == 2
    again = Respond(n=2, temperature=1.0, max_tokens=8, seed=1)(data, ctx).collect()
    assert again.equals(out)  # seeded: the same responses
    assert ctx.stats["respond"]["batches_cached"] >= 1
