"""The stages, one file each; ``STAGES`` maps recipe names to classes (the only registry in curate)."""

from __future__ import annotations

from curate.pipeline import Stage
from curate.stages.audit import Audit
from curate.stages.combine_scores import CombineScores
from curate.stages.deita_score import DeitaScore
from curate.stages.deita_select import DeitaSelect
from curate.stages.embed_dedup import EmbedDedup
from curate.stages.exact_dedup import ExactDedup
from curate.stages.filter import Filter
from curate.stages.judge import Judge
from curate.stages.label_audit import LabelAudit
from curate.stages.magpie import Magpie
from curate.stages.minhash_dedup import MinHashDedup
from curate.stages.pairs import Pairs
from curate.stages.respond import Respond
from curate.stages.reward_augment import RewardAugment
from curate.stages.reward_score import RewardScore
from curate.stages.subsample import Subsample
from curate.stages.translate import Translate

STAGES: dict[str, type[Stage]] = {
    cls.name: cls
    for cls in (Filter, ExactDedup, MinHashDedup, EmbedDedup, Audit, DeitaSelect, Magpie, Respond, Judge, Pairs,
                RewardScore, CombineScores, RewardAugment, DeitaScore, Subsample, Translate, LabelAudit)
}

__all__ = ["STAGES", "ExactDedup", "Filter", "MinHashDedup", "Stage"]
