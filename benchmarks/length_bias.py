"""Length bias of preference pairs, and what ``pairs``' length controls do about it (issue #11).

Why: best-vs-worst pairing inherits the length preference of whatever scored the responses (human raters and
reward models both favour longer answers; Singhal et al. 2023), so DPO learns "longer is better".  This measures
how much longer the chosen side is than the rejected side, on two real candidates sets from ``../shared/data``:

- ``oasst``: the OpenAssistant trees' groups of human-ranked sibling replies (``oasst`` adapter; ``score`` is
  ``-rank``, so the human's first choice is the best);
- ``magpie``: the Magpie example's five Llama-3-8B responses per instruction with their ArmoRM reward scores
  (``multi_response`` adapter).

For each source, ``Pairs`` runs on a ``Context.ephemeral()`` three ways, all with ``--margin``:
``best_vs_worst`` without controls, with ``max_length_ratio`` (``--ratio``), and with ``length_controlled``.
One JSON line per source: ``groups`` (candidates rows), and per setting ``pairs`` (kept), ``dropped`` (all reasons),
``length_ratio_mean`` (mean over pairs of chosen/rejected characters), ``length_ratio_median``,
``chosen_longer_share`` (pairs whose chosen is the longer).  No model runs; it takes a few seconds.

    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/length_bias.py [--ratio 1.5] [--margin 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import polars as pl

import curate
from curate import Context
from curate.stages import Pairs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = {
    "oasst": (DATA / "oasst_en_100_trees" / "en_100_tree.jsonl", "oasst"),
    "magpie": (DATA / "magpie_po_example" / "example_instructions_5res_armorm.json", "multi_response"),
}


def measure(candidates: pl.DataFrame, stage: Pairs) -> dict[str, Any]:
    """Run ``stage`` and report what it kept and the chosen/rejected length figures of its pairs."""
    ctx = Context.ephemeral()
    out = stage(candidates.lazy(), ctx).collect()
    notes = ctx.stats["pairs"]

    def chars(side: str) -> pl.Expr:
        return pl.col(side).list.first().struct.field("content").str.len_chars().cast(pl.Float64)

    ratios = out.select((chars("chosen") / chars("rejected")).alias("r")).filter(pl.col("r").is_finite())["r"]
    return {
        "pairs": out.height,
        "dropped": {k.removeprefix("dropped_"): v for k, v in notes.items() if k.startswith("dropped_") and v},
        "length_ratio_mean": notes["length_ratio_mean"],
        "length_ratio_median": round(float(ratios.median()), 4) if len(ratios) else None,
        "chosen_longer_share": notes["chosen_longer_share"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratio", type=float, default=1.5, help="max_length_ratio of the second setting")
    parser.add_argument("--margin", type=float, default=0.0, help="min_margin of every setting")
    args = parser.parse_args()
    for name, (path, adapter) in SOURCES.items():
        candidates = curate.read(path, adapter).collect()
        settings = {
            "best_vs_worst": Pairs(min_margin=args.margin),
            f"max_length_ratio_{args.ratio:g}": Pairs(min_margin=args.margin, max_length_ratio=args.ratio),
            "length_controlled": Pairs(min_margin=args.margin, length_controlled=True),
        }
        line: dict[str, Any] = {"source": name, "adapter": adapter, "groups": candidates.height,
                                "min_margin": args.margin}
        line.update({label: measure(candidates, stage) for label, stage in settings.items()})
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
