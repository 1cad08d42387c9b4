"""Row helpers shared by the model stages: prompts of each table, per-row seeds, cache keys."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import xxhash

Message = dict[str, str]


def prompt_until_last_user(messages: Sequence[Message] | None) -> list[Message] | None:
    """The conversation up to and including its last user turn (``None`` when it has no user turn)."""
    if not messages:
        return None
    msgs = [dict(m) for m in messages if m is not None]
    for index in range(len(msgs) - 1, -1, -1):
        if msgs[index].get("role") == "user":
            return [{"role": m["role"], "content": m.get("content") or ""} for m in msgs[: index + 1]]
    return None


def row_seed(seed: int, key: str, *salt: object) -> int:
    """The sampling seed of one model call of one row: a hash of the stage's ``seed``, the row's ``key`` (its
    id) and ``salt`` (which call of the row: a turn, a response slot, a criterion).

    Never derived from the batch: a row's sample must not depend on which rows share its batch, or a
    refresh (new rows batched among themselves), another ``batch_size`` or the Ray executor would give it
    another answer than a fresh run.  Below 2**31 - 1: the OpenAI API and vLLM take it as a signed int.
    """
    text = "\x1f".join([key, *(str(s) for s in salt)])
    return xxhash.xxh3_64_intdigest(text.encode(), seed=seed) % (2**31 - 1)


def row_seeds(seed: int, keys: Sequence[str], *salt: object) -> tuple[int, ...]:
    """:func:`row_seed` of each key: the per-prompt ``Sampling.seed`` of one call."""
    return tuple(row_seed(seed, key, *salt) for key in keys)


def model_key(stage_fingerprint: str, model_fingerprint: str, extra: Any = None) -> str:
    """Cache key of a model stage's shards: its parameters, the model's spec, and anything else given."""
    payload = json.dumps([stage_fingerprint, model_fingerprint, extra], sort_keys=True, default=str)
    return xxhash.xxh3_128_hexdigest(payload.encode())
