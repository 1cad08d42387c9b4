"""The stages, one file each; ``STAGES`` maps recipe names to classes (the only registry in curate)."""

from __future__ import annotations

from curate.pipeline import Stage
from curate.stages.exact_dedup import ExactDedup
from curate.stages.filter import Filter
from curate.stages.minhash_dedup import MinHashDedup

STAGES: dict[str, type[Stage]] = {cls.name: cls for cls in (Filter, ExactDedup, MinHashDedup)}

__all__ = ["STAGES", "ExactDedup", "Filter", "MinHashDedup", "Stage"]
