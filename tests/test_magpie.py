"""Magpie: pre-query templates of several chat-template families, sanitising, the stage, resume."""

from __future__ import annotations

import itertools

import polars as pl
import pytest
from synth_fakes import QWEN25_LIKE, FakeLLM, render_with
from tiny_llm import CHATML, GEMMA, LLAMA3

from curate import Context
from curate.errors import ModelError
from curate.llm.base import Generation
from curate.stages import Magpie
from curate.synth.templates import derive_template, normalise_for_dedup, sanitise_instruction

SEEDS = pl.LazyFrame({"x": [1]})


# -- template derivation ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("template", "pre_query", "end_of_turn", "header"),
    [
        (CHATML, "<|im_start|>user\n", "<|im_end|>\n", "<|im_start|>assistant\n"),
        (LLAMA3, "<s><|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>",
         "<|start_header_id|>assistant<|end_header_id|>\n\n"),
        (GEMMA, "<s><start_of_turn>user\n", "<end_of_turn>\n", "<start_of_turn>model\n"),
        # Qwen2.5 inserts its default system turn itself: the pre-query template keeps it.
        (QWEN25_LIKE, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
         "<|im_end|>\n", "<|im_start|>assistant\n"),
    ],
    ids=["chatml", "llama3", "gemma", "qwen2.5-default-system"],
)
def test_template_families(template: str, pre_query: str, end_of_turn: str, header: str) -> None:
    derived = derive_template(render_with(template))
    assert derived.pre_query == pre_query
    assert derived.end_of_turn == end_of_turn
    assert derived.assistant_header == header
    assert derived.stops[0] == end_of_turn.strip()


def test_template_with_system_and_history() -> None:
    render = render_with(LLAMA3)
    system = [{"role": "system", "content": "You write Python."}]
    assert derive_template(render, system).pre_query == (
        "<s><|start_header_id|>system<|end_header_id|>\n\nYou write Python.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
    )
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    later = derive_template(render, history).pre_query
    assert later.endswith("Hello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n")


def test_template_from_a_real_tokenizer(tiny_llm_builder) -> None:
    from curate.llm import load_llm

    llm = load_llm({"backend": "transformers", "path": str(tiny_llm_builder(GEMMA))})
    derived = derive_template(lambda c, g: llm.render(c, add_generation_prompt=g))
    assert derived.pre_query == "<bos><start_of_turn>user\n"
    assert derived.end_of_turn == "<end_of_turn>\n"


def test_template_that_drops_the_user_message_is_an_error() -> None:
    with pytest.raises(ModelError, match="dropped the user message"):
        derive_template(lambda conv, gen: "<s>system only")


# -- sanitising ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("How do magnets work?", "How do magnets work?"),
        ("User: How do magnets work?", "How do magnets work?"),
        ("### Instruction: Sort a list in Python.", "Sort a list in Python."),
        ("1. Name three rivers in Europe.", "Name three rivers in Europe."),
        ("Human: 2) Explain recursion to a child.", "Explain recursion to a child."),
        ('"Write a limerick about a cat."', "Write a limerick about a cat."),
        ("Explain TCP.\nAssistant: TCP is a protocol", "Explain TCP."),
        ("Explain TCP.\n\nAnswer: TCP is", "Explain TCP."),
        ("What is 2+2?<|im_end|>\n<|im_start|>assistant\n4", "What is 2+2?"),
        ("Plan a trip.\n\n\n\nTo Rome.", "Plan a trip.\n\nTo Rome."),
        ("  - Give me a synonym for happy.  ", "Give me a synonym for happy."),
    ],
)
def test_sanitise_cleans(raw: str, clean: str) -> None:
    result = sanitise_instruction(raw, stops=("<|im_end|>",))
    assert result.reason is None
    assert result.text == clean


@pytest.mark.parametrize(
    ("raw", "kwargs", "reason"),
    [
        ("", {}, "empty instruction"),
        ("   \n ", {}, "empty instruction"),
        ("User:", {}, "empty instruction"),
        ("Assistant: hello there friend", {}, "empty instruction"),
        ("Hi?", {}, "instruction too short (3 < 8 chars)"),
        ("x" * 50, {"max_chars": 20}, "instruction too long (50 > 20 chars)"),
        ("Tell me a very long story about", {"truncated": True}, "instruction truncated"),
    ],
)
def test_sanitise_drops_with_reason(raw: str, kwargs: dict, reason: str) -> None:
    result = sanitise_instruction(raw, **kwargs)
    assert result.reason is not None and result.reason.startswith(reason)


