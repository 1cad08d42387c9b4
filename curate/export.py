"""Write curate's canonical tables in the layout each TRL trainer takes as is (``curate export``).

- ``dpo``: ``prompt``, ``chosen``, ``rejected`` as message lists (TRL's conversational explicit-prompt
  preference format; DPO, ORPO, CPO and reward modelling all take it), plus ``score_chosen``/``score_rejected``.
- ``kto``: unpaired rows ``prompt``, ``completion`` (a one-message list), ``label`` (bool): each pair gives a
  desirable and an undesirable row.  The balance is reported, since KTO's loss weights assume a known ratio.
- ``sft``: ``messages`` (conversations as they are; from pairs, prompt + chosen; from candidates, prompt + the
  best-scored response).
- ``listwise``: ``prompt`` and ``responses`` (``content``, ``score``) sorted best first, for listwise losses.

An optional held-out split is made by prompt: rows sharing a prompt always land on the same side, so no
prompt is seen in training and evaluated on; the side is a hash of (seed, prompt), so it is stable when
rows are added.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from curate import checkpoint
from curate.errors import InputDataError
from curate.schema import detect_table, hash_expr, prompt_text
from curate.summary import resolve_parquet

ExportFormat = Literal["dpo", "kto", "sft", "listwise"]
FORMATS: tuple[str, ...] = ("dpo", "kto", "sft", "listwise")

#: Which canonical tables each format can be made from.
SOURCES: dict[str, tuple[str, ...]] = {
    "dpo": ("preference",),
    "kto": ("preference",),
    "sft": ("conversation", "preference", "candidates"),
    "listwise": ("candidates",),
}


@dataclass
class ExportResult:
    out_dir: Path
    format: str
    splits: dict[str, int]
    report: dict[str, Any]


def _assistant(content: pl.Expr) -> pl.Expr:
    return pl.concat_list(pl.struct(pl.lit("assistant").alias("role"), content.alias("content")))


def convert(lf: pl.LazyFrame, fmt: str) -> pl.LazyFrame:
    """The rows of ``fmt`` (plus ``id`` for provenance and ``_group`` for the split) from a canonical frame."""
    if fmt not in FORMATS:
        raise InputDataError(f"unknown export format '{fmt}'; formats: {', '.join(FORMATS)}")
    table = detect_table(lf.collect_schema())
    if table not in SOURCES[fmt]:
        raise InputDataError(
            f"export format '{fmt}' needs a {' or '.join(SOURCES[fmt])} table, but the input is a {table} table"
        )
    group = prompt_text(table).alias("_group")
    if fmt == "dpo":
        return lf.select("id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected", group)
    if fmt == "kto":
        base = lf.select("id", "prompt", "chosen", "rejected", group)
        good = base.select("id", "prompt", pl.col("chosen").alias("completion"), pl.lit(True).alias("label"),
                           "_group")
        bad = base.select("id", "prompt", pl.col("rejected").alias("completion"), pl.lit(False).alias("label"),
                          "_group")
        # Interleave desirable and undesirable rows of a pair, so any prefix of the file stays balanced.
        return pl.concat([good.with_row_index("_r"), bad.with_row_index("_r")]).sort(
            "_r", "label", descending=[False, True], maintain_order=True
        ).drop("_r")
    if fmt == "sft":
        if table == "conversation":
            return lf.select("id", "messages", group)
        if table == "preference":
            return lf.select("id", pl.concat_list("prompt", "chosen").alias("messages"), group)
        best = pl.col("responses").list.get(
            pl.col("responses").list.eval(pl.element().struct.field("score").fill_null(float("-inf"))).list.arg_max()
        )
        return lf.select(
            "id", pl.concat_list("prompt", _assistant(best.struct.field("content"))).alias("messages"), group
        )
    # listwise
    ordered = pl.col("responses").list.eval(
        pl.element().sort_by(pl.element().struct.field("score"), descending=True, nulls_last=True)
    )
    return lf.select(
        "id",
        "prompt",
        ordered.list.eval(
            pl.struct(pl.element().struct.field("content"), pl.element().struct.field("score"))
        ).alias("responses"),
        group,
    )


def export(
    source: str | Path,
    fmt: str,
    out_dir: str | Path,
    *,
    test_size: float = 0.0,
    seed: int = 0,
    save_to_disk: bool = False,
) -> ExportResult:
    """Export a Parquet file or run directory to ``out_dir/{train,test}.parquet`` (+ ``export.json``)."""
    if not 0.0 <= test_size < 1.0:
        raise InputDataError(f"test_size must be in [0, 1), got {test_size}")
    files = resolve_parquet(Path(source))
    rows = convert(pl.scan_parquet(files), fmt)
    if test_size > 0:
        # xxh3 of (seed, prompt) mapped to [0, 1): stable per prompt, across row order, machines and versions.
        digest = hash_expr(pl.concat_str([pl.lit(f"{seed}\x1f"), pl.col("_group")]))
        bucket = digest.str.slice(0, 12).str.to_integer(base=16) / float(16**12)
        split = pl.when(bucket < test_size).then(pl.lit("test")).otherwise(pl.lit("train"))
    else:
        split = pl.lit("train")
    frame = rows.with_columns(split.alias("_split")).collect()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, int] = {}
    for name in ("train", "test"):
        part = frame.filter(pl.col("_split") == name).drop("_split", "_group")
        if name == "test" and test_size == 0:
            continue
        checkpoint.write_parquet_atomic(part, out / f"{name}.parquet")
        splits[name] = part.height
    report: dict[str, Any] = {"format": fmt, "source": [str(f) for f in files], "splits": splits,
                              "test_size": test_size, "seed": seed}
    if fmt == "kto":
        labels = frame.get_column("label")
        report["desirable"] = int(labels.sum())
        report["undesirable"] = int((~labels).sum())
    if test_size > 0:
        train_groups = set(frame.filter(pl.col("_split") == "train").get_column("_group").to_list())
        test_groups = set(frame.filter(pl.col("_split") == "test").get_column("_group").to_list())
        report["prompts_in_both_splits"] = len(train_groups & test_groups)
    if save_to_disk:
        import datasets

        parts = {name: str(out / f"{name}.parquet") for name in splits}
        datasets.load_dataset("parquet", data_files=parts).save_to_disk(str(out / "hf"))
        report["save_to_disk"] = str(out / "hf")
    checkpoint.write_json_atomic(report, out / "export.json")
    return ExportResult(out, fmt, splits, report)


def describe(result: ExportResult) -> str:
    text = ", ".join(f"{k}: {v:,} rows" for k, v in result.splits.items())
    extra = ""
    if result.format == "kto":
        extra = f"; desirable {result.report['desirable']:,} / undesirable {result.report['undesirable']:,}"
    return f"{result.format} -> {result.out_dir} ({text}{extra})"


__all__ = ["FORMATS", "ExportResult", "convert", "describe", "export"]
