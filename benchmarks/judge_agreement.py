"""Judge agreement with human pairwise labels (DESIGN.md section 8; Zheng et al. 2023, section 4).

Runs curate's ``judge`` stage (pairwise, both orders) on a human-labelled pairwise set and prints one JSON
line: ``agreement`` (share of rows where the judge's verdict equals the human label; a null verdict counts
as a miss), ``agreement_decided`` (the same over rows the judge did not call a tie or leave null),
``swap_consistency`` (share of rows whose two orders agree), ``n``, and the baseline ``length_agreement``
(always pick the longer response; equal lengths -> tie), which every judge must beat to be worth its cost.

Input: JSONL with ``prompt`` (a string, or a list of ``{role, content}`` messages), ``response_a``,
``response_b`` and ``label`` in ``a`` / ``b`` / ``tie``.  Any such file works.

Build one from the shared data (the A/B order is shuffled with ``--seed`` so position bias cannot pass for
skill)::

    .venv/bin/python benchmarks/judge_agreement.py build --source hh_rlhf --n 50 --out /tmp/hh50.jsonl
    .venv/bin/python benchmarks/judge_agreement.py build --source oasst --n 50 --out /tmp/oasst50.jsonl

Run (the model is a ``models:`` spec as JSON; the default is the embedded SmolLM2-135M-Instruct)::

    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/judge_agreement.py run /tmp/hh50.jsonl
    ... run /tmp/hh50.jsonl --model '{"backend": "vllm", "path": "/models/Qwen2.5-7B-Instruct"}'
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _messages(prompt: Any) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


def load_pairs(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            label = str(row["label"]).strip().lower()
            if label not in ("a", "b", "tie"):
                raise SystemExit(f"{path}, line {number}: label must be a, b or tie, got {row['label']!r}")
            rows.append({"prompt": _messages(row["prompt"]), "a": str(row["response_a"]),
                         "b": str(row["response_b"]), "label": label})
    return rows


def length_verdict(a: str, b: str) -> str:
    return "a" if len(a) > len(b) else "b" if len(b) > len(a) else "tie"


def run(path: Path, model: dict[str, Any], limit: int | None, batch_size: int, rule: str = "agree") -> dict[str, Any]:
    from curate import Context
    from curate.schema import MESSAGES, conform
    from curate.stages import Judge

    rows = load_pairs(path)[:limit]
    assistant = [{"role": "assistant", "content": ""}]
    frame = pl.DataFrame(
        {
            "prompt": [r["prompt"] for r in rows],
            "chosen": [[{**assistant[0], "content": r["a"]}] for r in rows],
            "rejected": [[{**assistant[0], "content": r["b"]}] for r in rows],
            "_pos": list(range(len(rows))),
        },
        schema={"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES, "_pos": pl.Int64},
    )
    ctx = Context.ephemeral(batch_size=batch_size)
    ctx.models.specs["judge"] = model
    started = time.perf_counter()
    out = Judge(mode="pairwise", pairwise_rule=rule, batch_size=batch_size)(conform(frame.lazy(), "preference"), ctx)
    out = out.sort("_pos").collect()
    seconds = time.perf_counter() - started
    names = {"chosen": "a", "rejected": "b", "tie": "tie"}
    verdicts = [names.get(v) if v is not None else None for v in out["judge_verdict"].to_list()]
    labels = [r["label"] for r in rows]
    hits = [v == lab for v, lab in zip(verdicts, labels, strict=True)]
    decided = [(v, lab) for v, lab in zip(verdicts, labels, strict=True) if v in ("a", "b")]
    consistent = [c for c in out["judge_consistent"].to_list() if c is not None]
    length = [length_verdict(r["a"], r["b"]) == r["label"] for r in rows]
    first = out["judge_verdict_first"].to_list()
    ctx.close()
    return {
        "benchmark": "judge_agreement",
        "file": str(path),
        "model": model,
        "rule": rule,
        "n": len(rows),
        "agreement": round(sum(hits) / len(rows), 4) if rows else None,
        "agreement_decided": round(sum(v == lab for v, lab in decided) / len(decided), 4) if decided else None,
        "decided": len(decided),
        "ties": verdicts.count("tie"),
        "unparseable": verdicts.count(None),
        "swap_consistency": round(sum(consistent) / len(consistent), 4) if consistent else None,
        "first_position_a_rate": round(first.count("a") / len(first), 4) if first else None,
        "length_agreement": round(sum(length) / len(rows), 4) if rows else None,
        "label_ties": labels.count("tie"),
        "seconds": round(seconds, 1),
    }


def build(source: str, n: int, seed: int, out: Path) -> int:
    """Write a labelled pairwise JSONL from ../shared/data; the A/B order is drawn with ``seed``."""
    from curate.io import load

    rng = random.Random(seed)
    pairs: list[tuple[list[dict[str, str]], str, str]] = []  # (prompt, better, worse)
    if source == "hh_rlhf":
        loaded = load(SHARED / "hh_rlhf_harmless_base_test" / "test.jsonl.gz", "hh_rlhf")
        frame = loaded.frame.select("prompt", "chosen", "rejected").collect()
        for row in frame.iter_rows(named=True):
            better = "\n".join(m["content"] for m in row["chosen"])
            worse = "\n".join(m["content"] for m in row["rejected"])
            if better.strip() and worse.strip() and better != worse:
                pairs.append((row["prompt"], better, worse))
    elif source == "oasst":
        loaded = load(SHARED / "oasst_en_100_trees" / "en_100_tree.jsonl", "oasst")
        frame = loaded.frame.select("prompt", "responses").collect()
        for row in frame.iter_rows(named=True):
            ranked = [r for r in row["responses"] if r["score"] is not None and r["content"]]
            if len(ranked) < 2:
                continue
            ranked.sort(key=lambda r: -r["score"])  # the adapter's score: higher is better
            if ranked[0]["score"] != ranked[-1]["score"]:
                pairs.append((row["prompt"], ranked[0]["content"], ranked[-1]["content"]))
    else:
        raise SystemExit(f"unknown source {source!r}: hh_rlhf or oasst")
    rng.shuffle(pairs)
    with open(out, "w") as handle:
        for prompt, better, worse in pairs[:n]:
            a_is_better = rng.random() < 0.5
            a, b = (better, worse) if a_is_better else (worse, better)
            record = {"prompt": prompt, "response_a": a, "response_b": b, "label": "a" if a_is_better else "b"}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return min(n, len(pairs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="judge a labelled pairwise JSONL and print one JSON line")
    p_run.add_argument("path", type=Path)
    p_run.add_argument("--model", default='{"backend": "transformers", "path": "default"}',
                       help="models: spec as JSON")
    p_run.add_argument("--limit", type=int, default=None)
    p_run.add_argument("--batch-size", type=int, default=16)
    p_run.add_argument("--rule", choices=["agree", "calibrated"], default="agree",
                       help="agree: winner only when both orders agree; calibrated: position-averaged probabilities")
    p_build = sub.add_parser("build", help="write a labelled pairwise JSONL from ../shared/data")
    p_build.add_argument("--source", choices=["hh_rlhf", "oasst"], default="hh_rlhf")
    p_build.add_argument("--n", type=int, default=50)
    p_build.add_argument("--seed", type=int, default=0)
    p_build.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "build":
        written = build(args.source, args.n, args.seed, args.out)
        print(json.dumps({"built": str(args.out), "rows": written, "source": args.source}))
        return 0
    print(json.dumps(run(args.path, json.loads(args.model), args.limit, args.batch_size, args.rule)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
