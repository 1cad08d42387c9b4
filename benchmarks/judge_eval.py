"""``curate judge-eval`` on labelled pairs built from ../shared/data (issue 15, section 1).

Builds the files the README's judge-eval table comes from, then runs ``curate judge-eval --json`` on them; the
last line printed is one JSON object ``{"files": {name: judge-eval result}}``.

- ``hh_heldout``: Anthropic HH-RLHF harmless-base test pairs whose prompt is in the held-out split of the shipped
  embedding reward model (:func:`curate.reward.embedding_rm.heldout_mask`: 20% of prompts, by a salted hash),
  so ``rm:default`` is never scored on a pair it was trained on.  Chosen is the human label.
- ``oasst``: OpenAssistant sibling replies ranked by humans (en_100_tree): per sibling group with two or more
  ranked replies, the best against the worst (groups whose ranks tie are skipped).

Each pair's A/B order is a seeded coin, so position bias cannot pass for skill.  Usage::

    .venv/bin/python benchmarks/judge_eval.py build --out /tmp/je            # /tmp/je/{hh_heldout,oasst}.jsonl
    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/judge_eval.py run --dir /tmp/je \\
        --judge model:default --judge length --judge random --judge rm:default
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SOURCES = ("hh_heldout", "oasst")


def ranked_pairs(source: str) -> list[tuple[list[dict[str, str]], str, str]]:
    """``(prompt, better, worse)`` from the shared data, in file order."""
    from curate.io import load

    pairs: list[tuple[list[dict[str, str]], str, str]] = []
    if source in ("hh_heldout", "hh_rlhf"):  # hh_rlhf: every row (judge_agreement.py's original file)
        frame = load(SHARED / "hh_rlhf_harmless_base_test" / "test.jsonl.gz", "hh_rlhf").frame
        frame = frame.select("prompt", "chosen", "rejected").collect()
        if source == "hh_heldout":
            from curate.reward.embedding_rm import heldout_mask

            frame = frame.filter(heldout_mask(frame["prompt"]))
        for row in frame.iter_rows(named=True):
            better = "\n".join(m["content"] for m in row["chosen"])
            worse = "\n".join(m["content"] for m in row["rejected"])
            if better.strip() and worse.strip() and better != worse:
                pairs.append((row["prompt"], better, worse))
    elif source == "oasst":
        frame = load(SHARED / "oasst_en_100_trees" / "en_100_tree.jsonl", "oasst").frame
        for row in frame.select("prompt", "responses").collect().iter_rows(named=True):
            ranked = [r for r in row["responses"] if r["score"] is not None and r["content"]]
            if len(ranked) < 2:
                continue
            ranked.sort(key=lambda r: -r["score"])  # the adapter's score: higher is better
            if ranked[0]["score"] != ranked[-1]["score"]:
                pairs.append((row["prompt"], ranked[0]["content"], ranked[-1]["content"]))
    else:
        raise SystemExit(f"unknown source {source!r}: {', '.join(SOURCES)} or hh_rlhf")
    return pairs


def build(source: str, n: int, seed: int, out: Path) -> int:
    """Write ``n`` (or all, if fewer) labelled pairs as pairwise JSONL, in a seeded order with seeded A/B sides."""
    rng = random.Random(seed)
    pairs = ranked_pairs(source)
    rng.shuffle(pairs)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as handle:
        for prompt, better, worse in pairs[:n]:
            a_is_better = rng.random() < 0.5
            a, b = (better, worse) if a_is_better else (worse, better)
            record = {"prompt": prompt, "response_a": a, "response_b": b, "label": "a" if a_is_better else "b"}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return min(n, len(pairs))


def run(directory: Path, judges: list[str], limit: int | None, seed: int) -> dict[str, Any]:
    """``curate judge-eval --json`` on each built file (a subprocess, as a user runs it)."""
    results = {}
    for source in SOURCES:
        path = directory / f"{source}.jsonl"
        if not path.is_file():
            continue
        cmd = [str(ROOT / ".venv" / "bin" / "curate"), "judge-eval", str(path), "--json", "--seed", str(seed),
               "--out", str(directory / f"{source}-out")]
        for judge in judges:
            cmd += ["--judge", judge]
        if limit is not None:
            cmd += ["--limit", str(limit)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
        results[source] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="write DIR/hh_heldout.jsonl and DIR/oasst.jsonl from ../shared/data")
    p_build.add_argument("--out", type=Path, required=True)
    p_build.add_argument("--n", type=int, default=200)
    p_build.add_argument("--seed", type=int, default=0)
    p_run = sub.add_parser("run", help="curate judge-eval --json on the built files; one JSON line")
    p_run.add_argument("--dir", type=Path, required=True)
    p_run.add_argument("--judge", action="append", default=[])
    p_run.add_argument("--limit", type=int, default=None)
    p_run.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "build":
        rows = {s: build(s, args.n, args.seed, args.out / f"{s}.jsonl") for s in SOURCES}
        print(json.dumps({"built": str(args.out), "rows": rows}))
        return 0
    results = run(args.dir, args.judge or ["length", "random"], args.limit, args.seed)
    print(json.dumps({"benchmark": "judge_eval", "files": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
