"""LLM-as-a-judge: pointwise rubric scores and swap-checked pairwise verdicts (docs/architecture.md, ``judge``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from curate.errors import DegenerateJudgeError, InputDataError
from curate.execution import Shape
from curate.llm.base import Generation, Sampling
from curate.pipeline import Context, Stage
from curate.schema import RESPONSES
from curate.synth import judging
from curate.synth.rows import model_key, prompt_until_last_user, row_seeds

log = logging.getLogger("curate")

#: The degeneracy guard looks at the first batches that hold at least this many pairs (pointwise: responses).
GUARD_MIN = 20
#: ... and stops when one position wins more than this share of the decided verdicts.
GUARD_SHARE = 0.9
#: Fields of the Stage's parameters that do not change any verdict (left out of the shard cache key, so a
#: re-run with ``allow_degenerate: true`` after the guard stopped reuses the verdicts already computed).
_NOT_IN_KEY = ("allow_degenerate",)

_POINT = pl.Struct({"score": pl.Float64, "parsed": pl.Float64, "reason": pl.String, "rationale": pl.String,
                    "chars": pl.Int64})


def _assistant_text(messages: Sequence[dict[str, str]] | None) -> str:
    return "\n".join(m["content"] for m in messages or [] if m["role"] == "assistant")


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    if sx == 0 or sy == 0:
        return None
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / (sx * sy), 4)


def _positions(frame: pl.DataFrame, table: str) -> tuple[int, int, int]:
    """(first-position wins, second-position wins, decided verdicts) over both orders of every pair."""
    if table == "candidates":
        first, second = int(frame["judge_first_wins"].sum() or 0), int(frame["judge_second_wins"].sum() or 0)
        return first, second, first + second
    raw = pl.concat([frame["judge_verdict_first"], frame["judge_verdict_swapped"]])
    first, second = int((raw == "a").sum()), int((raw == "b").sum())
    return first, second, first + second


def _pairs(frame: pl.DataFrame, table: str) -> int:
    if table != "candidates":
        return frame.height
    n = frame["responses"].list.len()
    return int((n * (n - 1) // 2).sum() or 0)


def _consistency(frame: pl.DataFrame, table: str) -> str:
    if table == "candidates":
        n, c = int(frame["judge_comparisons"].sum() or 0), int(frame["judge_consistent_comparisons"].sum() or 0)
        return f"{c / n:.2f}" if n else "n/a"
    parsed = frame["judge_consistent"].drop_nulls()
    return f"{parsed.mean():.2f}" if parsed.len() else "n/a"


@dataclass(config=ConfigDict(extra="forbid"))
class Judge(Stage):
    """Score responses with an LLM judge, pointwise or pairwise.

    Follows Zheng et al. 2023 (MT-Bench: single-answer grading, and pairwise comparison judged in both
    orders because judges favour a position), UltraFeedback (Cui et al. 2023: rubric ratings of every
    candidate, the input of best-vs-worst pairs) and Prometheus (Kim et al. 2023: a configurable rubric,
    a short justification, then an integer score).  The prompts are curate's own
    (:mod:`curate.synth.judging`); ``rubric`` and ``scale`` (1-5 or 1-10) are parameters.

    **How the answer is read** (``rating_from``).  ``text``: the judge writes a short rationale and a
    ``Rating: N`` / ``Verdict: X`` line, parsed leniently (:func:`~curate.synth.judging.parse_rating`); with
    ``logprobs`` and a backend that returns them, the score is the expected value of the distribution of the
    rating token over ``1..scale`` (G-Eval, Liu et al. 2023): finer than one sampled digit, so ties, which
    ``pairs`` cannot use, get rarer.  ``prefill``: the judge's answer is prefilled with ``Rating:`` /
    ``Verdict:`` and only the next token's probabilities are read (as deita scores, Liu et al. 2024): three
    generated tokens per call, no rationale, and the only reading that small models (which copy the format
    placeholder instead of rating) get right.  ``auto`` (default): prefill when the backend renders the chat
    template locally, else text.  Unreadable output gives a null score and a reason, never an error.

    **pointwise**: each response gets a rating.  Candidates: ``responses[].score`` is set and ``judge``
    holds, aligned with ``responses``, ``{score, parsed, reason, rationale, chars}``.  Preference: ``score_chosen`` and
    ``score_rejected`` are set, with ``judge_reason_*``, ``judge_rationale_*``, ``judge_chars_*``.
    Conversation: the last assistant turn is graded into ``judge_score`` (+ reason, rationale, chars).

    **pairwise**: each pair is judged twice, the second time with the positions swapped; a winner only when
    both orders agree, two ties or disagreeing orders give a tie (``judge_consistent`` false), an unreadable
    verdict gives null (``pairwise_rule: calibrated`` decides from position-averaged probabilities instead,
    Wang et al. 2023).  Preference: ``judge_verdict`` in chosen / rejected / tie (agreement with the
    dataset's label is noted).  Candidates: every pair of responses is judged and ``responses[].score`` is
    the share of its decided comparisons a response won (ties count half), in 0..1.

    Length bias (Zheng et al. 2023; Dubois et al. 2024): the character length of every judged response is
    stored, and the notes report the correlation of score and length (pointwise) or how often the longer
    response won (pairwise), with ``swap_consistency`` and ``position_bias`` (the share of decided verdicts,
    over both orders, that named the response shown first: 0.5 is unbiased, 1.0 always "A").  Model calls go
    through :meth:`Context.map_batches`.

    **Degeneracy guard.**  A small judge can answer "A" to every pair (the embedded 135M model does: swap
    consistency 0, every ``agree`` verdict a tie), and labelling 100k pairs with it only spends time.  So the
    first batches holding at least 20 pairs (pointwise: 20 responses) are judged first, and the stage stops
    with :class:`~curate.errors.DegenerateJudgeError` (exit code 5) when one position won over 90% of their
    decided verdicts, no verdict named a winner, or (pointwise) every score is the same.  The decision reads
    the verdicts whether computed now or cached, so a re-run decides the same; ``allow_degenerate: true``
    lets such a judge through (recorded in the notes), reusing the verdicts already computed.
    ``curate judge-eval`` measures a judge against human labels before it is used.
    """

    name: ClassVar[str] = "judge"
    kind: ClassVar = "batch"
    shape: ClassVar[Shape] = "batch"
    paper: ClassVar[str] = "Zheng et al. 2023, MT-Bench LLM-as-a-judge; Cui et al. 2023, UltraFeedback; Kim et al. 2023"
    model_params: ClassVar[tuple[str, ...]] = ("model",)
    #: 2: each call seeded from its row's id (version 1 seeded each batch).
    version: ClassVar[int] = 2

    model: str = "judge"
    mode: Literal["pointwise", "pairwise"] = "pointwise"
    scale: Literal[5, 10] = 5
    rubric: str = judging.DEFAULT_RUBRIC
    #: Ask for the rating before the rationale (cheaper, the rating is never cut off by max_tokens).
    rating_first: bool = False
    #: How the answer is read. ``text``: the judge writes (rationale and) rating, parsed from the text.
    #: ``prefill``: the judge's answer is prefilled with ``Rating:`` / ``Verdict:`` and the rating is read
    #: from the next token's probabilities (no rationale; 3 tokens per call instead of up to max_tokens; the
    #: only way small models follow the format).  ``auto``: prefill when the backend can render the template.
    rating_from: Literal["auto", "text", "prefill"] = "auto"
    #: Read pointwise scores as expected values from the rating token's log-probabilities when available.
    logprobs: bool = True
    top_logprobs: int = Field(20, ge=2, le=20)
    temperature: float = Field(0.0, ge=0.0)
    max_tokens: int = Field(256, ge=4)
    seed: int = Field(0, ge=0)
    #: Pairwise decision.  ``agree``: a winner only when both orders name it (Zheng et al. 2023).
    #: ``calibrated`` (prefill only): each side's win probability averaged over both positions, a winner when
    #: the averages differ by more than ``tie_margin`` (Wang et al. 2023); removes a constant position bias.
    pairwise_rule: Literal["agree", "calibrated"] = "agree"
    tie_margin: float = Field(0.0, ge=0.0, le=1.0)
    #: At most this many responses per candidates row in pairwise mode (k*(k-1) calls per row).
    max_pairwise_responses: int = Field(6, ge=2)
    #: Rows per model call (one cached shard each).
    batch_size: int = Field(32, ge=1)
    #: Judge all rows even when the first 20 pairs show a degenerate judge (one position wins > 90% of decided
    #: verdicts, no winner at all, or one pointwise score for everything); the notes still say so.
    allow_degenerate: bool = False

    # -- model calls -------------------------------------------------------------------------------------
    def _uses_prefill(self, llm: Any) -> bool:
        if self.rating_from != "auto":
            return self.rating_from == "prefill"
        try:
            llm.render([{"role": "user", "content": "ping"}], add_generation_prompt=True)
        except Exception:  # a backend without a local tokenizer (HTTP without tokenizer:) cannot prefill
            return False
        return True

    def _generations(self, llm: Any, conversations: list[list[dict[str, str]]], ids: list[str], prefill: str | None,
                     ) -> list[Generation | None]:
        if not conversations:
            return []
        if prefill is not None:
            sampling = Sampling(temperature=0.0, max_tokens=3, seed=row_seeds(self.seed, ids),
                                logprobs=self.top_logprobs)
            prompts = [llm.render(c, add_generation_prompt=True) + prefill for c in conversations]
            outputs = llm.generate(prompts, sampling)
        else:
            sampling = Sampling(
                temperature=self.temperature, max_tokens=self.max_tokens, seed=row_seeds(self.seed, ids),
                logprobs=self.top_logprobs if (self.logprobs and self.mode == "pointwise") else None,
            )
            outputs = llm.chat(conversations, sampling)
        return [gens[0] if gens else None for gens in outputs]

    def _rate_many(self, llm: Any, conversations: list[list[dict[str, str]]], ids: list[str], prefill: bool,
                   ) -> list[dict[str, Any]]:
        gens = self._generations(llm, conversations, ids, judging.RATING_PREFIX if prefill else None)
        out = []
        for gen in gens:
            if prefill:
                top = judging.first_label_position(gen.logprobs if gen is not None else None)
                score, parsed, how = judging.rating_distribution(top, self.scale)
                if not self.logprobs:
                    score = parsed
                out.append({"score": score, "parsed": parsed, "reason": how, "rationale": ""})
                continue
            text = gen.text if gen is not None else ""
            rating = judging.parse_rating(text, self.scale, rating_first=self.rating_first)
            score, how = judging.expected_rating(text, gen.logprobs if gen is not None else None, rating, self.scale)
            if score is not None and not self.logprobs:
                score, how = rating.score, "parsed"
            out.append({"score": score, "parsed": rating.score, "reason": rating.reason or how,
                        "rationale": rating.rationale})
        return out

    def _verdicts(self, llm: Any, conversations: list[list[dict[str, str]]], ids: list[str], prefill: bool,
                  ) -> list[tuple[str | None, dict[str, float] | None]]:
        gens = self._generations(llm, conversations, ids, judging.VERDICT_PREFIX if prefill else None)
        if prefill:
            out = []
            for g in gens:
                top = judging.first_label_position(g.logprobs if g else None)
                out.append((judging.verdict_distribution(top)[0], judging.verdict_probabilities(top)))
            return out
        return [(judging.parse_verdict(g.text if g is not None else "")[0], None) for g in gens]

    def _pairwise(self, llm: Any, items: list[tuple[list[dict[str, str]], str, str]], ids: list[str],
                  prefill: bool) -> list[dict]:
        calls = []
        for prompt, x, y in items:
            calls.append(judging.pairwise_prompt(prompt, x, y, rubric=self.rubric, verdict_first=prefill))
            calls.append(judging.pairwise_prompt(prompt, y, x, rubric=self.rubric, verdict_first=prefill))
        verdicts = self._verdicts(llm, calls, [f"{k}\x1f{order}" for k in ids for order in ("ab", "ba")], prefill)
        out = []
        for i in range(len(items)):
            (first, p_first), (second, p_second) = verdicts[2 * i], verdicts[2 * i + 1]
            verdict, consistent, reason = judging.combine_swapped(first, second)
            if self.pairwise_rule == "calibrated" and p_first is not None and p_second is not None:
                verdict = judging.calibrated_verdict(p_first, p_second, self.tie_margin)
                reason = None if consistent else "orders disagree: verdict from position-averaged probabilities"
            out.append({"verdict": verdict, "consistent": consistent, "reason": reason, "first": first,
                        "swapped": second})
        return out

    # -- table contract ----------------------------------------------------------------------------------
    def accepted_tables(self) -> frozenset[str]:
        return frozenset({"candidates", "preference"}) if self.mode == "pairwise" else self.accepts

    def table_hint(self, table: str) -> str:
        return " (pairwise compares two responses: use mode pointwise, or respond with n >= 2 first)"

    def adds(self, table: str) -> dict[str, pl.DataType | None]:
        sides = ("chosen", "rejected")
        if self.mode == "pairwise":
            if table == "preference":
                return {"judge_verdict": pl.String(), "judge_consistent": pl.Boolean(), "judge_reason": pl.String(),
                        "judge_verdict_first": pl.String(), "judge_verdict_swapped": pl.String(),
                        **{f"judge_chars_{s}": pl.Int64() for s in sides}}
            return {c: pl.Int64() for c in ("judge_comparisons", "judge_consistent_comparisons", "judge_first_wins",
                                            "judge_second_wins")}
        if table == "candidates":
            return {"judge": pl.List(_POINT)}
        if table == "preference":
            return {f"judge_{k}_{s}": (pl.Int64() if k == "chars" else pl.String())
                    for s in sides for k in ("reason", "rationale", "chars")}
        return {"judge_score": pl.Float64(), "judge_reason": pl.String(), "judge_rationale": pl.String(),
                "judge_chars": pl.Int64()}

    # -- stage -------------------------------------------------------------------------------------------
    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        table = self.table_of(lf)
        if self.mode == "pairwise" and table == "conversation":
            raise InputDataError("judge mode pairwise needs candidates or preference rows (two responses to compare)")
        llm = ctx.models.get(self.model, "llm")
        fn = {"pointwise": self._pointwise_batch, "pairwise": self._pairwise_batch}[self.mode]
        prefill = self._uses_prefill(llm)
        extra: tuple[Any, ...] = ("judge", table, prefill)
        if self.mode == "pairwise" and table == "candidates":
            extra += ("positions",)  # the output gained judge_first_wins / judge_second_wins
        key = model_key(self._key_fingerprint(), ctx.models.fingerprint(self.model), extra)
        ctx.note("rating_from", "prefill" if prefill else "text")

        def run(batch: pl.DataFrame) -> pl.DataFrame:
            return fn(llm, batch, table, prefill)

        desc = f"{ctx.stage_label} (judge)"
        head_work = self._guard(lf, table, ctx, lambda head: ctx.map_batches(head, run, key,
                                                                             batch_size=self.batch_size, desc=desc))
        out = ctx.map_batches(lf, run, key, batch_size=self.batch_size, desc=desc)
        for unit, n in head_work.items():  # the full pass found the guard's rows cached: they were computed now
            ctx.count(f"{unit}_computed", n)
            ctx.count(f"{unit}_cached", -n)
        self._notes(out, table, ctx)
        return out

    def _key_fingerprint(self) -> str:
        """:meth:`fingerprint` without the parameters that change no verdict (:data:`_NOT_IN_KEY`)."""
        import json

        import xxhash

        params = {k: v for k, v in self.params().items() if k not in _NOT_IN_KEY}
        payload = json.dumps({"stage": self.name, "version": self.version, "params": params}, sort_keys=True,
                             default=str)
        return xxhash.xxh3_128_hexdigest(payload.encode())

    # -- degeneracy guard ------------------------------------------------------------------------------------
    def _units(self, lf: pl.LazyFrame, table: str) -> pl.Expr:
        """What one row contributes to the guard's count: pairs (pairwise) or judged responses (pointwise)."""
        if table == "candidates":
            n = pl.col("responses").list.len().clip(upper_bound=self.max_pairwise_responses)
            return (n * (n - 1) // 2) if self.mode == "pairwise" else n
        per_row = 2 if table == "preference" and self.mode == "pointwise" else 1
        return pl.int_range(pl.len(), dtype=pl.Int64) * 0 + per_row

    def _guard_rows(self, lf: pl.LazyFrame, table: str) -> int | None:
        """Rows of the first whole batches holding ``GUARD_MIN`` pairs, or None when the input has fewer."""
        units = lf.head(GUARD_MIN * 50).select(self._units(lf, table).alias("u")).collect()["u"]
        reached = (units.cum_sum() >= GUARD_MIN).arg_true()
        if reached.len() == 0:
            return None
        rows = int(reached[0]) + 1
        return -(-rows // self.batch_size) * self.batch_size

    def _guard(self, lf: pl.LazyFrame, table: str, ctx: Context,
               judge_rows: Callable[[pl.LazyFrame], pl.LazyFrame]) -> dict[str, int]:
        """Judge the first batches (cached like the rest: the full pass reuses them) and stop on a degenerate
        judge; see the class docstring.  Returns the rows and batches this pass computed (the full pass counts
        them as cached; the caller moves them back), with the stage's counters left as they were."""
        rows = self._guard_rows(lf, table)
        if rows is None:
            ctx.note("degeneracy_check", f"skipped: fewer than {GUARD_MIN} {self._unit_name()}")
            return {}
        counters = ("rows_computed", "rows_cached", "batches_computed", "batches_cached")
        notes = ctx.stats.setdefault(ctx.stage_label, {})
        before = {k: notes[k] for k in counters if k in notes}
        head = judge_rows(lf.head(rows)).collect()
        work = {unit: notes.get(f"{unit}_computed", 0) - before.get(f"{unit}_computed", 0)
                for unit in ("rows", "batches")}
        for k in counters:
            if k in before:
                notes[k] = before[k]
            else:
                notes.pop(k, None)
        problem = self._degenerate(head, table)
        if problem is None:
            ctx.note("degeneracy_check", f"passed on the first {head.height} rows")
            return work
        who = f"judge stage '{ctx.stage_label}', model '{self.model}' ({self._model_desc(ctx)})"
        if self.allow_degenerate:
            ctx.note("degeneracy_check", f"degenerate, allowed: {problem}")
            log.warning("%s looks degenerate: %s (allow_degenerate: true, judging every row anyway)", who, problem)
            return work
        raise DegenerateJudgeError(
            f"{who} is degenerate: {problem}. Use a stronger judge model"
            + (", `pairwise_rule: calibrated`" if self.mode == "pairwise" and self.pairwise_rule == "agree" else "")
            + " or set `allow_degenerate: true` to judge every row anyway (`curate judge-eval` measures a judge "
            "against human labels)"
        )

    def _unit_name(self) -> str:
        return "pairs" if self.mode == "pairwise" else "judged responses"

    def _model_desc(self, ctx: Context) -> str:
        try:
            spec = ctx.models.spec(self.model)  # a recipe's models:, else the built-in default of the handle
        except Exception:  # the guard's message must not fail on a handle the registry cannot describe
            spec = {}
        if "object" in spec:
            return "a model object registered in the notebook"
        return f"{spec.get('backend', 'transformers')} {spec.get('path') or spec.get('model') or '?'}"

    def _degenerate(self, head: pl.DataFrame, table: str) -> str | None:
        """Why the first verdicts carry no information, or None."""
        if self.mode == "pointwise":
            if table == "candidates":
                scores = head.select(pl.col("judge").explode().struct.field("score"))["score"]
            elif table == "preference":
                scores = pl.concat([head["score_chosen"], head["score_rejected"]])
            else:
                scores = head["judge_score"]
            if scores.n_unique() == 1:
                value = scores[0]
                what = "no score at all (every output unreadable)" if value is None else f"the score {value:g}"
                return f"it gave {what} to every one of the first {scores.len()} judged responses"
            return None
        first, second, decided = _positions(head, table)
        n = _pairs(head, table)
        if self.pairwise_rule == "calibrated":
            if table == "preference":
                won = int(head["judge_verdict"].is_in(["chosen", "rejected"]).sum())
            else:  # a response's score is its share of wins: all 0.5 (or null) means every comparison tied
                scores = head.select(pl.col("responses").explode().struct.field("score"))["score"]
                won = int((scores.drop_nulls() != 0.5).sum())
            if won == 0:
                return f"no calibrated verdict named a winner in the first {n} pairs"
            return None
        if decided == 0:
            return f"no verdict named a winner in the first {n} pairs (both orders: ties or unreadable)"
        for count, position in ((first, "first (A)"), (second, "second (B)")):
            if count / decided > GUARD_SHARE:
                return (f"the {position} position won {count} of {decided} decided verdicts over both orders of "
                        f"the first {n} pairs ({count / decided:.0%}; swap consistency "
                        f"{_consistency(head, table)})")
        return None

    def _pointwise_batch(self, llm: Any, batch: pl.DataFrame, table: str, prefill: bool) -> pl.DataFrame:
        rows = batch.to_dicts()
        ids = batch["id"].to_list()
        calls: list[list[dict[str, str]]] = []
        where: list[tuple[int, int]] = []
        texts: dict[tuple[int, int], str] = {}
        for r, row in enumerate(rows):
            if table == "candidates":
                prompt = list(row["prompt"] or [])
                answers = [resp["content"] for resp in row["responses"] or []]
            elif table == "preference":
                prompt = list(row["prompt"] or [])
                answers = [_assistant_text(row["chosen"]), _assistant_text(row["rejected"])]
            else:
                messages = list(row["messages"] or [])
                prompt = prompt_until_last_user(messages) or []
                answers = [_assistant_text(messages[len(prompt):])] if prompt else [""]
            for s, answer in enumerate(answers):
                texts[(r, s)] = answer or ""
                if prompt and answer and answer.strip():
                    calls.append(judging.pointwise_prompt(prompt, answer, scale=self.scale, rubric=self.rubric,
                                                          rating_first=self.rating_first or prefill))
                    where.append((r, s))
        keys = [f"{ids[r]}\x1f{s}" for r, s in where]  # one seed per call, from its row's id and slot
        results = dict(zip(where, self._rate_many(llm, calls, keys, prefill), strict=True))
        empty = {"score": None, "parsed": None, "reason": "nothing to judge (no prompt or empty response)",
                 "rationale": ""}

        def result(slot: tuple[int, int]) -> dict[str, Any]:
            return {**results.get(slot, empty), "chars": len(texts.get(slot, ""))}

        if table == "candidates":
            judged = [[result((r, s)) for s in range(len(row["responses"] or []))] for r, row in enumerate(rows)]
            responses = [
                [{**resp, "score": j["score"]} for resp, j in zip(row["responses"] or [], js, strict=True)]
                for row, js in zip(rows, judged, strict=True)
            ]
            return batch.with_columns(pl.Series("responses", responses, dtype=RESPONSES),
                                      pl.Series("judge", judged, dtype=pl.List(_POINT)))
        if table == "preference":
            cols = []
            for s, side in enumerate(("chosen", "rejected")):
                res = [result((r, s)) for r in range(len(rows))]
                cols += [
                    pl.Series(f"score_{side}", [x["score"] for x in res], dtype=pl.Float64),
                    pl.Series(f"judge_reason_{side}", [x["reason"] for x in res], dtype=pl.String),
                    pl.Series(f"judge_rationale_{side}", [x["rationale"] for x in res], dtype=pl.String),
                    pl.Series(f"judge_chars_{side}", [x["chars"] for x in res], dtype=pl.Int64),
                ]
            return batch.with_columns(cols)
        res = [result((r, 0)) for r in range(len(rows))]
        return batch.with_columns(
            pl.Series("judge_score", [x["score"] for x in res], dtype=pl.Float64),
            pl.Series("judge_reason", [x["reason"] for x in res], dtype=pl.String),
            pl.Series("judge_rationale", [x["rationale"] for x in res], dtype=pl.String),
            pl.Series("judge_chars", [x["chars"] for x in res], dtype=pl.Int64),
        )

    def _pairwise_batch(self, llm: Any, batch: pl.DataFrame, table: str, prefill: bool) -> pl.DataFrame:
        rows = batch.to_dicts()
        ids = batch["id"].to_list()
        if table == "preference":
            items = [(list(row["prompt"] or []), _assistant_text(row["chosen"]), _assistant_text(row["rejected"]))
                     for row in rows]
            res = self._pairwise(llm, items, ids, prefill)
            names = {"a": "chosen", "b": "rejected", "tie": "tie"}
            return batch.with_columns(
                pl.Series("judge_verdict", [names.get(x["verdict"]) for x in res], dtype=pl.String),
                pl.Series("judge_consistent", [x["consistent"] for x in res], dtype=pl.Boolean),
                pl.Series("judge_reason", [x["reason"] for x in res], dtype=pl.String),
                pl.Series("judge_verdict_first", [x["first"] for x in res], dtype=pl.String),
                pl.Series("judge_verdict_swapped", [x["swapped"] for x in res], dtype=pl.String),
                pl.Series("judge_chars_chosen", [len(x) for _, x, _ in items], dtype=pl.Int64),
                pl.Series("judge_chars_rejected", [len(y) for _, _, y in items], dtype=pl.Int64),
            )
        items, where = [], []
        for r, row in enumerate(rows):
            responses = row["responses"] or []
            if len(responses) > self.max_pairwise_responses:
                raise InputDataError(
                    f"row {row['id']}: {len(responses)} responses; pairwise judging of candidates takes at most "
                    f"max_pairwise_responses={self.max_pairwise_responses} (k*(k-1) model calls per row)"
                )
            for i, j in combinations(range(len(responses)), 2):
                items.append((list(row["prompt"] or []), responses[i]["content"] or "", responses[j]["content"] or ""))
                where.append((r, i, j))
        res = self._pairwise(llm, items, [f"{ids[r]}\x1f{i}\x1f{j}" for r, i, j in where], prefill)
        wins: dict[tuple[int, int], float] = {}
        decided: dict[tuple[int, int], int] = {}
        consistent: dict[int, list[bool]] = {}
        positions = [[0, 0] for _ in rows]  # per row: verdicts (both orders) naming the first / second shown
        for (r, _, _), x in zip(where, res, strict=True):
            for raw in (x["first"], x["swapped"]):
                if raw in ("a", "b"):
                    positions[r][raw == "b"] += 1
        for (r, i, j), x in zip(where, res, strict=True):
            if x["verdict"] is None:
                continue
            consistent.setdefault(r, []).append(bool(x["consistent"]))
            for me, mine in ((i, "a"), (j, "b")):
                decided[(r, me)] = decided.get((r, me), 0) + 1
                wins[(r, me)] = wins.get((r, me), 0.0) + (1.0 if x["verdict"] == mine else
                                                          0.5 if x["verdict"] == "tie" else 0.0)
        responses = []
        for r, row in enumerate(rows):
            responses.append([
                {**resp, "score": wins[(r, k)] / decided[(r, k)] if decided.get((r, k)) else None}
                for k, resp in enumerate(row["responses"] or [])
            ])
        return batch.with_columns(
            pl.Series("responses", responses, dtype=RESPONSES),
            pl.Series("judge_comparisons", [len(consistent.get(r, [])) for r in range(len(rows))], dtype=pl.Int64),
            pl.Series("judge_consistent_comparisons", [sum(consistent.get(r, [])) for r in range(len(rows))],
                      dtype=pl.Int64),
            pl.Series("judge_first_wins", [p[0] for p in positions], dtype=pl.Int64),
            pl.Series("judge_second_wins", [p[1] for p in positions], dtype=pl.Int64),
        )

    # -- notes ---------------------------------------------------------------------------------------------
    def _notes(self, out: pl.LazyFrame, table: str, ctx: Context) -> None:
        """Figures over the whole output (cached batches included): nulls, swap consistency, length bias."""
        if self.mode == "pointwise":
            if table == "candidates":
                flat = out.select(pl.col("judge")).explode("judge").unnest("judge").select("score", "chars")
            elif table == "preference":
                flat = pl.concat([
                    out.select(pl.col(f"score_{s}").alias("score"), pl.col(f"judge_chars_{s}").alias("chars"))
                    for s in ("chosen", "rejected")
                ])
            else:
                flat = out.select(pl.col("judge_score").alias("score"), pl.col("judge_chars").alias("chars"))
            frame = flat.filter(pl.col("chars").is_not_null()).collect()
            scored = frame.filter(pl.col("score").is_not_null())
            ctx.note("judged", frame.height)
            ctx.note("null_scores", frame.height - scored.height)
            ctx.note("mean_score", round(float(scored["score"].mean()), 4) if scored.height else None)
            ctx.note("length_score_correlation", _pearson([float(c) for c in scored["chars"]],
                                                          [float(s) for s in scored["score"]]))
            return
        if table == "preference":
            frame = out.select("judge_verdict", "judge_consistent", "judge_chars_chosen", "judge_chars_rejected",
                               "judge_verdict_first", "judge_verdict_swapped").collect()
            parsed = frame.filter(pl.col("judge_verdict").is_not_null())
            first, _, decided = _positions(frame, table)
            ctx.note("pairs", frame.height)
            ctx.note("position_bias", round(first / decided, 4) if decided else None)
            if not parsed.height:
                ctx.note("swap_consistency", None)
            ctx.note("unparseable", frame.height - parsed.height)
            if parsed.height:
                ctx.note("swap_consistency", round(float(parsed["judge_consistent"].mean()), 4))
                ctx.note("agreement_with_label", round(float((parsed["judge_verdict"] == "chosen").mean()), 4))
                won = parsed.filter(pl.col("judge_verdict") != "tie").filter(
                    pl.col("judge_chars_chosen") != pl.col("judge_chars_rejected"))
                chosen_longer = won["judge_chars_chosen"] > won["judge_chars_rejected"]
                longer = (won["judge_verdict"] == "chosen") == chosen_longer
                ctx.note("longer_wins", round(float(longer.mean()), 4) if won.height else None)
            return
        frame = out.select(pl.col("judge_comparisons").sum().alias("n"),
                           pl.col("judge_consistent_comparisons").sum().alias("c"),
                           pl.col("judge_first_wins").sum().alias("first"),
                           pl.col("judge_second_wins").sum().alias("second")).collect()
        n, c = int(frame["n"][0] or 0), int(frame["c"][0] or 0)
        first, decided = int(frame["first"][0] or 0), int(frame["first"][0] or 0) + int(frame["second"][0] or 0)
        ctx.note("comparisons", n)
        ctx.note("swap_consistency", round(c / n, 4) if n else None)
        ctx.note("position_bias", round(first / decided, 4) if decided else None)
