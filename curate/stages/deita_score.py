"""Deita complexity x quality scores of instructions and responses (issue #5, ``deita_score``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import polars as pl
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from curate.errors import InputDataError
from curate.execution import Shape
from curate.llm.base import Sampling
from curate.pipeline import Context, Stage
from curate.synth import scoring
from curate.synth.rows import model_key, row_seeds

Turn = tuple[str, str]  # (instruction, response)


def conversation_turns(messages: Sequence[dict[str, str]] | None) -> list[Turn]:
    """(user, following assistant) pairs of a conversation; system turns and a trailing unanswered user are skipped."""
    turns: list[Turn] = []
    pending: str | None = None
    for m in messages or []:
        if m is None:
            continue
        if m["role"] == "user":
            pending = m.get("content") or ""
        elif m["role"] == "assistant" and pending is not None:
            turns.append((pending, m.get("content") or ""))
            pending = None
    return turns


def _preference_turn(prompt: Sequence[dict[str, str]] | None, chosen: Sequence[dict[str, str]] | None) -> list[Turn]:
    users = [m.get("content") or "" for m in prompt or [] if m is not None and m["role"] == "user"]
    answer = "\n".join(m.get("content") or "" for m in chosen or [] if m is not None and m["role"] == "assistant")
    return [(users[-1], answer)] if users else []


@dataclass(config=ConfigDict(extra="forbid"))
class DeitaScore(Stage):
    """Score each example's instruction complexity and response quality as deita does (Liu et al. 2024,
    "What Makes Good Data for Alignment? A Comprehensive Study of Automatic Data Selection in Instruction
    Tuning", section 2).  Why: deita showed that ranking by complexity x quality and then keeping a diverse
    subset (``deita_select``) matches full-data fine-tuning with a fraction of the rows.

    **Scores.**  Each score is the expected value ``sum k * p(k)`` over the model's probabilities of the score
    tokens ``1..6``, renormalised over those six, after a scoring prompt (curate's own texts,
    :mod:`curate.synth.scoring`) whose answer is prefilled with ``Score:``.  The digit tokens are found by their
    text in whatever the backend returns as top-k log-probabilities (``Sampling(logprobs=top_logprobs,
    max_tokens=2, temperature=0)``; the first generated position that is not whitespace is read, since some
    tokenizers emit the space before a digit as its own token), so no token id is hard-coded and the
    transformers, vLLM and OpenAI-compatible backends all work.  A backend that can render the chat template
    locally gets the prefilled prompt through ``generate``; one that cannot (HTTP without a tokenizer) gets the
    scoring conversation through ``chat`` and its first answer token is read.  When no probability of a digit
    comes back (no logprobs, or no digit among the top-k) the score is null and ``deita_note`` says why: never
    a silent default.  Deita's scorers are fine-tuned Llama models; any instruction model (default ``gen``,
    SmolLM2) can be used here, with weaker scores.

    **Tables.**  ``conversation`` (the primary use): every (user, next assistant) turn is scored; complexity
    reads the turn's user message alone, quality the user message and the assistant's answer; system turns and
    a trailing unanswered user turn are not scored.  ``preference``: the last user message of ``prompt`` and the
    ``chosen`` response (its quality: the response the row teaches), one turn.

    **Columns.**  ``deita_complexity_turns``, ``deita_quality_turns`` (``list<f64>``, one per turn);
    ``deita_complexity``, ``deita_quality`` (f64: the turn's value for one turn, the mean over turns for several);
    ``deita_score`` (f64): ``sum over turns of complexity x quality`` (deita's multi-turn rule), null when any
    turn's score is null or no turn exists; ``deita_note`` (str, null when all is well).  Rows go through
    :meth:`Context.map_rows`, so a refreshed input scores only its new rows.  Notes: ``scored``,
    ``null_scores``, ``mean_score``.
    """

    name: ClassVar[str] = "deita_score"
    kind: ClassVar = "batch"
    shape: ClassVar[Shape] = "batch"
    paper: ClassVar[str] = "Liu et al. 2024, What Makes Good Data for Alignment? (deita)"
    model_params: ClassVar[tuple[str, ...]] = ("model",)

    #: Handle of the scoring LLM under ``models:``.
    model: str = "gen"
    #: Top log-probabilities asked per position (OpenAI-compatible servers allow at most 20; local backends more).
    top_logprobs: int = Field(20, ge=6)
    seed: int = Field(0, ge=0)
    #: Rows per model call (one cached shard each).
    batch_size: int = Field(32, ge=1)

    accepts: ClassVar[frozenset[str]] = frozenset({"conversation", "preference"})

    def adds(self, table: str) -> dict[str, pl.DataType | None]:
        turns = pl.List(pl.Float64())
        return {"deita_complexity_turns": turns, "deita_quality_turns": turns, "deita_complexity": pl.Float64(),
                "deita_quality": pl.Float64(), "deita_score": pl.Float64(), "deita_note": pl.String()}

    def _prefill(self, llm: Any) -> bool:
        try:
            llm.render([{"role": "user", "content": "ping"}], add_generation_prompt=True)
        except Exception:  # a backend without a local tokenizer cannot prefill: use chat
            return False
        return True

    def sampling(self, keys: Sequence[str]) -> Sampling:
        """The sampling of scoring calls, one per key (public so the benchmark times the same call); each
        call's seed comes from its own key (row id and call number), never from its batch."""
        return Sampling(temperature=0.0, max_tokens=2, seed=row_seeds(self.seed, list(keys)),
                        logprobs=self.top_logprobs)

    def score_prompts(self, llm: Any, conversations: list[list[dict[str, str]]], keys: Sequence[str],
                      prefill: bool) -> list[tuple[float | None, str | None]]:
        """``(expected score, reason)`` for each scoring conversation; ``keys``: one per conversation."""
        if not conversations:
            return []
        sampling = self.sampling(keys)
        if prefill:
            prompts = [llm.render(c, add_generation_prompt=True) + scoring.PREFILL for c in conversations]
            outputs = llm.generate(prompts, sampling)
        else:
            outputs = llm.chat(conversations, sampling)
        return [scoring.expected_score(gens[0].logprobs if gens else None) for gens in outputs]

    # -- stage -------------------------------------------------------------------------------------------
    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        table = self.table_of(lf)
        if table not in ("conversation", "preference"):
            raise InputDataError("deita_score scores conversation or preference rows")
        llm = ctx.models.get(self.model, "llm")
        prefill = self._prefill(llm)
        key = model_key(self.fingerprint(), ctx.models.fingerprint(self.model), ("deita_score", table, prefill))

        def run(batch: pl.DataFrame) -> pl.DataFrame:
            return self._score_batch(llm, batch, table, prefill)

        out = ctx.map_rows(lf, run, key, batch_size=self.batch_size, desc=f"{ctx.stage_label} (deita)")
        self._notes(out, ctx)
        return out

    def _score_batch(self, llm: Any, batch: pl.DataFrame, table: str, prefill: bool) -> pl.DataFrame:
        rows = batch.to_dicts()
        if table == "conversation":
            turns = [conversation_turns(row["messages"]) for row in rows]
        else:
            turns = [_preference_turn(row["prompt"], row["chosen"]) for row in rows]
        calls: list[list[dict[str, str]]] = []
        keys: list[str] = []
        for row_id, row_turns in zip(batch["id"].to_list(), turns, strict=True):
            for t, (instruction, response) in enumerate(row_turns):
                calls.append(scoring.complexity_prompt(instruction))
                calls.append(scoring.quality_prompt(instruction, response))
                keys += [f"{row_id}\x1f{t}\x1fc", f"{row_id}\x1f{t}\x1fq"]
        results = iter(self.score_prompts(llm, calls, keys, prefill))
        cols: dict[str, list[Any]] = {k: [] for k in ("ct", "qt", "c", "q", "s", "note")}
        for row_turns in turns:
            cs: list[float | None] = []
            qs: list[float | None] = []
            notes: list[str] = []
            for t in range(len(row_turns)):
                (c, c_why), (q, q_why) = next(results), next(results)
                cs.append(c)
                qs.append(q)
                notes += [f"turn {t + 1} {what}: {why}" for what, why in (("complexity", c_why), ("quality", q_why))
                          if why]
            if not row_turns:
                notes.append("no (user, assistant) turn to score")
            ok = bool(row_turns) and all(x is not None for x in cs + qs)
            cols["ct"].append(cs)
            cols["qt"].append(qs)
            cols["c"].append(_mean(cs))
            cols["q"].append(_mean(qs))
            cols["s"].append(sum(c * q for c, q in zip(cs, qs, strict=True)) if ok else None)  # type: ignore[operator]
            cols["note"].append("; ".join(notes) or None)
        return batch.with_columns(
            pl.Series("deita_complexity_turns", cols["ct"], dtype=pl.List(pl.Float64)),
            pl.Series("deita_quality_turns", cols["qt"], dtype=pl.List(pl.Float64)),
            pl.Series("deita_complexity", cols["c"], dtype=pl.Float64),
            pl.Series("deita_quality", cols["q"], dtype=pl.Float64),
            pl.Series("deita_score", cols["s"], dtype=pl.Float64),
            pl.Series("deita_note", cols["note"], dtype=pl.String),
        )

    def _notes(self, out: pl.LazyFrame, ctx: Context) -> None:
        figures = out.select(
            pl.col("deita_score").is_not_null().sum().alias("scored"),
            pl.col("deita_score").is_null().sum().alias("null"),
            pl.col("deita_score").mean().alias("mean"),
        ).collect().row(0, named=True)
        ctx.note("scored", int(figures["scored"] or 0))
        ctx.note("null_scores", int(figures["null"] or 0))
        ctx.note("mean_score", round(float(figures["mean"]), 4) if figures["mean"] is not None else None)


def _mean(values: list[float | None]) -> float | None:
    """Mean over turns, null when a turn is null or there is none (a partial mean would hide the failure)."""
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None) / len(values)
