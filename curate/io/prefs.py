"""Adapters to the candidates and preference tables: curate's own, HH-RLHF, pairwise, multi-response."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import polars as pl
from pydantic import field_validator

from curate.io._base import Adapter, Conversion, Options, first_present, require
from curate.io._exprs import (
    describe,
    first_problem,
    number,
    problem,
    prompt_messages,
    reply,
    text,
)
from curate.io.chat import canonical_messages
from curate.schema import MESSAGES, RESPONSES

# -- shared pieces ---------------------------------------------------------------------------------------


def canonical_prompt(name: str, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """A prompt in curate's shape (messages ending with a user turn), or a plain string."""
    if dtype != MESSAGES:
        return prompt_messages(name, dtype)
    value, issue = canonical_messages(name, dtype)
    last = value.list.last().struct.field("role")
    wrong = pl.format(
        "column '{}': the last prompt message must be from the user, got '{}'", pl.lit(name), last
    )
    return value, first_problem(issue, problem(last != "user", wrong))


def preference_side(name: str, dtype: pl.DataType, prompt: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """``chosen``/``rejected``: one assistant message.  A string is wrapped; a list that repeats the prompt
    before the reply (TRL's implicit-prompt format, e.g. UltraFeedback-binarized) is cut to the reply."""
    if not isinstance(dtype, pl.List):
        return reply(name, dtype)
    value, issue = canonical_messages(name, dtype)
    n = value.list.len()
    repeats_prompt = (n > 1) & (value.list.head(n - 1) == prompt).fill_null(False)
    value = pl.when(repeats_prompt).then(value.list.tail(1)).otherwise(value)
    role = value.list.last().struct.field("role")
    return value, first_problem(
        issue,
        problem(
            value.list.len() > 1,
            pl.format(
                "column '{}': expected one assistant message, got {} messages", pl.lit(name), value.list.len()
            ),
        ),
        problem(
            role != "assistant",
            pl.format("column '{}': expected an assistant message, got '{}'", pl.lit(name), role),
        ),
    )


def same_reply(chosen: pl.Expr, rejected: pl.Expr, message: str) -> pl.Expr:
    content = pl.element().struct.field("content")
    return problem(
        chosen.list.eval(content).list.join("\n") == rejected.list.eval(content).list.join("\n"), message
    )


_CONTENT_KEYS = ("content", "response", "text", "output", "completion")
_SCORE_KEYS = ("score", "rating", "reward", "fine-grained_score", "overall_score")
_MODEL_KEYS = ("model", "model_name", "generator")


def responses(name: str, dtype: pl.DataType, score_key: str | None = None) -> tuple[pl.Expr, pl.Expr]:
    """Candidate responses: a list of strings, or of objects with content/response/text (+ score, model)."""
    if dtype == RESPONSES:
        value = pl.col(name)
    elif isinstance(dtype, pl.List) and dtype.inner == pl.String:
        value = pl.col(name).list.eval(
            pl.struct(
                pl.element().alias("content"),
                pl.lit(None, pl.String).alias("model"),
                pl.lit(None, pl.Float64).alias("score"),
            )
        )
    elif isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
        fields = {f.name: f.dtype for f in dtype.inner.fields}
        content_key = first_present(pl.Schema(fields), _CONTENT_KEYS)
        if content_key is None:
            got = f"objects with fields {sorted(fields)}"
            return pl.lit(None, RESPONSES), pl.lit(
                f"column '{name}': expected responses with a text field, got {got}"
            )
        score_name = score_key if score_key in fields else first_present(pl.Schema(fields), _SCORE_KEYS)
        model_name = first_present(pl.Schema(fields), _MODEL_KEYS)
        el = pl.element()
        score = (
            el.struct.field(score_name).cast(pl.Float64, strict=False)
            if score_name
            else pl.lit(None, pl.Float64)
        )
        model = el.struct.field(model_name).cast(pl.String) if model_name else pl.lit(None, pl.String)
        value = pl.col(name).list.eval(
            pl.struct(
                el.struct.field(content_key).cast(pl.String).alias("content"),
                model.alias("model"),
                score.alias("score"),
            )
        )
    else:
        return pl.lit(None, RESPONSES), pl.lit(
            f"column '{name}': expected a list of responses, got {describe(dtype)}"
        )
    content = pl.element().struct.field("content")
    empty = value.list.eval(content.is_null() | (content.str.strip_chars() == ""))
    return value, first_problem(
        problem(value.is_null(), f"column '{name}': expected a list of responses, got null"),
        problem(
            value.list.len() == 0,
            f"column '{name}': expected a non-empty list of responses, got an empty list",
        ),
        problem(
            empty.list.any(),
            pl.format("column '{}': response {} is empty", pl.lit(name), empty.list.arg_max() + 1),
        ),
    )


# -- curate's own tables ---------------------------------------------------------------------------------


class PreferenceTable(Adapter):
    """curate's preference table (TRL explicit-prompt format), passed through lazily.

    Also reads the common ``prompt``/``chosen``/``rejected`` variants: strings are wrapped as one user /
    assistant message, and chosen/rejected lists that repeat the prompt are cut to the reply.
    """

    name = "preference"
    table = "preference"
    canonical = True
    expects = "prompt, chosen, rejected (+ score_chosen, score_rejected)"

    def matches(self, columns: frozenset[str]) -> bool:
        return {"prompt", "chosen", "rejected"} <= columns

    def convert(self, lf: pl.LazyFrame, schema: pl.Schema, opts: Options) -> Conversion:
        prompt, prompt_issue = canonical_prompt("prompt", require(schema, "prompt", self.name))
        chosen, chosen_issue = preference_side("chosen", require(schema, "chosen", self.name), prompt)
        rejected, rejected_issue = preference_side("rejected", require(schema, "rejected", self.name), prompt)
        columns = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        issues = [prompt_issue, chosen_issue, rejected_issue]
        for side in ("score_chosen", "score_rejected"):
            if side in schema:
                columns[side], issue = number(side, schema[side])
                issues.append(issue)
        if "source" in schema:
            columns["source"] = pl.col("source")
        issues.append(same_reply(chosen, rejected, "chosen and rejected are the same response"))
        columns["_error"] = first_problem(*issues)
        return Conversion(lf, columns, {"id", "source", *columns})


class CandidatesTable(Adapter):
    """curate's candidates table (a prompt and several scored responses), passed through lazily."""

    name = "candidates"
    table = "candidates"
    canonical = True
    expects = "id, prompt, responses, source (curate's candidates table)"

    def matches(self, columns: frozenset[str]) -> bool:
        return {"id", "prompt", "responses", "source"} <= columns

    def convert(self, lf: pl.LazyFrame, schema: pl.Schema, opts: Options) -> Conversion:
        prompt, prompt_issue = canonical_prompt("prompt", require(schema, "prompt", self.name))
        value, issue = responses("responses", require(schema, "responses", self.name))
        columns = {"prompt": prompt, "responses": value, "_error": first_problem(prompt_issue, issue)}
        if "source" in schema:
            columns["source"] = pl.col("source")
        return Conversion(lf, columns, {"id", "source", "prompt", "responses"})


# -- HH-RLHF ---------------------------------------------------------------------------------------------

_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}
_PAIR = pl.Struct({"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES, "error": pl.String})


def parse_transcript(text: str) -> list[dict[str, str]]:
    """``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` -> messages; raises ValueError saying what is wrong.

    Turn text is stripped.  A ``Human:`` not preceded by a blank line stays part of the turn's text (the
    data has such lines inside answers).
    """
    if text.lstrip(" \n").startswith("Human:") and not text.startswith("\n\n"):
        text = "\n\n" + text.lstrip(" \n")
    parts = _TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise ValueError("does not start with '\\n\\nHuman: '")
    turns = [
        {"role": _ROLE[role], "content": body.strip()}
        for role, body in zip(parts[1::2], parts[2::2], strict=True)
    ]
    if turns[-1]["role"] != "assistant":
        raise ValueError("does not end with an Assistant turn")
    return turns


def parse_pair(chosen: str | None, rejected: str | None) -> dict[str, Any]:
    """One HH-RLHF row -> prompt (the shared turns), chosen and rejected (the final Assistant turns)."""
    parsed: dict[str, list[dict[str, str]]] = {}
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if value is None or not value.strip():
            got = "null" if value is None else "an empty string"
            return {"error": f"column '{name}': expected a transcript, got {got}"}
        try:
            parsed[name] = parse_transcript(value)
        except ValueError as exc:
            return {"error": f"column '{name}': the transcript {exc}"}
    good, bad = parsed["chosen"], parsed["rejected"]
    if good[:-1] != bad[:-1]:
        at = next(
            (i for i, (a, b) in enumerate(zip(good[:-1], bad[:-1], strict=False)) if a != b),
            min(len(good), len(bad)) - 1,
        )
        return {"error": f"chosen and rejected differ before the final Assistant turn (turn {at + 1})"}
    prompt = good[:-1]
    if not prompt or prompt[-1]["role"] != "user":
        return {"error": "the turn before the final Assistant turn is not a Human turn"}
    for name, turns in parsed.items():
        if not turns[-1]["content"]:
            return {"error": f"column '{name}': the final Assistant turn is empty"}
    if good[-1] == bad[-1]:
        return {"error": "chosen and rejected end with the same response"}
    return {"prompt": prompt, "chosen": good[-1:], "rejected": bad[-1:], "error": None}


def _parse_pairs(batch: pl.Series) -> pl.Series:
    rows = [parse_pair(row["chosen"], row["rejected"]) for row in batch.to_list()]
    return pl.Series(batch.name, rows, dtype=_PAIR)


class HHRLHF(Adapter):
    """Anthropic HH-RLHF: ``chosen``/``rejected`` transcripts that share every turn but the last.

    prompt = the shared turns (up to the last Human turn); chosen/rejected = the final Assistant turn of
    each.  Rows whose transcripts diverge earlier, do not parse, or end the same are errors.
    """

    name = "hh_rlhf"
    table = "preference"
    expects = "chosen, rejected (transcripts '\\n\\nHuman: …\\n\\nAssistant: …')"

    def matches(self, columns: frozenset[str]) -> bool:
        return {"chosen", "rejected"} <= columns

    def convert(self, lf: pl.LazyFrame, schema: pl.Schema, opts: Options) -> Conversion:
        chosen_text, chosen_issue = text("chosen", require(schema, "chosen", self.name))
        rejected_text, rejected_issue = text("rejected", require(schema, "rejected", self.name))
        parsed = pl.struct(chosen_text.alias("chosen"), rejected_text.alias("rejected")).map_batches(
            _parse_pairs, return_dtype=_PAIR
        )
        lf = lf.with_columns(parsed.alias("__pair"))
        pair = pl.col("__pair")
        columns = {
            "prompt": pair.struct.field("prompt"),
            "chosen": pair.struct.field("chosen"),
            "rejected": pair.struct.field("rejected"),
            "_error": first_problem(chosen_issue, rejected_issue, pair.struct.field("error")),
        }
        return Conversion(lf, columns, {"chosen", "rejected", "__pair"})


# -- pairwise labels -------------------------------------------------------------------------------------

_LABELS = {
    "a": "a",
    "0": "a",
    "0.0": "a",
    "model_a": "a",
    "response_a": "a",
    "b": "b",
    "1": "b",
    "1.0": "b",
    "model_b": "b",
    "response_b": "b",
    "tie": "tie",
    "tie (bothbad)": "tie",
    "both": "tie",
}


PairSide = Literal["a", "b", "tie"]


def label_keys(value: Any) -> list[str]:
    """The lower-case strings a label value may arrive as once its column is cast to text: ``1`` is read from
    an integer column as ``"1"`` and from a float column as ``"1.0"``, so a numeric key stands for both."""
    text = str(value).strip().lower()
    keys = [text]
    if not isinstance(value, bool):
        try:
            number = float(text)
        except ValueError:
            return keys
        if number.is_integer():
            keys += [str(int(number)), f"{int(number)}.0"]
    return list(dict.fromkeys(keys))


class PairwiseOptions(Options):
    prompt_field: str = "prompt"
    a_field: str = "response_a"
    b_field: str = "response_b"
    #: The verdict column; by default the first of label, winner, preference, choice.
    label_field: str | None = None
    #: The file's own label values mapped to a / b / tie, e.g. ``{0: a, 1: b, 2: tie}`` or ``{1: a, 2: b}``;
    #: when given it replaces the built-in reading (a/b/tie, 0/1, model_a/model_b) entirely.
    label_map: dict[str | int | float | bool, PairSide] | None = None
    #: ``error``: a tie is a row error ("tie: no preference"; a preference table has no ties).  ``keep``: tie
    #: rows stay (chosen = response a, rejected = response b) and a ``pair_label`` column (a / b / tie)
    #: says which side the label named; for measuring judges against 3-way labels (``curate judge-eval``).
    ties: Literal["error", "keep"] = "error"

    @field_validator("label_map", mode="before")
    @classmethod
    def _sides(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: (str(v).strip().lower() if isinstance(v, str) else v) for k, v in value.items()}
        return value

    def labels(self) -> dict[str, str]:
        """Raw label text (lower case) -> a / b / tie."""
        if self.label_map is None:
            return _LABELS
        return {key: side for value, side in self.label_map.items() for key in label_keys(value)}


class Pairwise(Adapter):
    """Two responses and a verdict: label a/b/tie (also 0/1, A/B, model_a/model_b as in Chatbot Arena).

    A tie is a row error "tie: no preference", so the caller counts it in quarantine instead of losing it
    (``ties: keep`` keeps it, with ``pair_label``).  ``label_map`` reads any other labelling: ``{0: a, 1: b,
    2: tie}``, ``{1: a, 2: b}``.
    Scores are null (a verdict is not a score).
    """

    name = "pairwise"
    table = "preference"
    expects = "prompt, response_a, response_b, label|winner (a, b, tie; 0/1; model_a/model_b)"
    options = PairwiseOptions

    def matches(self, columns: frozenset[str]) -> bool:
        return {"response_a", "response_b"} <= columns

    def convert(self, lf: pl.LazyFrame, schema: pl.Schema, opts: PairwiseOptions) -> Conversion:
        label_name = opts.label_field or first_present(schema, ("label", "winner", "preference", "choice"))
        require(schema, label_name or "label", self.name)
        label_name = label_name or "label"
        prompt, prompt_issue = prompt_messages(
            opts.prompt_field, require(schema, opts.prompt_field, self.name)
        )
        a, a_issue = reply(opts.a_field, require(schema, opts.a_field, self.name))
        b, b_issue = reply(opts.b_field, require(schema, opts.b_field, self.name))
        raw = pl.col(label_name).cast(pl.String).str.strip_chars()
        side = raw.str.to_lowercase().replace_strict(opts.labels(), default=None, return_dtype=pl.String)
        if opts.label_map is None:
            expected = "expected a, b or tie (or 0/1, model_a/model_b)"
        else:
            expected = "expected one of the label_map keys " + ", ".join(map(str, opts.label_map))
        label_issue = first_problem(
            problem(raw.is_null(), f"column '{label_name}': {expected}, got null"),
            problem(
                side.is_null(),
                pl.format("column '{}': {}, got '{}'", pl.lit(label_name), pl.lit(expected), raw),
            ),
            problem((side == "tie") & pl.lit(opts.ties == "error"), "tie: no preference"),
        )
        columns = {
            "prompt": prompt,
            "chosen": pl.when(side == "b").then(b).otherwise(a),
            "rejected": pl.when(side == "b").then(a).otherwise(b),
            "_error": first_problem(
                prompt_issue,
                a_issue,
                b_issue,
                label_issue,
                same_reply(a, b, f"columns '{opts.a_field}' and '{opts.b_field}' hold the same response"),
            ),
        }
        if opts.ties == "keep":
            columns["pair_label"] = side
        return Conversion(lf, columns, {opts.prompt_field, opts.a_field, opts.b_field, label_name})


# -- multi-response --------------------------------------------------------------------------------------


class MultiResponseOptions(Options):
    #: The prompt column; by default ``instruction``, else ``prompt``.
    prompt_field: str | None = None
    #: The responses column; by default ``responses``, else ``completions`` (UltraFeedback).
    responses_field: str | None = None
    #: A list parallel to the responses holding their scores (numbers, or objects with ``score``).
    scores_field: str | None = None
    #: Score field inside response objects; by default score/rating/reward, then UltraFeedback's
    #: ``fine-grained_score`` (mean of the aspect ratings) before ``overall_score``.
    score_key: str | None = None
    #: A row-level column naming the model that wrote the responses (dots for struct fields).
    model_field: str | None = None


_SCORE_LISTS = ("scores", "rewards", "ratings")
_MAGPIE_MODEL = "gen_response_configs.output_generator"


def _path(schema: pl.Schema, dotted: str) -> tuple[pl.Expr, pl.DataType] | None:
    """``a.b`` -> ``pl.col("a").struct.field("b")`` when the schema has it."""
    head, *rest = dotted.split(".")
    if head not in schema:
        return None
    expr, dtype = pl.col(head), schema[head]
    for part in rest:
        fields = {f.name: f.dtype for f in dtype.fields} if isinstance(dtype, pl.Struct) else {}
        if part not in fields:
            return None
        expr, dtype = expr.struct.field(part), fields[part]
    return expr, dtype


def _score_list(name: str, dtype: pl.DataType) -> pl.Expr | None:
    if not isinstance(dtype, pl.List):
        return None
    inner = dtype.inner
    if inner.is_numeric() or inner == pl.Null:
        return pl.col(name).cast(pl.List(pl.Float64))
    if inner == pl.String:
        return pl.col(name).list.eval(pl.element().cast(pl.Float64, strict=False))
    if isinstance(inner, pl.Struct) and any(f.name == "score" for f in inner.fields):
        return pl.col(name).list.eval(pl.element().struct.field("score").cast(pl.Float64, strict=False))
    return None


def _attach(batch: pl.Series) -> pl.Series:
    """Zip a row's parallel scores / model name into its responses (Polars has no list zip)."""
    out: list[list[dict[str, Any]] | None] = []
    for row in batch.to_list():
        items, scores, model = row["responses"], row["scores"], row["model"]
        if items is None:
            out.append(None)
            continue
        merged = []
        for i, item in enumerate(items):
            score = item["score"]
            if scores is not None and i < len(scores) and scores[i] is not None:
                score = scores[i]
            merged.append({"content": item["content"], "model": item["model"] or model, "score": score})
        out.append(merged)
    return pl.Series(batch.name, out, dtype=RESPONSES)


class MultiResponse(Adapter):
    """One prompt with several responses (Magpie, UltraFeedback) -> candidates.

    Scores come from the response objects (``score``; UltraFeedback ``fine-grained_score`` /
    ``overall_score``) or from a parallel list column (``scores_field``; auto: ``rewards_*``, scores,
    rewards, ratings); none -> null.  Magpie's ``gen_response_configs.output_generator`` names the model.
    """

    name = "multi_response"
    table = "candidates"
    expects = "instruction|prompt, responses|completions (+ rewards_*|scores)"
    options = MultiResponseOptions

    def matches(self, columns: frozenset[str]) -> bool:
        return bool({"instruction", "prompt"} & columns) and bool({"responses", "completions"} & columns)

    def convert(self, lf: pl.LazyFrame, schema: pl.Schema, opts: MultiResponseOptions) -> Conversion:
        prompt_name = opts.prompt_field or first_present(schema, ("instruction", "prompt")) or "instruction"
        responses_name = (
            opts.responses_field or first_present(schema, ("responses", "completions")) or "responses"
        )
        prompt, prompt_issue = prompt_messages(prompt_name, require(schema, prompt_name, self.name))
        value, issue = responses(responses_name, require(schema, responses_name, self.name), opts.score_key)
        consumed = {prompt_name, responses_name}
        issues = [prompt_issue, issue]

        scores_name = opts.scores_field or next(
            (c for c in schema.names() if c.startswith("rewards_") and _score_list(c, schema[c]) is not None),
            first_present(schema, _SCORE_LISTS),
        )
        scores = None
        if scores_name is not None:
            scores = _score_list(scores_name, require(schema, scores_name, self.name))
            if scores is None:
                got = describe(schema[scores_name])
                issues.append(pl.lit(f"column '{scores_name}': expected a list of scores, got {got}"))
            else:
                consumed.add(scores_name)
                issues.append(
                    problem(
                        scores.list.len() != value.list.len(),
                        pl.format(
                            "column '{}': has {} scores for {} responses",
                            pl.lit(scores_name),
                            scores.list.len(),
                            value.list.len(),
                        ),
                    )
                )
        model_path = _path(schema, opts.model_field or _MAGPIE_MODEL)
        if opts.model_field and model_path is None:
            require(schema, opts.model_field, self.name)
        if scores is not None or model_path is not None:
            model = model_path[0].cast(pl.String) if model_path else pl.lit(None, pl.String)
            value = pl.struct(
                value.alias("responses"),
                (scores if scores is not None else pl.lit(None, pl.List(pl.Float64))).alias("scores"),
                model.alias("model"),
            ).map_batches(_attach, return_dtype=RESPONSES)
        return Conversion(
            lf, {"prompt": prompt, "responses": value, "_error": first_problem(*issues)}, consumed
        )


__all__ = [
    "HHRLHF",
    "CandidatesTable",
    "MultiResponse",
    "Pairwise",
    "PreferenceTable",
    "parse_pair",
    "parse_transcript",
]
