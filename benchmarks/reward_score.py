"""Reward-scoring throughput: the ``reward_score`` stage against the same model's forward pass called directly on
the same texts, in one process, on the same loaded model (target: >= 0.9x; length-sorted batching
should beat a naive loop on mixed lengths).

Model: a randomly initialised ``LlamaForSequenceClassification`` (hidden 256, 4 layers, 8 heads, one head),
with a byte-level BPE tokenizer trained on the benchmark texts and a Llama-3-style chat template.
Texts: hh-rlhf harmless-base test pairs (``../shared/data``), both sides of each pair, mixed lengths.
Timed, alternating to even out a shared CPU, best of ``--repeats``:

 (a) direct: texts rendered with the chat template beforehand (untimed); timed: ``tokenizer(batch,
     padding=True, truncation=True)`` and ``model(**batch)`` over fixed batches of ``--batch`` texts in the
     given order (no length sorting);
 (b) stage: ``RewardScore`` on the preference table with a fresh cache (rendering, truncation, length-sorted
     micro-batches of at most ``--batch`` texts, Parquet shards, collect).

One JSON line: ``stage_rows_per_s``, ``direct_rows_per_s`` (texts scored per second: two per pair),
``ratio``, plus the setting, and ``max_abs_diff`` between the two sets of scores.

    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/reward_score.py [--pairs 300] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from tiny_reward import build_tokenizer
from transformers import LlamaConfig, LlamaForSequenceClassification

from curate import Context
from curate.io import load
from curate.models import ModelRegistry
from curate.reward import load_reward_model
from curate.stages.reward_score import RewardScore

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh_rlhf_harmless_base_test" / "test.jsonl.gz"


def build_model(folder: Path, corpus: list[str], max_positions: int) -> Path:
    tokenizer = build_tokenizer(folder, vocab_size=4000, model_max_length=max_positions, corpus=corpus)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=max_positions, num_labels=1,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForSequenceClassification(config).save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    pairs = load(DATA).frame.head(args.pairs).collect()
    prompts = pairs["prompt"].to_list()
    answers = [m[-1]["content"] for m in pairs["chosen"].to_list()] + [
        m[-1]["content"] for m in pairs["rejected"].to_list()
    ]
    corpus = [m["content"] for p in prompts for m in p] + answers

    with tempfile.TemporaryDirectory(prefix="curate-bench-rm-") as tmp:
        folder = build_model(Path(tmp) / "rm", corpus, max_positions=2048)
        spec = {"backend": "transformers", "path": str(folder), "batch_size": args.batch,
                "max_batch_tokens": args.batch * args.max_length}
        rm = load_reward_model(spec)
        tokenizer, model = rm.tokenizer, rm.model
        texts = [rm.render(p, a) for p, a in zip(prompts + prompts, answers, strict=True)]
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

        def direct() -> list[float]:
            out: list[float] = []
            with torch.inference_mode():
                for i in range(0, len(texts), args.batch):
                    batch = tokenizer(texts[i:i + args.batch], add_special_tokens=False, padding=True,
                                      truncation=True, max_length=args.max_length, return_tensors="pt")
                    out += model(**batch).logits[:, 0].float().tolist()
            return out

        def stage() -> list[float]:
            models = ModelRegistry()
            models.register("rm", rm, spec)
            ctx = Context.ephemeral(models=models)
            out = pairs.lazy().pipe(RewardScore(model="rm", max_length=args.max_length, batch_size=256), ctx)
            frame = out.select("score_chosen", "score_rejected").collect()
            ctx.close()
            return frame["score_chosen"].to_list() + frame["score_rejected"].to_list()

        direct()  # warm-up (first-call allocations)
        direct_s, stage_s = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            reference = direct()
            direct_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            scores = stage()
            stage_s.append(time.perf_counter() - t0)

    fits = [n <= args.max_length for n in lengths]
    diff = max((abs(a - b) for a, b, ok in zip(scores, reference, fits, strict=True) if ok), default=0.0)
    n = len(texts)
    result = {
        "benchmark": "reward_score",
        "texts": n,
        "tokens_mean": round(sum(lengths) / n, 1),
        "tokens_max": max(lengths),
        "over_max_length": n - sum(fits),
        "batch": args.batch,
        "device": rm.device,
        "torch_threads": torch.get_num_threads(),
        "direct_s": round(min(direct_s), 3),
        "stage_s": round(min(stage_s), 3),
        "direct_rows_per_s": round(n / min(direct_s), 1),
        "stage_rows_per_s": round(n / min(stage_s), 1),
        "ratio": round(min(direct_s) / min(stage_s), 3),
        "max_abs_diff": float(f"{diff:.2e}"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
