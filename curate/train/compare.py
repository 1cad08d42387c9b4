"""One table for several training runs (curated vs baseline): printed with rich, written as JSON and Markdown.

The question a comparison answers is "did curating the data help?", so each line shows the same held-out
metrics for one run, measured on the same held-out pairs, from the same model, seed and settings; the only
difference between lines is the training data (of the same size when the baseline is ``random``).  With
``judge_eval``, ``win_rate`` is each run's answers judged against the *base* model's on the same held-out prompts
(ties one half, so 0.5 is "no better than where it started"); the two runs share the base answers.

``n eval`` is the number of held-out pairs each run is scored on; the line ``curated - baseline`` is the paired
difference of held-out reward accuracy and margin over the pairs both scored (each run's ``eval_pairs.parquet``),
with a 95% interval (:func:`curate.train.evaluate.paired_difference`): an interval that straddles 0 means the
held-out set cannot tell the two apart.  The caption names the model file that was trained (for the default, the
Q4_1 GGUF of SmolLM2-135M-Instruct, de-quantized to float weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate import checkpoint
from curate.train.evaluate import EVAL_PAIRS, paired_difference

COLUMNS = ("run", "pairs", "n eval", "steps", "tokens/s", "loss", "held-out acc", "margin", "chosen drift",
           "rejected drift", "logp acc")
#: Shown when any run has a judge evaluation (``judge_eval``): win rate vs the base model, and wins/ties/losses.
JUDGE_COLUMNS = ("win_rate", "w/t/l")


def columns(runs: list[dict[str, Any]]) -> tuple[str, ...]:
    return COLUMNS + JUDGE_COLUMNS if any(m.get("judge_eval") for m in runs) else COLUMNS


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def row_of(metrics: dict[str, Any], judged: bool = False) -> list[str]:
    train = metrics["train"]
    before = metrics["eval"]["before"] or {}
    after = metrics["eval"]["after"] or {}
    acc = f"{_fmt(before.get('reward_accuracy'))}->{_fmt(after.get('reward_accuracy'))}" if after else "-"
    logp = f"{_fmt(before.get('logp_accuracy'))}->{_fmt(after.get('logp_accuracy'))}" if after else "-"
    return [
        metrics["run"],
        f"{metrics['rows']['train_used']:,}",
        f"{after.get('rows', 0):,}" if after else "0",
        str(train["steps"]),
        _fmt(train["tokens_per_s"], ".0f"),
        _fmt(train["train_loss"], ".4f"),
        acc,
        _fmt(after.get("reward_margin"), ".4f"),
        _fmt(after.get("chosen_logp_drift"), ".2f"),
        _fmt(after.get("rejected_logp_drift"), ".2f"),
        logp,
    ] + (_judge_cells(metrics.get("judge_eval")) if judged else [])


def _judge_cells(judge: dict[str, Any] | None) -> list[str]:
    if not judge:
        return ["-", "-"]
    return [_fmt(judge.get("win_rate")), f"{judge['wins']}/{judge['ties']}/{judge['losses']}"]


def difference(runs: list[dict[str, Any]], out_dir: Path) -> dict[str, Any] | None:
    """First run minus second (curated - baseline) on the held-out pairs both scored: accuracy and margin, each
    with a 95% interval; None for a single run or without per-pair results."""
    if len(runs) < 2:
        return None
    first, second = (Path(out_dir) / m["run"] / EVAL_PAIRS for m in runs[:2])
    accuracy = paired_difference(first, second, "correct")
    margin = paired_difference(first, second, "margin")
    if accuracy is None or margin is None:
        return None
    return {"runs": f"{runs[0]['run']} - {runs[1]['run']}", "n": accuracy["n"], "reward_accuracy": accuracy,
            "reward_margin": margin}


def _interval(d: dict[str, Any], spec: str) -> str:
    if d["ci_low"] is None:
        return f"{d['diff']:+{spec}} (no interval: {d['n']} pair)"
    return f"{d['diff']:+{spec}} [{d['ci_low']:+{spec}}, {d['ci_high']:+{spec}}]"


def difference_row(diff: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    cells = dict.fromkeys(names, "")
    cells.update({"run": diff["runs"], "n eval": f"{diff['n']:,}",
                  "held-out acc": _interval(diff["reward_accuracy"], ".3f"),
                  "margin": _interval(diff["reward_margin"], ".4f")})
    return [cells[n] for n in names]


def model_caption(runs: list[dict[str, Any]]) -> str:
    trained = (runs[0].get("model_trained") or runs[0].get("model", "?")) if runs else "?"
    return f"model trained: {trained}"


def table(runs: list[dict[str, Any]], title: str = "curate train", diff: dict[str, Any] | None = None) -> Any:
    from rich.table import Table

    names = columns(runs)
    caption = model_caption(runs) + ("; last line: paired difference, 95% interval" if diff else "")
    out = Table(*names, title=title, caption=caption)
    for metrics in runs:
        out.add_row(*row_of(metrics, len(names) > len(COLUMNS)))
    if diff is not None:
        out.add_row(*difference_row(diff, names))
    return out


def markdown(runs: list[dict[str, Any]], diff: dict[str, Any] | None = None) -> str:
    names = columns(runs)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(row_of(m, len(names) > len(COLUMNS))) + " |" for m in runs]
    if diff is not None:
        lines.append("| " + " | ".join(difference_row(diff, names)) + " |")
    return "\n".join(lines) + f"\n\n{model_caption(runs)}\n"


def write_comparison(runs: list[dict[str, Any]], out_dir: Path, held_out: str) -> Path:
    """``out_dir/comparison.json`` (one summary per run, the paired difference) and ``comparison.md`` (the table);
    returns the JSON path."""
    diff = difference(runs, out_dir)
    summary = {
        "held_out": held_out,
        "model_trained": runs[0].get("model_trained") if runs else None,
        "difference": diff,
        "runs": [{"run": m["run"], "data": m["data"], "rows": m["rows"], "train": m["train"],
                  "eval": m["eval"], **({"judge_eval": m["judge_eval"]} if m.get("judge_eval") else {}),
                  "metrics": str(Path(out_dir) / m["run"] / "metrics.json")} for m in runs],
    }
    path = Path(out_dir) / "comparison.json"
    checkpoint.write_json_atomic(summary, path)
    (Path(out_dir) / "comparison.md").write_text(markdown(runs, diff), encoding="utf-8")
    return path
