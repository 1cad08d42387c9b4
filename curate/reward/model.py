"""A local sequence-classification reward model: chat-template rendering, left truncation, length-sorted batching.

The ``models:`` entry of a reward model (``ctx.models.get(handle, "reward")``)::

    models:
      rm: {backend: transformers, path: ./Skywork-Reward-V2-Llama-3.1-8B, device: auto, dtype: auto,
           batch_size: 16, max_batch_tokens: 16384, chat_template: null, trust_remote_code: false}

Any folder that ``AutoModelForSequenceClassification`` loads works (Skywork-Reward, a model trained with TRL's
``RewardTrainer``, ...).  ``dtype: auto`` is bfloat16 on a GPU and float32 on CPU.  With ``trust_remote_code``
a custom class whose output has ``rewards`` (one per objective) and ``score`` (ArmoRM's gated score) instead of
``logits`` is read too (``score`` is then the first column).

Scoring (:meth:`RewardModel.score`):

1. Each (prompt, response) is rendered with the model's own chat template, ``prompt + [assistant response]``,
   and tokenized once without adding special tokens (the template writes them), exactly what
   ``apply_chat_template(..., tokenize=True)`` feeds the model.
2. A text longer than ``max_length`` tokens loses tokens from the left of its prompt, after any leading
   special tokens (BOS), so the end of the conversation and the whole response stay; tokens are cut from the
   single tokenization, so the kept tokens are the ones the full text has.  A text whose response (with the
   template's tokens after it) does not fit even with the whole prompt cut gets no score and a reason.
3. Texts are sorted by length and packed into micro-batches of at most ``batch_size`` texts and
   ``max_batch_tokens`` padded tokens, right-padded (so every real token keeps its position and the model
   pools its own last non-pad token, as in an unpadded forward pass), then restored to input order.  A model
   without a pad token is left-padded with explicit positions and pooled at the last position (its unpadded
   behaviour), so it still runs in batches.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from curate.errors import MODEL_PATH_HINTS, ModelError, RecipeError
from curate.words import listed

Message = dict[str, str]

_SPEC_KEYS = {
    "backend", "path", "device", "dtype", "batch_size", "max_batch_tokens", "chat_template", "trust_remote_code",
}
#: The embedding reward model backend (:mod:`curate.reward.embedding_rm`): ``path`` is a folder or ``default``.
EMBEDDING_RM = "embedding-rm"
_EMBEDDING_RM_KEYS = {"backend", "path"}
_SENTINEL = "\u2063curate-response-sentinel\u2063"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


@dataclass
class Scored:
    """One text's result: ``scores`` (one per objective) or ``None`` with ``note`` saying why; ``cut`` tokens."""

    scores: list[float] | None
    note: str | None
    cut: int = 0
    tokens: int = 0


def check_spec(spec: dict[str, Any]) -> None:
    """Spec keys and backend: ``transformers`` (a sequence classifier) or ``embedding-rm`` (a folder that
    ``curate rm fit`` wrote, or ``default``, the one shipped in the package; see
    :mod:`curate.reward.embedding_rm`)."""
    backend = spec.get("backend", "transformers")
    known = _EMBEDDING_RM_KEYS if backend == EMBEDDING_RM else _SPEC_KEYS
    unknown = set(spec) - known
    if unknown:
        raise RecipeError(f"reward model spec: unknown {listed('key', sorted(unknown))} (known for backend {backend}: "
                          f"{sorted(known)})")
    if backend not in ("transformers", EMBEDDING_RM):
        raise RecipeError(f"reward model backend {backend!r} is not supported (use transformers or {EMBEDDING_RM})")
    if not spec.get("path"):
        raise RecipeError("reward model spec needs a path (a local model folder)")


