"""Judge: output parsing (messy text, property tests), swap logic, expected-value scores, the stage."""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synth_fakes import FakeLLM
from tiny_llm import CHATML

from curate import Context
from curate.errors import InputDataError
from curate.llm.base import Generation
from curate.schema import MESSAGES, RESPONSES, conform
from curate.stages import Judge
from curate.synth import judging


# -- parsing ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "scale", "score"),
    [
        ("Reason: clear and correct.\nRating: 4", 5, 4.0),
        ("Rating: 9\nReason: good", 10, 9.0),
        ("reason: meh\n\nrating:   **3**", 5, 3.0),
        ("I'd give it [[7]] overall.", 10, 7.0),
        ("Score: 2", 5, 2.0),
        ("Overall this deserves 4/5.", 5, 4.0),
        ("Overall this deserves 8 out of 10", 10, 8.0),
        ("It mentions 3 steps and 12 facts. Rating: 5", 5, 5.0),
        ("Rating: 2 ... on reflection Rating: 3", 5, 3.0),  # the last verdict wins
    ],
)
def test_parse_rating(text: str, scale: int, score: float) -> None:
    assert judging.parse_rating(text, scale).score == score


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty judge output"),
        ("The response is fine.", "no rating found in judge output"),
        ("Rating: N", "no rating found in judge output"),
        ("Rating: 11", "rating 11 outside 1..10"),
        ("Rating: 0", "rating 0 outside 1..10"),
        ("Rating: 3.5", "rating 3.5 is not an integer"),
    ],
)
def test_parse_rating_failures(text: str, reason: str) -> None:
    rating = judging.parse_rating(text, 10)
    assert rating.score is None and rating.reason == reason


def test_rating_first_takes_the_first() -> None:
    assert judging.parse_rating("Rating: 2\nReason: unlike Rating: 5 elsewhere", 5, rating_first=True).score == 2


NOISE = st.text(alphabet=st.characters(blacklist_categories=("Nd", "Cs"), blacklist_characters="[]/"), max_size=80)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.sampled_from([5, 10]))
def test_parse_never_raises_and_stays_in_range(text: str, scale: int) -> None:
    rating = judging.parse_rating(text, scale)
    assert (rating.score is None) == (rating.reason is not None)
    if rating.score is not None:
        assert 1 <= rating.score <= scale and rating.score.is_integer()
    verdict, reason = judging.parse_verdict(text)
    assert (verdict is None) != (reason is None)
    assert verdict in (None, "a", "b", "tie")


@settings(max_examples=200, deadline=None)
@given(NOISE, NOISE, st.integers(1, 10))
def test_embedded_rating_is_recovered(before: str, after: str, value: int) -> None:
    lowered = (before + after).lower()
    if any(word in lowered for word in ("rating", "score", "grade", "out of")):
        return
    text = f"{before}\nRating: {value}\n{after}"
    assert judging.parse_rating(text, 10).score == value


@settings(max_examples=200, deadline=None)
@given(NOISE, NOISE, st.sampled_from(["A", "B", "tie", "Tie", "a"]))
def test_embedded_verdict_is_recovered(before: str, after: str, verdict: str) -> None:
    lowered = (before + after).lower()
    if any(word in lowered for word in ("verdict", "response", "assistant")):
        return
    assert judging.parse_verdict(f"{before}\nVerdict: {verdict}\n{after}")[0] == verdict.lower()


def test_parse_verdict_variants() -> None:
    assert judging.parse_verdict("Reason: shorter.\nVerdict: B") == ("b", None)
    assert judging.parse_verdict("[[A]]") == ("a", None)
    assert judging.parse_verdict("Overall, Response A is better.") == ("a", None)
    assert judging.parse_verdict("Both are fine")[0] is None


# -- swap logic ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("first", "swapped", "verdict", "consistent"),
    [
        ("a", "b", "a", True),  # x wins in both positions
        ("b", "a", "b", True),
        ("tie", "tie", "tie", True),
        ("a", "a", "tie", False),  # position bias: always the first slot
        ("b", "b", "tie", False),
        ("a", "tie", "tie", False),
        (None, "a", None, None),
        ("b", None, None, None),
    ],
)
def test_combine_swapped(first, swapped, verdict, consistent) -> None:
    got, ok, reason = judging.combine_swapped(first, swapped)
    assert (got, ok) == (verdict, consistent)
    assert (reason is None) == (consistent is True)


# -- expected value -------------------------------------------------------------------------------------------
def lp(**probs: float) -> dict[str, float]:
    return {k.replace("_", " "): math.log(v) for k, v in probs.items()}


def test_expected_value_at_the_rating_token() -> None:
    tokens = ["Reason", ":", " fine", ".", "\n", "Rating", ":", " 4"]
    logprobs = [{t: -0.1, "zz": -5.0} for t in tokens[:-1]]
    logprobs.append({" 4": math.log(0.5), " 5": math.log(0.3), " 3": math.log(0.1), " the": math.log(0.1)})
    text = "".join(tokens)
    rating = judging.parse_rating(text, 5)
    score, how = judging.expected_rating(text, logprobs, rating, 5)
    assert score == pytest.approx((4 * 0.5 + 5 * 0.3 + 3 * 0.1) / 0.9)
    assert how == "expected value over score tokens"


