"""Adapters to the conversation (SFT) table: curate's own, Alpaca, ShareGPT, OpenAI messages and multi-turn
benchmark turns (MT-Bench)."""

from __future__ import annotations

import polars as pl

from curate.errors import InputDataError
from curate.io._base import Adapter, Conversion, Options, first_present, require
from curate.io._exprs import (
    OPENAI_ROLES,
    SHAREGPT_ROLES,
    first_problem,
    message,
    message_list,
    messages,
    optional_text,
    problem,
    text,
)
from curate.schema import MESSAGES, ROLES

CANONICAL_ROLES = {role: role for role in ROLES}


def canonical_messages(name: str, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """Messages already in curate's shape: passed through as they are, only checked (cheap, streams)."""
    if dtype != MESSAGES:
        return messages(name, dtype, roles=CANONICAL_ROLES)
    col = pl.col(name)
    role = pl.element().struct.field("role")
    content = pl.element().struct.field("content")
    bad_role = col.list.eval(~role.is_in(list(ROLES)).fill_null(False) | role.is_null())
    bad_role_at = bad_role.list.arg_max()
    empty = col.list.eval(content.is_null() | (content.str.strip_chars() == ""))
    return col, first_problem(
        problem(col.is_null(), f"column '{name}': expected a list of messages, got null"),
        problem(
            col.list.len() == 0, f"column '{name}': expected a non-empty list of messages, got an empty list"
        ),
        problem(
            bad_role.list.any(),
            pl.format(
                "column '{}': message {} has unknown role '{}' (known: {})",
                pl.lit(name),
                bad_role_at + 1,
                col.list.eval(role).list.get(bad_role_at, null_on_oob=True).fill_null("<missing>"),
                pl.lit(", ".join(ROLES)),
            ),
        ),
        problem(
            empty.list.any(),
            pl.format("column '{}': message {} has empty content", pl.lit(name), empty.list.arg_max() + 1),
        ),
    )


class ConversationTable(Adapter):
    """curate's conversation table (e.g. a previous run's output), passed through lazily."""

    name = "conversation"
    table = "conversation"
    canonical = True
    expects = "id, messages, source (curate's conversation table)"

    def matches(self, columns: frozenset[str]) -> bool:
        return {"id", "messages", "source"} <= columns

    def convert(self, lf: pl.LazyFrame, schema: pl.Schema, opts: Options) -> Conversion:
        value, issue = canonical_messages("messages", require(schema, "messages", self.name))
        columns = {"messages": value, "_error": issue}
        if "source" in schema:
            columns["source"] = pl.col("source")
        return Conversion(lf, columns, {"id", "messages", "source"})


class AlpacaOptions(Options):
    instruction_field: str = "instruction"
    input_field: str = "input"
    #: The answer column; by default ``output``, else ``response`` (Self-Instruct predictions).
    output_field: str | None = None
    #: A system prompt column; by default ``system`` when present.
    system_field: str | None = None
    #: Self-Instruct tasks: a list of ``{input, output}`` instances, one conversation each.
    instances_field: str = "instances"


class Alpaca(Adapter):
    """Alpaca / Self-Instruct rows: user = instruction (+ blank line + input), assistant = output.

    Rows without an answer column give a conversation with only the user message (prompts for a
    generation stage).  Self-Instruct tasks (``instances: [{input, output}]``) are exploded to one
    conversation per instance; the task's columns are kept as metadata and ``instance`` (1-based) added.
    """

    name = "alpaca"
    table = "conversation"
    expects = "instruction (+ input, output|response, system; or instances: [{input, output}])"
    options = AlpacaOptions

    def matches(self, columns: frozenset[str]) -> bool:
        return "instruction" in columns

    def convert(self, lf: pl.LazyFrame, schema: pl.Schema, opts: AlpacaOptions) -> Conversion:
        instruction_dtype = require(schema, opts.instruction_field, self.name)
        instruction, issues = text(opts.instruction_field, instruction_dtype)
        consumed = {opts.instruction_field}
        output_name = opts.output_field or first_present(schema, ("output", "response"))
        if opts.output_field is not None:
            require(schema, opts.output_field, self.name)
        extra: dict[str, pl.Expr] = {}
        instances = schema.get(opts.instances_field)
        if output_name is None and isinstance(instances, pl.List) and isinstance(instances.inner, pl.Struct):
            lf, user_input, output, output_issue = self._instances(lf, opts.instances_field, instances.inner)
            consumed.add(opts.instances_field)
            extra["instance"] = pl.col("__instance").cast(pl.Int64)
        else:
            user_input, input_issue = optional_text(opts.input_field, schema.get(opts.input_field))
            if input_issue is not None:
                issues = first_problem(issues, input_issue)
            output, output_issue = (
                text(output_name, schema[output_name]) if output_name else (pl.lit(None, pl.String), None)
            )
            consumed |= {opts.input_field, *([output_name] if output_name else [])}
        system_name = opts.system_field or ("system" if "system" in schema else None)
        system, system_issue = (
            optional_text(system_name, schema.get(system_name))
            if system_name
            else (pl.lit(None, pl.String), None)
        )
        if system_name:
            consumed.add(system_name)
        if system_issue is not None:
            issues = first_problem(issues, system_issue)
        has_input = user_input.is_not_null() & (user_input.str.strip_chars() != "")
        user = (
            pl.when(has_input)
            .then(pl.concat_str([instruction, pl.lit("\n\n"), user_input]))
            .otherwise(instruction)
        )
        system = pl.when(system.str.strip_chars() != "").then(system)
        value = message_list(("system", system), ("user", user), ("assistant", output))
        error = first_problem(issues, *([output_issue] if output_issue is not None else []))
        return Conversion(lf, {"messages": value, "_error": error, **extra}, consumed)

    @staticmethod
    def _instances(
        lf: pl.LazyFrame, name: str, inner: pl.Struct
    ) -> tuple[pl.LazyFrame, pl.Expr, pl.Expr, pl.Expr]:
        fields = {f.name: f.dtype for f in inner.fields}
        lf = lf.with_columns(
            pl.col(name).alias("__item"), pl.int_ranges(1, pl.col(name).list.len() + 1).alias("__instance")
        ).explode(["__item", "__instance"])
        item = pl.col("__item")
        user_input = _field_text(item, fields, "input")
        if "output" in fields:
            output, issue = text(f"{name}.output", fields["output"], item.struct.field("output"))
        else:
            output, issue = (
                pl.lit(None, pl.String),
                pl.lit(f"column '{name}': instances have no 'output' field"),
            )
        empty = problem(
            item.is_null(), f"column '{name}': expected a non-empty list of {{input, output}} objects"
        )
        return lf, user_input, output, first_problem(empty, issue)


def _field_text(item: pl.Expr, fields: dict[str, pl.DataType], field: str) -> pl.Expr:
    dtype = fields.get(field)
    if dtype is None or dtype == pl.Null:
        return pl.lit(None, pl.String)
    value = item.struct.field(field)
    if dtype == pl.String:
        return value
    return value.cast(pl.String) if dtype.is_numeric() else pl.lit(None, pl.String)


class ShareGPTOptions(Options):
    conversations_field: str = "conversations"
    #: A system prompt column prepended as a system message; by default ``system`` when present.
    system_field: str | None = None


class ShareGPT(Adapter):
    """ShareGPT: ``conversations: [{from, value}]``; human/user -> user, gpt/assistant/chatgpt/bing/bard/model
    -> assistant, system -> system (case-insensitive); any other role is a row error naming it."""

    name = "sharegpt"
    table = "conversation"
    expects = "conversations: [{from, value}] (+ system)"
    options = ShareGPTOptions

    def matches(self, columns: frozenset[str]) -> bool:
        return "conversations" in columns

    def convert(self, lf: pl.LazyFrame, schema: pl.Schema, opts: ShareGPTOptions) -> Conversion:
        name = opts.conversations_field
        dtype = require(schema, name, self.name)
        inner = dtype.inner if isinstance(dtype, pl.List) else None
        fields = {f.name for f in inner.fields} if isinstance(inner, pl.Struct) else set()
        keys = (
            ("role", "content")
            if {"role", "content"} <= fields and "from" not in fields
            else ("from", "value")
        )
        value, issue = messages(name, dtype, roles=SHAREGPT_ROLES, role_field=keys[0], content_field=keys[1])
        consumed = {name}
        system_name = opts.system_field or ("system" if "system" in schema else None)
        if system_name:
            system, system_issue = optional_text(system_name, require(schema, system_name, self.name))
            if system_issue is not None:
                issue = first_problem(issue, system_issue)
            starts_with_system = value.list.first().struct.field("role") == "system"
            add = (system.str.strip_chars() != "") & ~starts_with_system.fill_null(False)
            value = (
                pl.when(add)
                .then(pl.concat_list([pl.concat_list([message("system", system)]), value]))
                .otherwise(value)
            )
            consumed.add(system_name)
        return Conversion(lf, {"messages": value, "_error": issue}, consumed)


class OpenAIOptions(Options):
    messages_field: str = "messages"


class OpenAIMessages(Adapter):
    """OpenAI chat format: ``messages: [{role, content}]``; content may be a list of ``{type: text, text}``
    parts (joined with newlines); other part types (images, audio) are row errors."""

    name = "openai"
    table = "conversation"
    expects = "messages: [{role, content}] (content: text or [{type: text, text}])"
    options = OpenAIOptions

    def matches(self, columns: frozenset[str]) -> bool:
        return "messages" in columns

    def convert(self, lf: pl.LazyFrame, schema: pl.Schema, opts: OpenAIOptions) -> Conversion:
        name = opts.messages_field
        value, issue = messages(name, require(schema, name, self.name), roles=OPENAI_ROLES)
        return Conversion(lf, {"messages": value, "_error": issue}, {name})


class TurnsOptions(Options):
    #: The user turns: a list of texts (MT-Bench ``turns``).
    user_field: str = "turns"
    #: The assistant turns, a list of texts, as a dotted path where a number indexes a list: MT-Bench's answer
    #: files hold them at ``choices.0.turns`` (after a ``join``, under the prefix a clash gave them).
    assistant_field: str | None = None


class Turns(Adapter):
    """Multi-turn benchmark rows: a list of user turns (MT-Bench ``turns``) and, optionally, the list of an
    answer's turns (``assistant_field``) -> user, assistant, user, assistant, ...  A row without answers gives
    its first user turn alone (a prompt: the later turns depend on an answer); a row whose answers do not
    match its turns in number is a row error."""

    name = "turns"
    table = "conversation"
    expects = "turns: [user turn, ...] (+ option assistant_field, e.g. choices.0.turns after a join)"
    options = TurnsOptions

    def matches(self, columns: frozenset[str]) -> bool:
        return "turns" in columns

    def convert(self, lf: pl.LazyFrame, schema: pl.Schema, opts: TurnsOptions) -> Conversion:
        user_dtype = require(schema, opts.user_field, self.name)
        if user_dtype != pl.List(pl.String):
            raise InputDataError(f"column '{opts.user_field}': expected a list of texts, got {user_dtype}")
        user = pl.col(opts.user_field)
        answers = (_path_expr(schema, opts.assistant_field) if opts.assistant_field
                   else pl.lit(None, pl.List(pl.String)))
        value = pl.struct(user.alias("u"), answers.alias("a")).map_batches(_interleave, return_dtype=MESSAGES)
        error = first_problem(
            problem(user.is_null() | (user.list.len() == 0),
                    f"column '{opts.user_field}': expected a non-empty list of turns"),
            problem(answers.is_not_null() & (answers.list.len() != user.list.len()),
                    pl.format("{} answer turns for {} user turns", answers.list.len(), user.list.len())),
        )
        consumed = {opts.user_field}
        return Conversion(lf, {"messages": value, "_error": error}, consumed)


def _path_expr(schema: pl.Schema, path: str) -> pl.Expr:
    """``choices.0.turns`` -> the expression reaching it, checked against the schema (an ``InputDataError``
    naming the part that does not fit); the result must be a list of texts."""
    head, *rest = path.split(".")
    if head not in schema:
        raise InputDataError(f"assistant_field '{path}': no column '{head}' (columns: {schema.names()})")
    expr, dtype = pl.col(head), schema[head]
    for part in rest:
        if part.isdigit() and isinstance(dtype, pl.List):
            expr, dtype = expr.list.get(int(part), null_on_oob=True), dtype.inner
        elif isinstance(dtype, pl.Struct) and part in {f.name for f in dtype.fields}:
            expr, dtype = expr.struct.field(part), next(f.dtype for f in dtype.fields if f.name == part)
        else:
            raise InputDataError(f"assistant_field '{path}': cannot take '{part}' of {dtype}")
    if dtype != pl.List(pl.String):
        raise InputDataError(f"assistant_field '{path}': expected a list of texts, got {dtype}")
    return expr


def _interleave(batch: pl.Series) -> pl.Series:
    out: list[list[dict[str, str]] | None] = []
    for row in batch.to_list():
        user, answers = row["u"], row["a"]
        if not user:
            out.append(None)
        elif answers is None:
            out.append([{"role": "user", "content": user[0]}])
        else:
            out.append([m for u, a in zip(user, answers, strict=False)
                        for m in ({"role": "user", "content": u}, {"role": "assistant", "content": a})])
    return pl.Series(batch.name, out, dtype=MESSAGES)