def resolve_path(spec: dict[str, Any], base_dir: Path = Path(".")) -> Path:
    """The model folder of a spec (relative paths from the recipe's folder); ``ModelError`` when missing."""
    check_spec(spec)
    if spec.get("backend") == EMBEDDING_RM:
        from curate.reward.embedding_rm import resolve_rm_path

        path = resolve_rm_path(spec["path"], base_dir)
        if not (path / "rm.json").is_file():
            raise ModelError(f"{path}: not an embedding reward model folder (no rm.json; fit one with "
                             "'curate rm fit LABELLED --out DIR', or use path: default)")
        return path
    path = Path(str(spec["path"])).expanduser()
    if not path.is_absolute():
        path = (Path(base_dir) / path).resolve()
    if not path.is_dir():
        raise ModelError(
            f"{path}: reward model folder not found (curate never downloads): {MODEL_PATH_HINTS['reward']}"
        )
    return path


def folder_identity(path: Path) -> str:
    """Cheap hash of a model folder: small config/tokenizer files in full, weight files by size and three
    64 KiB samples (start, middle, end), so a model retrained in place does not reuse cached scores."""
    digest = xxhash.xxh3_128()
    for item in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(str(item.relative_to(path)).encode())
        size = item.stat().st_size
        digest.update(str(size).encode())
        if item.suffix in _WEIGHT_SUFFIXES or size >= 1 << 20:
            with item.open("rb") as handle:
                for offset in (0, max(0, size // 2 - 32768), max(0, size - 65536)):
                    handle.seek(offset)
                    digest.update(handle.read(65536))
        else:
            digest.update(item.read_bytes())
    return digest.hexdigest()


def reward_identity(spec: dict[str, Any], base_dir: Path = Path(".")) -> str:
    """Identity of the scores a spec produces (folder content, dtype, template), for cache keys."""
    path = resolve_path(spec, base_dir)
    payload = {
        "folder": folder_identity(path),
        "dtype": spec.get("dtype", "auto"),
        "chat_template": spec.get("chat_template"),
        "trust_remote_code": bool(spec.get("trust_remote_code", False)),
    }
    return xxhash.xxh3_128_hexdigest(json.dumps(payload, sort_keys=True).encode())


def objective_names(id2label: dict[Any, str] | None, num_labels: int) -> list[str]:
    """Column-safe names of the model's outputs: ``id2label`` lower-cased with non-alphanumerics -> ``_``;
    the index (``0``, ``1``, ...) where a label is missing or the default ``LABEL_i``."""
    labels = {int(k): str(v) for k, v in (id2label or {}).items()}
    names: list[str] = []
    for i in range(num_labels):
        label = labels.get(i, "")
        name = re.sub(r"[^0-9A-Za-z]+", "_", label).strip("_").lower()
        if not name or re.fullmatch(rf"label_{i}", name):
            name = str(i)
        if name in names:
            name = f"{name}_{i}"
        names.append(name)
    return names


@dataclass
class RewardModel:
    """A loaded reward model and tokenizer with the batching settings; counts its work for tests/benchmarks."""

    model: Any
    tokenizer: Any
    path: str
    device: str = "cpu"
    batch_size: int = 16
    max_batch_tokens: int = 16384
    objectives: list[str] = field(default_factory=list)
    max_positions: int = 4096
    #: Texts scored, forward calls made (for tests and benchmarks).
    texts_scored: int = 0
    forward_calls: int = 0

    # -- text --------------------------------------------------------------------------------------------
    def render(self, prompt: Sequence[Message], response: str) -> str:
        """The text the model scores: its chat template over ``prompt + [assistant response]``."""
        conversation = [{"role": m["role"], "content": m["content"] or ""} for m in prompt]
        conversation.append({"role": "assistant", "content": response})
        return self.tokenizer.apply_chat_template(conversation, tokenize=False)

    def _response_start(self, prompt: Sequence[Message], rendered: str) -> int:
        """Character offset where the response's part of ``rendered`` begins (the prompt part ends)."""
        marked = self.render(prompt, _SENTINEL)
        cut = marked.find(_SENTINEL)
        if cut < 0:  # a template that rewrites contents: protect nothing but what both renderings share
            cut = 0
        prefix = marked[:cut]
        if rendered.startswith(prefix):
            return cut
        shared = 0
        while shared < min(len(prefix), len(rendered)) and prefix[shared] == rendered[shared]:
            shared += 1
        return shared

    def encode(self, prompts: Sequence[Sequence[Message]], responses: Sequence[str], max_length: int,
               ) -> tuple[list[list[int] | None], list[Scored]]:
        """Token ids per text (left-truncated to ``max_length``), or ``None`` with the reason in the result.

        A conversation the chat template refuses (e.g. a system turn for a template without one) gets ``None``
        and the template's error as its reason, not an exception for the whole batch.
        """
        results: list[Scored] = [Scored(None, None) for _ in responses]
        texts: list[str] = []
        starts: list[int] = []
        rendered: list[int] = []
        for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
            try:
                text = self.render(prompt, response)
                start = self._response_start(prompt, text)
            except Exception as exc:  # jinja raises whatever the template author chose
                results[i].note = f"chat template failed: {type(exc).__name__}: {exc}"[:300]
                continue
            texts.append(text)
            starts.append(start)
            rendered.append(i)
        ids_out: list[list[int] | None] = [None] * len(responses)
        if not texts:
            return ids_out, results
        enc = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        special = set(self.tokenizer.all_special_ids)
        for i, ids, offsets, start in zip(rendered, enc["input_ids"], enc["offset_mapping"], starts, strict=True):
            n = len(ids)
            results[i].tokens = n
            if n <= max_length:
                ids_out[i] = list(ids)
                continue
            head = 0  # leading special tokens (BOS) of the prompt are kept
            while head < n and ids[head] in special and offsets[head][1] <= start:
                head += 1
            prompt_tokens = sum(1 for _, end in offsets if end <= start)  # tokens wholly before the response
            excess = n - max_length
            if head + excess > prompt_tokens:
                needed = n - prompt_tokens + head
                results[i].note = (f"response does not fit: {needed} tokens even with the whole prompt cut "
                                   f"> max_length {max_length}")
                continue
            ids_out[i] = list(ids[:head]) + list(ids[head + excess:])
            results[i].cut = excess
            results[i].note = f"prompt truncated: {excess} tokens cut from the left"
        return ids_out, results

    # -- model -------------------------------------------------------------------------------------------
    def _forward(self, batch: list[list[int]]) -> list[list[float]]:
        import torch

        config = self.model.config.get_text_config()
        pad_id = config.pad_token_id
        width = max(len(ids) for ids in batch)
        # No pad token: an unpadded forward pools the last token.  Pad on the left (positions given explicitly)
        # with a stand-in pad id that is no row's last token, so the model's "rightmost non-pad token" is the
        # last position of every row; the config's pad id is restored after the call.
        left = pad_id is None
        fill = int(pad_id) if pad_id is not None else min(set(range(len(batch) + 1)) - {ids[-1] for ids in batch})
        input_ids = torch.full((len(batch), width), fill, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            span = slice(width - len(ids), width) if left else slice(0, len(ids))
            input_ids[row, span] = torch.tensor(ids, dtype=torch.long)
            mask[row, span] = 1
        kwargs: dict[str, Any] = {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}
        if left:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(self.device)
        try:
            if left:
                config.pad_token_id = fill
            with torch.inference_mode():
                out = self.model(**kwargs)
        finally:
            config.pad_token_id = pad_id
        self.forward_calls += 1
        logits = getattr(out, "logits", None)
        if logits is None and getattr(out, "rewards", None) is not None:  # ArmoRM-style: gated score + objectives
            score = out.score.reshape(len(batch), -1)
            logits = torch.cat([score, out.rewards.reshape(len(batch), -1)], dim=-1)
        if logits is None:
            raise ModelError(f"{self.path}: the model's output has neither logits nor rewards")
        return logits.float().reshape(len(batch), -1).cpu().tolist()

    def score_ids(self, ids: Sequence[list[int]]) -> list[list[float]]:
        """Scores of token-id sequences, batched by length (longest first), in input order."""
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out: list[list[float]] = [[] for _ in ids]
        i = 0
        while i < len(order):
            width = len(ids[order[i]])
            take = max(1, min(self.batch_size, self.max_batch_tokens // max(width, 1)))
            chunk = order[i:i + take]
            for index, row in zip(chunk, self._forward([ids[j] for j in chunk]), strict=True):
                out[index] = row
            i += take
        self.texts_scored += len(ids)
        return out

    def score(self, prompts: Sequence[Sequence[Message]], responses: Sequence[str], max_length: int | None = None,
              ) -> list[Scored]:
        """Score every (prompt, response); ``max_length`` defaults to the model's position limit."""
        limit = int(max_length or self.max_positions)
        ids, results = self.encode(prompts, responses, limit)
        todo = [i for i, x in enumerate(ids) if x is not None]
        for i, row in zip(todo, self.score_ids([ids[i] for i in todo]), strict=True):  # type: ignore[misc]
            results[i].scores = row
        return results


def _device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_reward_model(spec: dict[str, Any], base_dir: Path = Path(".")) -> RewardModel:
    """Load the reward model a ``models:`` entry describes; ``ModelError`` naming the folder when it cannot.
    ``backend: embedding-rm`` gives an :class:`~curate.reward.embedding_rm.EmbeddingRewardModel` instead."""
    path = resolve_path(spec, base_dir)
    if spec.get("backend") == EMBEDDING_RM:
        from curate.reward.embedding_rm import EmbeddingRewardModel

        return EmbeddingRewardModel.load(path)  # type: ignore[return-value]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = _device(str(spec.get("device", "auto")))
    dtype_name = str(spec.get("dtype", "auto"))
    if dtype_name == "auto":
        dtype_name = "bfloat16" if device.startswith("cuda") else "float32"
    dtype = getattr(torch, dtype_name, None)
    if not isinstance(dtype, torch.dtype):
        raise RecipeError(f"reward model dtype {dtype_name!r} is not a torch dtype (float32, bfloat16, float16)")
    trust = bool(spec.get("trust_remote_code", False))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), dtype=dtype, local_files_only=True, trust_remote_code=trust
        )
    except Exception as exc:  # any loader failure is a model problem the user can act on
        raise ModelError(f"{path}: cannot load a sequence-classification model ({type(exc).__name__}: {exc})") from exc
    if spec.get("chat_template"):
        tokenizer.chat_template = spec["chat_template"]
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"{path}: the tokenizer has no chat template (set chat_template: in the model spec)")
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{path}: a fast tokenizer (tokenizer.json) is needed for truncation offsets")
    model.to(device).eval()
    config = model.config.get_text_config()
    num_labels = int(getattr(model.config, "num_labels", 1))
    objectives = objective_names(getattr(model.config, "id2label", None), num_labels)
    if trust and not hasattr(model, "score") and getattr(model.config, "num_objectives", None):
        objectives = ["score", *objective_names(None, int(model.config.num_objectives))]
    max_positions = int(getattr(config, "max_position_embeddings", 0) or 0)
    if not max_positions:
        model_max = int(getattr(tokenizer, "model_max_length", 0) or 0)
        max_positions = model_max if 0 < model_max < 1_000_000 else 4096
    return RewardModel(
        model=model, tokenizer=tokenizer, path=str(path), device=device,
        batch_size=int(spec.get("batch_size", 16)), max_batch_tokens=int(spec.get("max_batch_tokens", 16384)),
        objectives=objectives, max_positions=max_positions,
    )
