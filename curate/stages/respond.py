"""Generate responses for existing prompts (docs/architecture.md: the response half of a DPO data recipe)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

from curate.execution import Shape
from curate.llm.base import Sampling
from curate.pipeline import Context, Stage
from curate.schema import MESSAGES, RESPONSES, conform
from curate.synth.rows import model_key, prompt_until_last_user, row_seeds


@dataclass(config=ConfigDict(extra="forbid"))
class Respond(Stage):
    """Sample ``n`` responses from a model for each prompt: the on-policy candidates that a judge scores and
    ``pairs`` turns into preference pairs (the UltraFeedback recipe, Cui et al. 2023; on-policy sampling as
    in Tunstall et al. 2023, Zephyr, and the iterative DPO of Xu et al. 2023).

    Prompts: a conversation row's messages up to its last user turn (a row ending with an assistant turn is
    answered anew, which re-generates SFT answers); a candidates or preference row's ``prompt``.  A row with
    no user turn goes to quarantine.  Responses come from ``LLM.chat`` (the model's own chat template) with
    this stage's sampling settings; each row's seed is derived from ``seed`` and the row's id alone, so its
    responses are the same in any batch, on any executor, and in a refresh as in a fresh run.
    Empty responses are left out; a row left with none goes to quarantine.

    Output: a **candidates** table (``prompt``, ``responses`` as ``{content, model, score=null}``, ``source``,
    the input's metadata, ``parent_id`` = the input row's id).  With ``append`` a candidates input keeps its
    existing responses before the new ones (a preference input contributes chosen and rejected, with their
    scores).  With ``n: 1, output: conversation`` a **conversation** table (prompt + the response).
    Notes: ``responses``, ``truncated`` (responses that hit ``max_tokens``), ``tokens``.  Model calls go
    through :meth:`Context.map_batches`: a killed run resumes at the first unfinished batch.
    """

    name: ClassVar[str] = "respond"
    kind: ClassVar = "batch"
    shape: ClassVar[Shape] = "batch"
    paper: ClassVar[str] = "Cui et al. 2023, UltraFeedback; Tunstall et al. 2023, Zephyr"
    model_params: ClassVar[tuple[str, ...]] = ("model",)
    #: 2: per-row seeds (version 1 seeded each batch: a row's responses depended on its batch).
    version: ClassVar[int] = 2

    model: str = "gen"
    n: int = Field(2, ge=1, le=64)
    output: Literal["candidates", "conversation"] = "candidates"
    append: bool = False
    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1)
    seed: int = Field(0, ge=0)
    #: Rows per model call (one cached shard each).
    batch_size: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Respond:
        if self.output == "conversation" and self.n != 1:
            raise ValueError("output: conversation needs n: 1 (several responses make a candidates table)")
        return self

    def output_table(self, table: str) -> str:
        return self.output

    def adds(self, table: str) -> dict[str, pl.DataType | None]:
        return {"parent_id": pl.String()}

    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        table = self.table_of(lf)
        llm = ctx.models.get(self.model, "llm")
        model_name = str(getattr(llm, "name", self.model))
        key = model_key(self.fingerprint(), ctx.models.fingerprint(self.model), "respond")
        sampling = Sampling(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens, n=self.n)
        for name in ("truncated", "tokens", "responses"):
            ctx.note(name, 0)  # counts of this call's freshly generated batches (cached ones add nothing)

        def existing(row: dict[str, Any]) -> list[dict[str, Any]]:
            if not self.append:
                return []
            if table == "candidates":
                return [dict(r) for r in row["responses"] or []]
            if table == "preference":
                out = []
                for side in ("chosen", "rejected"):
                    text = "\n".join(m["content"] for m in row[side] or [] if m["role"] == "assistant")
                    out.append({"content": text, "model": side, "score": row.get(f"score_{side}")})
                return out
            return []

        def run(batch: pl.DataFrame) -> pl.DataFrame:
            rows = batch.to_dicts()
            prompts: list[list[dict[str, str]] | None] = []
            for row in rows:
                source = row["messages"] if table == "conversation" else row["prompt"]
                prompts.append(prompt_until_last_user(source))
            todo = [i for i, p in enumerate(prompts) if p is not None]
            ids = batch["id"].to_list()
            seeded = dataclasses.replace(sampling, seed=row_seeds(self.seed, [ids[i] for i in todo]))
            outputs = llm.chat([prompts[i] for i in todo], seeded) if todo else []
            generated: dict[int, list[dict[str, Any]]] = {}
            stats = {"truncated": 0, "tokens": 0, "responses": 0}
            for i, gens in zip(todo, outputs, strict=True):
                generated[i] = []
                for gen in gens:
                    stats["tokens"] += int(gen.tokens)
                    stats["truncated"] += gen.finish_reason == "length"
                    if gen.text.strip():
                        generated[i].append({"content": gen.text.strip(), "model": model_name, "score": None})
            new_prompts, new_responses, rejects = [], [], []
            for i, row in enumerate(rows):
                responses = [*existing(row), *generated.get(i, [])]
                stats["responses"] += len(generated.get(i, []))
                new_prompts.append(prompts[i] or [])
                new_responses.append(responses)
                if prompts[i] is None:
                    rejects.append("no user turn to respond to")
                elif not generated.get(i):
                    rejects.append("the model gave no non-empty response")
                else:
                    rejects.append(None)
            for name, value in stats.items():
                # through ctx, not a closure variable: on Ray this runs on a worker, and the counts a worker's
                # context records come back with the batch (curate.distributed.executor._WorkerContext)
                ctx.count(name, int(value))
            return batch.with_columns(
                pl.Series("_prompt", new_prompts, dtype=MESSAGES),
                pl.Series("_responses", new_responses, dtype=RESPONSES),
                pl.Series("_reject", rejects, dtype=pl.String),
            )

        done = ctx.map_batches(lf, run, key, batch_size=self.batch_size, desc=f"{ctx.stage_label} ({model_name})")
        ctx.quarantine(done.filter(pl.col("_reject").is_not_null()).drop("_prompt", "_responses"), pl.col("_reject"))
        good = done.filter(pl.col("_reject").is_null())
        content = {"conversation": ("messages",), "candidates": ("prompt", "responses"),
                   "preference": ("prompt", "chosen", "rejected", "score_chosen", "score_rejected")}[table]
        names = done.collect_schema().names()
        meta = [c for c in names if c not in (*content, "id", "parent_id") and not c.startswith("_")]
        if self.output == "conversation":
            reply = pl.col("_responses").list.last().struct.field("content")
            message = pl.struct(pl.lit("assistant").alias("role"), reply.alias("content"))
            out = good.select(
                pl.concat_list([pl.col("_prompt"), pl.concat_list([message])]).cast(MESSAGES).alias("messages"),
                *[pl.col(c) for c in meta], pl.col("id").alias("parent_id"),
            )
            return conform(out, "conversation")
        out = good.select(
            pl.col("_prompt").alias("prompt"), pl.col("_responses").alias("responses"),
            *[pl.col(c) for c in meta], pl.col("id").alias("parent_id"),
        )
        return conform(out, "candidates")
