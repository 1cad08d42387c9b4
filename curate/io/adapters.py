"""Format adapters: raw columns -> one of curate's canonical tables (``curate.schema``).

Detection (``adapter="auto"``) looks only at column names, in this order; the first match wins:

=================  ==================  =======================================================================
adapter            table               picked when the input has the columns
=================  ==================  =======================================================================
``preference``     preference          prompt, chosen, rejected (curate's table; also string variants)
``candidates``     candidates          id, prompt, responses, source (curate's table)
``conversation``   conversation        id, messages, source (curate's table)
``hh_rlhf``        preference          chosen, rejected ("\\n\\nHuman: …\\n\\nAssistant: …" transcripts)
``pairwise``       preference          response_a, response_b (+ prompt, label|winner|preference|choice)
``multi_response`` candidates          instruction|prompt and responses|completions (Magpie, UltraFeedback)
``oasst``          candidates          message_tree_id, prompt (OpenAssistant trees; ``mode: conversations``
                   (or conversation)   gives the conversation table)
``sharegpt``       conversation        conversations ([{from, value}])
``openai``         conversation        messages ([{role, content}]) without curate's id/source
``alpaca``         conversation        instruction (+ input, output|response, system, instances)
``turns``          conversation        turns (a list of user turns; MT-Bench; answers' turns by option)
=================  ==================  =======================================================================

The output of :func:`adapt` is ``schema.conform(...)``: ``id`` (content hash, always recomputed), the table's
content columns, ``source``, then the input's unused columns as metadata, then ``_line`` (``_file`` for a
folder) and ``_error``.  ``_error`` is null for a good row, otherwise a message naming the column and what
was expected; bad rows stay in the frame (content may be null) so the caller can route them to quarantine.

Metadata from a foreign format whose name is one of curate's column names (``id``, ``source``, ``prompt``,
…) is kept as ``orig_<name>`` (e.g. Self-Instruct's task ``id`` becomes ``orig_id``), so it can never be
mistaken for curate's own column.  ``source`` is the ``source`` argument, else the file name; curate's own
tables keep their ``source`` unless the argument is given.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import InputDataError
from curate.io._base import Adapter
from curate.io._exprs import first_problem, problem
from curate.io.chat import Alpaca, ConversationTable, OpenAIMessages, ShareGPT, Turns
from curate.io.oasst import Oasst
from curate.io.prefs import HHRLHF, CandidatesTable, MultiResponse, Pairwise, PreferenceTable
from curate.schema import TABLES, conform

#: Adapter name -> adapter, in detection order.
ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in (
        PreferenceTable(),
        CandidatesTable(),
        ConversationTable(),
        HHRLHF(),
        Pairwise(),
        MultiResponse(),
        Oasst(),
        ShareGPT(),
        OpenAIMessages(),
        Alpaca(),
        Turns(),
    )
}

#: Bookkeeping columns that are not data.
INTERNAL = ("_line", "_file", "_error")
#: curate's own column names: foreign metadata with these names is kept as ``orig_<name>``.
RESERVED = frozenset({c for columns in TABLES.values() for c in columns} | {"parent_id"})


#: Column names that usually hold a prompt, an answer, or a list of answers, for detection by type and for the
#: suggestion of an unknown format's adapter and options.
_PROMPT_NAMES = ("instruction", "prompt", "question", "query", "problem", "input", "text", "turns", "context")
_ANSWER_NAMES = ("output", "response", "answer", "completion", "target", "solution", "reference", "outputs",
                 "responses", "answers", "completions", "generations", "choices")


def _is_text_list(dtype: pl.DataType | None) -> bool:
    """A list of texts, or of objects (one response each, e.g. ``{content, score}``)."""
    return isinstance(dtype, pl.List) and (dtype.inner == pl.String or isinstance(dtype.inner, pl.Struct))


def detect(columns: Sequence[str], file: str, schema: Mapping[str, pl.DataType] | None = None
           ) -> tuple[str, dict[str, Any]]:
    """``(adapter, options it implies)`` for the columns (and, when given, their types): the module table's
    order, except that an instruction/prompt with a *list-valued* ``output`` (or ``outputs``, ``answers``,
    ``generations``) is ``multi_response`` reading that column, not ``alpaca`` (which would reject every row).
    Else an ``InputDataError`` that suggests the adapter and options fitting the columns it saw."""
    names = frozenset(c for c in columns if c not in INTERNAL)
    types = dict(schema or {})
    prompt = next((c for c in ("instruction", "prompt") if c in names), None)
    listed = next((c for c in ("output", "outputs", "answers", "generations") if _is_text_list(types.get(c))), None)
    if prompt and listed and not ({"responses", "completions"} & names or {"chosen", "rejected"} <= names):
        return "multi_response", {"prompt_field": prompt, "responses_field": listed}
    for name, adapter in ADAPTERS.items():
        if adapter.matches(names):
            return name, {}
    expected = "; ".join(f"{name}: {a.expects}" for name, a in ADAPTERS.items())
    hint = suggest(names, types)
    raise InputDataError(
        f"{file}: cannot tell the format from its columns {sorted(names)}; name an adapter "
        f"(adapter=...){'. Try ' + hint if hint else ''}. Adapters and the columns they expect: {expected}"
    )


def suggest(names: frozenset[str], types: Mapping[str, pl.DataType]) -> str:
    """The adapter and options that would read these columns (``adapter: alpaca, options: {...}``, alternatives
    joined by '; or '), or '' when nothing fits: a name like ``question``/``answer`` or a list-valued column."""
    lower = {c.lower(): c for c in names}

    def find(candidates: Sequence[str], want: Any = None) -> str | None:
        for key in candidates:
            for low, col in lower.items():
                affix = low.startswith(key) or low.endswith(key)
                if (low == key or (affix and not low.endswith("id"))) and (want is None or want(types.get(col))):
                    return col
        return None

    def is_text(dtype: pl.DataType | None) -> bool:
        return dtype is None or dtype == pl.String

    def chat_list(keys: tuple[str, ...]) -> Any:
        return lambda dtype: isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct) and bool(
            set(keys) & {f.name for f in dtype.inner.fields})

    tries = []
    if (col := find(("messages", "conversation", "dialog", "chat"), chat_list(("role", "content")))):
        tries.append(f"adapter: openai, options: {{messages_field: {col}}}")
    if (col := find(("conversations", "conversation", "dialog", "chat"), chat_list(("from", "value")))):
        tries.append(f"adapter: sharegpt, options: {{conversations_field: {col}}}")
    prompt = find(_PROMPT_NAMES, is_text)
    many = find(_ANSWER_NAMES, _is_text_list)
    if prompt and many:
        tries.append(f"adapter: multi_response, options: {{prompt_field: {prompt}, responses_field: {many}}}")
    answer = find(tuple(n for n in _ANSWER_NAMES if n != prompt), is_text)
    if prompt and answer and answer != prompt:
        tries.append(f"adapter: alpaca, options: {{instruction_field: {prompt}, output_field: {answer}}}")
    elif prompt:
        tries.append(f"adapter: alpaca, options: {{instruction_field: {prompt}}} (prompts only)")
    a, b = find(("chosen", "response_a", "answer_a", "model_a_answer")), find(("rejected", "response_b", "answer_b"))
    if a and b and a != b:
        tries.append(f"adapter: pairwise, options: {{prompt_field: {prompt or 'prompt'}, a_field: {a}, b_field: {b}}}")
    return "; or ".join(tries)


def detect_adapter(columns: Sequence[str], file: str, schema: Mapping[str, pl.DataType] | None = None) -> str:
    """The adapter whose columns ``columns`` has (see :func:`detect`), else an ``InputDataError`` listing every
    adapter with the columns it expects and suggesting the adapter and options that fit."""
    return detect(columns, file, schema)[0]


def get_adapter(name: str, file: str = "<input>") -> Adapter:
    """The adapter called ``name``, or an ``InputDataError`` suggesting the nearest name."""
    if name in ADAPTERS:
        return ADAPTERS[name]
    close = difflib.get_close_matches(name, list(ADAPTERS), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise InputDataError(f"{file}: unknown adapter '{name}'{hint}; adapters: auto, {', '.join(ADAPTERS)}")


def adapt(
    raw: pl.LazyFrame,
    adapter: str = "auto",
    *,
    file: str,
    options: Mapping[str, Any] | None = None,
    source: str | None = None,
    text_checked: bool = False,
) -> tuple[pl.LazyFrame, str]:
    """Convert a raw frame to a canonical table: ``(frame, table name)``; see the module doc for the columns.

    Lazy throughout (curate's own Parquet streams through); ``hh_rlhf``, ``oasst`` and parallel scores of
    ``multi_response`` run a Python function per batch inside the plan.

    Text rule (the readers' for JSON and CSV, here for Parquet and any frame): a row holding a NUL character
    (U+0000) in any text, nested text included, gets an ``_error`` naming the column.  NUL is never real text
    in SFT/DPO data (it is binary debris) and it breaks C-string tokenizers and terminals downstream, so the
    row is set aside, not silently changed.  ``text_checked``: the reader already applied the rule.
    """
    schema = raw.collect_schema()
    name, implied = detect(schema.names(), file, schema) if adapter == "auto" else (adapter, {})
    impl = get_adapter(name, file)
    opts = impl.parse_options({**implied, **(options or {})}, file)
    table = impl.table_for(opts)
    if "_line" not in schema:
        raw = raw.with_row_index("_line", offset=1).with_columns(pl.col("_line").cast(pl.Int64))
    if "_error" in schema:
        raw = raw.drop("_error")
    schema = raw.collect_schema()
    try:
        conversion = impl.convert(raw, schema, opts)
    except InputDataError as exc:
        raise InputDataError(f"{file}: {exc}") from None
    columns = dict(conversion.columns)
    error = columns.pop("_error")
    if not text_checked:
        raw_columns = {c: t for c, t in schema.items() if c not in INTERNAL}
        present = conversion.frame.collect_schema()
        checks = [
            problem(found, f"column '{c}': contains a NUL character (U+0000)")
            for c, t in raw_columns.items()
            if present.get(c) == t and (found := _contains_nul(pl.col(c), t)) is not None
        ]
        if checks:
            error = first_problem(*checks, error)
    default_source = source if source is not None else Path(file).name
    kept_source = columns.pop("source", None)
    if kept_source is None or source is not None:
        source_expr = pl.lit(default_source, pl.String)
    else:
        source_expr = kept_source.cast(pl.String).fill_null(default_source)

    names = conversion.frame.collect_schema().names()
    metadata = [
        c
        for c in names
        if c not in conversion.consumed and c not in INTERNAL and not c.startswith("__") and c not in columns
    ]
    taken = set(columns) | {"source", "id"}
    renamed = [
        pl.col(c).alias(c if impl.canonical or (c not in RESERVED and c not in taken) else f"orig_{c}")
        for c in metadata
        if not (impl.canonical and c in taken)
    ]
    tail = ["_line", *(["_file"] if "_file" in names else [])]
    frame = conversion.frame.select(
        *[expr.alias(column) for column, expr in columns.items()],
        source_expr.alias("source"),
        *renamed,
        *[pl.col(c) for c in tail],
        error.cast(pl.String).alias("_error"),
    )
    frame = conform(frame, table)
    order = [c for c in frame.collect_schema().names() if c not in INTERNAL]
    return frame.select(*order, *tail, "_error"), table


def _contains_nul(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr | None:
    """Whether a value of this type holds a NUL anywhere in its text (lists and structs searched), or None
    when the type holds no text."""
    if dtype == pl.String:
        return expr.str.contains("\x00", literal=True)
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return expr.cast(pl.String).str.contains("\x00", literal=True)
    if isinstance(dtype, pl.List | pl.Array):
        inner = _contains_nul(pl.element(), dtype.inner)
        listed = expr.cast(pl.List(dtype.inner)) if isinstance(dtype, pl.Array) else expr
        return None if inner is None else listed.list.eval(inner).list.any()
    if isinstance(dtype, pl.Struct):
        parts = [
            found for f in dtype.fields if (found := _contains_nul(expr.struct.field(f.name), f.dtype)) is not None
        ]
        return pl.any_horizontal(parts) if parts else None
    return None


__all__ = ["ADAPTERS", "INTERNAL", "RESERVED", "adapt", "detect_adapter", "get_adapter"]
