"""A stage described in plain text, for ``curate stages NAME``.

Why: stage docstrings are written for the API docs (reST roles such as ``:func:`x```, double-backquoted code,
``**bold**``), which read as noise in a terminal; and a user choosing parameters wants one line per parameter
(name, type, default, what it does) rather than a page of prose.  The short help of a parameter is its ``#:``
comment in the stage's source (the autodoc convention the stages already follow), else its pydantic
``description``, else the help of a parameter many stages share (:data:`COMMON`: ``model``, ``seed``, ...),
else nothing (the stage's docstring, printed above the parameters, then says what it does).
"""

from __future__ import annotations

import inspect
import json
import re
import textwrap
import types
import typing
from typing import Any

#: reST roles (``:func:`curate.x```, ``:class:`~a.B```) -> their target's text.
_ROLE = re.compile(r":(?:func|meth|class|mod|attr|data|obj|exc|ref|doc|paramref|py:\w+):`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_INTERPRETED = re.compile(r"(?<![`\w])`([^`]+)`(?![`\w])")
_STRONG = re.compile(r"\*\*([^*]+)\*\*")
_EMPHASIS = re.compile(r"(?<![*\w])\*([^*\s][^*]*)\*(?![*\w])")
_FIELD = re.compile(r"^\s+(\w+)\s*:")
_COMMENT = re.compile(r"^\s+#:\s?(.*)$")


def plain(text: str) -> str:
    """``text`` without reST/markdown markup: roles, double backquotes, ``**bold**`` and ``*emphasis*``."""
    text = _ROLE.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    text = _INTERPRETED.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    return _EMPHASIS.sub(r"\1", text)


def type_text(annotation: Any) -> str:
    """A parameter's type as a user reads it: ``prompt | response | full``, ``int | None``, ``list[str]``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else type_text(a) for a in args)
    if origin is not None and args:
        name = getattr(origin, "__name__", str(origin).replace("typing.", ""))
        return f"{name}[{', '.join('...' if a is Ellipsis else type_text(a) for a in args)}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def default_text(info: Any) -> str:
    """A pydantic field's default as a recipe spells it (``null``, ``true``, ``prompt``), or ``required``."""
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.is_required():
        return "required"
    else:
        value = info.default
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # quoted when the bare text would hide something (empty, newlines, edges)
        return value if value and value.isprintable() and value == value.strip() else json.dumps(value)
    return repr(value)


def _comments(cls: type) -> dict[str, str]:
    """``#:`` comments right above each annotated attribute in the source of ``cls`` and its bases."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in source.splitlines()[1:]:
            comment = _COMMENT.match(line)
            if comment:
                pending.append(comment.group(1).strip())
                continue
            field = _FIELD.match(line)
            if field and pending:
                found[field.group(1)] = " ".join(pending)
            pending = []
    return found


#: Abbreviations whose full stop ends no sentence ("Xu et al. 2024", "e.g. x").
_ABBREV = re.compile(r"\b(et al|e\.g|i\.e|etc|ch|vs|cf|Fig|Sec)\.$")


def _sentences(text: str) -> list[str]:
    """``text`` (one line) cut into sentences, not after an abbreviation."""
    sentences: list[str] = []
    for piece in re.split(r"(?<=[.!?])\s+", text):
        if sentences and _ABBREV.search(sentences[-1]):
            sentences[-1] += " " + piece
        else:
            sentences.append(piece)
    return sentences


def _first_sentence(text: str) -> str:
    sentences = _sentences(" ".join(plain(text).split()))
    return sentences[0] if sentences else ""


#: Help for parameters many stages share, where a stage's source says nothing of its own.
COMMON = {
    "model": "Handle of the model under the recipe's models:.",
    "seed": "Seed of the random choices (the same seed gives the same rows).",
    "batch_size": "Rows per batch (one cached shard each: the unit of resume).",
    "on": "Text compared: prompt (system + user turns), response, or full (both).",
    "keep": "Which row of a group stays: first, longest, or highest:<column>.",
    "threshold": "Similarity at or above which two rows count as duplicates.",
    "scope": "Rows compared: global, across_prompts or within_prompt (default by on).",
    "warn_share": "Warn (log, manifest, report) when more than this share of the input is removed.",
    "temperature": "Sampling temperature (0: greedy).",
    "top_p": "Nucleus sampling: keep the smallest token set with this probability mass.",
    "max_tokens": "Most tokens generated per call.",
    "top_logprobs": "Top log-probabilities asked per position.",
    "exact_max": "Largest row count searched exactly; above it an approximate index is used.",
    "k": "Neighbours (or components) considered.",
    "n": "Samples drawn per row.",
    "score": "Column of the score that ranks rows.",
    "tau": "Keep a row only if its cosine similarity to every kept row is at most tau.",
    "min_prompt_chars": "Set aside rows whose prompt is shorter than this (characters).",
    "max_prompt_chars": "Set aside rows whose prompt is longer than this (characters).",
    "min_response_chars": "Set aside rows with a response shorter than this (characters).",
    "max_response_chars": "Set aside rows with a response longer than this (characters).",
    "drop_empty": "Set aside rows with an empty or whitespace-only turn.",
    "include": "Regex patterns one of which must match (regex_on).",
    "exclude": "Regex patterns none of which may match (regex_on).",
    "regex_on": "Text the include/exclude patterns are matched against.",
    "refusals": "Set aside responses that open with a refusal.",
    "refusal_patterns": "Own refusal regexes instead of the built-in ones.",
    "truncated": "Set aside responses that look cut off (open code fence, no final punctuation).",
    "truncated_min_chars": "Only responses at least this long are checked for truncation.",
    "lowercase": "Compare texts in lower case.",
    "strip_punctuation": "Compare texts without punctuation.",
    "ngram": "Words per shingle.",
    "num_perm": "MinHash permutations (signature length).",
    "bands": "LSH bands (default: chosen for threshold).",
    "rows": "Rows per LSH band (default: chosen for threshold).",
    "verify": "Check each candidate pair's estimated Jaccard against threshold (removes LSH false positives).",
    "budget": "Rows to keep: a fraction of the pool, or a count.",
    "fraction": "Share of the rows to keep.",
    "count": "Number of rows to keep.",
}


def short(text: str, width: int = 100) -> str:
    """``text`` cut at a word boundary to ``width`` characters, with an ellipsis when cut."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    return text[: width - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def parameter_lines(cls: type) -> list[tuple[str, str, str, str]]:
    """``(name, type, default, short help)`` for each parameter of a stage class, in declaration order."""
    comments = _comments(cls)
    rows = []
    for name, info in cls.__pydantic_fields__.items():  # type: ignore[attr-defined]
        helptext = _first_sentence(comments.get(name) or info.description or COMMON.get(name, ""))
        rows.append((name, type_text(info.annotation), short(default_text(info), 40), short(helptext)))
    return rows


def describe(cls: type, name: str) -> str:
    """The plain-text page of ``curate stages NAME``: header, tables, docstring, one line per parameter."""
    takes = ", ".join(t for t in ("conversation", "candidates", "preference") if t in cls.accepts)  # type: ignore[attr-defined]
    lines = [
        f"{name}  ({cls.kind} stage)",  # type: ignore[attr-defined]
        f"  paper:  {plain(cls.paper or '-')}",  # type: ignore[attr-defined]
        f"  tables: {takes}" + ("  (a source: makes its own rows)" if cls.is_source else ""),  # type: ignore[attr-defined]
        "",
        textwrap.indent(plain(inspect.cleandoc(cls.__doc__ or "")), "  "),
        "",
        "parameters (name, type, default, what it does):",
    ]
    rows = parameter_lines(cls)
    if not rows:
        lines.append("  (none)")
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
    for row in rows:
        cells = [row[i].ljust(min(widths[i], 40)) for i in range(3)]
        lines.append(("  " + "  ".join(cells) + ("  " + row[3] if row[3] else "")).rstrip())
    return "\n".join(lines)
