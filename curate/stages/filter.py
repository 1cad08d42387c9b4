"""Rule-based filters: length bounds, regex include/exclude, empty turns, refusals, truncated responses."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

import polars as pl
from pydantic import ConfigDict, field_validator
from pydantic.dataclasses import dataclass

from curate.execution import Shape
from curate.pipeline import Context, Stage
from curate.schema import prompt_text, response_texts, text_for

#: Openings of a response that declines the request.  Matched case-insensitively at the start of a
#: response (after whitespace), the way the Alpaca/ShareGPT cleaning scripts and Magpie's filters do.
DEFAULT_REFUSAL_PATTERNS: tuple[str, ...] = (
    r"i'?m sorry,? but",
    r"i am sorry,? but",
    r"i apologi[sz]e,? but",
    r"as an ai(?: language model)?",
    r"as a language model",
    r"i cannot (?:help|assist|provide|comply|fulfil)",
    r"i can'?t (?:help|assist|provide|comply|fulfil)",
    r"i'?m (?:not able|unable) to (?:help|assist|provide|comply)",
    r"i am (?:not able|unable) to (?:help|assist|provide|comply)",
    r"i won'?t (?:be able to )?(?:help|assist|provide)",
)


@dataclass(config=ConfigDict(extra="forbid"))
class Filter(Stage):
    """Drop rows that fail cheap, explainable rules, each with its reason in quarantine.

    Heuristic quality filters as used to clean instruction data before scoring (Alpaca-cleaned, ShareGPT
    cleaning in Vicuna, Magpie's filter step; Xu et al. 2024): length bounds on the prompt and on every
    response, regex patterns that must (``include``) or must not (``exclude``) match, empty or
    whitespace-only turns, responses that open with a refusal, and responses that look cut off
    (an unclosed code fence, or a long response ending without terminal punctuation).

    Every response of a row is checked (both sides of a preference pair; every candidate), because a pair
    with an empty or truncated side teaches nothing.  Expression stage: stays lazy.
    """

    name: ClassVar[str] = "filter"
    kind: ClassVar = "expression"
    shape: ClassVar[Shape] = "row"
    paper: ClassVar[str] = "heuristic cleaning as in Magpie (Xu et al. 2024) and Alpaca-cleaned"

    min_prompt_chars: int | None = None
    max_prompt_chars: int | None = None
    min_response_chars: int | None = None
    max_response_chars: int | None = None
    drop_empty: bool = True
    include: list[str] | None = None
    exclude: list[str] | None = None
    regex_on: Literal["prompt", "response", "full"] = "full"
    refusals: bool = False
    refusal_patterns: list[str] | None = None
    truncated: bool = False
    truncated_min_chars: int = 200

    @field_validator("include", "exclude", "refusal_patterns")
    @classmethod
    def _compile(cls, patterns: list[str] | None) -> list[str] | None:
        for pattern in patterns or []:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        return patterns

    @field_validator(
        "min_prompt_chars", "max_prompt_chars", "min_response_chars", "max_response_chars", "truncated_min_chars"
    )
    @classmethod
    def _non_negative(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError("must be >= 0")
        return value

    def _checks(self, table: str) -> list[tuple[pl.Expr, pl.Expr]]:
        """(failed, reason) pairs in the order they are reported: the first failing check is the reason."""
        prompt = prompt_text(table)
        responses = response_texts(table)
        response_lengths = responses.list.eval(pl.element().str.len_chars())
        shortest = response_lengths.list.min()
        longest = response_lengths.list.max()
        checks: list[tuple[pl.Expr, pl.Expr]] = []

        if self.drop_empty:
            content = "messages" if table == "conversation" else "prompt"
            turn = pl.element()
            empty_turn = pl.col(content).list.eval(
                (turn.struct.field("content").fill_null("").str.strip_chars() == "")
                & (turn.struct.field("role") != "assistant")
            ).list.any()
            empty_response = responses.list.eval(pl.element().fill_null("").str.strip_chars() == "").list.any()
            checks.append((empty_turn, pl.lit("empty or whitespace-only prompt message")))
            no_response = responses.list.len() == 0
            if table != "conversation":
                checks.append((no_response, pl.lit("no response")))
            checks.append((empty_response, pl.lit("empty or whitespace-only response")))
        if self.min_prompt_chars is not None:
            checks.append(
                (prompt.str.len_chars() < self.min_prompt_chars,
                 pl.lit(f"prompt shorter than {self.min_prompt_chars} chars"))
            )
        if self.max_prompt_chars is not None:
            checks.append(
                (prompt.str.len_chars() > self.max_prompt_chars,
                 pl.lit(f"prompt longer than {self.max_prompt_chars} chars"))
            )
        if self.min_response_chars is not None:
            checks.append(
                (shortest < self.min_response_chars,
                 pl.lit(f"response shorter than {self.min_response_chars} chars"))
            )
        if self.max_response_chars is not None:
            checks.append(
                (longest > self.max_response_chars,
                 pl.lit(f"response longer than {self.max_response_chars} chars"))
            )
        target = text_for(table, self.regex_on)
        for pattern in self.include or []:
            checks.append((~target.str.contains(pattern), pl.lit(f"does not match include pattern {pattern!r}")))
        for pattern in self.exclude or []:
            checks.append((target.str.contains(pattern), pl.lit(f"matches exclude pattern {pattern!r}")))
        if self.refusals:
            patterns = self.refusal_patterns or list(DEFAULT_REFUSAL_PATTERNS)
            opening = r"(?i)^\s*(?:" + "|".join(patterns) + ")"
            refused = responses.list.eval(pl.element().str.contains(opening)).list.any()
            checks.append((refused, pl.lit("refusal")))
        if self.truncated:
            fences = responses.list.eval(pl.element().str.count_matches("```") % 2 == 1).list.any()
            unfinished = responses.list.eval(
                (pl.element().str.len_chars() >= self.truncated_min_chars)
                & ~pl.element().str.strip_chars().str.contains(r"[.!?…:;)\]}\"'`*|>。！？]$")
            ).list.any()
            checks.append((fences, pl.lit("truncated response (unclosed code fence)")))
            checks.append((unfinished, pl.lit("truncated response (no end-of-sentence punctuation)")))
        return checks

    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        checks = self._checks(self.table_of(lf))
        if not checks:
            return lf
        reason: pl.Expr = pl.lit(None, dtype=pl.String)
        for failed, why in reversed(checks):
            reason = pl.when(failed.fill_null(False)).then(why).otherwise(reason)
        flagged = lf.with_columns(reason.alias("_filter_reason"))
        ctx.quarantine(flagged.filter(pl.col("_filter_reason").is_not_null()), pl.col("_filter_reason"))
        return flagged.filter(pl.col("_filter_reason").is_null()).drop("_filter_reason")
