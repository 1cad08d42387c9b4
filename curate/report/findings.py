"""What a finished run should warn about, each with the figure that triggered it.

One function, :func:`findings`, computes them; the HTML report shows them at the top of the page and the
dataset card (:mod:`curate.report.card`) lists them as known biases, so both always say the same thing.

Why these five (each is a way a dataset looks fine in its counts and still teaches the wrong thing):

- **length bias**: when the chosen response is longer in most pairs, DPO learns "longer is better" (Singhal et
  al. 2023, *A Long Way to Go*; Park et al. 2024, *Disentangling Length from Quality in DPO*).  The threshold,
  70% of pairs, is where the length signal alone already separates most pairs.
- **margins inside the scorer's noise**: a median chosen-minus-rejected margin smaller than the scorer's own
  uncertainty means most labels could flip on a re-scoring.  The noise is the embedding reward model's
  ensemble disagreement (``reward_std``: the std of a margin, ``sqrt(std_chosen² + std_rejected²)``) when the
  run has it, else the judge's swap inconsistency (``1 - swap_consistency``, on its 0..1 win-share scale);
  the warning says which.
- **degenerate judge**: a judge whose verdicts follow the position, not the content (Zheng et al. 2023, *Judging
  LLM-as-a-Judge*; Wang et al. 2023, *Large Language Models are not Fair Evaluators*): one position winning
  over 90% of decided verdicts, swap consistency under 0.5, or a degeneracy check that was overridden.
- **heavy dedup**: a dedup stage that removed more than 10% of its input (a threshold or scope that is too
  loose removes distinct rows, not copies).
- **audit matches**: rows the contamination audit matched to a benchmark or reference set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

#: Share of pairs with the chosen side longer above which the run warns (length bias).
LONGER_SHARE = 0.7
#: Share of a dedup stage's input removed above which the run warns.
DEDUP_SHARE = 0.1
#: A judge position winning more than this share of decided verdicts (or less than 1 - it) is degenerate.
POSITION_BIAS = 0.9
#: Swap consistency below this: the judge's verdict changes with the order more often than not.
MIN_SWAP_CONSISTENCY = 0.5
DEDUP_STAGES = ("exact_dedup", "minhash_dedup", "embed_dedup")
#: Stages that (re)write the scores pairs are ranked by: the latest one before the output sets the scale.
SCORERS = ("judge", "reward_score", "combine_scores", "deita_score")


@dataclass(frozen=True)
class Finding:
    """One warning: a stable ``code`` (tests, tools), a short ``title`` and the ``figure`` behind it."""

    code: str
    title: str
    figure: str

    def text(self) -> str:
        return f"{self.title}: {self.figure}"


def _chars(col: str) -> pl.Expr:
    """Characters of a side's messages joined (signed: the margin of two UInt32 lengths must not wrap)."""
    return pl.col(col).list.eval(pl.element().struct.field("content")).list.join("\n").str.len_chars().cast(pl.Int64)


def _pair_figures(data: pl.LazyFrame, columns: list[str]) -> dict[str, Any]:
    """Length and score margins of a preference table reduced to a few numbers in one streaming pass."""
    exprs = [(_chars("chosen") > _chars("rejected")).mean().alias("longer"),
             pl.len().alias("pairs")]
    if {"score_chosen", "score_rejected"} <= set(columns):
        exprs.append((pl.col("score_chosen") - pl.col("score_rejected")).cast(pl.Float64).median().alias("margin"))
    if {"reward_std_chosen", "reward_std_rejected"} <= set(columns):
        std = (pl.col("reward_std_chosen").cast(pl.Float64) ** 2 + pl.col("reward_std_rejected").cast(pl.Float64) ** 2)
        exprs.append(std.sqrt().median().alias("margin_std"))
    return data.select(exprs).collect(engine="streaming").row(0, named=True)


def _margin_noise(stages: list[dict[str, Any]], figures: dict[str, Any]) -> tuple[float, str] | None:
    """The scorer's noise on the scale of ``score_chosen - score_rejected``, and where it comes from."""
    if figures.get("margin_std") is not None:
        return float(figures["margin_std"]), "median ensemble std of the margin (reward_std of the embedding RM)"
    scorers = [s for s in stages if s.get("name") in SCORERS]
    last = scorers[-1] if scorers else None
    if last is not None and last.get("name") == "judge":
        consistency = (last.get("notes") or {}).get("swap_consistency")
        if isinstance(consistency, int | float):
            return 1.0 - float(consistency), (f"judge {last['label']} swap inconsistency 1 - {consistency:g} "
                                              "(share of verdicts that flip with the order; 0..1 win-share scale)")
    return None


