"""The one protocol every LLM backend implements (docs/architecture.md).

Stages talk to models only through :class:`LLM`; the backends (transformers, vLLM, OpenAI-compatible
HTTP) differ in how they batch and where they run, not in what they return.  Prompts go in as a whole
list: a backend batches them as it runs best (vLLM takes them all at once, transformers in padded
batches, HTTP with bounded concurrency), and answers in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]
Conversation = Sequence[Message]


@dataclass(frozen=True)
class Sampling:
    """Sampling settings; ``logprobs=k`` asks for the top-k log-probabilities at every generated token.

    ``seed``: ``None`` (unseeded), one seed per prompt (a tuple as long as the call's prompts: what the model
    stages pass, each derived from its row's id by :func:`curate.synth.rows.row_seed`), or one int, which
    gives prompt ``i`` of the call the seed ``seed + i``.  Every backend draws a prompt's tokens from its
    own seed alone, never from a stream shared with the other prompts of the call, so a row's sample does
    not depend on which rows share its batch (a refresh equals a fresh run; see each backend for what it
    guarantees beyond that).
    """

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | tuple[int, ...] | None = None
    n: int = 1
    logprobs: int | None = None

    def seeds(self, count: int) -> list[int | None]:
        """The seed of each of ``count`` prompts (see the class docstring); raises when a tuple's length differs."""
        if self.seed is None:
            return [None] * count
        if isinstance(self.seed, int):
            return [self.seed + i for i in range(count)]
        if len(self.seed) != count:
            raise ValueError(f"Sampling.seed holds {len(self.seed)} seeds for {count} prompts")
        return [int(s) for s in self.seed]


@dataclass
class Generation:
    """One completion: text (stop string excluded), generated token count, why it ended, and per-token
    top-k log-probabilities (``{token text: logprob}`` for each generated position) when asked."""

    text: str
    tokens: int
    finish_reason: str = "stop"  # "stop" (end of turn / stop string) or "length"
    logprobs: list[dict[str, float]] | None = None
    prompt_tokens: int = 0


@runtime_checkable
class LLM(Protocol):
    #: Identity of the model and backend settings, for cache keys and the manifest.
    name: str

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[Generation]]:
        """Raw completion of each prompt; ``sampling.n`` generations per prompt, in input order."""
        ...

    def chat(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[list[Generation]]:
        """Next assistant turn of each conversation, rendered with the model's own chat template."""
        ...

    def render(self, conversation: Conversation, add_generation_prompt: bool = True) -> str:
        """The conversation as the model's chat template renders it (Magpie needs the raw template).

        Backends without a local tokenizer raise ``ModelError`` saying which option provides one.
        """
        ...


@dataclass
class ModelSpec:
    """What a recipe's ``models:`` entry says (validated by the loader of each backend)."""

    backend: str
    path: str = "default"
    options: dict[str, Any] = field(default_factory=dict)
