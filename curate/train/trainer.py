"""One DPO training run on TRL's ``DPOTrainer`` (the engine), with curate's data, model loader and references.

What curate adds around TRL, and why:

- **Model loading** goes through the model layer (``curate.llm.load_llm``, the ``transformers`` backend): the
  same ``path: default`` (embedded SmolLM2-135M-Instruct GGUF), local folders and ``.gguf`` files as a
  recipe's ``models:``, never the hub.
- **Reference log-probs** are always precomputed (TRL's ``precompute_ref_log_probs``) but through
  ``curate.train.refs``: stored in a cache (the run's ``cache/``, never beside the data) and reused across
  runs, computed in length-sorted batches.
  No reference forward pass runs during training, and a second run on the same data skips the reference
  model entirely.
- **Prompt truncation** (``max_prompt_length``, keep the prompt's end) happens before TRL drops rows whose
  prompt alone fills ``max_length``; the number of dropped rows is reported, not hidden.
- **Hardware**: CUDA when present, bf16 mixed precision where the GPU supports it (fp16 otherwise); on CPU,
  fp32 and a note on expected speed.  GPU-only settings fail before anything loads.  Gradient checkpointing is
  off by default (TRL turns it on): validation models fit in memory, and recomputing activations costs ~20%.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.errors import InputDataError, ModelError
from curate.train.config import TrainConfig
from curate.train.data import Preferences, to_dataset
from curate.train.evaluate import EVAL_PAIRS, before_metrics, describe_model, preference_metrics, write_eval_pairs
from curate.train.refs import RefStore, attach_reference, model_key, sequence_logps
from curate.train.winrate import WinRateEval
from curate.words import plural

Notify = Callable[[str], None]


@dataclass
class Hardware:
    device: str  # "cpu" or "cuda"
    bf16: bool
    fp16: bool
    name: str

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"


def resolve_hardware(config: TrainConfig) -> Hardware:
    """Pick device and precision; GPU-only settings on a machine without CUDA raise ``ModelError`` here, before
    any data is tokenized or any model loaded."""
    import torch

    cuda = torch.cuda.is_available()
    if config.device == "cuda" and not cuda:
        raise ModelError("train.device: cuda asked for, but this torch build sees no CUDA GPU "
                         "(use device: auto or cpu; on CPU only small models train in reasonable time)")
    if config.precision in ("bf16", "fp16") and (config.device == "cpu" or not cuda):
        raise ModelError(f"train.precision: {config.precision} is GPU mixed precision and needs a CUDA GPU; this run "
                         "is on CPU (use precision: auto or fp32)")
    device = "cuda" if cuda and config.device != "cpu" else "cpu"
    if device == "cpu":
        return Hardware("cpu", False, False, f"CPU ({torch.get_num_threads()} threads)")
    bf16_ok = torch.cuda.is_bf16_supported()
    if config.precision == "bf16" and not bf16_ok:
        raise ModelError("train.precision: bf16 needs an Ampere or newer GPU; this one has no bf16 (use fp16 or auto)")
    bf16 = config.precision == "bf16" or (config.precision == "auto" and bf16_ok)
    fp16 = config.precision == "fp16" or (config.precision == "auto" and not bf16_ok)
    return Hardware("cuda", bf16, fp16, torch.cuda.get_device_name(0))


def _inference_batch(config: TrainConfig, hardware: Hardware) -> int:
    """Pairs per no-grad batch (reference and held-out log-probs).  A GPU gains from wide batches; a CPU does
    not, and every padding token costs it as much as a real one, so there it is the (smaller) training batch
    size over length-sorted rows."""
    return config.eval_batch_size if hardware.device == "cuda" else min(config.eval_batch_size, config.batch_size)


def cpu_note(hardware: Hardware) -> str:
    return (f"note: no CUDA GPU, training on {hardware.name} in fp32. Expect roughly 100-150 training tokens/s "
            "per 2 cores for the 135M default model with LoRA (benchmarks/validation_run.py), i.e. minutes per "
            "hundred short pairs; a GPU is far faster, and models above ~0.5B are impractical on CPU.")


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    # TRL 1.16 still sets transformers' renamed gradient_checkpointing field; the rename is not the user's to fix.
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.* is deprecated", category=FutureWarning)
    transformers.utils.logging.set_verbosity_error()
    logging.getLogger("trl").setLevel(logging.ERROR)


def _trainer_class() -> type:
    from trl import DPOTrainer

    class CurateDPOTrainer(DPOTrainer):
        """``DPOTrainer`` whose reference log-probs come from a :class:`RefStore` and whose prompts can be cut to
        ``max_prompt_length`` (keeping their end) before TRL filters rows by length."""

        def __init__(self, *args: Any, ref_stores: dict[str, RefStore | None] | None = None,
                     max_prompt_length: int | None = None, ref_batch_size: int = 16, **kwargs: Any) -> None:
            self.ref_stores = ref_stores or {}
            self.max_prompt_length = max_prompt_length
            self.ref_batch_size = ref_batch_size
            self.ref_info: dict[str, dict[str, Any]] = {}
            self.dropped: dict[str, int] = {}
            super().__init__(*args, **kwargs)

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            rows = len(dataset)
            if self.max_prompt_length is None:
                out = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            else:
                keep, limit = self.max_prompt_length, args.max_length
                args.max_length = None  # tokenize without TRL's length filter; cut prompts, then filter
                try:
                    out = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
                finally:
                    args.max_length = limit
                out = out.map(lambda ex: {"prompt_ids": ex["prompt_ids"][-keep:]})
                if limit is not None:
                    out = out.filter(lambda ex: len(ex["prompt_ids"]) < limit)
            self.dropped[dataset_name] = rows - len(out)
            if rows and not len(out):
                raise InputDataError(f"every {dataset_name} pair was left out: each prompt alone fills max_length "
                                     f"({args.max_length} tokens); raise max_length or set max_prompt_length")
            return out

        def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
            out, info = attach_reference(self, dataset, self.ref_batch_size, self.ref_stores.get(name))
            self.ref_info[name] = info
            return out

    return CurateDPOTrainer


def _progress_callback(label: str, say: Notify, every: int) -> Any:
    """One line every ``every`` steps and at the last step (the loss itself is logged at every step)."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            shown = state.global_step % every == 0 or state.global_step == state.max_steps
            if logs and "loss" in logs and shown:
                say(f"  {label}: step {state.global_step}/{state.max_steps}  loss {logs['loss']:.4f}  "
                    f"reward acc {logs.get('rewards/accuracies', float('nan')):.2f}  "
                    f"margin {logs.get('rewards/margins', float('nan')):.4f}")

    return Progress()


