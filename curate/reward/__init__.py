"""Reward models (sequence classification) for the scoring stages: ``ctx.models.get(handle, "reward")``.

See :mod:`curate.reward.model` for the spec keys, rendering, truncation and batching rules.
"""

from __future__ import annotations

from curate.reward.model import (
    RewardModel,
    Scored,
    folder_identity,
    load_reward_model,
    objective_names,
    resolve_path,
    reward_identity,
)

__all__ = [
    "RewardModel",
    "Scored",
    "folder_identity",
    "load_reward_model",
    "objective_names",
    "resolve_path",
    "reward_identity",
]
