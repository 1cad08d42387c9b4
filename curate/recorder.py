"""What a stage records besides its output: figures for the manifest and the rows it sets aside (docs/architecture.md).

One of the three parts of a :class:`curate.pipeline.Context` (the others: the shard cache,
:mod:`curate.shards`, and the compute, :mod:`curate.compute`).  A :class:`Recorder` is plain data plus the
quarantine's expressions: the Ray executor gives its workers one whose records travel back with each result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

#: Columns of every quarantine table: ``code`` is a stable name of the reason (``group_by("code")``), ``reason``
#: the human text (with ids, thresholds, similarities), ``duplicate_of`` the kept row a dedup stage matched.
QUARANTINE_SCHEMA = {"stage": pl.String, "code": pl.String, "reason": pl.String, "id": pl.String,
                     "duplicate_of": pl.String, "row": pl.String}

#: ``(pattern, code)``: the code of a reason no stage named explicitly is that of the first pattern matching the
#: reason (after a reader's ``FILE, row N: `` and a stage's ``subsample METHOD: `` / ``reward_augment: ``
#: prefix); failing all, the reason's words before the first ``:``/``(`` as snake_case.  Documented in the README.
REASON_CODES: tuple[tuple[str, str], ...] = (
    (r"^(exact duplicate|identical content to|duplicate instruction|repeats the text)", "exact_duplicate"),
    (r"^near duplicate", "near_duplicate"),
    (r"^too similar to", "too_similar"),
    (r"^(over budget|not in )", "not_selected"),
    (r"^malformed JSON", "malformed_json"),
    (r"^nested (more than \d+ levels deep|too deep)", "too_deep"),
    (r"^(the line|the element) holds .* more than max_line_mb|^a field of this record is longer", "line_too_long"),
    (r"^invalid UTF-8|NUL character \(U\+0000\)|lone surrogate", "invalid_text"),
    (r"^column '", "invalid_field"),
    (r"^refusal", "refusal"),
    (r"^(prompt|response) shorter than|^instruction too short", "too_short"),
    (r"^(prompt|response) longer than|^instruction too long", "too_long"),
    (r"(^truncated|^instruction truncated)", "truncated"),
    (r"^empty or whitespace-only prompt|^empty instruction|^no user turn", "empty_prompt"),
    (r"^(empty or whitespace-only response|no response|the model gave (no non-empty|an empty) response)",
     "empty_response"),
    (r"^does not match include pattern", "include_mismatch"),
    (r"^matches exclude pattern", "exclude_match"),
    (r"^contaminated", "contaminated"),
    (r"^constraint failed", "constraint_failed"),
    (r"^null score", "null_score"),
    (r"^(equal scores|scores .* give the same goal)", "tied_scores"),
)


def reason_code(reason: pl.Expr) -> pl.Expr:
    """The stable code of a reason text (see :data:`REASON_CODES`)."""
    text = reason.str.replace(r"^[^:]*, row \d+: ", "").str.replace(r"^(subsample \w+|reward_augment): ", "")
    fallback = (
        text.str.extract(r"^([^:(]*)").str.to_lowercase().str.replace_all(r"[^a-z0-9]+", "_").str.strip_chars("_")
        .str.slice(0, 40)
    )
    code: pl.Expr = pl.when(fallback.is_null() | (fallback == "")).then(pl.lit("other")).otherwise(fallback)
    for pattern, name in reversed(REASON_CODES):
        code = pl.when(text.str.contains(pattern)).then(pl.lit(name)).otherwise(code)
    return code


def scan_quarantine(path: Path) -> pl.LazyFrame:
    """A quarantine Parquet with the columns of :data:`QUARANTINE_SCHEMA`.  Files written before ``code`` and
    ``duplicate_of`` existed stay readable: the code is derived from the reason, and ``duplicate_of`` is the id a
    dedup reason ends with (``... of <id>``)."""
    lf = pl.scan_parquet(path)
    names = lf.collect_schema().names()
    if "code" not in names:
        lf = lf.with_columns(reason_code(pl.col("reason")).alias("code"))
    if "duplicate_of" not in names:
        lf = lf.with_columns(pl.col("reason").str.extract(r" of ([0-9a-f]{32})$").alias("duplicate_of"))
    return lf.select([pl.col(c).cast(t) for c, t in QUARANTINE_SCHEMA.items()])


def _as_expr(value: pl.Expr | str | None) -> pl.Expr:
    if value is None:
        return pl.lit(None, dtype=pl.String)
    return pl.lit(value) if isinstance(value, str) else value



@dataclass
class Recorder:
    """The current stage's label, every stage's notes and counts (``stats``) and the rows set aside
    (``quarantined``: ``(stage label, frame)`` in :data:`QUARANTINE_SCHEMA`)."""

    stage_label: str = "stage"
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    quarantined: list[tuple[str, pl.LazyFrame]] = field(default_factory=list)
    #: the removed rows themselves (``row`` as a struct in :meth:`quarantine_frame`), beside ``quarantined``
    _quarantined_rows: list[tuple[str, pl.LazyFrame]] = field(default_factory=list, repr=False)

    def note(self, key: str, value: Any) -> None:
        """Record a figure of the current stage (counts, thresholds) for the manifest."""
        self.stats.setdefault(self.stage_label, {})[key] = value

    def count(self, key: str, n: int) -> None:
        """Add ``n`` to a counter of the current stage (a stage may call a batch helper more than once)."""
        notes = self.stats.setdefault(self.stage_label, {})
        notes[key] = notes.get(key, 0) + n

    # -- quarantine --------------------------------------------------------------------------------
    def quarantine(
        self, rejected: pl.LazyFrame, reason: pl.Expr | str, code: pl.Expr | str | None = None, *,
        duplicate_of: pl.Expr | str | None = None,
    ) -> None:
        """Register rows a stage removes as ``stage, code, reason, id, duplicate_of, row`` (row as JSON).

        ``reason`` is the human text; ``code`` a stable name of it (``exact_duplicate``, ``refusal``, ...; by
        default derived from the reason by :func:`reason_code`), so ``group_by("code")`` counts rows per cause;
        ``duplicate_of`` the id of the row a dedup stage kept instead."""
        reason_expr = _as_expr(reason).cast(pl.String)
        names = rejected.collect_schema().names()
        data_columns = [c for c in names if not c.startswith("_")]
        frame = rejected.select(
            pl.lit(self.stage_label).alias("stage"),
            (reason_code(reason_expr) if code is None else _as_expr(code).cast(pl.String)).alias("code"),
            reason_expr.alias("reason"),
            (pl.col("id") if "id" in names else pl.lit(None, dtype=pl.String)).alias("id"),
            _as_expr(duplicate_of).cast(pl.String).alias("duplicate_of"),
            pl.struct(data_columns).struct.json_encode().alias("row"),
        )
        self.quarantined.append((self.stage_label, frame))
        self._quarantined_rows.append((self.stage_label, rejected.select(data_columns)))

    def take_quarantine(self) -> list[pl.LazyFrame]:
        frames = [frame for _, frame in self.quarantined]
        self.quarantined.clear()
        self._quarantined_rows.clear()
        return frames

    def quarantine_frame(self, stage: str | None = None, *, row: Literal["struct", "json"] = "struct") -> pl.DataFrame:
        """Rows quarantined so far in this context (notebook use), of every stage or of one ``stage`` (its name,
        ``filter``, or its label in a pipeline, ``02-exact_dedup``).  ``row`` is the removed row as a struct
        where the rows removed share one schema (one stage's usually do), else as JSON (``row="json"`` always)."""
        def wanted(label: str) -> bool:
            return stage is None or label == stage or label.split("-", 1)[-1] == stage

        frames = [frame for label, frame in self.quarantined if wanted(label)]
        if not frames:
            return pl.DataFrame(schema=QUARANTINE_SCHEMA)
        out = pl.concat(frames).collect()
        if row == "struct":
            rows = [rows for label, rows in self._quarantined_rows if wanted(label)]
            schemas = {tuple(r.collect_schema().items()) for r in rows}
            if len(rows) == len(frames) and len(schemas) == 1:
                structs = pl.concat(rows).select(pl.struct(pl.all()).alias("row")).collect()
                out = out.with_columns(structs.get_column("row"))
        return out

