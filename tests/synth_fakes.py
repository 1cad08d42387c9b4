"""A scripted LLM for the synthetic-data stage tests: real chat-template rendering (jinja, as transformers
does), canned or computed outputs, and a log of every call (to prove a resumed run regenerates nothing)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jinja2

from curate.llm.base import Generation, Sampling

QWEN25_LIKE = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def render_with(template: str, bos: str = "<s>") -> Callable[[Sequence[dict[str, str]], bool], str]:
    compiled = jinja2.Environment().from_string(template)

    def render(conversation: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return compiled.render(messages=list(conversation), add_generation_prompt=add_generation_prompt,
                               bos_token=bos)

    return render


class FakeLLM:
    """``generate_fn(prompt, sampling, k) -> str | Generation`` and ``chat_fn(conversation, sampling, k)``
    (``k``: index among the ``sampling.n`` generations).  Every call is appended to ``calls``."""

    def __init__(
        self,
        template: str,
        generate_fn: Callable[[str, Sampling, int], Any] | None = None,
        chat_fn: Callable[[Sequence[dict[str, str]], Sampling, int], Any] | None = None,
        name: str = "fake",
    ) -> None:
        self.name = name
        self._render = render_with(template)
        self.generate_fn = generate_fn or (lambda prompt, sampling, k: "Write a haiku about autumn leaves.")
        self.chat_fn = chat_fn or (lambda conv, sampling, k: f"answer {k} to: {conv[-1]['content']}")
        self.calls: list[tuple[str, int]] = []

    @staticmethod
    def _wrap(value: Any) -> Generation:
        return value if isinstance(value, Generation) else Generation(text=str(value), tokens=len(str(value)) // 4)

    def render(self, conversation: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self._render(conversation, add_generation_prompt)

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[Generation]]:
        self.calls.append(("generate", len(prompts)))
        return [[self._wrap(self.generate_fn(p, sampling, k)) for k in range(sampling.n)] for p in prompts]

    def chat(self, conversations: Sequence[Sequence[dict[str, str]]], sampling: Sampling) -> list[list[Generation]]:
        self.calls.append(("chat", len(conversations)))
        return [[self._wrap(self.chat_fn(c, sampling, k)) for k in range(sampling.n)] for c in conversations]
