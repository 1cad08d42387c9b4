"""Canonical tables (docs/architecture.md) and their validation.

Three tables carry all data through curate.  Conversations are ``list<struct<role, content>>`` everywhere,
so a preference row is exactly TRL's conversational explicit-prompt format and loads with
``datasets.load_dataset("parquet", ...)`` as is.

- ``conversation`` (SFT): ``id``, ``messages``.
- ``candidates``: ``id``, ``prompt`` (messages up to the last user turn), ``responses``
  (``list<struct<content, model, score>>``).
- ``preference`` (DPO): ``id``, ``prompt``, ``chosen``, ``rejected`` (each a one-message list),
  ``score_chosen``, ``score_rejected``.

Every table also has ``source`` (where the row came from).  ``id`` is the xxh3-128 hash of the canonical
JSON of the row's *content* columns (not metadata, not scores), so the same content always gets the same
id, across runs and machines; this is what caches, resume and semi-joins key on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import polars as pl
import xxhash

from curate.errors import InputDataError
from curate.words import listed

TableName = Literal["conversation", "candidates", "preference"]

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
MESSAGES = pl.List(MESSAGE)
RESPONSE = pl.Struct({"content": pl.String, "model": pl.String, "score": pl.Float64})
RESPONSES = pl.List(RESPONSE)

ROLES = ("system", "user", "assistant", "tool")

#: Required columns and their types, per table.  Extra columns are metadata and pass through stages.
TABLES: dict[str, dict[str, pl.DataType]] = {
    "conversation": {"id": pl.String(), "messages": MESSAGES, "source": pl.String()},
    "candidates": {"id": pl.String(), "prompt": MESSAGES, "responses": RESPONSES, "source": pl.String()},
    "preference": {
        "id": pl.String(),
        "prompt": MESSAGES,
        "chosen": MESSAGES,
        "rejected": MESSAGES,
        "score_chosen": pl.Float64(),
        "score_rejected": pl.Float64(),
        "source": pl.String(),
    },
}

#: Columns whose content defines a row's identity.
CONTENT_COLUMNS: dict[str, tuple[str, ...]] = {
    "conversation": ("messages",),
    "candidates": ("prompt", "responses"),
    "preference": ("prompt", "chosen", "rejected"),
}


def _hash_strings(series: pl.Series) -> pl.Series:
    # One C call per row: xxhash has no vectorised API and Polars' own hash is not stable across
    # versions.  ~1 µs/row (benchmarks/streaming.py measures the whole path at 1M rows).
    digest = xxhash.xxh3_128_hexdigest
    return pl.Series(series.name, [digest(s.encode()) for s in series.to_list()], dtype=pl.String)


def content_key(table: str) -> pl.Expr:
    """Canonical JSON of the content columns of ``table`` (responses without their scores)."""
    parts: list[pl.Expr] = []
    for column in CONTENT_COLUMNS[table]:
        if column == "responses":
            parts.append(pl.col("responses").list.eval(pl.element().struct.field("content")).alias(column))
        else:
            parts.append(pl.col(column))
    return pl.struct(parts).struct.json_encode()


def hash_expr(expr: pl.Expr) -> pl.Expr:
    """xxh3-128 hex digest of a string expression (stable across Polars versions and machines)."""
    return expr.map_batches(_hash_strings, return_dtype=pl.String, is_elementwise=True)


def with_ids(lf: pl.LazyFrame, table: str) -> pl.LazyFrame:
    """Add (or replace) ``id`` as the hash of the row's content."""
    return lf.with_columns(hash_expr(content_key(table)).alias("id"))


def detect_table(schema: pl.Schema | dict[str, pl.DataType]) -> str:
    """Name the canonical table whose required columns ``schema`` has, or raise."""
    names = set(schema)
    for table in ("preference", "candidates", "conversation"):
        required = set(CONTENT_COLUMNS[table])
        if required <= names:
            return table
    raise InputDataError(
        f"columns {sorted(names)} match no canonical table "
        "(conversation needs 'messages'; candidates 'prompt'+'responses'; "
        "preference 'prompt'+'chosen'+'rejected')"
    )


def validate_schema(schema: pl.Schema | dict[str, pl.DataType], table: str, file: str = "<frame>") -> None:
    """Raise ``InputDataError`` naming the file and column when a required column is missing or mistyped."""
    expected = TABLES[table]
    for column, dtype in expected.items():
        if column not in schema:
            raise InputDataError(f"{file}: column '{column}' is missing (the {table} table needs it)")
        actual = schema[column]
        if actual != dtype and not (actual == pl.Null and column in ("score_chosen", "score_rejected")):
            raise InputDataError(f"{file}: column '{column}' has type {actual}, expected {dtype} ({table} table)")


def conform(lf: pl.LazyFrame, table: str) -> pl.LazyFrame:
    """Cast the required columns to their canonical types and put them first, metadata after."""
    expected = TABLES[table]
    names = lf.collect_schema().names()
    missing = [c for c in expected if c not in names and c not in ("id", "source")]
    for column in ("score_chosen", "score_rejected"):
        if column in missing:
            missing.remove(column)
            lf = lf.with_columns(pl.lit(None, dtype=pl.Float64).alias(column))
    if missing:
        raise InputDataError(f"cannot form a {table} table: missing {listed('column', missing)}")
    if "source" not in names:
        lf = lf.with_columns(pl.lit(None, dtype=pl.String).alias("source"))
    if "id" not in names:
        lf = with_ids(lf, table)
    casts = [pl.col(c).cast(t) for c, t in expected.items()]
    rest = [c for c in lf.collect_schema().names() if c not in expected]
    return lf.select([*casts, *[pl.col(c) for c in rest]])


def messages_text(column: str, roles: Sequence[str] | None = None, separator: str = "\n") -> pl.Expr:
    """Join the contents of a message list (optionally only some roles) into one string."""
    element = pl.element()
    if roles is not None:
        element = element.filter(element.struct.field("role").is_in(list(roles)))
    return pl.col(column).list.eval(element.struct.field("content")).list.join(separator)


def prompt_text(table: str) -> pl.Expr:
    """The text a user asked: every non-assistant turn of the prompt (or of the conversation)."""
    if table == "conversation":
        return messages_text("messages", roles=("system", "user"))
    return messages_text("prompt", roles=("system", "user"))


def response_texts(table: str) -> pl.Expr:
    """Every response text of a row, as ``list<str>``: assistant turns, candidates, or chosen+rejected."""
    if table == "conversation":
        return pl.col("messages").list.eval(
            pl.element().filter(pl.element().struct.field("role") == "assistant").struct.field("content")
        )
    if table == "candidates":
        return pl.col("responses").list.eval(pl.element().struct.field("content"))
    return pl.concat_list(
        messages_text("chosen", roles=("assistant",)), messages_text("rejected", roles=("assistant",))
    )


def full_text(table: str) -> pl.Expr:
    """Prompt and all responses in one string, for whole-row deduplication."""
    return pl.concat_str([prompt_text(table), response_texts(table).list.join("\n")], separator="\n")


def text_for(table: str, on: str) -> pl.Expr:
    """The text a dedup or filter stage looks at: ``prompt``, ``response`` or ``full``."""
    if on == "prompt":
        return prompt_text(table)
    if on == "response":
        return response_texts(table).list.join("\n")
    if on == "full":
        return full_text(table)
    raise ValueError(f"unknown text selector {on!r}: use prompt, response or full")
