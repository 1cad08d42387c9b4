"""Validation run: DPO on real human preference pairs, held-out reward accuracy before and after.

Validation training (issue 7): ``../shared/data/hh_rlhf_harmless_base_test`` (Anthropic HH-RLHF harmless-base
test split, read in place and adapted by ``curate.io``'s ``hh_rlhf`` adapter) is split by prompt (seeded)
into training and held-out pairs; the default model (embedded SmolLM2-135M-Instruct) trains briefly with
LoRA through ``curate.train.run_train``; the held-out metrics before and after training are printed as
measured, whatever they are.

Only pairs whose prompt + longer response fit ``--max-chars`` are used, so a step fits a 2-core CPU budget.
``heldout_reward_accuracy``: share of held-out pairs where DPO's implicit reward (beta * log-ratio to the
reference) ranks chosen above rejected, ties one half (so exactly 0.5 before training: the policy *is* the
reference).  ``heldout_logp_accuracy``: share where the model's own log-prob of chosen is higher (what the
model prefers, with no reference).  ``--judge-prompts N`` adds ``judge_eval``: the trained and the base model
answer N held-out prompts and the judge (default: the same embedded model) compares them in both orders;
``win_rate`` (ties one half) is printed as measured.  Prints one JSON line.

Run as: flock /tmp/curate-bench.lock .venv/bin/python benchmarks/validation_run.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh_rlhf_harmless_base_test" / "test.jsonl.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--train-pairs", type=int, default=64)
    parser.add_argument("--held-out-pairs", type=int, default=48)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--max-chars", type=int, default=320)
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--judge-prompts", type=int, default=0,
                        help="also judge the trained model's answers to this many held-out prompts against the "
                             "base model's (judge_eval; 0: off)")
    parser.add_argument("--judge-max-new-tokens", type=int, default=64)
    parser.add_argument("--judge", default="default", help="judge model (judge_eval.judge)")
    args = parser.parse_args()

    import polars as pl
    import torch

    from curate.schema import messages_text
    from curate.train import parse_train_config, run_train
    from curate.train.data import read_preferences, split_held_out

    work = Path(tempfile.mkdtemp(prefix="curate-validation-"))
    try:
        prefs = read_preferences([HH])
        total = prefs.rows
        size = (messages_text("prompt").str.len_chars()
                + pl.max_horizontal(messages_text("chosen").str.len_chars(),
                                    messages_text("rejected").str.len_chars()))
        prefs.frame = prefs.frame.filter(size <= args.max_chars)
        short = prefs.rows
        train, held = split_held_out(prefs, 0.3, args.seed)
        train_frame = train.frame.sample(n=min(args.train_pairs, train.rows), seed=args.seed)
        held_frame = held.frame.sample(n=min(args.held_out_pairs, held.rows), seed=args.seed)
        columns = ["prompt", "chosen", "rejected", "score_chosen", "score_rejected"]
        train_frame.select(columns).write_parquet(work / "train.parquet")
        held_frame.select(columns).write_parquet(work / "held_out.parquet")

        config = parse_train_config({
            "model": args.model, "data": str(work / "train.parquet"), "eval_data": str(work / "held_out.parquet"),
            "output": str(work / "out"), "lora": True, "lora_rank": 16, "loss": "sigmoid", "beta": args.beta,
            "learning_rate": args.lr, "max_steps": args.steps, "batch_size": args.batch_size,
            "max_length": args.max_length, "eval_batch_size": 16, "seed": args.seed, "logging_steps": 4,
            "judge_eval": {"judge": args.judge, "prompts": args.judge_prompts,
                           "max_new_tokens": args.judge_max_new_tokens} if args.judge_prompts > 0 else None,
        })
        start = time.perf_counter()
        metrics = run_train(config, notify=lambda msg: print(msg, flush=True)).runs[0]
        seconds = time.perf_counter() - start
        before, after = metrics["eval"]["before"], metrics["eval"]["after"]
        print(json.dumps({
            "bench": "validation_run",
            "data": f"hh_rlhf_harmless_base_test ({total} usable pairs, {short} with <= {args.max_chars} chars)",
            "model": "SmolLM2-135M-Instruct (embedded GGUF)" if args.model == "default" else args.model,
            "device": metrics["hardware"]["name"],
            "lora_rank": 16, "learning_rate": args.lr, "beta": args.beta,
            "train_pairs": metrics["rows"]["train_used"], "held_out_pairs": metrics["rows"]["eval_used"],
            "steps": metrics["train"]["steps"], "batch_size": args.batch_size,
            "heldout_reward_accuracy_before": before["reward_accuracy"],
            "heldout_reward_accuracy_after": after["reward_accuracy"],
            "heldout_margin_after": after["reward_margin"],
            "heldout_logp_accuracy_before": before["logp_accuracy"],
            "heldout_logp_accuracy_after": after["logp_accuracy"],
            "heldout_loss_before": before["loss"], "heldout_loss_after": after["loss"],
            "chosen_logp_drift": after["chosen_logp_drift"], "rejected_logp_drift": after["rejected_logp_drift"],
            "train_loss_first": metrics["train"]["loss_first"], "train_loss_last": metrics["train"]["loss_last"],
            "train_tokens_per_s": metrics["train"]["tokens_per_s"],
            **({"judge_eval": {k: metrics["judge_eval"][k] for k in (
                "judge", "prompts", "win_rate", "wins", "ties", "losses", "identical", "unparseable",
                "swap_consistency", "rating_from", "policy_chars", "base_chars", "max_new_tokens",
                "generate_seconds", "judge_seconds")}} if "judge_eval" in metrics else {}),
            "seconds": round(seconds, 1),
            "torch_threads": torch.get_num_threads(),
        }))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
