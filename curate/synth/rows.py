"""Row helpers shared by the model stages: prompts of each table, batch seeds, cache keys."""

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


def batch_seed(seed: int, ids: Sequence[str]) -> int:
    """A sampling seed for one batch, fixed by the batch's ids: a re-run regenerates the same text."""
    return xxhash.xxh3_64_intdigest("\n".join(ids).encode(), seed=seed) % (2**31 - 1)


def model_key(stage_fingerprint: str, model_fingerprint: str, extra: Any = None) -> str:
    """Cache key of a model stage's shards: its parameters, the model's spec, and anything else given."""
    payload = json.dumps([stage_fingerprint, model_fingerprint, extra], sort_keys=True, default=str)
    return xxhash.xxh3_128_hexdigest(payload.encode())
