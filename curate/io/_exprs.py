"""Polars expressions shared by the adapters: typed values plus a per-row problem message.

Every helper returns ``(value, problem)``: ``value`` is the canonical column (null when the row is bad) and
``problem`` a String expression that is null when the row is fine, else a message naming the column and
what was expected ("column 'output': expected a non-empty string, got null").  Adapters coalesce the
problems into ``_error``: the first problem of a row wins.  Everything stays a lazy expression so that the
canonical pass-through streams; only the transcript/tree parsers (hh_rlhf, oasst) run Python per row.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from curate.schema import MESSAGES

#: Role names accepted by the message-list adapters, mapped to curate's roles.
OPENAI_ROLES: dict[str, str] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}
SHAREGPT_ROLES: dict[str, str] = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "tool": "tool",
}


def problem(condition: pl.Expr, message: str | pl.Expr) -> pl.Expr:
    """``message`` where ``condition`` holds, null elsewhere (and where ``condition`` is null)."""
    text = pl.lit(message) if isinstance(message, str) else message
    return pl.when(condition.fill_null(False)).then(text.cast(pl.String)).otherwise(pl.lit(None, pl.String))


def first_problem(*problems: pl.Expr) -> pl.Expr:
    """The first non-null message of a row (its ``_error``), or null."""
    return pl.coalesce([pl.lit(None, pl.String), *problems])


def describe(dtype: pl.DataType) -> str:
    """How a user would name a column's type in a message."""
    if isinstance(dtype, pl.List | pl.Array):
        return "a list"
    if isinstance(dtype, pl.Struct):
        return "an object"
    if dtype == pl.Null:
        return "null"
    if dtype == pl.Boolean:
        return "booleans"
    if dtype.is_numeric():
        return "numbers"
    return f"{dtype} values"


