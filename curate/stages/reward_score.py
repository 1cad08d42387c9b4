"""Score responses with a local sequence-classification reward model (issue #11, ``reward_score``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import polars as pl
import xxhash
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

from curate.errors import InputDataError, ModelError
from curate.execution import Shape
from curate.pipeline import Context, Stage
from curate.reward import RewardModel, Scored, reward_identity
from curate.reward.embedding_rm import is_embedding_rm, resolve_rm_path
from curate.reward.model import EMBEDDING_RM
from curate.schema import RESPONSES

TRUNCATED = "prompt truncated"
TOO_LONG = "response does not fit"


def _assistant_text(messages: Sequence[dict[str, str]] | None) -> str:
    return "\n".join(m["content"] or "" for m in messages or [] if m["role"] == "assistant")


def _texts_to_score(rows: list[dict[str, Any]], table: str, *, skip_empty: bool,
                    ) -> tuple[list[list[dict[str, str]]], list[str], list[tuple[int, int]]]:
    """Every (prompt, response) of a batch's rows, flattened for one model call, with the (row, slot) each came
    from: a candidates row's responses in order, a preference row's chosen (slot 0) and rejected (slot 1)."""
    prompts: list[list[dict[str, str]]] = []
    answers: list[str] = []
    where: list[tuple[int, int]] = []
    for r, row in enumerate(rows):
        prompt = [dict(m) for m in row["prompt"] or []]
        if table == "candidates":
            texts = [(resp or {}).get("content") or "" for resp in row["responses"] or []]
        else:
            texts = [_assistant_text(row["chosen"]), _assistant_text(row["rejected"])]
        for s, text in enumerate(texts):
            if not skip_empty or text.strip():
                prompts.append(prompt)
                answers.append(text)
                where.append((r, s))
    return prompts, answers, where


@dataclass(config=ConfigDict(extra="forbid"))
class RewardScore(Stage):
    """Score each (prompt, response) with a reward model: a sequence classifier over the conversation rendered
    with the model's own chat template, as reward models are trained and evaluated (Ouyang et al. 2022,
    InstructGPT; Lambert et al. 2024, RewardBench; Skywork-Reward, Liu et al. 2024; ArmoRM, Wang et al. 2024,
    for several objectives).  Why: a trained reward model ranks candidates far more cheaply than an LLM judge
    and is what pairs are usually built from (UltraFeedback-style best-vs-worst), and re-scoring existing pairs
    checks their labels.

    **Model**: ``model`` names a ``models:`` handle (``ctx.models.get(handle, "reward")``, spec keys in
    :mod:`curate.reward.model`), or ``path`` points at a model folder directly (notebooks; ``model`` is then
    unused).  Texts are sorted by length and batched (CPU or GPU, bfloat16 on GPU by default), results come back
    in row order.  Rows go through :meth:`Context.map_rows` (shards keyed by the parameters, the model's
    spec and a hash of its folder): a killed run resumes, and a re-run scores nothing.  The model is loaded only
    when a batch is not cached.

    **Columns** (objective names come from the config's ``id2label``, lower-cased, non-alphanumerics -> ``_``,
    or the head index ``0``, ``1``, ... where labels are missing or HF's default ``LABEL_i``):

    - candidates: ``responses[].score`` is the ``objective`` head (default the first head);
      ``reward_note: list<str>`` aligned with ``responses`` (null when nothing to say); with several heads, one
      ``reward_<objective>: list<f64>`` per head, aligned with ``responses``.
    - preference: ``score_chosen``, ``score_rejected`` (the ``objective`` head), ``reward_note_chosen``,
      ``reward_note_rejected``; with several heads ``reward_<objective>_chosen`` and ``..._rejected`` (f64).

    **Length**: a text over ``max_length`` tokens (default: the model's ``max_position_embeddings``) loses
    tokens from the left of its prompt (after BOS), never from the response; its note says how many
    (``prompt truncated: N tokens cut from the left``).  A response that does not fit even with the whole prompt
    cut gets null scores and the note ``response does not fit: ...``; an empty response gets null and ``empty
    response``; a conversation the chat template refuses (e.g. a system turn) gets null and ``chat template
    failed: <error>``.  No row is dropped.  Notes: ``scored``, ``truncated``, ``too_long``, ``empty``, ``mean_score``,
    and for preference rows ``agreement_with_label`` (share of pairs with both scores where chosen > rejected).

    **Embedding reward models** (``backend: embedding-rm`` in the model spec, or ``path: DIR`` / ``path:
    default`` here; see :mod:`curate.reward.embedding_rm`; Sun et al. 2025, "Reusing Embeddings"): a Bradley-Terry
    ensemble on frozen MiniLM vectors, CPU-fast, with its cross-validated accuracy on human labels on its card.
    ``score`` is the ensemble mean; the members' disagreement goes to ``reward_std`` (candidates: ``list<f64>``
    aligned with ``responses``; preference: ``reward_std_chosen``, ``reward_std_rejected``), which ``pairs:
    min_margin_std`` and ``combine_scores`` (objective ``reward_std``) use.  Vectors come from the run's embedding
    cache, so the encoder loads only for texts never encoded; ``objective`` and ``max_length`` do not apply.
    Notes add ``mean_reward_std``.
    """

    name: ClassVar[str] = "reward_score"
    kind: ClassVar = "batch"
    shape: ClassVar[Shape] = "batch"
    paper: ClassVar[str] = (
        "Ouyang et al. 2022 (reward models); Lambert et al. 2024, RewardBench; Wang et al. 2024, ArmoRM"
    )
    model_params: ClassVar[tuple[str, ...]] = ("model",)

    #: Handle of the reward model under ``models:`` (ignored when ``path`` is given).
    model: str | None = "reward"
    #: A model folder to load directly, instead of a handle (notebooks); ``default``: the shipped embedding RM.
    path: str | None = None
    #: With ``path``: ``transformers`` (sequence classifier) or ``embedding-rm``; None: embedding-rm when the
    #: folder is one (has an embedding-rm ``rm.json``, or is ``default``), else transformers.
    backend: Literal["transformers", "embedding-rm"] | None = None
    #: The head that becomes ``score`` (objective name or index as a string); default the first head.
    objective: str | None = None
    #: Token limit of a rendered text; default the model's max position embeddings.
    max_length: int | None = Field(None, ge=8)
    #: Rows per cached shard.
    batch_size: int = Field(256, ge=1)

    accepts: ClassVar[frozenset[str]] = frozenset({"candidates", "preference"})

    def adds(self, table: str) -> dict[str, pl.DataType | None]:
        """Notes, and one column per head of a multi-head model (their names come from the model's config)."""
        if table == "candidates":
            return {"reward_note": pl.List(pl.String()), "reward_*": pl.List(pl.Float64())}
        return {"reward_note_chosen": pl.String(), "reward_note_rejected": pl.String(),
                "reward_*_chosen": pl.Float64(), "reward_*_rejected": pl.Float64()}

    @model_validator(mode="after")
    def _check_model(self) -> RewardScore:
        if self.path is not None:
            if self.model not in (None, "reward"):
                raise ValueError("give either model (a models: handle) or path (a model folder), not both")
            self.model = None
        elif not self.model:
            raise ValueError("reward_score needs model (a models: handle) or path (a model folder)")
        if self.backend is not None and self.path is None:
            raise ValueError("backend goes with path; a models: handle names its backend in its spec")
        return self

    # -- model ---------------------------------------------------------------------------------------------
    def _handle(self, ctx: Context) -> str:
        if self.path is None:
            assert self.model is not None
            return self.model
        handle = f"reward@{self.path}"
        backend = self.backend
        if backend is None:
            backend = EMBEDDING_RM if self.path == "default" or is_embedding_rm(
                resolve_rm_path(self.path, ctx.models.base_dir)) else "transformers"
        ctx.models.specs.setdefault(handle, {"backend": backend, "path": self.path})
        return handle

    def _head(self, rm: RewardModel) -> int:
        if self.objective is None:
            return 0
        if self.objective in rm.objectives:
            return rm.objectives.index(self.objective)
        raise ModelError(f"reward_score: objective {self.objective!r} is not a head of {rm.path} "
                         f"(heads: {rm.objectives})")

    # -- stage ---------------------------------------------------------------------------------------------
    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        table = self.table_of(lf)
        if table not in ("candidates", "preference"):
            raise InputDataError("reward_score scores candidates or preference rows (a prompt and its responses)")
        handle = self._handle(ctx)
        spec = ctx.models.spec(handle)
        # A model registered as an object (notebooks) has no folder to hash: its registry spec is its identity.
        identity = reward_identity(spec, ctx.models.base_dir) if "path" in spec else None
        payload = [self.fingerprint(), ctx.models.fingerprint(handle), table, identity]
        key = xxhash.xxh3_128_hexdigest(json.dumps(payload).encode())
        loaded: dict[str, RewardModel] = {}
        embedding = spec.get("backend") == EMBEDDING_RM
        if embedding and self.objective not in (None, "score", "0"):
            raise ModelError(f"reward_score: an embedding reward model has one head (score), not {self.objective!r}")
        cache_dir = ctx.cache_dir

        def run(batch: pl.DataFrame) -> pl.DataFrame:
            if "rm" not in loaded:
                loaded["rm"] = ctx.models.get(handle, "reward")
            if embedding:
                return self._score_batch_embedding(loaded["rm"], batch, table, cache_dir)
            return self._score_batch(loaded["rm"], batch, table)

        out = ctx.map_rows(lf, run, key, batch_size=self.batch_size, desc=f"{ctx.stage_label} (reward)")
        self._notes(out, table, ctx)
        return out

    def _score(self, rm: RewardModel, prompts: list[list[dict[str, str]]], answers: list[str]) -> list[Scored]:
        results: list[Scored] = [Scored(None, "empty response") for _ in answers]
        todo = [i for i, a in enumerate(answers) if a.strip()]
        scored = rm.score([prompts[i] for i in todo], [answers[i] for i in todo], self.max_length)
        for i, res in zip(todo, scored, strict=True):
            results[i] = res
        return results

    def _score_batch(self, rm: RewardModel, batch: pl.DataFrame, table: str) -> pl.DataFrame:
        head = self._head(rm)
        multi = len(rm.objectives) > 1
        rows = batch.to_dicts()
        prompts, answers, where = _texts_to_score(rows, table, skip_empty=False)
        results = dict(zip(where, self._score(rm, prompts, answers), strict=True))

        def value(slot: tuple[int, int], k: int) -> float | None:
            scores = results[slot].scores
            return None if scores is None else float(scores[k])

        if table == "candidates":
            sizes = [len(row["responses"] or []) for row in rows]
            responses = [
                [{**resp, "score": value((r, s), head)} for s, resp in enumerate(row["responses"] or [])]
                for r, row in enumerate(rows)
            ]
            cols = [
                pl.Series("responses", responses, dtype=RESPONSES),
                pl.Series("reward_note", [[results[(r, s)].note for s in range(n)] for r, n in enumerate(sizes)],
                          dtype=pl.List(pl.String)),
            ]
            if multi:
                cols += [
                    pl.Series(f"reward_{name}", [[value((r, s), k) for s in range(n)] for r, n in enumerate(sizes)],
                              dtype=pl.List(pl.Float64))
                    for k, name in enumerate(rm.objectives)
                ]
            return batch.with_columns(cols)
        cols = []
        for s, side in enumerate(("chosen", "rejected")):
            cols += [
                pl.Series(f"score_{side}", [value((r, s), head) for r in range(len(rows))], dtype=pl.Float64),
                pl.Series(f"reward_note_{side}", [results[(r, s)].note for r in range(len(rows))], dtype=pl.String),
            ]
            if multi:
                cols += [
                    pl.Series(f"reward_{name}_{side}", [value((r, s), k) for r in range(len(rows))],
                              dtype=pl.Float64)
                    for k, name in enumerate(rm.objectives)
                ]
        return batch.with_columns(cols)

    def _score_batch_embedding(self, rm: Any, batch: pl.DataFrame, table: str, cache_dir: Path | None,
                               ) -> pl.DataFrame:
        """One batch through an embedding RM: ensemble mean -> score, members' std -> reward_std."""
        rows = batch.to_dicts()
        # an empty response gets no score, as with a sequence classifier (which notes it as empty)
        prompts, answers, where = _texts_to_score(rows, table, skip_empty=True)
        mean, std = rm.score(prompts, answers, cache_dir=cache_dir)
        got = {slot: (float(m), float(d)) for slot, m, d in zip(where, mean, std, strict=True)}

        def value(slot: tuple[int, int], k: int) -> float | None:
            return got[slot][k] if slot in got else None

        def note(slot: tuple[int, int]) -> str | None:
            return None if slot in got else "empty response"

        if table == "candidates":
            sizes = [len(row["responses"] or []) for row in rows]
            responses = [
                [{**resp, "score": value((r, s), 0)} for s, resp in enumerate(row["responses"] or [])]
                for r, row in enumerate(rows)
            ]
            return batch.with_columns(
                pl.Series("responses", responses, dtype=RESPONSES),
                pl.Series("reward_note", [[note((r, s)) for s in range(n)] for r, n in enumerate(sizes)],
                          dtype=pl.List(pl.String)),
                pl.Series("reward_std", [[value((r, s), 1) for s in range(n)] for r, n in enumerate(sizes)],
                          dtype=pl.List(pl.Float64)),
            )
        cols = []
        for s, side in enumerate(("chosen", "rejected")):
            cols += [
                pl.Series(f"score_{side}", [value((r, s), 0) for r in range(len(rows))], dtype=pl.Float64),
                pl.Series(f"reward_note_{side}", [note((r, s)) for r in range(len(rows))], dtype=pl.String),
                pl.Series(f"reward_std_{side}", [value((r, s), 1) for r in range(len(rows))], dtype=pl.Float64),
            ]
        return batch.with_columns(cols)

    # -- notes ---------------------------------------------------------------------------------------------
    def _notes(self, out: pl.LazyFrame, table: str, ctx: Context) -> None:
        """Figures over the whole output (cached shards included)."""
        if table == "candidates":
            flat = out.select(
                pl.col("responses").list.eval(pl.element().struct.field("score")).alias("score"),
                pl.col("reward_note").alias("note"),
            ).explode("score", "note")
        else:
            flat = pl.concat([
                out.select(pl.col(f"score_{s}").alias("score"), pl.col(f"reward_note_{s}").alias("note"))
                for s in ("chosen", "rejected")
            ])
        figures: dict[str, Any] = flat.select(
            pl.col("score").is_not_null().sum().alias("scored"),
            pl.col("note").str.starts_with(TRUNCATED).sum().alias("truncated"),
            pl.col("note").str.starts_with(TOO_LONG).sum().alias("too_long"),
            (pl.col("note") == "empty response").sum().alias("empty"),
            pl.col("score").mean().alias("mean_score"),
        ).collect().row(0, named=True)
        for name in ("scored", "truncated", "too_long", "empty"):
            ctx.note(name, int(figures[name] or 0))
        mean = figures["mean_score"]
        ctx.note("mean_score", round(float(mean), 4) if mean is not None else None)
        if table == "preference":
            both = out.select("score_chosen", "score_rejected").drop_nulls().select(
                pl.len().alias("n"), (pl.col("score_chosen") > pl.col("score_rejected")).mean().alias("agree")
            ).collect()
            n, agree = both["n"][0], both["agree"][0]
            ctx.note("agreement_with_label", round(float(agree), 4) if n else None)
        std_cols = ["reward_std"] if table == "candidates" else ["reward_std_chosen", "reward_std_rejected"]
        if all(c in out.collect_schema().names() for c in std_cols):
            stds = pl.concat([out.select(pl.col(c).alias("s")) for c in std_cols])
            if table == "candidates":
                stds = stds.explode("s")
            mean_std = stds.select(pl.col("s").mean()).collect().item()
            ctx.note("mean_reward_std", round(float(mean_std), 4) if mean_std is not None else None)
