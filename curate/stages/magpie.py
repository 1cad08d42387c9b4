"""Magpie: instructions sampled from an aligned model's own pre-query template (docs/architecture.md)."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import polars as pl
import xxhash
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

from curate.errors import InputDataError
from curate.execution import Shape
from curate.llm.base import Sampling
from curate.pipeline import Context, Stage
from curate.schema import MESSAGES, RESPONSES, conform, with_ids
from curate.synth.rows import model_key, row_seeds
from curate.synth.templates import derive_template, normalise_for_dedup, sanitise_instruction

Message = dict[str, str]


@dataclass(config=ConfigDict(extra="forbid"))
class Magpie(Stage):
    """Synthesise instruction data from nothing but an aligned model (Xu et al. 2024, "Magpie: Alignment Data
    Synthesis from Scratch by Prompting Aligned LLMs with Nothing").

    Why it works: an instruction-tuned model given only the start of its chat template, up to where a user
    message would begin, completes it with a plausible user query, and the distribution of those queries
    follows what it was aligned on.  The steps:

    1. **Pre-query template**, derived from the model's own chat template (``LLM.render`` of a conversation
       whose user message is a sentinel, cut at the sentinel; :mod:`curate.synth.templates`).  Whatever
       the template inserts by itself stays: BOS, Qwen2.5's default system turn, Llama-3's header.
       ``system`` (or each input row's system message, with ``system_from_input``) adds an explicit system
       turn, the paper's way of steering the domain (math, code, a language); it is kept in the output.
    2. **Instruction sampling** with its own settings (``instruction_temperature`` 1.0, ``instruction_top_p``
       0.99, as in the paper: diversity comes from sampling), stopping at the template's end of turn.
    3. **Sanitising** (:func:`~curate.synth.templates.sanitise_instruction`): role echoes, numbering and
       quotes stripped, cut at answer markers; empty, too short/long and token-limit-truncated
       instructions go to quarantine with the reason; so do duplicates (case- and whitespace-normalised,
       the first sample kept), decided over the whole stage.
    4. **Multi-turn** (``turns > 1``, Magpie-MT): the next user turn is sampled from the conversation so far
       rendered up to the next user message; a continuation that fails sanitising ends the conversation at
       the previous turn (counted in the notes).
    5. **Responses** with the normal chat template at their own, low temperature (``response_temperature``;
       default 0 for one response, 0.7 for several).  ``n == 1``: a **conversation** table; ``n > 1``: a
       **candidates** table (the last turn's prompt and ``n`` responses) for ``judge`` and ``pairs``.
       ``respond: false`` stops after step 3: a conversation of one user turn per row, to be filtered and
       deduplicated before the ``respond`` stage spends tokens on answers (the efficient order at scale).

    Input: a source stage.  With ``count`` it samples that many instructions and the input only supplies
    system prompts (``system_from_input``: input row ``i % rows``); without ``count`` one sample per input
    row.  Each sample has a stable id (``seed``, sample number, system prompt), so every batch of samples is
    a cached shard of :meth:`Context.map_batches`: a killed run resumes without regenerating finished
    batches, and raising ``count`` reuses every full batch already made.  Every model call of a sample is
    seeded from that id (and the turn), never from its batch: a sample's text is the same for any
    ``batch_size`` or executor, and a larger ``count`` leaves the earlier samples as they were.

    Output columns: the table's own, ``source`` = ``magpie``, ``magpie_sample`` (sample number),
    ``magpie_seed_id`` (input row the sample came from, when it came from one), ``magpie_turns``.
    """

    name: ClassVar[str] = "magpie"
    kind: ClassVar = "batch"
    shape: ClassVar[Shape] = "driver"
    driver_reason: ClassVar[str] = (
        "makes its own rows: one seeded sequence of generations (its model batches run on workers)"
    )
    paper: ClassVar[str] = "Xu et al. 2024, Magpie: Alignment Data Synthesis from Scratch"
    model_params: ClassVar[tuple[str, ...]] = ("model",)
    #: 2: per-sample seeds (version 1 seeded each batch: a sample's text depended on its batch).
    version: ClassVar[int] = 2

    model: str = "gen"
    count: int | None = Field(None, ge=1)
    system: str | None = None
    system_from_input: bool = False
    turns: int = Field(1, ge=1, le=8)
    #: ``false``: instructions only (a conversation of user turns): filter and deduplicate them first, then
    #: spend response tokens only on the survivors with the ``respond`` stage (needs ``turns: 1``).
    respond: bool = True
    n: int = Field(1, ge=1, le=64)
    instruction_temperature: float = Field(1.0, ge=0.0)
    instruction_top_p: float = Field(0.99, gt=0.0, le=1.0)
    instruction_max_tokens: int = Field(128, ge=4)
    response_temperature: float | None = Field(None, ge=0.0)
    response_top_p: float = Field(1.0, gt=0.0, le=1.0)
    response_max_tokens: int = Field(512, ge=1)
    min_chars: int = Field(8, ge=1)
    max_chars: int = Field(2000, ge=1)
    drop_truncated: bool = True
    seed: int = Field(0, ge=0)
    #: Samples per model call (one cached shard each).
    batch_size: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Magpie:
        if not self.respond and (self.turns > 1 or self.n > 1):
            raise ValueError("respond: false samples single-turn instructions only (turns: 1, n: 1)")
        return self

    #: A source: it makes its own rows (the input only seeds them), so input columns do not pass through.
    is_source: ClassVar[bool] = True

    @property
    def _table(self) -> Literal["conversation", "candidates"]:
        return "candidates" if self.n > 1 else "conversation"

    def output_table(self, table: str) -> str:
        return self._table

    def adds(self, table: str) -> dict[str, pl.DataType | None]:
        return {"magpie_sample": pl.Int64(), "magpie_seed_id": pl.String(), "magpie_turns": pl.Int64()}

    def _response_sampling(self, n: int, seed: tuple[int, ...]) -> Sampling:
        temperature = self.response_temperature
        if temperature is None:
            temperature = 0.7 if self.n > 1 else 0.0
        return Sampling(temperature=temperature, top_p=self.response_top_p, max_tokens=self.response_max_tokens,
                        n=n, seed=seed)

    # -- samples -----------------------------------------------------------------------------------------
    def _samples(self, lf: pl.LazyFrame) -> pl.DataFrame:
        """One row per instruction to sample: ``id`` (stable), ``_i``, ``_system``, ``_seed_id``."""
        names = lf.collect_schema().names()
        seeds: list[tuple[str | None, str | None]] = []
        if self.system_from_input or self.count is None:
            if self.system_from_input and "messages" not in names and "prompt" not in names:
                raise InputDataError("magpie system_from_input needs a conversation (messages) or prompt column")
            column = "messages" if "messages" in names else "prompt"
            frame = lf.select("id" if "id" in names else pl.lit(None, pl.String).alias("id"),
                              pl.col(column) if column in names else pl.lit(None).alias(column)).collect()
            for row in frame.iter_rows(named=True):
                system = None
                if self.system_from_input:
                    system = next((m["content"] for m in row[column] or [] if m["role"] == "system"), None)
                seeds.append((row["id"], system))
        total = self.count if self.count is not None else len(seeds)
        rows = []
        for i in range(total):
            seed_id, system = seeds[i % len(seeds)] if seeds else (None, None)
            system = system if system is not None else self.system
            sample_id = xxhash.xxh3_128_hexdigest(json.dumps([self.seed, i, system, seed_id if self.count is None
                                                               else None]).encode())
            rows.append({"id": sample_id, "_i": i, "_system": system, "_seed_id": seed_id})
        return pl.DataFrame(rows, schema={"id": pl.String, "_i": pl.Int64, "_system": pl.String,
                                          "_seed_id": pl.String})

    # -- one batch -----------------------------------------------------------------------------------------
    def _run_batch(self, llm: Any, batch: pl.DataFrame, model_name: str) -> pl.DataFrame:
        size = batch.height
        ids = batch["id"].to_list()

        def seeds(rows: list[int], call: str) -> tuple[int, ...]:
            """Per-sample seeds of one call (``call`` names it: a turn's instruction or response)."""
            return row_seeds(self.seed, [ids[i] for i in rows], call)

        convs: list[list[Message]] = [[{"role": "system", "content": s}] if s else [] for s in batch["_system"]]
        rejects: list[str | None] = [None] * size
        ended = [False] * size
        final: list[list[dict[str, Any]]] = [[] for _ in range(size)]
        cut_short = [False] * size  # a continuation failed: the conversation ended early

        def render(conv: Any, add_generation_prompt: bool) -> str:
            return llm.render(conv, add_generation_prompt=add_generation_prompt)

        for turn in range(self.turns):
            active = [i for i in range(size) if rejects[i] is None and not ended[i]]
            if not active:
                break
            templates = [derive_template(render, convs[i]) for i in active]
            stops = tuple(dict.fromkeys(s for t in templates for s in t.stops))
            sampling = Sampling(temperature=self.instruction_temperature, top_p=self.instruction_top_p,
                                max_tokens=self.instruction_max_tokens, stop=stops,
                                seed=seeds(active, f"instruction {turn}"))
            outputs = llm.generate([t.pre_query for t in templates], sampling)
            asked: list[int] = []
            for i, template, gens in zip(active, templates, outputs, strict=True):
                gen = gens[0]
                clean = sanitise_instruction(
                    gen.text, stops=template.stops, min_chars=self.min_chars, max_chars=self.max_chars,
                    truncated=gen.finish_reason == "length", drop_truncated=self.drop_truncated,
                )
                if clean.reason is None:
                    convs[i].append({"role": "user", "content": clean.text})
                    asked.append(i)
                elif turn == 0:
                    rejects[i] = clean.reason
                else:
                    ended[i] = cut_short[i] = True
            if not self.respond:
                break
            last = turn == self.turns - 1
            want = self.n if last else 1
            replies = llm.chat([convs[i] for i in asked],
                               self._response_sampling(want, seeds(asked, f"response {turn}"))) if asked else []
            for i, gens in zip(asked, replies, strict=True):
                texts = [g.text.strip() for g in gens if g.text.strip()]
                if not texts:
                    convs[i].pop()  # the question stays unanswered: end before it
                    if turn == 0:
                        rejects[i] = "the model gave an empty response"
                    else:
                        ended[i] = cut_short[i] = True
                    continue
                if last:
                    final[i] = [{"content": t, "model": model_name, "score": None} for t in texts]
                else:
                    convs[i].append({"role": "assistant", "content": texts[0]})
        # Conversations that ended early: in candidates mode, n responses for their last prompt.
        if self.n > 1:
            redo = [i for i in range(size) if rejects[i] is None and not final[i]]
            if redo:
                for i in redo:
                    convs[i].pop()  # its single assistant reply
                replies = llm.chat([convs[i] for i in redo], self._response_sampling(self.n, seeds(redo, "redo")))
                for i, gens in zip(redo, replies, strict=True):
                    final[i] = [{"content": g.text.strip(), "model": model_name, "score": None}
                                for g in gens if g.text.strip()]
                    if not final[i]:
                        rejects[i] = "the model gave an empty response"
        messages, prompts, responses, instructions, turns = [], [], [], [], []
        for i in range(size):
            conv = convs[i]
            if self.n == 1 and final[i] and self.respond:
                conv = [*conv, {"role": "assistant", "content": final[i][0]["content"]}]
            messages.append(conv if self.n == 1 else [])
            prompts.append(conv if self.n > 1 else [])
            responses.append(final[i])
            instructions.append(next((m["content"] for m in conv if m["role"] == "user"), None))
            turns.append(sum(m["role"] == "user" for m in conv))
        out = batch.with_columns(
            pl.Series("_messages", messages, dtype=MESSAGES),
            pl.Series("_prompt", prompts, dtype=MESSAGES),
            pl.Series("_responses", responses, dtype=RESPONSES),
            pl.Series("_instruction", instructions, dtype=pl.String),
            pl.Series("_turns", turns, dtype=pl.Int64),
            pl.Series("_reject", rejects, dtype=pl.String),
            pl.Series("_dropped_continuations", cut_short, dtype=pl.Boolean),
        )
        return out

    # -- stage ---------------------------------------------------------------------------------------------
    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        llm = ctx.models.get(self.model, "llm")
        model_name = str(getattr(llm, "name", self.model))
        samples = self._samples(lf)
        # A source stage: its samples replace the input rows (curate.funnel's balance), and the funnel says how.
        ctx.note("rows_consumed", int(lf.select(pl.len()).collect().item()))
        ctx.note("rows_created", samples.height)
        ctx.note("input_use", "replaced by one sample each" if self.count is None
                 else f"read for system prompts only (count: {self.count})" if self.system_from_input
                 else f"ignored (count: {self.count} samples)")
        # ``count`` is left out of the shard key: sample ids do not depend on it, so a larger count reuses
        # every full batch of a smaller one.
        params = {k: v for k, v in self.params().items() if k != "count"}
        identity = json.dumps({"stage": self.name, "version": self.version, "params": params}, sort_keys=True,
                              default=str)
        key = model_key(identity, ctx.models.fingerprint(self.model), "magpie")
        done = ctx.map_batches(samples.lazy(), lambda b: self._run_batch(llm, b, model_name), key,
                               batch_size=self.batch_size, desc=f"{ctx.stage_label} ({model_name})")
        if self._table == "conversation":
            content = [pl.col("_messages").alias("messages")]
        else:
            content = [pl.col("_prompt").alias("prompt"), pl.col("_responses").alias("responses")]
        shaped = done.select(
            "id", *content, pl.lit("magpie").alias("source"), pl.col("_i").alias("magpie_sample"),
            pl.col("_seed_id").alias("magpie_seed_id"), pl.col("_turns").alias("magpie_turns"),
            pl.col("_system"), pl.col("_instruction"), pl.col("_reject"), pl.col("_dropped_continuations"),
        )
        # Duplicates over the whole stage: the first sample of each normalised instruction is kept.
        keys = shaped.filter(pl.col("_reject").is_null()).select("id", "_instruction").collect()
        seen: dict[str, str] = {}
        dup_ids, dup_of = [], []
        for sample_id, text in keys.iter_rows():
            norm = normalise_for_dedup(text or "")
            if norm in seen:
                dup_ids.append(sample_id)
                dup_of.append(seen[norm])
            else:
                seen[norm] = sample_id
        dups = pl.DataFrame({"id": dup_ids, "_dup_of": dup_of}, schema={"id": pl.String, "_dup_of": pl.String})
        reasons = shaped.select("_reject", "_dropped_continuations").collect()
        counts = reasons.filter(pl.col("_reject").is_not_null()).group_by(
            pl.col("_reject").str.replace(r" \(.*\)$", "")).len().sort("_reject")
        ctx.note("samples", samples.height)
        ctx.note("rejected", {r: int(c) for r, c in counts.iter_rows()})
        ctx.note("duplicates", len(dup_ids))
        ctx.note("continuations_dropped", int(reasons["_dropped_continuations"].sum()) if self.turns > 1 else 0)
        ctx.quarantine(shaped.filter(pl.col("_reject").is_not_null()), pl.col("_reject"))
        ctx.quarantine(
            shaped.join(dups.lazy(), on="id", how="inner", maintain_order="left"),
            pl.concat_str([pl.lit("duplicate instruction of magpie sample "), pl.col("_dup_of")]),
            "exact_duplicate", duplicate_of=pl.col("_dup_of"),
        )
        good = shaped.filter(pl.col("_reject").is_null()).join(dups.lazy(), on="id", how="anti", maintain_order="left")
        good = good.drop("_system", "_instruction", "_reject", "_dropped_continuations")
        return conform(with_ids(good, self._table), self._table)
