"""The judges ``curate judge-eval`` measures, from their ``--judge`` specs, and how each gives verdicts.

- ``length``: the longer response wins (characters), equal lengths tie: the baseline every judge must beat,
  since judges and reward models are known to prefer longer answers (Dubois et al. 2024).
- ``random``: a seeded coin (a or b): chance, with its interval.
- ``rm:default`` / ``rm:PATH``: a reward model scores each response, the higher wins (equal: tie).  An
  embedding reward model folder (:mod:`curate.reward.embedding_rm`; ``default`` is the shipped one) or a
  sequence-classification folder (through the ``reward_score`` stage).
- ``model:HANDLE_OR_PATH``: the pairwise ``judge`` stage on that model, both orders (``default`` = the embedded
  SmolLM2-135M-Instruct; a folder or ``.gguf``; or a ``models:`` spec as JSON).
- ``recipe:FILE#STAGE``: a ``judge`` (pairwise or pointwise) or ``reward_score`` stage exactly as configured in
  a recipe, with its ``models:``.  STAGE: its position (``5``), label (``05-judge``) or name if unique.

Model judges run through a real :class:`~curate.pipeline.Context` (its cache folder, per-row shards), so a
re-run does no model work twice; the degeneracy guard is off here (judge-eval exists to measure such judges).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curate.errors import ModelError, RecipeError
from curate.pipeline import Context, Stage
from curate.schema import MESSAGES, conform

SPECS_HELP = "length, random, rm:default, rm:PATH, model:HANDLE_OR_PATH, recipe:FILE#STAGE"


@dataclass
class Verdicts:
    """Per pair: ``verdict`` (a / b / tie / None); for pairwise LLM judges each order's raw verdict (``first``:
    A = response a; ``swapped``: A = response b, so its "a" names response b); model calls made now."""

    verdict: list[str | None]
    first: list[str | None] | None = None
    swapped: list[str | None] | None = None
    calls: int | None = None
    columns: dict[str, list[Any]] = field(default_factory=dict)


class PairJudge:
    """A judge over labelled pairs; ``name`` is the ``--judge`` spec it came from."""

    name: str

    def judge(self, pairs: pl.DataFrame, ctx: Context) -> Verdicts:  # pragma: no cover - abstract
        raise NotImplementedError


def _by_score(a: list[float | None], b: list[float | None]) -> list[str | None]:
    return [None if x is None or y is None else "a" if x > y else "b" if y > x else "tie"
            for x, y in zip(a, b, strict=True)]


@dataclass
class LengthJudge(PairJudge):
    name: str = "length"

    def judge(self, pairs: pl.DataFrame, ctx: Context) -> Verdicts:
        verdict = pairs.select(
            pl.when(pl.col("a").str.len_chars() > pl.col("b").str.len_chars()).then(pl.lit("a"))
            .when(pl.col("a").str.len_chars() < pl.col("b").str.len_chars()).then(pl.lit("b"))
            .otherwise(pl.lit("tie")).alias("v"))["v"].to_list()
        return Verdicts(verdict, calls=0)


@dataclass
class RandomJudge(PairJudge):
    seed: int = 0
    name: str = "random"

    def judge(self, pairs: pl.DataFrame, ctx: Context) -> Verdicts:
        coin = np.random.default_rng([self.seed, 0x6A75]).random(pairs.height) < 0.5
        return Verdicts(["a" if c else "b" for c in coin], calls=0)


def preference_frame(pairs: pl.DataFrame) -> pl.LazyFrame:
    """The pairs as a preference table with response a as ``chosen`` (shown first in the first order)."""
    def side(col: str) -> pl.Expr:
        return pl.concat_list(pl.struct(pl.lit("assistant").alias("role"), pl.col(col).alias("content")))

    frame = pairs.select("id", "prompt", side("a").alias("chosen"), side("b").alias("rejected"))
    return conform(frame.cast({"chosen": MESSAGES, "rejected": MESSAGES}).lazy(), "preference")


def _run_stage(stage: Stage, pairs: pl.DataFrame, ctx: Context, label: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    previous, ctx.stage_label = ctx.stage_label, label
    try:
        out = stage(preference_frame(pairs), ctx).collect()
    finally:
        ctx.stage_label = previous
    order = pairs.select("id").with_row_index("__pos")
    out = order.join(out, on="id", how="left").sort("__pos")
    return out, dict(ctx.stats.get(label, {}))


def _stage_verdicts(stage: Stage, out: pl.DataFrame, notes: dict[str, Any]) -> Verdicts:
    computed = notes.get("rows_computed")
    per_row = 2  # two orders (pairwise) or two responses (pointwise / reward)
    calls = int(computed) * per_row if computed is not None else None
    if getattr(stage, "mode", None) == "pairwise":
        names = {"chosen": "a", "rejected": "b", "tie": "tie"}
        verdict = [names.get(v) if v is not None else None for v in out["judge_verdict"].to_list()]
        return Verdicts(verdict, out["judge_verdict_first"].to_list(), out["judge_verdict_swapped"].to_list(),
                        calls, {"reason": out["judge_reason"].to_list()})
    a, b = out["score_chosen"].to_list(), out["score_rejected"].to_list()
    return Verdicts(_by_score(a, b), calls=calls, columns={"score_a": a, "score_b": b})


@dataclass
class StageJudge(PairJudge):
    """A ``judge`` or ``reward_score`` stage with the model specs it needs (``handle -> spec``)."""

    name: str
    stage: Stage
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    base_dir: Path = Path(".")

    def judge(self, pairs: pl.DataFrame, ctx: Context) -> Verdicts:
        ctx.models.specs.update(self.specs)
        ctx.models.base_dir = self.base_dir
        out, notes = _run_stage(self.stage, pairs, ctx, self.name)
        return _stage_verdicts(self.stage, out, notes)


@dataclass
class EmbeddingRMJudge(PairJudge):
    """An embedding reward model folder (``default``: the shipped one): ensemble mean score, higher wins."""

    name: str
    path: str

    def judge(self, pairs: pl.DataFrame, ctx: Context) -> Verdicts:
        from curate.reward.embedding_rm import EmbeddingRewardModel

        rm = EmbeddingRewardModel.load(self.path)
        prompts = pairs["prompt"].to_list()
        texts = pairs["a"].to_list() + pairs["b"].to_list()
        mean, std = rm.score(prompts + prompts, texts, cache_dir=ctx.cache_dir / "embedding-rm")
        n = pairs.height
        a, b = [float(x) for x in mean[:n]], [float(x) for x in mean[n:]]
        return Verdicts(_by_score(a, b), calls=len(texts),
                        columns={"score_a": a, "score_b": b, "std_a": [float(x) for x in std[:n]],
                                 "std_b": [float(x) for x in std[n:]]})


def _is_embedding_rm(path: str) -> bool:
    try:
        from curate.reward.embedding_rm import is_embedding_rm
    except ImportError:
        return False
    return bool(is_embedding_rm(path))


def _model_spec(value: str) -> dict[str, Any]:
    if value.lstrip().startswith("{"):
        try:
            spec = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RecipeError(f"--judge model:{value}: not valid JSON ({exc})") from None
        if not isinstance(spec, dict) or "backend" not in spec:
            raise RecipeError(f"--judge model:{value}: a model spec needs backend: (transformers, vllm or openai)")
        return spec
    from curate.models import DEFAULT_SPECS

    if value in DEFAULT_SPECS and value != "default":
        return dict(DEFAULT_SPECS[value])
    path = value if value == "default" else str(Path(value).expanduser().resolve())
    return {"backend": "transformers", "path": path}


def _recipe_stage(value: str) -> tuple[Stage, dict[str, dict[str, Any]], Path]:
    from curate.recipe import load_recipe

    file, _, which = value.partition("#")
    recipe = load_recipe(file)
    stages = recipe.stage_objects
    labels = [f"{i:02d}-{s.name}" for i, s in enumerate(stages, start=1)]
    if which.isdigit() and 1 <= int(which) <= len(stages):
        index = int(which) - 1
    elif which in labels:
        index = labels.index(which)
    else:
        named = [i for i, s in enumerate(stages) if s.name == (which or "judge")]
        if len(named) != 1:
            judges = [lab for lab, s in zip(labels, stages, strict=True) if s.name in ("judge", "reward_score")]
            raise RecipeError(f"--judge recipe:{value}: name the stage after '#' (its position or label); judge "
                              f"stages in {file}: {', '.join(judges) or 'none'}")
        index = named[0]
    stage = stages[index]
    if stage.name not in ("judge", "reward_score"):
        raise RecipeError(f"--judge recipe:{value}: stage {labels[index]} is a {stage.name} stage, not judge or "
                          "reward_score")
    return stage, dict(recipe.models), recipe.base_dir


def parse_judge(spec: str, *, seed: int = 0, batch_size: int = 16) -> PairJudge:
    """The judge a ``--judge`` spec names; ``RecipeError`` (exit 2) saying the accepted forms otherwise."""
    from curate.stages import Judge, RewardScore

    kind, _, value = spec.partition(":")
    if spec == "length":
        return LengthJudge()
    if spec == "random":
        return RandomJudge(seed=seed)
    if kind == "rm" and value:
        if value == "default" or _is_embedding_rm(value):
            try:
                import curate.reward.embedding_rm  # noqa: F401
            except ImportError:
                raise ModelError("--judge rm:default needs curate.reward.embedding_rm (the embedding reward "
                                 "model), which this install does not have") from None
            return EmbeddingRMJudge(spec, value if value == "default" else str(Path(value).expanduser().resolve()))
        stage = RewardScore(path=str(Path(value).expanduser().resolve()), batch_size=64)
        return StageJudge(spec, stage)
    if kind == "model" and value:
        handle = f"judge-eval/{spec}"
        stage = Judge(model=handle, mode="pairwise", allow_degenerate=True, batch_size=batch_size)
        return StageJudge(spec, stage, {handle: _model_spec(value)})
    if kind == "recipe" and value:
        stage, specs, base_dir = _recipe_stage(value)
        if isinstance(stage, Judge):
            stage = Judge(**{**stage.params(), "allow_degenerate": True})
        return StageJudge(spec, stage, specs, base_dir)
    raise RecipeError(f"--judge {spec!r}: not a judge spec; use one of {SPECS_HELP}")


def timed(judge: PairJudge, pairs: pl.DataFrame, ctx: Context) -> tuple[Verdicts, float]:
    started = time.perf_counter()
    verdicts = judge.judge(pairs, ctx)
    return verdicts, time.perf_counter() - started