def test_expected_value_falls_back_to_parsed() -> None:
    text = "Rating: 10"
    rating = judging.parse_rating(text, 10)
    two_tokens = [{"Rating": -0.1}, {":": -0.1}, {" 1": -0.1}, {"0": -0.1}]
    assert judging.expected_rating(text, two_tokens, rating, 10) == (10.0, "parsed (rating spans several tokens)")
    assert judging.expected_rating(text, None, rating, 10) == (10.0, "parsed (no logprobs)")
    wrong = [{"Something": -0.1}, {" else": -0.1}]
    assert judging.expected_rating(text, wrong, rating, 10)[1] == "parsed (tokens do not match text)"


def test_rating_and_verdict_distributions() -> None:
    ev, best, _ = judging.rating_distribution(lp(_2=0.2, _3=0.6, x=0.1, _9=0.1), 5)
    assert ev == pytest.approx((2 * 0.2 + 3 * 0.6) / 0.8) and best == 3.0
    assert judging.rating_distribution(lp(x=0.9), 5)[0] is None
    assert judging.verdict_distribution(lp(_A=0.3, _B=0.5, _t=0.1)) == ("b", None)
    assert judging.verdict_distribution(lp(hello=1.0))[0] is None
    assert judging.first_label_position([lp(_=0.9, x=0.1), lp(_4=1.0)]) == lp(_4=1.0)


# -- the stage ------------------------------------------------------------------------------------------------
def candidates(*groups: list[str]) -> pl.LazyFrame:
    rows = {
        "prompt": [[{"role": "user", "content": f"question {i}"}] for i in range(len(groups))],
        "responses": [[{"content": c, "model": "m", "score": None} for c in group] for group in groups],
    }
    return conform(pl.DataFrame(rows, schema={"prompt": MESSAGES, "responses": RESPONSES}).lazy(), "candidates")


