"""Run judges over labelled pairs and write ``judge_eval.json``, ``judge_eval.html`` and ``verdicts.parquet``."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from curate.judge_eval import html as judge_html
from curate.judge_eval.judges import parse_judge, timed
from curate.judge_eval.labelled import load_labelled
from curate.judge_eval.metrics import summarize
from curate.pipeline import Context
from curate.words import count

DEFAULT_JUDGES = ("length", "random")


def evaluate(
    path: str | Path,
    judges: Sequence[str] = DEFAULT_JUDGES,
    *,
    limit: int | None = None,
    seed: int = 0,
    label_map: Mapping[Any, str] | None = None,
    adapter: str = "auto",
    cache_dir: Path | None = None,
    batch_size: int = 16,
    notify: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], pl.DataFrame]:
    """Every judge over the labelled pairs of ``path``: the result (``n``, ``judges`` with their figures, ...)
    and the per-pair verdicts (one row per judge and pair).  Specs are parsed before any model loads, so a
    typo fails at once."""
    parsed = [parse_judge(spec, seed=seed, batch_size=batch_size) for spec in judges]
    labelled = load_labelled(path, adapter=adapter, label_map=label_map, seed=seed, limit=limit)
    pairs = labelled.pairs
    if notify and labelled.first_problem:
        notify(f"{count(labelled.skipped, 'row')} not read; first: {labelled.first_problem}")
    ctx = Context(cache_dir=cache_dir) if cache_dir is not None else Context.ephemeral()
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
    ctx.models.cache_dir = ctx.cache_dir
    rows: list[pl.DataFrame] = []
    figures = []
    try:
        for judge in parsed:
            if notify:
                notify(f"judging {pairs.height} pairs with {judge.name}")
            verdicts, seconds = timed(judge, pairs, ctx)
            figures.append(summarize(judge.name, pairs, verdicts.verdict, first=verdicts.first,
                                     swapped=verdicts.swapped, seconds=seconds, calls=verdicts.calls, seed=seed))
            n = pairs.height
            frame = pairs.select("id", "label", "category").with_columns(
                pl.lit(judge.name).alias("judge"),
                pl.Series("verdict", verdicts.verdict, dtype=pl.String),
                pl.Series("verdict_first", verdicts.first or [None] * n, dtype=pl.String),
                pl.Series("verdict_swapped", verdicts.swapped or [None] * n, dtype=pl.String),
                pl.Series("score_a", verdicts.columns.get("score_a", [None] * n), dtype=pl.Float64),
                pl.Series("score_b", verdicts.columns.get("score_b", [None] * n), dtype=pl.Float64),
            )
            rows.append(frame)
    finally:
        ctx.close()
    counts = pairs["label"].value_counts()
    result = {
        "n": pairs.height,
        "file": str(labelled.path),
        "adapter": labelled.adapter,
        "labels": {row["label"]: int(row["count"]) for row in counts.iter_rows(named=True)},
        "skipped": labelled.skipped,
        "seed": seed,
        "judges": figures,
    }
    verdict_frame = pl.concat(rows) if rows else pl.DataFrame()
    return result, verdict_frame


def write_outputs(result: dict[str, Any], verdicts: pl.DataFrame, out_dir: Path) -> list[Path]:
    """``judge_eval.json``, ``judge_eval.html`` (the run report's style) and ``verdicts.parquet`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "judge_eval.json", out_dir / "judge_eval.html", out_dir / "verdicts.parquet"]
    written[0].write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    written[1].write_text(judge_html.page(result), encoding="utf-8")
    verdicts.write_parquet(written[2])
    return written