def _peft_config(config: TrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha or 2 * config.lora_rank,
                      lora_dropout=config.lora_dropout, target_modules=config.lora_targets, task_type="CAUSAL_LM")


def _dpo_config(config: TrainConfig, hardware: Hardware, out_dir: Path) -> Any:
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(out_dir / "trainer"),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of the total steps
        beta=config.beta,
        loss_type=[config.loss],
        max_length=config.max_length,
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=config.eval_batch_size,
        gradient_checkpointing=config.gradient_checkpointing,
        bf16=hardware.bf16,
        fp16=hardware.fp16,
        use_cpu=hardware.device == "cpu",
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=1,  # the loss of every step goes to metrics.json; the console shows every logging_steps
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def load_model(config: TrainConfig, hardware: Hardware) -> Any:
    """The model and tokenizer through the model layer's loader (local folder, .gguf, or the default)."""
    from curate.llm import load_llm

    spec = {**config.model_spec(), "device": hardware.device}
    llm = load_llm(spec, base_dir=config.base_dir)
    if llm.gguf_file:
        _unmark_gguf(llm.model)
    return llm


def _unmark_gguf(model: Any) -> None:
    """transformers de-quantizes every GGUF tensor on load (the parameters are plain float32) but leaves the
    model marked as GGUF-quantized, and ``Trainer`` then refuses to train it.  The marks describe the file,
    not the weights in memory, so they go (and a saved model gets no false ``quantization_config``)."""
    import torch

    if any(p.dtype not in (torch.float32, torch.float16, torch.bfloat16) for p in model.parameters()):
        raise ModelError("the GGUF model did not de-quantize to float weights; it cannot be trained")
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def train_one(
    config: TrainConfig,
    train: Preferences,
    held_out: Preferences | None,
    out_dir: Path,
    *,
    label: str = "run",
    hardware: Hardware | None = None,
    notify: Notify | None = None,
    extra: dict[str, Any] | None = None,
    winrate: WinRateEval | None = None,
    goal: str | None = None,
) -> dict[str, Any]:
    """Train one policy on ``train``, evaluate it on ``held_out`` before and after, return (and write to
    ``out_dir/metrics.json``) the metrics.  With ``judge_eval`` set (``winrate``: shared by the runs of one
    invocation), the policy's answers to held-out prompts are also judged against the base model's
    (``goal``: the goal text a reward-augmented run's held-out prompts carry, hidden from the judge)."""
    import torch
    import trl

    from curate import checkpoint

    say = notify or (lambda _msg: None)
    hardware = hardware or resolve_hardware(config)
    _quiet_libraries()
    torch.manual_seed(config.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    llm = load_model(config, hardware)
    model, tokenizer = llm.model, llm.tokenizer
    load_seconds = time.perf_counter() - started
    if winrate is None and config.judge_eval is not None and held_out is not None:
        winrate = WinRateEval(config)
    judged_prompts = base_answers = None
    if winrate is not None and held_out is not None:  # before training: a full fine-tune changes these weights
        judged_prompts = winrate.prompts(held_out, goal)
        say(f"  {label}: judge_eval: base model answers {len(judged_prompts.ids)} held-out prompts")
        base_answers = winrate.base_answers(llm, judged_prompts)

    major_minor = ".".join(trl.__version__.split(".")[:2])
    key = model_key(llm.folder, llm.gguf_file, tokenizer, {
        "max_length": config.max_length, "max_prompt_length": config.max_prompt_length,
        "precision": hardware.precision, "trl": major_minor})
    stores: dict[str, RefStore | None] = {"train": None, "eval": None}
    if config.store_ref_logps:
        cache_root = config.resolve(config.output)
        stores["train"] = RefStore(train.files[0], key, cache_root)
        if held_out is not None:
            store = RefStore(held_out.files[0], key, cache_root)
            stores["eval"] = stores["train"] if store.path == stores["train"].path else store

    train_ds = to_dataset(train)
    eval_ds = to_dataset(held_out) if held_out is not None else None
    trainer_cls = _trainer_class()
    trainer = trainer_cls(
        model=model,
        args=_dpo_config(config, hardware, out_dir),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=_peft_config(config) if config.lora else None,
        ref_stores=stores,
        max_prompt_length=config.max_prompt_length,
        ref_batch_size=_inference_batch(config, hardware),
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the raw log dicts; a one-line summary per log step instead
    trainer.add_callback(_progress_callback(label, say, config.logging_steps))
    prepared = time.perf_counter()
    for name, dropped in trainer.dropped.items():
        if dropped:
            say(f"  {label}: {dropped} {name} {plural('pair', dropped)} left out: the prompt alone fills max_length "
                f"({config.max_length} tokens); set max_prompt_length to keep them with the prompt's end")
    for name, info in trainer.ref_info.items():
        say(f"  {label}: reference log-probs ({name}): {info['reused']} reused, {info['computed']} computed "
            f"in {info['seconds']:.1f}s")

    eval_before: dict[str, Any] | None = None
    if trainer.eval_dataset is not None:
        ref_c, ref_r = trainer.eval_dataset["ref_chosen_logps"], trainer.eval_dataset["ref_rejected_logps"]
        eval_before = before_metrics(ref_c, ref_r, beta=config.beta, loss=config.loss)

    say(f"  {label}: training on {len(trainer.train_dataset)} pairs ({hardware.name}, {hardware.precision})")
    t0 = time.perf_counter()
    result = trainer.train()
    train_seconds = time.perf_counter() - t0
    tokens = int(trainer._total_train_tokens)

    eval_after: dict[str, Any] | None = None
    if trainer.eval_dataset is not None:
        pol_c, pol_r = sequence_logps(trainer, trainer.eval_dataset, _inference_batch(config, hardware),
                                      reference=False)
        eval_after = preference_metrics(pol_c, pol_r, trainer.eval_dataset["ref_chosen_logps"],
                                        trainer.eval_dataset["ref_rejected_logps"], beta=config.beta,
                                        loss=config.loss)
        write_eval_pairs(out_dir / EVAL_PAIRS, trainer.eval_dataset["_key"], pol_c, pol_r,
                         trainer.eval_dataset["ref_chosen_logps"], trainer.eval_dataset["ref_rejected_logps"],
                         beta=config.beta)
    judge_eval: dict[str, Any] | None = None
    if winrate is not None and judged_prompts is not None and base_answers is not None:
        say(f"  {label}: judge_eval: trained model answers, {winrate.judge_name} judges both orders")
        judge_eval = winrate.evaluate(llm, trainer.model, judged_prompts, base_answers, out_dir)
        say(f"  {label}: judge_eval: win rate {judge_eval['win_rate']:.3f} vs the base model "
            f"({judge_eval['wins']} wins, {judge_eval['ties']} ties, {judge_eval['losses']} losses)")
    if config.save_model:
        trainer.save_model(str(out_dir / "model"))
        tokenizer.save_pretrained(str(out_dir / "model"))

    losses = [round(float(e["loss"]), 5) for e in trainer.state.log_history if "loss" in e and "step" in e]
    metrics: dict[str, Any] = {
        "run": label,
        "data": sorted({str(f) for f in train.files}),
        "rows": {"train": train.rows, "train_used": len(trainer.train_dataset),
                 "eval": held_out.rows if held_out is not None else 0,
                 "eval_used": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
                 "dropped_long_prompt": dict(trainer.dropped)},
        "model": str(llm.folder / llm.gguf_file if llm.gguf_file else llm.folder),
        "model_trained": describe_model(llm.folder, llm.gguf_file, hardware.precision),
        "hardware": {"device": hardware.device, "name": hardware.name, "precision": hardware.precision},
        "settings": config.settings(),
        "train": {
            "steps": int(result.global_step),
            "train_loss": round(float(result.training_loss), 5),
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "loss_per_step": losses,
            "tokens": tokens,
            "seconds": round(train_seconds, 3),
            "tokens_per_s": round(tokens / train_seconds, 1) if train_seconds > 0 else None,
            "load_seconds": round(load_seconds, 3),
            "prepare_seconds": round(prepared - started - load_seconds, 3),
        },
        "reference": trainer.ref_info,
        "eval": {"before": eval_before, "after": eval_after},
        **({"judge_eval": judge_eval} if judge_eval is not None else {}),
        "versions": {"trl": trl.__version__, "torch": torch.__version__},
        **(extra or {}),
    }
    checkpoint.write_json_atomic(metrics, out_dir / "metrics.json")
    del trainer, model, llm
    return metrics
