"""deita_score: expected value over the digit tokens (checked by hand on a tiny model), missing digits, multi-turn
aggregation, preference rows, and the row-level cache on a re-run."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
from synth_fakes import FakeLLM
from tiny_llm import CHATML

from curate import Context
from curate.llm.base import Generation
from curate.models import ModelRegistry
from curate.schema import MESSAGES, conform
from curate.stages import STAGES, DeitaScore
from curate.synth import scoring


def conversations(*convs: list[tuple[str, str]]) -> pl.LazyFrame:
    rows = [[m for u, a in conv for m in ({"role": "user", "content": u}, {"role": "assistant", "content": a})]
            for conv in convs]
    return conform(pl.LazyFrame({"messages": rows}, schema={"messages": MESSAGES}), "conversation")


def lp(**probs: float) -> dict[str, float]:
    """Top-k log-probabilities from probabilities; ``_4`` is the token ``" 4"``, ``d4`` the token ``"4"``."""
    return {(" " if k[0] == "_" else "") + k[1:]: math.log(p) for k, p in probs.items()}


def scripted(table: dict[str, list[dict[str, float]] | None]) -> FakeLLM:
    """A fake whose logprobs depend on the scored text: ``table[(kind, instruction)]`` picks the distribution."""

    def gen(prompt: str, sampling, k) -> Generation:
        assert prompt.endswith("<|im_start|>assistant\n" + scoring.PREFILL)
        assert sampling.max_tokens == 2 and sampling.temperature == 0 and sampling.logprobs
        instruction = prompt.split("[Instruction]\n")[1].split("\n[End of instruction]")[0]
        kind = "q" if "[Response]" in prompt else "c"
        return Generation(text=" 4", tokens=2, logprobs=table[f"{kind}:{instruction}"])

    return FakeLLM(CHATML, generate_fn=gen)


def test_multi_turn_aggregation_exact() -> None:
    fake = scripted({
        "c:a": [lp(d2=1.0)],
        "q:a": [{" ": math.log(0.9), "5": math.log(0.1)}, lp(_5=0.5, _3=0.5)],  # space first: the next position
        "c:bb": [lp(d3=0.25, d6=0.75)],
        "q:bb": [lp(d1=0.5, the=0.5)],  # non-digit mass is renormalised away
        "c:solo": [{**lp(d4=0.6, d5=0.2, d9=0.1), "²": math.log(0.1)}],  # 9, ² are not on the 1..6 scale
        "q:solo": [lp(d2=0.5, d4=0.5)],
    })
    ctx = Context.ephemeral()
    ctx.models.register("gen", fake)
    out = DeitaScore()(conversations([("a", "x"), ("bb", "y")], [("solo", "z")]), ctx).collect()
    assert out["deita_complexity_turns"].to_list() == [pytest.approx([2.0, 5.25]), pytest.approx([4.25])]
    assert out["deita_quality_turns"].to_list() == [pytest.approx([4.0, 1.0]), pytest.approx([3.0])]
    assert out["deita_score"].to_list() == pytest.approx([2 * 4 + 5.25 * 1, 4.25 * 3])
    assert out["deita_complexity"].to_list() == pytest.approx([3.625, 4.25])
    assert out["deita_quality"].to_list() == pytest.approx([2.5, 3.0])
    assert out["deita_note"].to_list() == [None, None]
    assert ctx.stats["deita_score"]["scored"] == 2 and "deita_score" in STAGES


def test_missing_digits_give_null_and_reason() -> None:
    fake = scripted({
        "c:ok": [lp(d3=1.0)], "q:ok": [lp(the=0.7, a=0.3)],  # no digit in the top-k
        "c:none": None, "q:none": None,  # backend returned no logprobs at all
    })
    ctx = Context.ephemeral()
    ctx.models.register("gen", fake)
    data = conversations([("ok", "x")], [("none", "y")])
    data = pl.concat([data, conform(pl.LazyFrame({"messages": [[{"role": "user", "content": "unanswered"}]]},
                                                 schema={"messages": MESSAGES}), "conversation")])
    out = DeitaScore()(data, ctx).collect()
    assert out["deita_score"].to_list() == [None, None, None]
    assert out["deita_complexity_turns"][0].to_list() == [3.0] and out["deita_quality"][0] is None
    assert out["deita_note"][0] == "turn 1 quality: no score token 1..6 among the top logprobs of the score position"
    assert out["deita_note"][1] == ("turn 1 complexity: backend returned no logprobs; "
                                    "turn 1 quality: backend returned no logprobs")
    assert out["deita_note"][2] == "no (user, assistant) turn to score"
    assert ctx.stats["deita_score"]["null_scores"] == 3


def test_preference_scores_chosen() -> None:
    fake = scripted({"c:q2": [lp(d2=1.0)], "q:q2": [lp(d5=1.0)]})
    ctx = Context.ephemeral()
    ctx.models.register("gen", fake)
    rows = {"prompt": [[{"role": "user", "content": "q1"}, {"role": "assistant", "content": "r1"},
                        {"role": "user", "content": "q2"}]],
            "chosen": [[{"role": "assistant", "content": "good"}]],
            "rejected": [[{"role": "assistant", "content": "bad"}]]}
    schema = {"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES}
    data = conform(pl.DataFrame(rows, schema=schema).lazy(), "preference")
    out = DeitaScore()(data, ctx).collect()
    assert out["deita_score"][0] == pytest.approx(10.0) and out["deita_quality"][0] == pytest.approx(5.0)


class NoTemplate(FakeLLM):
    """An HTTP-like backend without a local tokenizer: render fails, so the stage scores through ``chat``."""

    def render(self, conversation, add_generation_prompt: bool = True) -> str:
        raise RuntimeError("no tokenizer")


def test_backend_without_template_uses_chat() -> None:
    def chat(conv, sampling, k) -> Generation:
        assert conv[0]["content"] == scoring.SYSTEM and sampling.logprobs and sampling.max_tokens == 2
        return Generation(text="5", tokens=1, logprobs=[lp(d5=0.5, d6=0.5)])

    ctx = Context.ephemeral()
    ctx.models.register("gen", NoTemplate(CHATML, chat_fn=chat))
    out = DeitaScore()(conversations([("a", "x")]), ctx).collect()
    assert out["deita_score"][0] == pytest.approx(5.5 * 5.5) and not any(c[0] == "generate" for c in ctx.models.get(
        "gen", "llm").calls)


def test_rerun_computes_nothing(tmp_path: Path) -> None:
    fake = scripted({f"{k}:{i}": [lp(d3=0.5, d4=0.5)] for k in "cq" for i in ("a", "b", "c")})
    data = conversations([("a", "x")], [("b", "y")])
    first = Context(cache_dir=tmp_path)
    first.models.register("gen", fake)
    DeitaScore(batch_size=1)(data, first).collect()
    assert first.stats["deita_score"]["rows_computed"] == 2
    calls = len(fake.calls)
    again = Context(cache_dir=tmp_path)
    again.models.register("gen", fake)
    out = DeitaScore(batch_size=1)(data, again).collect()
    assert again.stats["deita_score"]["rows_computed"] == 0 and len(fake.calls) == calls
    assert out["deita_score"].to_list() == pytest.approx([12.25, 12.25])
    grown = Context(cache_dir=tmp_path)
    grown.models.register("gen", fake)
    DeitaScore(batch_size=1)(pl.concat([data, conversations([("c", "z")])]), grown).collect()
    assert grown.stats["deita_score"]["rows_computed"] == 1


def test_expected_value_matches_model_softmax(tiny_llm_path: Path) -> None:
    """The stage's score equals sum k * p(k) over the tiny model's own next-token softmax at the digit ids."""
    import torch

    ctx = Context.ephemeral(models=ModelRegistry({"gen": {"backend": "transformers", "path": str(tiny_llm_path)}}))
    llm = ctx.models.get("gen", "llm")
    vocab = len(llm.tokenizer)
    stage = DeitaScore(top_logprobs=vocab)  # the whole vocabulary: renormalisation over exactly the digits
    out = stage(conversations([("Explain the difference between a list and a tuple.", "A tuple is immutable.")]),
                ctx).collect()

    digit_ids = {i: int(t.strip()) for i in range(vocab)
                 if (t := llm.tokenizer.decode([i])).strip() in {"1", "2", "3", "4", "5", "6"}}
    assert digit_ids, "the tiny tokenizer has digit tokens"

    def by_hand(conv: list[dict[str, str]]) -> float:
        ids = llm.encode(llm.render(conv, add_generation_prompt=True) + scoring.PREFILL)
        with torch.inference_mode():
            for _ in range(2):  # the first position whose likeliest token is not whitespace
                probs = torch.softmax(llm.model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
                best = int(probs.argmax())
                if llm.tokenizer.decode([best]).strip():
                    break
                ids = [*ids, best]
        mass = {i: float(probs[i]) for i in digit_ids}
        return sum(digit_ids[i] * p for i, p in mass.items()) / sum(mass.values())

    instruction, response = "Explain the difference between a list and a tuple.", "A tuple is immutable."
    assert out["deita_complexity"][0] == pytest.approx(by_hand(scoring.complexity_prompt(instruction)), abs=1e-4)
    assert out["deita_quality"][0] == pytest.approx(by_hand(scoring.quality_prompt(instruction, response)), abs=1e-4)
    assert out["deita_note"][0] is None


def test_openai_backend_matches_transformers(tiny_llm_path: Path, tmp_path: Path) -> None:
    """Through an OpenAI-compatible server (curate.llm.serve over the tiny model) the scores are the local
    backend's: with ``tokenizer:`` the prefilled prompt goes to /completions, without one the chat endpoint's
    first answer token is read (same values as the local backend's chat)."""
    from curate.llm import load_llm
    from curate.llm.serve import OpenAICompatServer

    local = load_llm({"backend": "transformers", "path": str(tiny_llm_path)})
    data = conversations([("Write a short poem about the sea.", "The sea is blue.")], [("Hi", "Hello!")])
    server = OpenAICompatServer(local).start()
    try:
        base = {"backend": "openai", "base_url": server.base_url, "model": "tiny", "cache_dir": str(tmp_path / "c")}
        specs = {"local": {"backend": "transformers", "path": str(tiny_llm_path)},
                 "remote": {**base, "tokenizer": str(tiny_llm_path)}, "chat_only": base}
        ctx = Context.ephemeral(models=ModelRegistry(specs))
        ctx.models.register("local", local)
        cols = ["deita_complexity_turns", "deita_quality_turns", "deita_note"]
        expected = DeitaScore(model="local", top_logprobs=200)(data, ctx).collect().select(cols)
        remote_ctx, chat_ctx = (Context.ephemeral(models=ModelRegistry(specs)) for _ in range(2))
        remote = DeitaScore(model="remote", top_logprobs=200)(data, remote_ctx).collect()
        _assert_close(remote, expected)
        chat_only = DeitaScore(model="chat_only", top_logprobs=200)(data, chat_ctx).collect()
        stage = DeitaScore(top_logprobs=200)  # the whole distribution's digits, not just the top 20
        instruction, response = "Hi", "Hello!"
        convs = [scoring.complexity_prompt(instruction), scoring.quality_prompt(instruction, response)]
        by_hand = [scoring.expected_score(g[0].logprobs)[0] for g in local.chat(convs, stage.sampling(["x", "y"]))]
        got = [chat_only["deita_complexity_turns"][1][0], chat_only["deita_quality_turns"][1][0]]
        assert [g is None for g in got] == [b is None for b in by_hand]
        assert [g for g in got if g is not None] == pytest.approx([b for b in by_hand if b is not None], abs=1e-4)
    finally:
        server.stop()


def _assert_close(a: pl.DataFrame, b: pl.DataFrame) -> None:
    for col in ("deita_complexity_turns", "deita_quality_turns"):
        for x, y in zip(a[col].to_list(), b[col].to_list(), strict=True):
            for u, v in zip(x, y, strict=True):
                assert (u is None) == (v is None) and (u is None or abs(u - v) < 1e-4)
    assert a["deita_note"].to_list() == b["deita_note"].to_list()
