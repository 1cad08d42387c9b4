"""Judge agreement with human pairwise labels (Zheng et al. 2023, section 4), for one judge model and rule.

Runs curate's ``judge`` stage (pairwise, both orders) on a human-labelled pairwise set through the package's
judge-eval code (:mod:`curate.judge_eval`: the same loading, judging and figures as ``curate judge-eval``) and
prints one JSON line: the judge's figures (``agreement`` with ties counting one half, ``agreement_decided``,
``agreement_3way``, intervals, ``decided``, ``swap_consistency``, ``position_bias``, ``length_bias``,
``seconds``, ``calls``) and the baseline ``length_agreement`` ("the longer response wins"), which every judge
must beat to be worth its cost.  ``curate judge-eval`` compares several judges at once; this script keeps the
``--rule`` switch (agree vs calibrated) for one model.

Input: any labelled file judge-eval reads (``prompt``, ``response_a``, ``response_b``, ``label`` a/b/tie; or a
preference table).  Build one from the shared data (``hh_rlhf``: every test row; ``hh_heldout`` / ``oasst`` as
in benchmarks/judge_eval.py; the A/B order is a seeded coin so position bias cannot pass for skill)::

    .venv/bin/python benchmarks/judge_agreement.py build --source hh_rlhf --n 50 --out /tmp/hh50.jsonl
    .venv/bin/python benchmarks/judge_agreement.py build --source oasst --n 50 --out /tmp/oasst50.jsonl

Run (the model is a ``models:`` spec as JSON; the default is the embedded SmolLM2-135M-Instruct)::

    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/judge_agreement.py run /tmp/hh50.jsonl
    ... run /tmp/hh50.jsonl --model '{"backend": "vllm", "path": "/models/Qwen2.5-7B-Instruct"}'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from judge_eval import build  # benchmarks/judge_eval.py: the shared-data pair builder


def run(path: Path, model: dict[str, Any], limit: int | None, batch_size: int, rule: str = "agree") -> dict[str, Any]:
    from curate import Context
    from curate.judge_eval import load_labelled, summarize
    from curate.judge_eval.judges import LengthJudge, StageJudge, timed
    from curate.stages import Judge

    pairs = load_labelled(path, limit=limit).pairs
    ctx = Context.ephemeral()
    try:
        stage = Judge(model="bench-judge", mode="pairwise", pairwise_rule=rule, batch_size=batch_size,
                      allow_degenerate=True)
        verdicts, seconds = timed(StageJudge("judge", stage, {"bench-judge": model}), pairs, ctx)
        length, _ = timed(LengthJudge(), pairs, ctx)
    finally:
        ctx.close()
    figures = summarize("judge", pairs, verdicts.verdict, first=verdicts.first, swapped=verdicts.swapped,
                        seconds=seconds, calls=verdicts.calls)
    baseline = summarize("length", pairs, length.verdict)
    figures.pop("name")
    return {"benchmark": "judge_agreement", "file": str(path), "model": model, "rule": rule, **figures,
            "length_agreement": baseline["agreement"], "label_ties": pairs["label"].to_list().count("tie")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="judge a labelled pairwise file and print one JSON line")
    p_run.add_argument("path", type=Path)
    p_run.add_argument("--model", default='{"backend": "transformers", "path": "default"}',
                       help="models: spec as JSON")
    p_run.add_argument("--limit", type=int, default=None)
    p_run.add_argument("--batch-size", type=int, default=16)
    p_run.add_argument("--rule", choices=["agree", "calibrated"], default="agree",
                       help="agree: winner only when both orders agree; calibrated: position-averaged probabilities")
    p_build = sub.add_parser("build", help="write a labelled pairwise JSONL from ../shared/data")
    p_build.add_argument("--source", choices=["hh_rlhf", "hh_heldout", "oasst"], default="hh_rlhf")
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
