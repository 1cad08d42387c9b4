"""Deita scoring prompts and the expected-value reading of a 1..6 score (Liu et al. 2024, "What Makes Good Data
for Alignment? A Comprehensive Study of Automatic Data Selection in Instruction Tuning", the deita paper).

Deita scores an instruction's *complexity* and an (instruction, response) pair's *quality* with an LLM and reads
each score as the expected value over the probabilities of the score tokens ``1..6`` instead of the one sampled
digit: the expectation is finer-grained, which the ranking in ``deita_select`` needs.  The prompt texts below
are curate's own, written for this project (they state the scale; none is copied from the deita repository).

The answer is prefilled with ``Score:`` and at most two tokens are generated at temperature 0 with top-k
log-probabilities; the distribution read is the first generated position whose likeliest token is not
whitespace (:func:`curate.synth.judging.first_label_position`), because tokenizers such as SmolLM2's split
``" 4"`` into a space token and a digit token.  Digit tokens are matched by their *text* after stripping
whitespace (``"4"``, ``" 4"``; exactly the ASCII strings ``"1"``..``"6"``, so tokens such as ``"²"`` that
``str.isdigit`` accepts do not count), never by hard-coded ids, so any tokenizer works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from curate.synth import judging

SCALE = 6
PREFILL = "Score:"

SYSTEM = "You rate training data for an AI assistant. You answer with a single digit and nothing else."

COMPLEXITY_TEMPLATE = """How complex is the following instruction? Rate it on a scale of 1 to 6:
1 = trivial, a single simple step with no constraints;
6 = very demanding, many steps, constraints, specialised knowledge or careful reasoning.

[Instruction]
{instruction}
[End of instruction]

Answer with 'Score:' followed by one whole number from 1 to 6."""

QUALITY_TEMPLATE = """How good is the response to the instruction below? Rate it on a scale of 1 to 6:
1 = wrong, unhelpful, off-topic or unsafe;
6 = correct, complete, clear, and exactly what was asked.

[Instruction]
{instruction}
[End of instruction]
[Response]
{response}
[End of response]

Answer with 'Score:' followed by one whole number from 1 to 6."""


def complexity_prompt(instruction: str) -> list[dict[str, str]]:
    """Chat messages asking for the complexity (1..6) of one instruction."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": COMPLEXITY_TEMPLATE.format(instruction=instruction)}]


def quality_prompt(instruction: str, response: str) -> list[dict[str, str]]:
    """Chat messages asking for the quality (1..6) of one response to one instruction."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": QUALITY_TEMPLATE.format(instruction=instruction, response=response)}]


def expected_score(logprobs: Sequence[dict[str, float]] | None, scale: int = SCALE) -> tuple[float | None, str | None]:
    """``(expected score, None)`` from a prefilled generation's top-k log-probabilities, or ``(None, reason)``.

    Null, never a default, when the backend returned no log-probabilities or none of the tokens ``1..scale``
    is among the top-k at the score position (the expectation would be undefined).
    """
    if not logprobs:
        return None, "backend returned no logprobs"
    top = judging.first_label_position(logprobs)
    if not top:
        return None, "no logprobs for the score position"
    labels = {str(k): k for k in range(1, scale + 1)}
    weights: dict[int, float] = {}
    for token, logprob in top.items():
        value = labels.get(token.strip())
        if value is not None:
            weights[value] = weights.get(value, 0.0) + math.exp(logprob)
    total = sum(weights.values())
    if total <= 0.0:
        return None, f"no score token 1..{scale} among the top logprobs of the score position"
    return sum(k * p for k, p in weights.items()) / total, None
