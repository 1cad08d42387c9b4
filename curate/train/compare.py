"""One table for several training runs (curated vs baseline): printed with rich, written as JSON and Markdown.

The question a comparison answers is "did curating the data help?", so each line shows the same held-out
metrics for one run, measured on the same held-out pairs, from the same model, seed and settings; the only
difference between lines is the training data (of the same size when the baseline is ``random``).  With
``judge_eval``, ``win_rate`` is each run's answers judged against the *base* model's on the same held-out prompts
(ties one half, so 0.5 is "no better than where it started"); the two runs share the base answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate import checkpoint

COLUMNS = ("run", "pairs", "steps", "tokens/s", "loss", "held-out acc", "margin", "chosen drift", "rejected drift",
           "logp acc")
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


def table(runs: list[dict[str, Any]], title: str = "curate train") -> Any:
    from rich.table import Table

    names = columns(runs)
    out = Table(*names, title=title)
    for metrics in runs:
        out.add_row(*row_of(metrics, len(names) > len(COLUMNS)))
    return out


def markdown(runs: list[dict[str, Any]]) -> str:
    names = columns(runs)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(row_of(m, len(names) > len(COLUMNS))) + " |" for m in runs]
    return "\n".join(lines) + "\n"


def write_comparison(runs: list[dict[str, Any]], out_dir: Path, held_out: str) -> Path:
    """``out_dir/comparison.json`` (one summary per run) and ``comparison.md`` (the table); returns the JSON path."""
    summary = {
        "held_out": held_out,
        "runs": [{"run": m["run"], "data": m["data"], "rows": m["rows"], "train": m["train"],
                  "eval": m["eval"], **({"judge_eval": m["judge_eval"]} if m.get("judge_eval") else {}),
                  "metrics": str(Path(out_dir) / m["run"] / "metrics.json")} for m in runs],
    }
    path = Path(out_dir) / "comparison.json"
    checkpoint.write_json_atomic(summary, path)
    (Path(out_dir) / "comparison.md").write_text(markdown(runs), encoding="utf-8")
    return path