def _judge_findings(stages: list[dict[str, Any]]) -> list[Finding]:
    out = []
    for s in stages:
        if s.get("name") != "judge":
            continue
        notes = s.get("notes") or {}
        bias, consistency = notes.get("position_bias"), notes.get("swap_consistency")
        check = str(notes.get("degeneracy_check") or "")
        problems = []
        if isinstance(bias, int | float) and not 1 - POSITION_BIAS <= bias <= POSITION_BIAS:
            problems.append(f"position_bias {bias:g} (the first-shown response won {bias:.0%} of decided verdicts; "
                            "0.5 is unbiased)")
        if isinstance(consistency, int | float) and consistency < MIN_SWAP_CONSISTENCY:
            problems.append(f"swap_consistency {consistency:g} (under {MIN_SWAP_CONSISTENCY:g}: most verdicts change "
                            "when the order is swapped)")
        if check.startswith("degenerate"):
            problems.append(f"degeneracy check: {check}")
        if problems:
            out.append(Finding("degenerate_judge", f"Degenerate judge ({s['label']})", "; ".join(problems)))
    return out


def _dedup_findings(stages: list[dict[str, Any]]) -> list[Finding]:
    out = []
    for s in stages:
        notes = s.get("notes") or {}
        if s.get("name") not in DEDUP_STAGES and "clusters" not in notes and "duplicates" not in notes:
            continue
        # The stage's own count of duplicates where it notes one (magpie sets aside truncated instructions too,
        # and counts duplicates among its samples, not among the input rows it ignores), else all it set aside.
        noted = notes.get("duplicates")
        removed = int(noted) if isinstance(noted, int | float) else int(s.get("quarantined") or 0)
        basis = notes.get("samples") if s.get("name") == "magpie" else None
        rows_in = int(basis) if isinstance(basis, int | float) else int(s.get("rows_in") or 0)
        unit = "samples" if isinstance(basis, int | float) else "input rows"
        if rows_in and removed / rows_in > DEDUP_SHARE:
            out.append(Finding("heavy_dedup", f"Dedup removed over {DEDUP_SHARE:.0%} ({s['label']})",
                               f"{removed:,} of {rows_in:,} {unit} ({removed / rows_in:.1%}) set aside as "
                               "duplicates: check the threshold and scope"))
    return out


def _audit_findings(stages: list[dict[str, Any]], reports_dir: Path | None) -> list[Finding]:
    out = []
    for s in stages:
        notes = s.get("notes") or {}
        if s.get("name") != "audit":
            continue
        rows = int(notes.get("rows_matched") or 0)
        if rows:
            audited = notes.get("texts_audited")
            of = f" of {int(audited):,} audited" if isinstance(audited, int | float) else ""
            out.append(Finding("audit_matches", f"Audit matches ({s['label']})",
                               f"{rows:,} row(s){of} match a reference set ({int(notes.get('matches') or 0):,} "
                               "match(es); see the audit section and reports/)"))
    if not out and reports_dir is not None and reports_dir.is_dir():  # a report without its stage notes
        files = sorted(reports_dir.glob("*audit*.parquet"))
        matched = sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in files)
        if matched:
            out.append(Finding("audit_matches", "Audit matches",
                               f"{matched:,} match(es) in {', '.join(f.name for f in files)}"))
    return out


def findings(manifest: dict[str, Any], data: pl.LazyFrame | None, reports_dir: Path | None = None) -> list[Finding]:
    """Every warning of a run: its manifest (stage notes and counts), its output rows (``data``, lazily; only a
    few aggregates are computed) and the folder of stage reports (the audit's matches)."""
    stages = manifest.get("stages") or []
    out: list[Finding] = []
    columns = data.collect_schema().names() if data is not None else []
    if data is not None and {"chosen", "rejected"} <= set(columns):
        figures = _pair_figures(data, columns)
        pairs, longer = int(figures["pairs"] or 0), figures["longer"]
        if pairs and longer is not None and longer > LONGER_SHARE:
            out.append(Finding("length_bias", "Chosen longer than rejected",
                               f"in {longer:.1%} of {pairs:,} pairs (over {LONGER_SHARE:.0%}: a DPO model trained "
                               "on them can learn length instead of quality)"))
        noise = _margin_noise(stages, figures)
        margin = figures.get("margin")
        if noise is not None and margin is not None and margin < noise[0]:
            out.append(Finding("margin_below_noise", "Score margins inside the scorer's noise",
                               f"median score margin {margin:.4g} is below the noise {noise[0]:.4g}, the {noise[1]}"))
    out += _judge_findings(stages)
    out += _dedup_findings(stages)
    out += _audit_findings(stages, reports_dir)
    return out


__all__ = ["Finding", "findings"]