def preference(pairs: list[tuple[str, str]]) -> pl.LazyFrame:
    rows = {
        "prompt": [[{"role": "user", "content": f"q{i}"}] for i in range(len(pairs))],
        "chosen": [[{"role": "assistant", "content": c}] for c, _ in pairs],
        "rejected": [[{"role": "assistant", "content": r}] for _, r in pairs],
    }
    schema = {"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES}
    return conform(pl.DataFrame(rows, schema=schema).lazy(), "preference")


def graded(conv, sampling, k) -> str:
    response = conv[-1]["content"].split("[Response to grade]\n")[1].split("\n[End of response]")[0]
    if response.startswith("junk"):
        return "I cannot decide."
    return f"Reason: ok.\nRating: {len(response) % 5 + 1}"


def test_pointwise_candidates_text_mode() -> None:
    ctx = Context.ephemeral()
    ctx.models.register("judge", FakeLLM(CHATML, chat_fn=graded))
    out = Judge(rating_from="text")(candidates(["ab", "abcd", "junk"], ["x"]), ctx).collect()
    assert [r["score"] for r in out["responses"][0]] == [3.0, 5.0, None]
    details = out["judge"][0]
    assert details[2]["reason"] == "no rating found in judge output" and details[1]["chars"] == 4
    assert ctx.stats["judge"]["null_scores"] == 1 and ctx.stats["judge"]["judged"] == 4


def test_pointwise_preference_and_expected_value_from_logprobs() -> None:
    def gen(prompt, sampling, k) -> Generation:
        assert prompt.endswith("<|im_start|>assistant\nRating:") and sampling.logprobs
        return Generation(text=" 4", tokens=1, logprobs=[lp(_4=0.5, _5=0.25, _3=0.25)])

    ctx = Context.ephemeral()
    ctx.models.register("judge", FakeLLM(CHATML, generate_fn=gen))
    out = Judge()(preference([("good", "bad")]), ctx).collect()  # auto: the fake renders, so prefill
    assert out["score_chosen"][0] == pytest.approx(4.0) and out["score_rejected"][0] == pytest.approx(4.0)
    assert out["judge_reason_chosen"][0] == "expected value over score tokens"
    assert out["judge_chars_rejected"][0] == 3
    assert ctx.stats["judge"]["rating_from"] == "prefill"
    parsed = Judge(logprobs=False)(preference([("good", "bad")]), ctx).collect()
    assert parsed["score_chosen"][0] == 4.0


def pairwise_fake(rule: str) -> FakeLLM:
    def chat(conv, sampling, k) -> str:
        text = conv[-1]["content"]
        a = text.split("[Response A]\n")[1].split("\n[End of response A]")[0]
        b = text.split("[Response B]\n")[1].split("\n[End of response B]")[0]
        if rule == "first":
            return "Reason: first.\nVerdict: A"
        if rule == "garbage":
            return "hmm"
        return "Reason: longer.\nVerdict: " + ("A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie")

    return FakeLLM(CHATML, chat_fn=chat)


def test_pairwise_swap_gives_winner_only_when_consistent() -> None:
    data = preference([("long answer", "short"), ("tiny", "much longer answer"), ("same", "same")])
    ctx = Context.ephemeral()
    ctx.models.register("judge", pairwise_fake("longer"))
    out = Judge(mode="pairwise", rating_from="text")(data, ctx).collect()
    assert out["judge_verdict"].to_list() == ["chosen", "rejected", "tie"]
    assert out["judge_consistent"].to_list() == [True, True, True]
    assert ctx.stats["judge"]["swap_consistency"] == 1.0 and ctx.stats["judge"]["longer_wins"] == 1.0

    biased = Context.ephemeral()
    biased.models.register("judge", pairwise_fake("first"))
    out = Judge(mode="pairwise", rating_from="text")(data, biased).collect()
    assert out["judge_verdict"].to_list() == ["tie", "tie", "tie"]
    assert biased.stats["judge"]["swap_consistency"] == 0.0

    broken = Context.ephemeral()
    broken.models.register("judge", pairwise_fake("garbage"))
    out = Judge(mode="pairwise", rating_from="text")(data, broken).collect()
    assert out["judge_verdict"].to_list() == [None, None, None]
    assert out["judge_reason"][0] == "unparseable verdict in the first order"


def test_pairwise_candidates_win_rate() -> None:
    ctx = Context.ephemeral()
    ctx.models.register("judge", pairwise_fake("longer"))
    out = Judge(mode="pairwise", rating_from="text")(candidates(["a", "abc", "ab"]), ctx).collect()
    assert [r["score"] for r in out["responses"][0]] == [0.0, 1.0, 0.5]
    assert ctx.stats["judge"]["comparisons"] == 3


def test_pairwise_needs_two_sides() -> None:
    conv = conform(pl.LazyFrame({"messages": [[{"role": "user", "content": "hi"}]]},
                                schema={"messages": MESSAGES}), "conversation")
    ctx = Context.ephemeral()
    ctx.models.register("judge", pairwise_fake("longer"))
    with pytest.raises(InputDataError):
        Judge(mode="pairwise")(conv, ctx)


def test_judge_with_tiny_model(tiny_llm_path) -> None:
    ctx = Context.ephemeral()
    ctx.models.specs["judge"] = {"backend": "transformers", "path": str(tiny_llm_path)}
    data = candidates(["The capital of France is Paris.", "No idea."])
    out = Judge(scale=10)(data, ctx).collect()  # prefill + logprobs from the real backend
    for item in out["judge"][0]:
        assert item["score"] is None or 1.0 <= item["score"] <= 10.0
        assert item["reason"]
    text = Judge(rating_from="text", max_tokens=8)(data, ctx).collect()  # gibberish: null + reason, no crash
    assert all(j["reason"] for j in text["judge"][0])


def test_calibrated_pairwise_cancels_position_bias() -> None:
    def gen(prompt, sampling, k) -> Generation:
        # Always prefers slot A (bias), but less so when the better (longer) response sits in slot B.
        a = prompt.split("[Response A]\n")[1].split("\n[End of response A]")[0]
        b = prompt.split("[Response B]\n")[1].split("\n[End of response B]")[0]
        p_a = 0.8 if len(a) > len(b) else 0.6
        return Generation(text=" A", tokens=1, logprobs=[lp(_A=p_a, _B=1 - p_a)])

    data = preference([("a long good answer", "bad"), ("bad", "a long good answer")])
    ctx = Context.ephemeral()
    ctx.models.register("judge", FakeLLM(CHATML, generate_fn=gen))
    agree = Judge(mode="pairwise")(data, ctx).collect()
    assert agree["judge_verdict"].to_list() == ["tie", "tie"]  # swap check: bias -> ties
    calibrated = Judge(mode="pairwise", pairwise_rule="calibrated")(data, ctx).collect()
    assert calibrated["judge_verdict"].to_list() == ["chosen", "rejected"]
    assert calibrated["judge_consistent"].to_list() == [False, False]


def test_pointwise_conversation_last_turn() -> None:
    conv = conform(pl.LazyFrame({"messages": [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "abcd"}],
        [{"role": "user", "content": "no answer yet"}],
    ]}, schema={"messages": MESSAGES}), "conversation")
    ctx = Context.ephemeral()
    ctx.models.register("judge", FakeLLM(CHATML, chat_fn=graded))
    out = Judge(rating_from="text")(conv, ctx).collect()
    assert out["judge_score"].to_list() == [5.0, None]
    assert out["judge_reason"][1] == "nothing to judge (no prompt or empty response)"
    assert out["judge_chars"].to_list() == [4, 0]


def test_rating_distribution_ignores_non_ascii_digits() -> None:
    from curate.synth.judging import rating_distribution

    # SmolLM2 puts "²" in its top-20 after "Rating:"; str.isdigit() accepts it but int() does not.
    value, _, _ = rating_distribution({"²": -0.1, "4": -1.0, "٣": -1.5, "2": -2.0}, scale=5)
    assert value is not None and 2.0 < value < 4.0
