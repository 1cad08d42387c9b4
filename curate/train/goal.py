"""Goal conditioning at evaluation for reward-augmented data (Zhang et al. 2024).

A model trained on ``reward_augment`` rows has learned "given a goal score in the system message, produce a
response of that quality".  The paper evaluates it conditioned on the *highest* goal, so held-out pairs are
scored with that goal in the system message, written exactly as training saw goals: the ``reward_augment``
stage records ``goal_prompt`` (its template at the top of the scale) and ``goal_at_inference`` in the run's
``manifest.json`` (stage notes), and its ``system``/``separator`` parameters (how the goal joins an existing
system message) are in the manifest's recipe.

Where the manifest is: ``train.manifest`` if set, else the first ``manifest.json`` found in the data file's
folder or up to three folders above it (``RUN/data/x.parquet``, ``RUN/export/dpo/train.parquet``).  A
``train.goal_prompt`` setting overrides the manifest.  Training data with a ``goal_score`` column but no goal
text anywhere is an error: evaluating it without its goal would measure the wrong thing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.errors import InputDataError
from curate.train.config import TrainConfig
from curate.train.data import Preferences


@dataclass
class Goal:
    prompt: str
    score: float | None
    system: str = "prepend"
    separator: str = "\n\n"
    template_goal: Callable[[float], str] | None = None
    manifest: str | None = None


def find_manifest(files: list[Path]) -> Path | None:
    for file in files:
        folder = file.parent
        for _ in range(4):
            candidate = folder / "manifest.json"
            if candidate.is_file():
                return candidate
            if folder.parent == folder:
                break
            folder = folder.parent
    return None


def _reward_augment(manifest: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(notes, params) of the manifest's reward_augment stage, or None."""
    notes = next((s.get("notes", {}) for s in manifest.get("stages", []) if s.get("name") == "reward_augment"), None)
    if notes is None or "goal_prompt" not in notes:
        return None
    params: dict[str, Any] = {}
    for entry in (manifest.get("recipe") or {}).get("stages", []):
        if isinstance(entry, dict) and "reward_augment" in entry:
            params = dict(entry["reward_augment"] or {})
            break
    return notes, params


def goal_for(config: TrainConfig, prefs: Preferences) -> Goal | None:
    """The goal to condition held-out prompts on, or None when the training data is not reward-augmented."""
    path = config.resolve(config.manifest) if config.manifest else find_manifest(prefs.files)
    found = None
    if path is not None:
        try:
            found = _reward_augment(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputDataError(f"{path}: cannot read the run manifest ({exc})") from None
    if found is None and config.goal_prompt is None:
        if "goal_score" in prefs.frame.columns:
            raise InputDataError(
                f"{prefs.files[0]}: the rows are reward-augmented (column 'goal_score') but no manifest.json with a "
                "reward_augment stage was found near them; set train.manifest or train.goal_prompt"
            )
        return None
    template_goal = None
    system, separator, score = "prepend", "\n\n", None
    if found is not None:
        notes, params = found
        from curate.stages.reward_augment import RewardAugment

        stage = RewardAugment(**params)
        template_goal = stage.goal_text
        system, separator, score = stage.system, stage.separator, notes.get("goal_at_inference")
        prompt = config.goal_prompt or str(notes["goal_prompt"])
    else:
        prompt = str(config.goal_prompt)
    return Goal(prompt, score, system, separator, template_goal, str(path) if found is not None else None)