def test_truncated_kept_when_allowed_and_self_answer_is_not_truncation() -> None:
    assert sanitise_instruction("Tell me a long story", truncated=True, drop_truncated=False).reason is None
    # The query ended; only the model's self-answer ran into the token limit.
    assert sanitise_instruction("Tell me a story.\nAssistant: Once upon", truncated=True).reason is None
    assert normalise_for_dedup("  How are   YOU? ") == normalise_for_dedup("how are you")


# -- the stage with a scripted model ---------------------------------------------------------------------------
def scripted(outputs: list[str]) -> FakeLLM:
    counter = itertools.count()
    return FakeLLM(CHATML, generate_fn=lambda prompt, sampling, k: outputs[next(counter) % len(outputs)])


def test_magpie_conversation_rejects_and_duplicates() -> None:
    llm = scripted(["User: How do tides work?", "", "Why?", "how do tides work", "1. Write a haiku about rain."])
    ctx = Context.ephemeral()
    ctx.models.register("gen", llm)
    out = Magpie(count=5, batch_size=2)(SEEDS, ctx).collect()
    assert [m[0]["content"] for m in out["messages"].to_list()] == ["How do tides work?", "Write a haiku about rain."]
    assert out["messages"].to_list()[0][1] == {"role": "assistant", "content": "answer 0 to: How do tides work?"}
    assert out["source"].to_list() == ["magpie", "magpie"]
    reasons = sorted(ctx.quarantine_frame()["reason"].to_list())
    assert reasons[0] == "duplicate instruction of magpie sample " + reasons[0].split()[-1]
    assert reasons[1:] == ["empty instruction", "instruction too short (4 < 8 chars)"]
    notes = ctx.stats["magpie"]
    assert notes["duplicates"] == 1 and notes["samples"] == 5
    # Instruction and response sampling settings are separate: hot instructions, greedy single responses.
    prompts_seen = []
    llm.generate_fn = lambda prompt, sampling, k: prompts_seen.append(sampling) or "Name a prime number please."
    Magpie(count=1, seed=7)(SEEDS, ctx).collect()
    assert prompts_seen[0].temperature == 1.0 and prompts_seen[0].top_p == 0.99
    assert prompts_seen[0].stop[0] == "<|im_end|>"


def test_magpie_candidates_multiturn_and_system() -> None:
    counter = itertools.count()
    llm = FakeLLM(LLAMA3, generate_fn=lambda p, s, k: f"Question number {next(counter)} about space?")
    ctx = Context.ephemeral()
    ctx.models.register("gen", llm)
    out = Magpie(count=3, n=3, turns=2, system="You are an astronomer.")(SEEDS, ctx).collect()
    assert out.height == 3
    row = out.row(0, named=True)
    assert [m["role"] for m in row["prompt"]] == ["system", "user", "assistant", "user"]
    assert len(row["responses"]) == 3 and row["magpie_turns"] == 2
    assert {r["score"] for r in row["responses"]} == {None}


def test_magpie_failed_continuation_ends_conversation() -> None:
    llm = scripted(["Tell me about volcanoes.", ""])  # every second instruction (the continuation) is empty
    ctx = Context.ephemeral()
    ctx.models.register("gen", llm)
    out = Magpie(count=1, turns=2, n=2)(SEEDS, ctx).collect()
    assert [m["role"] for m in out["prompt"][0]] == ["user"]
    assert len(out["responses"][0]) == 2
    assert ctx.stats["magpie"]["continuations_dropped"] == 1


def test_magpie_system_from_input() -> None:
    seen: list[str] = []
    llm = FakeLLM(CHATML, generate_fn=lambda p, s, k: seen.append(p) or f"Solve problem {len(seen)} please.")
    ctx = Context.ephemeral()
    ctx.models.register("gen", llm)
    systems = pl.LazyFrame({"messages": [[{"role": "system", "content": "Math tutor."},
                                          {"role": "user", "content": "x"}]], "id": ["s1"]})
    out = Magpie(system_from_input=True)(systems, ctx).collect()
    assert seen[0] == "<|im_start|>system\nMath tutor.<|im_end|>\n<|im_start|>user\n"
    assert out["messages"][0][0] == {"role": "system", "content": "Math tutor."}
    assert out["magpie_seed_id"].to_list() == ["s1"]


# -- resume -------------------------------------------------------------------------------------------------
class Killed(RuntimeError):
    pass


