"""DPO training throughput: ``curate train`` (the library path) vs TRL's ``DPOTrainer`` called directly.

Performance target: the DPO trainer must reach >= 1x the tokens/s of TRL's DPOTrainer on the same model and
data (higher with stored reference log-probs).  One run, same model folder, same pairs (real hh-rlhf harmless
pairs from ../shared/data, adapted by curate.io), same user settings (steps, batch size, learning rate, beta,
loss, max_length, LoRA or not, seed, precision: fp32 on CPU, bf16 mixed on a bf16 GPU).

* ``trl``: ``DPOTrainer(model, args=DPOConfig(<those settings>), ...)`` with TRL's defaults for the rest (what
  a user writing the script gets: gradient checkpointing on, the reference model's forward at every step).
* ``curate``: ``curate.train.run_train`` with its stored-reference file removed first: reference log-probs
  are computed once (length-sorted no-grad batches) and written to the output's cache; gradient checkpointing
  off.
* ``curate_stored_refs``: the same again (same output: its metrics.json removed, so it trains instead of reusing
  the finished run); the reference model does not run at all.
* ``trl_matched`` (for honesty): TRL with curate's two choices switched on by hand (``precompute_ref_log_probs``
  and ``gradient_checkpointing=False``): shows how much of the gain is those settings vs curate's code.

Time = wall time from model load to the end of training (tokenization, reference pass and training included;
held-out evaluation excluded: curate runs with eval_fraction 0).  Tokens = TRL's own count of non-padding
tokens trained on (``_total_train_tokens``, chosen and rejected sequences), the same in every path.  Each path
runs ``--repeats`` times after a warm-up; the best time counts.  Prints one JSON line.

Model: ``--model tiny`` (tests/tiny_llm.py, built in a temp folder), ``default`` (SmolLM2-135M-Instruct GGUF;
plain TRL refuses to train a GGUF-loaded model, which transformers keeps marked as quantized after
de-quantizing it, so the TRL path gets the same un-marking curate does),
a local folder, or ``--random-config qwen2-0.5b`` (a randomly initialised Qwen2-0.5B-sized model with the
tiny tokenizer: realistic for throughput on a GPU, pointless on 2 CPU cores).

Run as: flock /tmp/curate-bench.lock .venv/bin/python benchmarks/train_throughput.py [--model default]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh_rlhf_harmless_base_test" / "test.jsonl.gz"


def _pairs(out: Path, n: int) -> Path:
    """``n`` real hh-rlhf pairs (the first with a short enough prompt) as a curate preference Parquet."""
    import polars as pl

    from curate.train.data import read_preferences

    prefs = read_preferences([HH]).frame
    prefs = prefs.filter(pl.col("prompt").list.len() <= 3).head(n)
    path = out / "pairs.parquet"
    prefs.select("id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected").write_parquet(path)
    return path


def _model(choice: str, work: Path) -> tuple[str, str | None]:
    """(model path for curate, gguf file or None)."""
    if choice == "tiny":
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_llm import build_tiny_llm

        return str(build_tiny_llm(work / "tiny", hidden_size=128, num_layers=4)), None
    if choice.startswith("random:"):
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_llm import build_tiny_llm
        from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

        tok_dir = build_tiny_llm(work / "tok")
        tok = AutoTokenizer.from_pretrained(tok_dir)
        cfg = Qwen2Config(vocab_size=len(tok), hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                          num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
        folder = work / "qwen2-0.5b-random"
        Qwen2ForCausalLM(cfg).save_pretrained(folder)
        tok.save_pretrained(folder)
        return str(folder), None
    if choice == "default":
        from curate.llm._common import resolve_model_path

        folder, gguf = resolve_model_path("default", Path("."))
        return str(folder / gguf) if gguf else str(folder), gguf
    return choice, None


def _trl(model_path: str, data: Path, args: argparse.Namespace, out: Path, *, matched: bool) -> tuple[float, int]:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from curate.train.data import COLUMNS

    start = time.perf_counter()
    path, kw = model_path, {}
    if model_path.endswith(".gguf"):
        path, kw = str(Path(model_path).parent), {"gguf_file": Path(model_path).name}
    tok = AutoTokenizer.from_pretrained(path, **kw)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kw)
    if kw:  # transformers keeps a de-quantized GGUF model marked quantized and Trainer refuses it; curate unmarks
        from curate.train.trainer import _unmark_gguf

        _unmark_gguf(model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    config = DPOConfig(
        output_dir=str(out), per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
        max_steps=args.steps, beta=0.1, loss_type=["sigmoid"], max_length=args.max_length, seed=0, data_seed=0,
        bf16=bf16, fp16=cuda and not bf16, use_cpu=not cuda, report_to=[], save_strategy="no", disable_tqdm=True,
        logging_steps=10,
        **({"precompute_ref_log_probs": True, "gradient_checkpointing": False} if matched else {}),
    )
    frame = __import__("polars").read_parquet(data, columns=list(COLUMNS))
    dataset = datasets.Dataset.from_dict(frame.to_dict(as_series=False))
    peft_config = None
    if args.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tok,
                         peft_config=peft_config)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # quiet, as curate's path is
    trainer.train()
    return time.perf_counter() - start, int(trainer._total_train_tokens)


def _curate(model_path: str, data: Path, args: argparse.Namespace, out: Path, *, fresh: bool) -> tuple[float, int]:
    from curate.train import parse_train_config, run_train

    (out / "metrics.json").unlink(missing_ok=True)  # else run_train reuses the finished run instead of training
    if fresh:
        for old in (out / "cache" / "ref_logps").glob("*.parquet"):
            old.unlink()
    config = parse_train_config({
        "model": model_path, "data": str(data), "eval_fraction": 0.0, "output": str(out),
        "max_steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.lr, "beta": 0.1,
        "loss": "sigmoid", "max_length": args.max_length, "lora": args.lora, "seed": 0,
    })
    start = time.perf_counter()
    metrics = run_train(config).runs[0]
    return time.perf_counter() - start, int(metrics["train"]["tokens"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny | default | a model folder")
    parser.add_argument("--random-config", default=None, help="qwen2-0.5b: a random model of that shape")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--lora", action="store_true", help="LoRA on both paths (default: full fine-tuning)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import os

    import torch

    os.environ.setdefault("TQDM_DISABLE", "1")
    from curate.train.trainer import _quiet_libraries

    _quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="curate-train-bench-"))
    try:
        choice = f"random:{args.random_config}" if args.random_config else args.model
        model_path, _ = _model(choice, work)
        data = _pairs(work, args.pairs)
        # Warm-up (torch kernels, imports), untimed.
        _trl(model_path, data, argparse.Namespace(**{**vars(args), "steps": 1}), work / "warm", matched=False)
        best: dict[str, tuple[float, int]] = {}
        for _ in range(args.repeats):
            for name, fn in (
                ("trl", lambda: _trl(model_path, data, args, work / "trl", matched=False)),
                ("curate", lambda: _curate(model_path, data, args, work / "cur", fresh=True)),
                ("curate_stored_refs", lambda: _curate(model_path, data, args, work / "cur", fresh=False)),
                ("trl_matched", lambda: _trl(model_path, data, args, work / "trlm", matched=True)),
            ):
                seconds, tokens = fn()
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, tokens)
        rate = {name: tokens / seconds for name, (seconds, tokens) in best.items()}
        result: dict[str, Any] = {
            "bench": "train_throughput",
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else
            f"cpu ({torch.get_num_threads()} threads)",
            "model": choice if choice != "tiny" else "tiny (tests/tiny_llm.py, hidden 128, 4 layers)",
            "lora": args.lora, "pairs": args.pairs, "steps": args.steps, "batch_size": args.batch_size,
            "max_length": args.max_length,
            "tokens": {name: tokens for name, (_, tokens) in best.items()},
            "seconds": {name: round(seconds, 3) for name, (seconds, _) in best.items()},
            "curate_tokens_per_s": round(rate["curate"], 1),
            "curate_stored_refs_tokens_per_s": round(rate["curate_stored_refs"], 1),
            "trl_tokens_per_s": round(rate["trl"], 1),
            "trl_matched_tokens_per_s": round(rate["trl_matched"], 1),
            "ratio": round(rate["curate"] / rate["trl"], 3),
            "ratio_stored_refs": round(rate["curate_stored_refs"] / rate["trl"], 3),
            "ratio_vs_trl_matched": round(rate["curate"] / rate["trl_matched"], 3),
        }
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
