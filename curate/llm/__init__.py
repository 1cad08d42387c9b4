"""LLM backends behind one protocol (docs/architecture.md): ``load_llm(spec)`` -> :class:`LLM`.

Backends and their spec keys (a recipe's ``models:`` entry; relative paths are relative to the recipe):

* ``transformers``: ``path`` (``default`` = embedded SmolLM2-135M-Instruct GGUF, a model folder, or a
  ``.gguf`` file), ``gguf_file``, ``tokenizer``, ``chat_template``, ``device`` (auto), ``dtype`` (auto),
  ``batch_size`` (16).
* ``vllm``: ``path``, ``gguf_file``, ``tokenizer``, ``chat_template``, ``dtype``, ``max_model_len``,
  ``gpu_memory_utilization``, ``tensor_parallel_size``, ``engine_args`` (dict passed to ``vllm.LLM``).
* ``openai``: ``base_url``, ``model``, ``api_key_env``, ``endpoint`` (chat | completions), ``concurrency``
  (the ceiling of the adaptive window), ``adaptive`` (true; false: a fixed concurrency), ``timeout``,
  ``max_retries``, ``backoff``, ``cache_dir`` (or ``cache: false``), ``tokenizer`` / ``chat_template`` (only
  for ``render``).

Model loading never touches the hub: files are local and ``HF_HUB_OFFLINE`` is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate.errors import ModelError
from curate.llm.base import LLM, Conversation, Generation, Message, ModelSpec, Sampling

__all__ = ["LLM", "Conversation", "Generation", "Message", "ModelSpec", "Sampling", "load_llm"]

_TRANSFORMERS_KEYS = ("gguf_file", "tokenizer", "chat_template", "device", "dtype", "batch_size", "name")


def load_llm(spec: dict[str, Any], base_dir: Path = Path("."), cache_dir: Path | None = None) -> LLM:
    """Build the backend a ``models:`` entry names.  ``cache_dir``: where HTTP backends keep their request
    cache when the spec gives none (the run's cache folder)."""
    from curate.llm._common import check_options, resolve_model_path

    spec = dict(spec)
    backend = str(spec.get("backend", "transformers"))
    base_dir = Path(base_dir)
    if backend == "transformers":
        check_options(backend, spec, _TRANSFORMERS_KEYS)
        from curate.llm.hf import TransformersLLM

        folder, gguf = resolve_model_path(spec.get("path"), base_dir, spec.get("gguf_file"))
        tokenizer = spec.get("tokenizer")
        return TransformersLLM(
            folder,
            gguf_file=gguf,
            device=str(spec.get("device", "auto")),
            dtype=str(spec.get("dtype", "auto")),
            batch_size=int(spec.get("batch_size", 16)),
            tokenizer=_rel(tokenizer, base_dir) if tokenizer else None,
            chat_template=spec.get("chat_template"),
            name=spec.get("name"),
        )
    if backend == "vllm":
        from curate.llm.vllm import VLLMBackend

        return VLLMBackend.from_spec(spec, base_dir)
    if backend == "openai":
        from curate.llm.openai import OpenAIBackend

        return OpenAIBackend.from_spec(spec, base_dir, cache_dir=cache_dir)
    raise ModelError(f"unknown LLM backend {backend!r} (one of: transformers, vllm, openai)")


def _rel(path: str | Path, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()
