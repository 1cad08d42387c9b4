"""The row balance of a stage: rows in, rows out, and where every other row went.

A stage's output must be explained by its input::

    rows_out = rows_in - set_aside - consumed + created

- **set aside**: rows in ``quarantine/`` with a reason (:meth:`curate.pipeline.Context.quarantine`).
- **consumed**: input rows a stage used up without passing them on and without setting them aside, because
  it replaces them: a source stage (``magpie``) whose samples take the place of its input rows, or with
  ``count`` ignores them (they only supply system prompts, if that), ``reward_augment`` turning each pair into
  two new twins.  A stage says so with ``ctx.note("rows_consumed", n)`` and, in words,
  ``ctx.note("input_use", "...")``.
- **created**: rows a stage made that were not in its input (``ctx.note("rows_created", n)``): magpie's
  samples, reward_augment's twins, translate's mixed-in source rows.

Whatever is left is **unaccounted**: the runner records it in the stage's report, logs a warning and the CLI
table and HTML report show it, so a row lost without a reason is seen, never silent.

``mode: flag`` stages keep every row and add a boolean column (``contaminated``, ``label_suspect``); the
rows where a boolean column the stage added is true are its **flagged** rows, counted per column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl


def balance(rows_in: int, rows_out: int, set_aside: int, notes: dict[str, Any]) -> dict[str, int]:
    """``created``, ``consumed`` (from the stage's notes) and ``unaccounted`` (what they do not explain)."""
    created = int(notes.get("rows_created", 0) or 0)
    consumed = int(notes.get("rows_consumed", 0) or 0)
    unaccounted = rows_in - set_aside - consumed + created - rows_out
    return {"created": created, "consumed": consumed, "unaccounted": unaccounted}


def flag_counts(before: pl.Schema, output: Path) -> dict[str, int]:
    """Rows where each boolean column a stage added (absent from ``before``) is true."""
    after = pl.scan_parquet(output)
    added = [name for name, dtype in after.collect_schema().items() if dtype == pl.Boolean and name not in before]
    if not added:
        return {}
    counts = after.select([pl.col(c).sum().alias(c) for c in added]).collect().row(0, named=True)
    return {name: int(value or 0) for name, value in counts.items()}


def describe(report: dict[str, Any]) -> str:
    """What the CLI prints after a stage's seconds: created, consumed (and how), flagged, unaccounted rows."""
    parts = []
    created, consumed = report.get("created", 0), report.get("consumed", 0)
    use = (report.get("notes") or {}).get("input_use")
    if created:
        parts.append(f"{created:,} created")
    if consumed:
        parts.append(f"{consumed:,} input rows {use or 'consumed'}")
    elif use:
        parts.append(f"input rows: {use}")
    for column, n in (report.get("flagged") or {}).items():
        parts.append(f"{n:,} flagged ({column})")
    missing = report.get("unaccounted", 0)
    if missing > 0:
        parts.append(f"{missing:,} rows lost without a reason (in - set aside - consumed + created != out)")
    elif missing < 0:
        parts.append(f"{-missing:,} rows appeared without being counted as created")
    return "; ".join(parts)
