"""``TrainConfig``: the settings of one validation-training run, from a YAML file or a recipe's ``train:`` section.

A config is data (pydantic, ``extra="forbid"``), so a typo (``learning_rte``) is an error naming the key, not a
silently ignored setting.  Paths are relative to the YAML file that holds them, like a recipe's.  ``--set
key=value`` overrides go through the recipe's own override parser before validation, so they are checked the
same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from curate.errors import RecipeError

LossType = Literal["sigmoid", "ipo", "hinge"]

#: Judge stage parameters that ``judge_eval`` sets itself (a pairwise comparison by the ``judge`` model).
_JUDGE_FIXED = ("mode", "model")


class JudgeEval(BaseModel):
    """Optional win-rate evaluation (``judge_eval:``): generations of the trained model against the base model's
    on held-out prompts, compared by an LLM judge in both orders (:mod:`curate.train.winrate`).

    - **judge**: ``default`` (the embedded SmolLM2-135M-Instruct), a local model folder or ``.gguf`` file, or a
      full model spec as under a recipe's ``models:`` (``{backend: openai, base_url: ..., model: ...}``).
    - **prompts**: how many distinct held-out prompts (fewer when the held-out set has fewer).
    - **max_new_tokens** per generated response; **temperature** 0 is greedy (default), above 0 samples with
      **seed** (default: the run's seed), identically for the trained and the base model.
    - **options**: further parameters of the ``judge`` stage (``rubric``, ``rating_from``, ``max_tokens``, ...);
      ``mode`` and ``model`` are set by the evaluation.
    """

    model_config = ConfigDict(extra="forbid")

    judge: str | dict[str, Any] = "default"
    prompts: int = Field(32, ge=1)
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    seed: int | None = Field(None, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("judge")
    @classmethod
    def _judge_named(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("empty: give default, a local model folder or .gguf file, or a model spec mapping")
        if isinstance(value, dict) and "backend" not in value:
            raise ValueError("a judge model spec needs backend: (transformers, vllm or openai), as under models:")
        return value

    @field_validator("options")
    @classmethod
    def _judge_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        fixed = sorted(set(value) & set(_JUDGE_FIXED))
        if fixed:
            raise ValueError(f"{', '.join(fixed)} cannot be set here (the evaluation judges pairwise with judge:)")
        from curate.stages.judge import Judge

        try:
            Judge(mode="pairwise", **value)
        except (pydantic.ValidationError, TypeError) as exc:
            detail = format_errors(exc, "options") if isinstance(exc, pydantic.ValidationError) else str(exc)
            raise ValueError(f"not valid judge stage parameters: {detail}") from None
        return value


class TrainConfig(BaseModel):
    """Settings of ``curate train`` (docs/architecture.md).  Every field has a default except ``data``.

    - **model**: ``default`` (the embedded SmolLM2-135M-Instruct GGUF), a local model folder or a ``.gguf``
      file, loaded by the same loader as the ``transformers`` backend of the model layer; ``tokenizer`` /
      ``chat_template`` / ``gguf_file`` as there.
    - **data**: preference Parquet file(s), folders of them or run directories (their ``data/``).
      **eval_data**: held-out preference file(s); without it ``eval_fraction`` of the (first) data's prompts is
      held out (split by prompt, seeded), and those prompts are removed from every training set of the run.
    - **baseline**: ``random`` draws a random subset of ``pool`` the size of ``data`` (same seed and settings) and
      trains it too; or a path to a baseline preference file.  One comparison table is printed.
    - **loss** ``sigmoid`` (DPO, Rafailov et al. 2023), ``ipo`` (Azar et al. 2023) or ``hinge`` (SLiC, Zhao et
      al. 2023); **beta**; **learning_rate** (default 2e-4 with LoRA, 5e-6 without); **epochs** or
      **max_steps**; **batch_size** and **grad_accum**; **max_length** (prompt + response tokens, longer
      sequences are cut at the end) and **max_prompt_length** (the prompt keeps its last tokens; without it a
      pair whose prompt alone fills max_length is left out, as TRL does, and counted); **eval_batch_size**
      (pairs per no-grad batch on a GPU; on CPU the training batch size is used, padding costs it fully).
    - **lora** on/off with **lora_rank**, **lora_alpha**, **lora_targets** (``null``: peft's default for the
      architecture, or ``all-linear`` or a list of module names).
    - **device** ``auto`` (CUDA when present) / ``cpu`` / ``cuda``; **precision** ``auto`` (bf16 mixed precision
      on a GPU that supports it, fp16 on older GPUs, fp32 on CPU) / ``fp32`` / ``bf16`` / ``fp16``.  ``cuda``,
      ``bf16`` and ``fp16`` are GPU-only and fail with a clear message on a CPU machine.
    - **store_ref_logps**: keep the reference model's log-probs in a cached Parquet (never beside the data), so
      the next run on the same data and model skips the reference model (see ``curate.train.refs``).
    - **goal_prompt**: for reward-augmented data, the goal system text to evaluate with; by default read from
      the ``manifest.json`` of the run that produced the data (``reward_augment``'s ``goal_prompt`` note).
    - **judge_eval** (off by default; ``true`` for the defaults): after training, the trained and the base model
      answer held-out prompts and an LLM judge compares the answers in both orders (:class:`JudgeEval`); the
      win rate goes to ``metrics.json`` and the comparison table.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = "default"
    gguf_file: str | None = None
    tokenizer: str | None = None
    chat_template: str | None = None

    data: list[str] = Field(default_factory=list)
    eval_data: list[str] = Field(default_factory=list)
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    baseline: str | None = None
    pool: list[str] = Field(default_factory=list)

    loss: LossType = "sigmoid"
    beta: float = Field(0.1, gt=0.0)
    learning_rate: float | None = Field(None, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    eval_batch_size: int = Field(16, ge=1)
    max_length: int = Field(512, ge=8)
    max_prompt_length: int | None = Field(None, ge=1)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)

    lora: bool = True
    lora_rank: int = Field(16, ge=1)
    lora_alpha: float | None = None
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lora_targets: str | list[str] | None = None

    seed: int = 0
    output: str = "runs/train"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool = False
    store_ref_logps: bool = True
    save_model: bool = False
    logging_steps: int = Field(10, ge=1)
    goal_prompt: str | None = None
    manifest: str | None = None
    judge_eval: JudgeEval | None = None

    # Not part of the YAML: where relative paths resolve from.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("data", "eval_data", "pool", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("judge_eval", mode="before")
    @classmethod
    def _judge_eval_switch(cls, value: Any) -> Any:
        """``judge_eval: true`` turns the evaluation on with its defaults; ``false`` (or null) leaves it off."""
        if value is True:
            return {}
        if value is False:
            return None
        return value

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.baseline is not None and self.baseline == "random" and not self.pool:
            raise ValueError("baseline: random draws from a pool: set pool: to the file or files to draw from")
        if self.max_prompt_length is not None and self.max_prompt_length >= self.max_length:
            raise ValueError(f"max_prompt_length ({self.max_prompt_length}) must be below max_length "
                             f"({self.max_length}), or no response token is left")
        if self.judge_eval is not None and not self.eval_data and self.eval_fraction == 0:
            raise ValueError("judge_eval answers held-out prompts: set eval_data: or an eval_fraction above 0")
        return self

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def lr(self) -> float:
        """The learning rate used: the configured one, else 2e-4 with LoRA and 5e-6 for full fine-tuning."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 2e-4 if self.lora else 5e-6

    def model_spec(self) -> dict[str, Any]:
        """The ``transformers`` backend spec of the model layer (``curate.llm.load_llm``)."""
        spec: dict[str, Any] = {"backend": "transformers", "path": self.model, "dtype": "float32"}
        for key in ("gguf_file", "tokenizer", "chat_template"):
            if getattr(self, key) is not None:
                spec[key] = getattr(self, key)
        return spec

    def settings(self) -> dict[str, Any]:
        """The settings as data (what ``metrics.json`` records)."""
        out = self.model_dump(mode="json")
        out["learning_rate"] = self.lr
        return out


def format_errors(error: pydantic.ValidationError, prefix: str) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"])
        where = f"{prefix}.{loc}" if loc else prefix
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_train_config(data: Any, *, base_dir: Path = Path("."), origin: str = "<train>") -> TrainConfig:
    """Validate a ``train:`` mapping; every mistake is named with its key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{origin}: the train settings are a mapping (model:, data:, loss:, ...)")
    try:
        return TrainConfig.model_validate({**data, "base_dir": base_dir})
    except pydantic.ValidationError as exc:
        raise RecipeError(f"{origin}: {format_errors(exc, 'train')}") from None


def load_train_config(path: str | Path | None, overrides: list[str] | None = None,
                      extra: dict[str, Any] | None = None) -> TrainConfig:
    """Read ``path`` (its own YAML, or a recipe whose ``train:`` section holds the settings), apply ``--set``
    overrides and the CLI's options (``extra``, already typed), and validate.

    A recipe with a ``train:`` section and no ``data:`` in it trains on the recipe's own output (its
    ``output.dir`` relative to the recipe, else ``runs/NAME`` in the working directory, as ``curate run``).
    """
    from curate.recipe import apply_overrides, yaml_load

    section: dict[str, Any] = {}
    base_dir = Path(".")
    origin = "<command line>"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"{path}: no such config or recipe file")
        try:
            data = yaml_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise RecipeError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise RecipeError(f"{path}: expected a mapping of train settings or a recipe with a train: section")
        base_dir, origin = path.resolve().parent, str(path)
        if "train" in data or "stages" in data or "input" in data:
            section = dict(data.get("train") or {})
            if not section.get("data") and data.get("name"):
                out_dir = (data.get("output") or {}).get("dir")
                run_dir = (base_dir / out_dir) if out_dir else Path("runs") / str(data["name"])
                section["data"] = [str(run_dir.expanduser().resolve())]
        else:
            section = data
    if overrides:
        section = apply_overrides(section, overrides)
    if extra:
        section = {**section, **{k: v for k, v in extra.items() if v is not None}}
    config = parse_train_config(section, base_dir=base_dir, origin=origin)
    if not config.data:
        raise RecipeError(f"{origin}: no training data: set data: (a preference Parquet) or pass --data")
    return config