def _is_scalar(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() or dtype == pl.Boolean


def text(name: str, dtype: pl.DataType, expr: pl.Expr | None = None) -> tuple[pl.Expr, pl.Expr]:
    """A column that must hold a non-empty string.

    A number or boolean is a row problem, not silently turned into text: an ``output`` of ``5`` is far more
    likely a broken export than an answer.
    """
    source = pl.col(name) if expr is None else expr
    if dtype == pl.String:
        value = source
    elif _is_scalar(dtype):
        kind = "a boolean" if dtype == pl.Boolean else "a number"
        got = pl.format("column '{}': expected a string, got {}: {}", pl.lit(name), pl.lit(kind), source)
        return pl.lit(None, pl.String), first_problem(
            problem(source.is_null(), f"column '{name}': expected a non-empty string, got null"),
            problem(source.is_not_null(), got),
        )
    elif dtype == pl.Null:
        value = pl.lit(None, pl.String)
    else:
        return pl.lit(None, pl.String), pl.lit(f"column '{name}': expected a string, got {describe(dtype)}")
    return value, first_problem(
        problem(value.is_null(), f"column '{name}': expected a non-empty string, got null"),
        problem(
            value.str.strip_chars() == "",
            f"column '{name}': expected a non-empty string, got an empty string",
        ),
    )


def optional_text(name: str, dtype: pl.DataType | None) -> tuple[pl.Expr, pl.Expr | None]:
    """A column that may be absent, null or empty (``input``, ``system``): its text or null.

    Numbers are taken as their text here (an ``input`` of ``5`` is a plausible input); a list or object is
    a problem.
    """
    if dtype is None or dtype == pl.Null:
        return pl.lit(None, pl.String), None
    if dtype == pl.String:
        return pl.col(name), None
    if _is_scalar(dtype):
        return pl.col(name).cast(pl.String), None
    bad = problem(pl.col(name).is_not_null(), f"column '{name}': expected a string, got {describe(dtype)}")
    return pl.lit(None, pl.String), bad


def number(name: str, dtype: pl.DataType, expr: pl.Expr | None = None) -> tuple[pl.Expr, pl.Expr]:
    """An optional numeric column (a score): Float64, with a problem for text that is not a number."""
    source = pl.col(name) if expr is None else expr
    if dtype.is_numeric() or dtype == pl.Null:
        return source.cast(pl.Float64), pl.lit(None, pl.String)
    if dtype == pl.String:
        value = source.str.strip_chars().cast(pl.Float64, strict=False)
        bad = value.is_null() & source.is_not_null() & (source.str.strip_chars() != "")
        return value, problem(
            bad, pl.format("column '{}': expected a number, got '{}'", pl.lit(name), source)
        )
    return pl.lit(None, pl.Float64), pl.lit(f"column '{name}': expected a number, got {describe(dtype)}")


def message(role: str, content: pl.Expr) -> pl.Expr:
    """One ``{role, content}`` struct."""
    return pl.struct(pl.lit(role, pl.String).alias("role"), content.cast(pl.String).alias("content"))


def message_list(*parts: tuple[str, pl.Expr]) -> pl.Expr:
    """A message list from (role, content) pairs; messages whose content is null are left out."""
    listed = pl.concat_list([message(role, content) for role, content in parts])
    if len(parts) == 1:
        return listed
    return listed.list.eval(pl.element().filter(pl.element().struct.field("content").is_not_null()))


def _content_text(dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr] | None:
    """(text, non-text part type) of ``pl.element()``'s content field, by its dtype; None if unusable."""
    content = pl.element().struct.field("content")
    if dtype == pl.String or dtype == pl.Null:
        return content.cast(pl.String), pl.lit(None, pl.String)
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
        fields = {f.name for f in dtype.inner.fields}
        if "text" not in fields:
            return None
        part = pl.element()
        kind = part.struct.field("type").cast(pl.String) if "type" in fields else pl.lit("text")
        joined = content.list.eval(part.struct.field("text").cast(pl.String)).list.join("\n")
        other = content.list.eval(kind.filter(kind != "text")).list.first()
        return joined, other
    return None


def messages(
    name: str,
    dtype: pl.DataType,
    *,
    roles: Mapping[str, str],
    role_field: str = "role",
    content_field: str = "content",
) -> tuple[pl.Expr, pl.Expr]:
    """A list of ``{role_field, content_field}`` objects -> canonical messages, with role/content checks.

    Roles are matched case-insensitively through ``roles``; an unknown role is a row problem naming it.
    Content may be text or (OpenAI) a list of parts: text parts are joined with newlines, any other part is a
    problem.  System messages with empty content are dropped (exports often carry an empty system turn);
    any other empty content is a problem.
    """
    expected = f"a list of {{{role_field}, {content_field}}} objects"
    if dtype == pl.Null:
        return pl.lit(None, MESSAGES), pl.lit(f"column '{name}': expected {expected}, got null")
    inner = dtype.inner if isinstance(dtype, pl.List) else None
    fields = {f.name: f.dtype for f in inner.fields} if isinstance(inner, pl.Struct) else {}
    if role_field not in fields or content_field not in fields:
        return pl.lit(None, MESSAGES), pl.lit(f"column '{name}': expected {expected}, got {describe(dtype)}")
    content = _content_text(fields[content_field])
    if content is None:
        got = describe(fields[content_field])
        return pl.lit(None, MESSAGES), pl.lit(f"column '{name}': message content must be text, got {got}")
    col = pl.col(name)
    if content_field != "content" or role_field != "role":
        col = col.list.eval(pl.element().struct.rename_fields(_renamed(fields, role_field, content_field)))
    element = pl.element()
    raw_role = element.struct.field("role").cast(pl.String).str.strip_chars().str.to_lowercase()
    mapped = raw_role.replace_strict(dict(roles), default=None, return_dtype=pl.String)
    text_expr, other_part = content
    blank = text_expr.is_null() | (text_expr.str.strip_chars() == "")
    is_system = mapped == "system"

    kept = col.list.eval(element.filter(~(is_system & blank).fill_null(False)))
    value = kept.list.eval(pl.struct(mapped.alias("role"), text_expr.alias("content"))).cast(MESSAGES)

    unknown = col.list.eval(mapped.is_null())
    unknown_at = unknown.list.arg_max()
    role_at = col.list.eval(element.struct.field("role").cast(pl.String)).list.get(
        unknown_at, null_on_oob=True
    )
    empty = col.list.eval(blank & ~is_system.fill_null(False))
    empty_at = empty.list.arg_max()
    parts = col.list.eval(other_part)
    parts_at = parts.list.eval(pl.element().is_not_null()).list.arg_max()
    known = ", ".join(roles)
    return value, first_problem(
        problem(col.is_null(), f"column '{name}': expected {expected}, got null"),
        problem(
            col.list.len() == 0, f"column '{name}': expected a non-empty list of messages, got an empty list"
        ),
        problem(
            unknown.list.any(),
            pl.format(
                "column '{}': message {} has unknown role '{}' (known: {})",
                pl.lit(name),
                unknown_at + 1,
                role_at.fill_null("<missing>"),
                pl.lit(known),
            ),
        ),
        problem(
            parts.list.eval(pl.element().is_not_null()).list.any(),
            pl.format(
                "column '{}': message {} has a non-text content part ('{}'); only text is supported",
                pl.lit(name),
                parts_at + 1,
                parts.list.get(parts_at, null_on_oob=True),
            ),
        ),
        problem(
            empty.list.any(),
            pl.format("column '{}': message {} has empty content", pl.lit(name), empty_at + 1),
        ),
    )


def _renamed(fields: Mapping[str, pl.DataType], role_field: str, content_field: str) -> list[str]:
    out = []
    for field in fields:
        if field == role_field:
            out.append("role")
        elif field == content_field:
            out.append("content")
        elif field in ("role", "content"):
            out.append(f"_{field}")
        else:
            out.append(field)
    return out


def prompt_messages(name: str, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """A prompt given as a string (one user message) or as messages ending with a user turn."""
    if isinstance(dtype, pl.List):
        value, issue = messages(name, dtype, roles=OPENAI_ROLES)
        last = value.list.last().struct.field("role")
        return value, first_problem(
            issue,
            problem(
                last != "user",
                pl.format(
                    "column '{}': the last prompt message must be from the user, got '{}'", pl.lit(name), last
                ),
            ),
        )
    content, issue = text(name, dtype)
    return message_list(("user", content)), issue


def reply(name: str, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """A response given as a string: the one-assistant-message list of a preference side."""
    content, issue = text(name, dtype)
    return message_list(("assistant", content)), issue


__all__ = [
    "OPENAI_ROLES",
    "SHAREGPT_ROLES",
    "describe",
    "first_problem",
    "message",
    "message_list",
    "messages",
    "number",
    "optional_text",
    "problem",
    "prompt_messages",
    "reply",
    "text",
]
