"""Judge prompts, output parsing and expected-value scoring (LLM-as-a-judge).

Follows the practice of Zheng et al. 2023 ("Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena":
single-answer grading and pairwise comparison, with the position swap that exposes position bias),
UltraFeedback (Cui et al. 2023: fine-grained rubric ratings of each candidate) and Prometheus (Kim et al.
2023: a user-given rubric with a short feedback before an integer score).  The prompt texts are curate's
own.  Parsing never raises: an output it cannot read gives ``None`` and a reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_RUBRIC = (
    "How well does the response serve the user? Reward responses that are correct, directly address the "
    "request, are complete without padding, and are safe. Penalise factual errors, evasion, ignoring "
    "instructions, and needless length."
)

POINTWISE_SYSTEM = "You are a strict, fair reviewer of assistant responses. You follow the output format exactly."

POINTWISE_TEMPLATE = """Grade the assistant response below on a scale of 1 to {scale} \
(1 = very poor, {scale} = excellent).

Rubric: {rubric}

[Conversation]
{conversation}
[Response to grade]
{response}
[End of response]

{format}"""

FORMAT_RATIONALE_FIRST = (
    "First write one or two sentences of justification on a line starting with 'Reason:'. "
    "Then write the grade on its own final line: 'Rating:' followed by one whole number from 1 to {scale}."
)
FORMAT_RATING_FIRST = (
    "Write the grade on the first line: 'Rating:' followed by one whole number from 1 to {scale}; "
    "then one or two sentences of justification on a line starting with 'Reason:'."
)

PAIRWISE_SYSTEM = (
    "You are an impartial reviewer comparing two assistant responses. The order in which they are shown "
    "says nothing about their quality, and a longer response is not better for being longer."
)

PAIRWISE_TEMPLATE = """Compare the two responses to the conversation below.

Criteria: {rubric}

[Conversation]
{conversation}
[Response A]
{a}
[End of response A]
[Response B]
{b}
[End of response B]