def test_killed_magpie_run_resumes_without_regenerating(tmp_path) -> None:
    def make(fail_after: int | None) -> FakeLLM:
        llm = FakeLLM(CHATML)

        def generate(prompts, sampling):  # deterministic in (seed, position), like a seeded sampler
            if fail_after is not None and sum(kind == "generate" for kind, _ in llm.calls) >= fail_after:
                raise Killed("killed mid-stage")
            llm.calls.append(("generate", len(prompts)))
            texts = [f"Instruction seeded {sampling.seed} at {i}" for i in range(len(prompts))]
            return [[Generation(text=t, tokens=5)] for t in texts]

        llm.generate = generate  # type: ignore[method-assign]
        return llm

    stage = Magpie(count=10, batch_size=3)  # 4 batches
    first = make(fail_after=2)
    ctx = Context(cache_dir=tmp_path)
    ctx.models.register("gen", first, spec={"backend": "fake"})
    with pytest.raises(Killed):
        stage(SEEDS, ctx)
    assert sum(kind == "generate" for kind, _ in first.calls) == 2

    second = make(fail_after=None)
    ctx2 = Context(cache_dir=tmp_path)
    ctx2.models.register("gen", second, spec={"backend": "fake"})
    resumed = stage(SEEDS, ctx2).collect()
    assert [n for kind, n in second.calls if kind == "generate"] == [3, 1]  # only the two unfinished batches
    assert ctx2.stats["magpie"]["batches_cached"] == 2

    fresh = make(fail_after=None)
    ctx3 = Context.ephemeral()
    ctx3.models.register("gen", fresh, spec={"backend": "fake"})
    assert stage(SEEDS, ctx3).collect().equals(resumed)  # same rows as an uninterrupted run

    again = make(fail_after=None)
    ctx4 = Context(cache_dir=tmp_path)
    ctx4.models.register("gen", again, spec={"backend": "fake"})
    stage(SEEDS, ctx4).collect()
    assert again.calls == []  # a finished stage costs no model call


# -- a real (tiny) transformers model -------------------------------------------------------------------------
def test_magpie_with_tiny_model(tiny_llm_path) -> None:
    ctx = Context.ephemeral()
    ctx.models.specs["gen"] = {"backend": "transformers", "path": str(tiny_llm_path)}
    stage = Magpie(count=4, n=2, min_chars=1, drop_truncated=False, instruction_max_tokens=8,
                   response_max_tokens=8, response_temperature=1.0)
    out = stage(SEEDS, ctx).collect()
    kept = out.height
    dropped = ctx.quarantine_frame().height
    assert kept + dropped == 4
    if kept:
        assert out.columns[:4] == ["id", "prompt", "responses", "source"]


@pytest.mark.slow
def test_magpie_with_default_smollm2() -> None:
    ctx = Context.ephemeral()
    ctx.models.specs["gen"] = {"backend": "transformers", "path": "default"}
    out = Magpie(count=2, instruction_max_tokens=48, response_max_tokens=24, drop_truncated=False)(SEEDS, ctx)
    frame = out.collect()
    assert frame.height + ctx.quarantine_frame().height == 2
    for messages in frame["messages"].to_list():
        assert messages[0]["role"] == "user" and messages[0]["content"].strip()


def test_magpie_instructions_only() -> None:
    llm = scripted(["Describe the water cycle."])
    ctx = Context.ephemeral()
    ctx.models.register("gen", llm)
    out = Magpie(count=1, respond=False)(SEEDS, ctx).collect()
    assert out["messages"].to_list() == [[{"role": "user", "content": "Describe the water cycle."}]]
    assert [kind for kind, _ in llm.calls] == ["generate"]
    with pytest.raises(ValueError):
        Magpie(respond=False, n=2)


def test_larger_count_reuses_finished_batches(tmp_path) -> None:
    llm = scripted([f"Question {i} about rivers and lakes?" for i in range(50)])
    ctx = Context(cache_dir=tmp_path)
    ctx.models.register("gen", llm, spec={"backend": "fake"})
    small = Magpie(count=6, batch_size=3)(SEEDS, ctx).collect()
    assert [n for kind, n in llm.calls if kind == "generate"] == [3, 3]
    llm.calls.clear()
    large = Magpie(count=9, batch_size=3)(SEEDS, ctx).collect()
    assert [n for kind, n in llm.calls if kind == "generate"] == [3]  # only the new batch
    assert large.head(6).equals(small)
