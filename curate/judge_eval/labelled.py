"""Labelled pairs for judge evaluation: ``id, prompt, a, b, label (a | b | tie), category``.

Any pairwise file curate reads (the ``pairwise`` adapter: prompt, response_a, response_b, label; ties are kept
for 3-way agreement and ``label_map`` reads 0/1/2 or 1/2 labels), or any preference table (curate's own,
HH-RLHF, ...), where chosen is the label.  A preference table always lists the better response first, so its
pairs are shown in a seeded random A/B order: a judge that always says "A" must not score 100%.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import xxhash

from curate.errors import InputDataError
from curate.io import load
from curate.schema import MESSAGES

#: Columns whose values name a category or subset (RewardBench-style breakdowns), in order of preference.
CATEGORY_COLUMNS = ("category", "subset", "orig_category", "orig_source", "source")

PAIRS_SCHEMA = {"id": pl.String, "prompt": MESSAGES, "a": pl.String, "b": pl.String, "label": pl.String,
                "category": pl.String}


@dataclass
class Labelled:
    """The pairs (:data:`PAIRS_SCHEMA`), where they came from, and the rows that could not be read."""

    pairs: pl.DataFrame
    path: Path
    adapter: str
    skipped: int
    first_problem: str | None


def _reply(column: str) -> pl.Expr:
    return pl.col(column).list.eval(pl.element().struct.field("content")).list.join("\n")


def _category(frame: pl.DataFrame) -> pl.Expr:
    for name in CATEGORY_COLUMNS:
        if name in frame.columns and frame[name].dtype == pl.String and frame[name].n_unique() > 1:
            return pl.col(name)
    return pl.lit(None, pl.String)


def _ids(frame: pl.DataFrame) -> list[str]:
    """Content ids (prompt, a, b), made unique by occurrence: the judge stages cache per id."""
    seen: dict[str, int] = {}
    out = []
    for prompt, a, b in zip(frame["prompt"].to_list(), frame["a"].to_list(), frame["b"].to_list(), strict=True):
        key = xxhash.xxh3_64_hexdigest(json.dumps([prompt, a, b], ensure_ascii=False).encode())
        seen[key] = seen.get(key, 0) + 1
        out.append(key if seen[key] == 1 else f"{key}-{seen[key]}")
    return out


def load_labelled(
    path: str | Path,
    *,
    adapter: str = "auto",
    label_map: Mapping[Any, str] | None = None,
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
    limit: int | None = None,
) -> Labelled:
    """Read ``path`` as labelled pairs; ``InputDataError`` when it is not a pairwise or preference file, or no
    row could be read (the first rejected row is named)."""
    opts = dict(options or {})
    if label_map is not None:
        opts["label_map"] = dict(label_map)
    pairwise = adapter == "pairwise" or (adapter == "auto" and label_map is not None)
    first = load(path, "pairwise" if pairwise else adapter, ({**opts, "ties": "keep"} if pairwise else opts) or None)
    if not pairwise and first.adapter == "pairwise":
        first = load(path, "pairwise", {**opts, "ties": "keep"})
    loaded = first
    file = str(loaded.path)
    if loaded.table != "preference":
        raise InputDataError(
            f"{file}: judge-eval needs labelled pairs (prompt, response_a, response_b, label; or prompt, chosen, "
            f"rejected), got a {loaded.table} table (adapter {loaded.adapter})"
        )
    if opts and loaded.adapter != "pairwise":
        raise InputDataError(f"{file}: label_map and adapter options apply to the pairwise adapter, "
                             f"but the file was read with '{loaded.adapter}'")
    rejected = loaded.rejected.collect()
    problem = None
    if rejected.height:
        row = rejected.row(0, named=True)
        problem = f"{file}, row {row['_line']}: {row['reason']}"
    frame = loaded.frame.collect()
    if limit is not None:
        frame = frame.head(limit)
    if frame.height == 0:
        raise InputDataError(f"{file}: no labelled pair could be read" + (f" (first problem: {problem})"
                                                                          if problem else ""))
    chosen, rejected_text = _reply("chosen"), _reply("rejected")
    if loaded.adapter == "pairwise":
        label = pl.col("pair_label")
        a = pl.when(label == "b").then(rejected_text).otherwise(chosen)
        b = pl.when(label == "b").then(chosen).otherwise(rejected_text)
    else:  # preference: chosen is the label; a seeded coin puts it in slot A or B
        a_first = pl.Series(np.random.default_rng(seed).random(frame.height) < 0.5)
        frame = frame.with_columns(a_first.alias("__a_first"))
        label = pl.when(pl.col("__a_first")).then(pl.lit("a")).otherwise(pl.lit("b"))
        a = pl.when(pl.col("__a_first")).then(chosen).otherwise(rejected_text)
        b = pl.when(pl.col("__a_first")).then(rejected_text).otherwise(chosen)
    pairs = frame.select(pl.col("prompt"), a.alias("a"), b.alias("b"), label.alias("label"),
                         _category(frame).cast(pl.String).alias("category"))
    pairs = pairs.with_columns(pl.Series("id", _ids(pairs), dtype=pl.String)).select(list(PAIRS_SCHEMA))
    return Labelled(pairs.cast(PAIRS_SCHEMA), Path(file), loaded.adapter, rejected.height, problem)
