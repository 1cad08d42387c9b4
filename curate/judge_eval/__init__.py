"""``curate judge-eval``: measure a judge or reward model against human labels before trusting it.

Why: the part of a pipeline that decides which response is *chosen* can be blind (the embedded 135M judge
answers "A" to every pair) and nothing else in a run shows it.  Following the judge-vs-human protocols of
Zheng et al. 2023 (MT-Bench: agreement, position bias, swap consistency), Wang et al. 2023 (PandaLM) and
Zeng et al. 2024 (LLMBar), and RewardBench 2 (Malik et al. 2025: accuracy per category), every judge is run on
the same labelled pairs and reported with the same figures, beside the baselines "longer wins" and a coin.

Modules, one job each: :mod:`~curate.judge_eval.labelled` (load labelled pairs), :mod:`~curate.judge_eval.judges`
(the judge specs and how each one gives verdicts), :mod:`~curate.judge_eval.metrics` (figures and bootstrap
intervals), :mod:`~curate.judge_eval.html` (the HTML section) and :mod:`~curate.judge_eval.run` (all of it).
"""

from __future__ import annotations

from curate.judge_eval.labelled import Labelled, load_labelled
from curate.judge_eval.metrics import summarize
from curate.judge_eval.run import evaluate, write_outputs

__all__ = ["Labelled", "evaluate", "load_labelled", "summarize", "write_outputs"]
