"""Magpie pre-query templates derived from a model's own chat template, and instruction sanitising.

Magpie (Xu et al. 2024, "Magpie: Alignment Data Synthesis from Scratch by Prompting Aligned LLMs with
Nothing") feeds an aligned model only the part of its chat template that comes *before* a user message;
the model then writes a plausible user query itself.  We never hard-code a family's template: the model's
tokenizer renders a conversation whose user message is a sentinel, and the text before the sentinel is
the pre-query template.  Everything the template inserts on its own (BOS, a default system turn as in
Qwen2.5, Llama-3's date header) is kept, because that is what the model saw in training.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from curate.errors import ModelError

#: A user message no template rewrites (no markup, no whitespace at its ends, unlikely in a template).
SENTINEL = "QQmagpieSENTINEL7f3c"

Message = dict[str, str]
Render = Callable[[Sequence[Message], bool], str]


@dataclass(frozen=True)
class MagpieTemplate:
    """What the template says around a user turn.

    ``pre_query``: text before the user message (BOS, system turn, user header).  ``end_of_turn``: text the
    template puts right after a user message (e.g. ``<|im_end|>``), the stop string of instruction sampling.
    ``assistant_header``: what the generation prompt adds after the end of turn (a second stop string: a
    model that skipped its end-of-turn token goes on to answer itself).
    """

    pre_query: str
    end_of_turn: str
    assistant_header: str

    @property
    def stops(self) -> tuple[str, ...]:
        return tuple(s for s in dict.fromkeys((self.end_of_turn.strip(), self.assistant_header.strip())) if s)


def _cut(rendered: str, where: str) -> tuple[str, str]:
    index = rendered.find(SENTINEL)
    if index < 0:
        raise ModelError(
            f"the chat template dropped the user message while rendering {where}; "
            "magpie needs a template that renders user turns"
        )
    if rendered.find(SENTINEL, index + 1) >= 0:
        raise ModelError(f"the chat template repeats the user message ({where}); cannot cut a pre-query template")
    return rendered[:index], rendered[index + len(SENTINEL) :]


def derive_template(render: Render, history: Sequence[Message] = ()) -> MagpieTemplate:
    """The pre-query template after ``history`` (empty: first turn; a system message steers the domain).

    ``render(conversation, add_generation_prompt)`` is :meth:`curate.llm.base.LLM.render`.  For a later
    turn ``history`` holds the conversation so far; the template is then the whole conversation rendered
    up to the next user message, so multi-turn continuation uses the same derivation.
    """
    conversation = [*history, {"role": "user", "content": SENTINEL}]
    before, after = _cut(render(conversation, False), "without generation prompt")
    before_gen, after_gen = _cut(render(conversation, True), "with generation prompt")
    if before_gen != before:
        raise ModelError("the chat template renders the text before a user message differently with a "
                         "generation prompt")
    header = after_gen[len(after) :] if after_gen.startswith(after) else after_gen
    return MagpieTemplate(pre_query=before, end_of_turn=after, assistant_header=header)


# -- sanitising -------------------------------------------------------------------------------------------
#: Role labels a model may echo at the start of the query it writes.
_ROLE_ECHO = re.compile(
    r"^\s*(?:#{1,4}\s*)?(?:<\|?(?:user|human)\|?>|\[?(?:user|human|question|query|instruction|prompt|input|task|"
    r"q)\]?\s*[:：\-]|(?:user|human)\s*\n)\s*",
    re.IGNORECASE,
)
#: Numbering or bullets a model puts before an item of a list of questions.
_NUMBERING = re.compile(r"^\s*(?:\(?\d{1,3}[.):]|#\d{1,3}:?|[-*•])\s+")
#: Where the model stopped writing a query and started answering it (cut there).
_ANSWER_MARKERS = re.compile(
    r"(?:\n|^)\s*(?:#{1,4}\s*)?(?:assistant|answer|response|output|solution|a|gpt|bot|ai)\s*[:：]"
    r"|<\|?(?:assistant|im_start|im_end|eot_id|end_of_turn|start_of_turn|endoftext|end)\|?>"
    r"|<start_of_turn>|<end_of_turn>|</s>",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Sanitised:
    text: str
    reason: str | None  # None: keep; else why the instruction is dropped


def sanitise_instruction(
    text: str,
    *,
    stops: Sequence[str] = (),
    min_chars: int = 8,
    max_chars: int = 4000,
    truncated: bool = False,
    drop_truncated: bool = True,
) -> Sanitised:
    """Clean one sampled instruction, or say why it is unusable.

    Rules, in order: cut at the first stop string (end of turn, assistant header) and at the first answer
    marker (``Assistant:``, ``Answer:``, ``<|im_start|>`` ...: the model went on to answer itself); strip
    role echoes (``User:``, ``### Instruction:``), list numbering and bullets, and wrapping quotes; collapse
    runs of blank lines.  Then drop: empty, shorter than ``min_chars``, longer than ``max_chars``, or (with
    ``drop_truncated``) cut by the token limit before the model ended its turn.  Duplicates are decided
    across the whole stage, not here.
    """
    out = text
    for stop in stops:
        if stop and (index := out.find(stop)) >= 0:
            out = out[:index]
    for _ in range(3):  # echoes can nest: "User: 1. ..."
        before = out
        out = _ROLE_ECHO.sub("", out, count=1)
        out = _NUMBERING.sub("", out, count=1)
        if out == before:
            break
    if match := _ANSWER_MARKERS.search(out):
        out = out[: match.start()]
        truncated = False  # the query itself ended; only the self-answer ran long
    out = out.strip()
    if len(out) >= 2 and out[0] == out[-1] and out[0] in "\"'`":
        out = out[1:-1].strip()
    out = re.sub(r"\n{3,}", "\n\n", out)
    if not out:
        return Sanitised("", "empty instruction")
    if truncated and drop_truncated:
        return Sanitised(out, "instruction truncated (no end of turn within max_tokens)")
    if len(out) < min_chars:
        return Sanitised(out, f"instruction too short ({len(out)} < {min_chars} chars)")
    if len(out) > max_chars:
        return Sanitised(out, f"instruction too long ({len(out)} > {max_chars} chars)")
    return Sanitised(out, None)


def normalise_for_dedup(text: str) -> str:
    """Case-folded, whitespace-collapsed text, without trailing punctuation: the key of duplicate queries."""
    return re.sub(r"\s+", " ", text.casefold()).strip().rstrip("?.!。？！ ")
