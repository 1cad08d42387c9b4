"""DPO validation training (docs/architecture.md): does a curated preference set make a better model?

``curate train CONFIG`` trains a local model with DPO (TRL's ``DPOTrainer`` as the engine, LoRA optional) on
preference Parquet, evaluates held-out reward accuracy, margins and log-prob drift before and after, and
compares runs (curated vs a same-size random baseline) in one table.

- :mod:`curate.train.config`: ``TrainConfig`` (YAML or a recipe's ``train:`` section).
- :mod:`curate.train.data`: read + validate preference files before any model loads; splits and subsets.
- :mod:`curate.train.refs`: reference log-probs computed once and cached (never beside the data).
- :mod:`curate.train.trainer`: one run on TRL's ``DPOTrainer``.
- :mod:`curate.train.evaluate`: held-out metrics.  :mod:`curate.train.goal`: reward-augmented evaluation.
- :mod:`curate.train.winrate`: optional judge win rate of the trained model's answers vs the base model's.
- :mod:`curate.train.compare`: the comparison table.  :mod:`curate.train.run`: the whole command.

Importing this package loads neither torch nor TRL; they load when a run starts.
"""

from __future__ import annotations

from curate.train.config import TrainConfig, load_train_config, parse_train_config
from curate.train.run import TrainOutcome, run_train

__all__ = ["TrainConfig", "TrainOutcome", "load_train_config", "parse_train_config", "run_train"]