Write one or two sentences comparing them on a line starting with 'Reason:'. \
Then write your verdict on its own final line as exactly one of: \
'Verdict: A' (A is better), 'Verdict: B' (B is better), 'Verdict: tie'."""

PAIRWISE_VERDICT_FIRST = (
    "Answer on the first line with exactly one of: 'Verdict: A' (A is better), 'Verdict: B' (B is better), "
    "'Verdict: tie'."
)


def format_conversation(messages: Sequence[dict[str, str]]) -> str:
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def pointwise_prompt(
    messages: Sequence[dict[str, str]], response: str, *, scale: int, rubric: str, rating_first: bool
) -> list[dict[str, str]]:
    fmt = (FORMAT_RATING_FIRST if rating_first else FORMAT_RATIONALE_FIRST).format(scale=scale)
    user = POINTWISE_TEMPLATE.format(
        scale=scale, rubric=rubric, conversation=format_conversation(messages), response=response, format=fmt
    )
    return [{"role": "system", "content": POINTWISE_SYSTEM}, {"role": "user", "content": user}]


def pairwise_prompt(
    messages: Sequence[dict[str, str]], a: str, b: str, *, rubric: str, verdict_first: bool = False
) -> list[dict[str, str]]:
    user = PAIRWISE_TEMPLATE.format(rubric=rubric, conversation=format_conversation(messages), a=a, b=b)
    if verdict_first:
        user = user[: user.rindex("Write one or two")] + PAIRWISE_VERDICT_FIRST
    return [{"role": "system", "content": PAIRWISE_SYSTEM}, {"role": "user", "content": user}]


# -- parsing ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rating:
    score: float | None
    reason: str | None  # why score is None (or how it was read)
    rationale: str
    span: tuple[int, int] | None = None  # character span of the rating digits in the text


_NUM = r"(-?\d+(?:\.\d+)?)"
#: Patterns in order of trust: the asked-for format first, then common paraphrases.
_RATING_PATTERNS = [
    re.compile(r"\brating\s*[:=]\s*\**\s*\[*\s*" + _NUM, re.IGNORECASE),
    re.compile(r"\[\[\s*" + _NUM + r"\s*\]\]"),
    re.compile(r"\b(?:score|grade)\s*[:=]\s*\**\s*\[*\s*" + _NUM, re.IGNORECASE),
    re.compile(_NUM + r"\s*(?:/|out of)\s*(?:5|10)\b", re.IGNORECASE),
]
_REASON = re.compile(r"reason\s*[:=]\s*(.+?)(?=\n\s*(?:rating|score|verdict)\b|\Z)", re.IGNORECASE | re.DOTALL)


def _rationale(text: str) -> str:
    match = _REASON.search(text)
    return (match.group(1) if match else text).strip()[:2000]


def parse_rating(text: str, scale: int, *, rating_first: bool = False) -> Rating:
    """Read an integer rating in ``1..scale`` from a judge's output.

    The first pattern that matches wins (``Rating: N``, ``[[N]]``, ``Score: N``, ``N/scale``); within it the
    last occurrence (the first with ``rating_first``), since a rationale may quote numbers before its
    verdict.  Out-of-range or fractional ratings and outputs without one give ``score=None`` and a reason.
    """
    if not isinstance(text, str) or not text.strip():
        return Rating(None, "empty judge output", "")
    for pattern in _RATING_PATTERNS:
        matches = list(pattern.finditer(text))
        if not matches:
            continue
        match = matches[0] if rating_first else matches[-1]
        raw = match.group(1)
        try:
            value = float(raw)
        except ValueError:  # pragma: no cover - the pattern only matches numbers
            continue
        if not value.is_integer():
            return Rating(None, f"rating {raw} is not an integer", _rationale(text))
        if not 1 <= value <= scale:
            return Rating(None, f"rating {raw} outside 1..{scale}", _rationale(text))
        return Rating(value, None, _rationale(text), match.span(1))
    return Rating(None, "no rating found in judge output", _rationale(text))


_VERDICT_PATTERNS = [
    re.compile(r"\bverdict\s*[:=]\s*\**\s*\[*\s*(A|B|tie)\b", re.IGNORECASE),
    re.compile(r"\[\[\s*(A|B|tie)\s*\]\]", re.IGNORECASE),
    re.compile(r"\b(?:response|assistant)\s+(A|B)\s+is\s+(?:better|superior|preferred)\b", re.IGNORECASE),
]


def parse_verdict(text: str) -> tuple[str | None, str | None]:
    """``('a' | 'b' | 'tie', None)`` or ``(None, reason)``; the last ``Verdict:`` line wins."""
    if not isinstance(text, str) or not text.strip():
        return None, "empty judge output"
    for pattern in _VERDICT_PATTERNS:
        matches = list(pattern.finditer(text))
        if matches:
            return matches[-1].group(1).lower(), None
    return None, "no verdict found in judge output"


def combine_swapped(first: str | None, second: str | None) -> tuple[str | None, bool | None, str | None]:
    """Combine the verdict on (A=x, B=y) with the verdict on the swapped order (A=y, B=x).

    Returns ``(verdict over x/y as 'a'/'b'/'tie', consistent, reason)``: a winner only when both orders
    name the same response (Zheng et al. 2023, section 3.4: swap positions and count a win only if it is
    consistent); two ties give a tie; disagreeing orders give a tie with ``consistent=False``; an
    unreadable side gives ``None`` with the reason.
    """
    if first is None or second is None:
        which = "first order" if first is None else "swapped order"
        return None, None, f"unparseable verdict in the {which}"
    mapped = {"a": "b", "b": "a", "tie": "tie"}[second]
    if first == mapped:
        return first, True, None
    return "tie", False, f"orders disagree ({first} vs {mapped} after swap): counted as tie"


# -- expected value from log-probabilities ------------------------------------------------------------------
def _token_positions(logprobs: Sequence[dict[str, float]]) -> list[tuple[int, int]]:
    """Character span of each generated token, assuming each position's chosen token is its most likely one
    (true at temperature 0, which the judge uses when it reads probabilities)."""
    spans = []
    offset = 0
    for top in logprobs:
        token = max(top, key=top.__getitem__) if top else ""
        spans.append((offset, offset + len(token)))
        offset += len(token)
    return spans


def expected_rating(
    text: str, logprobs: Sequence[dict[str, float]] | None, rating: Rating, scale: int
) -> tuple[float | None, str | None]:
    """The rating as the probability-weighted mean of the score tokens at the rating's position.

    G-Eval (Liu et al. 2023) and deita (Liu et al. 2024) read scores this way: the mean of
    ``p(k) * k`` over the valid score tokens, renormalised, is finer-grained and less noisy than the one
    sampled digit.  The position is found by laying the most likely token of each step along the text; when
    that does not reproduce the text, the rating spans several tokens (a two-token "10"), or no score token
    is among the top log-probabilities, the parsed integer is kept and the reason says why.
    """
    if rating.score is None or rating.span is None or not logprobs:
        return rating.score, None if rating.score is None else "parsed (no logprobs)"
    spans = _token_positions(logprobs)
    rebuilt = "".join(max(top, key=top.__getitem__) if top else "" for top in logprobs)
    common = min(len(rebuilt), len(text))
    if rebuilt[:common] != text[:common] or common < rating.span[1]:
        return rating.score, "parsed (tokens do not match text)"
    start, end = rating.span
    positions = [i for i, (s, e) in enumerate(spans) if s < end and e > start]
    if len(positions) != 1:
        return rating.score, "parsed (rating spans several tokens)"
    top = logprobs[positions[0]]
    weights: dict[int, float] = {}
    for token, logprob in top.items():
        stripped = token.strip()
        if stripped.isascii() and stripped.isdigit() and 1 <= int(stripped) <= scale:  # not "²", "٣"
            value = int(stripped)
            weights[value] = weights.get(value, 0.0) + math.exp(logprob)
    total = sum(weights.values())
    if total <= 0.0:
        return rating.score, "parsed (no score token among top logprobs)"
    return sum(k * p for k, p in weights.items()) / total, "expected value over score tokens"


# -- prefilled answers: the rating read from the first answer token's distribution ------------------------
RATING_PREFIX = "Rating:"
VERDICT_PREFIX = "Verdict:"


def first_label_position(logprobs: Sequence[dict[str, float]] | None) -> dict[str, float] | None:
    """The top-k distribution of the first generated position whose likeliest token is not whitespace."""
    for top in logprobs or []:
        if top and max(top, key=top.__getitem__).strip():
            return top
    return None


def rating_distribution(top: dict[str, float] | None, scale: int) -> tuple[float | None, float | None, str]:
    """``(expected value, most likely rating, reason)`` over the tokens ``1..scale`` of a top-k distribution
    (deita, Liu et al. 2024 and G-Eval, Liu et al. 2023: score = sum of p(k) * k, renormalised)."""
    if not top:
        return None, None, "no logprobs for the rating position"
    weights: dict[int, float] = {}
    for token, logprob in top.items():
        stripped = token.strip()
        if stripped.isascii() and stripped.isdigit() and 1 <= int(stripped) <= scale:  # not "²", "٣"
            weights[int(stripped)] = weights.get(int(stripped), 0.0) + math.exp(logprob)
    total = sum(weights.values())
    if total <= 0.0:
        return None, None, "no score token among the top logprobs of the rating position"
    best = max(weights, key=weights.__getitem__)
    return sum(k * p for k, p in weights.items()) / total, float(best), "expected value over score tokens"


def verdict_probabilities(top: dict[str, float] | None) -> dict[str, float] | None:
    """Probabilities of A / B / tie at the verdict position, renormalised over the three (``None`` if none of
    them is among the top log-probabilities)."""
    if not top:
        return None
    mass = {"a": 0.0, "b": 0.0, "tie": 0.0}
    for token, logprob in top.items():
        stripped = token.strip().lower()
        label = stripped if stripped in ("a", "b") else "tie" if stripped in ("t", "ti", "tie") else None
        if label is not None:
            mass[label] += math.exp(logprob)
    total = sum(mass.values())
    return {k: v / total for k, v in mass.items()} if total > 0.0 else None


def calibrated_verdict(first: dict[str, float], swapped: dict[str, float], tie_margin: float) -> str:
    """Balanced position calibration (Wang et al. 2023, "Large Language Models are not Fair Evaluators"):
    each response's win probability averaged over both positions; a winner when the averages differ by more
    than ``tie_margin``.  Cancels a constant position bias that would make every swap-checked verdict a tie."""
    x = (first["a"] + swapped["b"]) / 2
    y = (first["b"] + swapped["a"]) / 2
    return "a" if x - y > tie_margin else "b" if y - x > tie_margin else "tie"


def verdict_distribution(top: dict[str, float] | None) -> tuple[str | None, str | None]:
    """The likeliest of A / B / tie at the verdict position (``tie`` may be split: any token ``t``, ``ti``,
    ``tie`` counts), or ``(None, reason)``."""
    if not top:
        return None, "no logprobs for the verdict position"
    mass = {"a": 0.0, "b": 0.0, "tie": 0.0}
    for token, logprob in top.items():
        stripped = token.strip().lower()
        label = stripped if stripped in ("a", "b") else "tie" if stripped in ("t", "ti", "tie") else None
        if label is not None:
            mass[label] += math.exp(logprob)
    if max(mass.values()) <= 0.0:
        return None, "no verdict token among the top logprobs"
    return max(mass, key=mass.__getitem__), None
