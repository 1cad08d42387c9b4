"""Judge win rate: does the trained model answer held-out prompts better than the model it started from?

Held-out reward accuracy (``curate.train.evaluate``) says whether the policy *ranks* known responses the right
way; it says nothing about what the policy *writes*.  This evaluation, off unless ``judge_eval:`` is set, asks
that directly, as AlpacaEval-style evaluations do: the trained policy and the base model each answer the same
held-out prompts (same sampling: greedy by default, else the same seed), and an LLM judge compares each pair.

Why it is built this way:

- **The judge is curate's own ``judge`` stage** in pairwise mode (:class:`curate.stages.judge.Judge`): the same
  prompts, parsing, prefill reading and order-swap check as in a recipe, run on a small preference frame
  (``chosen`` = the policy's answer, ``rejected`` = the base model's).  Each pair is judged twice with the
  positions swapped (Zheng et al. 2023); a win or loss only when both orders agree, disagreeing orders count as
  a tie.  A judge that always picks position A therefore gives exactly 0.5, not a fake preference.
- ``win_rate`` = (wins + ties / 2) / prompts.  Identical answers are a tie without a judge call; an unreadable
  verdict also counts as a tie (reported as ``unparseable``), so ``wins + losses + ties == prompts``.
- **Base answers are generated before training, policy answers after**, with the model already in memory
  (``train_one`` passes it), so nothing is reloaded and full fine-tuning (which changes the base weights in
  place) works like LoRA.  Generation uses a forked, seeded RNG (``curate.llm.hf``), so enabling the evaluation
  does not change training.  The base answers are shared by every run of an invocation that sees the same
  prompts (curated and baseline).
- Prompts: ``prompts`` distinct held-out prompts, chosen by a seeded hash of the prompt (stable across row order);
  a reward-augmented run generates with its goal system message, and the judge sees the prompt without it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import ModelError
from curate.train.config import JudgeEval, TrainConfig
from curate.train.data import Preferences, _bucket

Notify = Callable[[str], None]
Messages = list[dict[str, str]]


@dataclass
class HeldOutPrompts:
    """The prompts of the evaluation: what the models answer (``generate``: message lists, or strings for
    standard-format data) and what the judge is shown (``judge``: message lists, without a training goal)."""

    ids: list[str]
    generate: list[Any]
    judge: list[Messages]
    conversational: bool

    def key(self) -> str:
        return json.dumps(self.generate, sort_keys=True)


def judge_spec(settings: JudgeEval, base_dir: Path) -> dict[str, Any]:
    """The judge's model spec (as under a recipe's ``models:``); a local path is checked here, before training."""
    from curate.llm._common import resolve_model_path

    if isinstance(settings.judge, dict):
        spec = dict(settings.judge)
    else:
        spec = {"backend": "transformers", "path": settings.judge}
    if spec.get("backend", "transformers") in ("transformers", "vllm"):
        try:
            resolve_model_path(spec.get("path"), base_dir, spec.get("gguf_file"))
        except ModelError as exc:
            raise ModelError(f"train.judge_eval.judge: {exc}") from None
    return spec


def _strip_goal(messages: Messages, goal: str | None) -> Messages:
    """The prompt without the goal text ``with_goal`` put into its system message (the judge grades the answer
    to the user's request, not to the training goal)."""
    if not goal or not messages or messages[0]["role"] != "system" or goal not in messages[0]["content"]:
        return messages
    rest = messages[0]["content"].replace(goal, "", 1).strip()
    return ([{"role": "system", "content": rest}] if rest else []) + messages[1:]


def select_prompts(held_out: Preferences, n: int, seed: int, goal: str | None = None) -> HeldOutPrompts:
    """``n`` distinct held-out prompts (one per ``_group``), the ones with the lowest seeded hash of the prompt."""
    frame = (held_out.frame.unique(subset="_group", keep="first", maintain_order=True)
             .with_columns(_bucket(seed).alias("_order")).sort("_order", "_group").head(n))
    raw = frame["prompt"].to_list()
    if held_out.conversational:
        generate = [[{"role": m["role"], "content": m["content"]} for m in p] for p in raw]
        judge = [_strip_goal(p, goal) for p in generate]
    else:
        generate = list(raw)
        judge = [[{"role": "user", "content": p}] for p in raw]
    return HeldOutPrompts([f"p{i}" for i in range(len(raw))], generate, judge, held_out.conversational)


def generate(llm: Any, prompts: HeldOutPrompts, settings: JudgeEval, seed: int, model: Any = None) -> list[str]:
    """One answer per prompt through the model layer (``chat`` with the model's template for message prompts,
    ``generate`` for raw strings, as TRL trains them).  ``model``: generate with this module instead of the
    backend's own (the trained policy: a peft model with its adapter, or the fine-tuned model)."""
    from curate.llm.base import Sampling

    sampling = Sampling(temperature=settings.temperature, max_tokens=settings.max_new_tokens, seed=seed)
    own = llm.model
    if model is not None:
        llm.model = model
    was_training = llm.model.training
    llm.model.eval()
    try:
        out = llm.chat(prompts.generate, sampling) if prompts.conversational else llm.generate(prompts.generate,
                                                                                                 sampling)
    finally:
        llm.model.train(was_training)
        llm.model = own
    return [gens[0].text.strip() if gens else "" for gens in out]


def _assistant(texts: list[str]) -> pl.Series:
    return pl.Series([[{"role": "assistant", "content": t}] for t in texts])


def judge_pairs(prompts: HeldOutPrompts, policy: list[str], base: list[str], ctx: Any,
                options: dict[str, Any] | None = None) -> tuple[dict[str, Any], pl.DataFrame]:
    """Judge policy vs base answers with the ``judge`` stage (handle ``judge`` of ``ctx.models``), both orders.

    Returns the counts (``win_rate``, ``wins``, ``losses``, ``ties``, ``prompts``, ...) and one row per prompt
    (``verdict`` in win / loss / tie, and each order's raw verdict)."""
    from curate.schema import conform
    from curate.stages.judge import Judge

    frame = pl.DataFrame({"id": prompts.ids, "prompt": prompts.judge, "policy": policy, "base": base})
    frame = frame.with_columns(_assistant(policy).alias("chosen"), _assistant(base).alias("rejected"))
    differ = frame.filter(pl.col("policy") != pl.col("base"))
    stage = Judge(mode="pairwise", model="judge", **(options or {}))
    notes: dict[str, Any] = {}
    if differ.height:
        lf = conform(differ.select("id", "prompt", "chosen", "rejected").lazy(), "preference")
        judged = stage(lf, ctx).select("id", "judge_verdict", "judge_verdict_first", "judge_verdict_swapped",
                                       "judge_reason").collect()
        notes = ctx.stats.get(stage.name, {})
    else:
        judged = pl.DataFrame(schema={"id": pl.String, "judge_verdict": pl.String, "judge_verdict_first": pl.String,
                                      "judge_verdict_swapped": pl.String, "judge_reason": pl.String})
    rows = frame.select("id", "prompt", "policy", "base").join(judged, on="id", how="left", maintain_order="left")
    identical = pl.col("policy") == pl.col("base")
    rows = rows.with_columns(
        pl.when(identical).then(pl.lit("tie"))
        .when(pl.col("judge_verdict") == "chosen").then(pl.lit("win"))
        .when(pl.col("judge_verdict") == "rejected").then(pl.lit("loss"))
        .otherwise(pl.lit("tie")).alias("verdict"),
        pl.when(identical).then(pl.lit("identical answers")).otherwise(pl.col("judge_reason")).alias("judge_reason"),
    )
    counts = rows.select(
        (pl.col("verdict") == "win").sum().alias("wins"),
        (pl.col("verdict") == "loss").sum().alias("losses"),
        (pl.col("verdict") == "tie").sum().alias("ties"),
        identical.sum().alias("identical"),
        (~identical & pl.col("judge_verdict").is_null()).sum().alias("unparseable"),
        pl.col("policy").str.len_chars().mean().alias("policy_chars"),
        pl.col("base").str.len_chars().mean().alias("base_chars"),
    ).row(0, named=True)
    n = rows.height
    result: dict[str, Any] = {
        "win_rate": round((counts["wins"] + 0.5 * counts["ties"]) / n, 4) if n else None,
        "wins": int(counts["wins"]), "losses": int(counts["losses"]), "ties": int(counts["ties"]), "prompts": n,
        "identical": int(counts["identical"]), "unparseable": int(counts["unparseable"]),
        "swap_consistency": notes.get("swap_consistency"), "longer_wins": notes.get("longer_wins"),
        "rating_from": notes.get("rating_from"),
        "policy_chars": round(float(counts["policy_chars"]), 1) if n else None,
        "base_chars": round(float(counts["base_chars"]), 1) if n else None,
    }
    return result, rows


class WinRateEval:
    """The evaluation across the runs of one ``curate train``: settings, the judge's spec (checked before any
    training) and the base model's answers (generated once per prompt set)."""

    def __init__(self, config: TrainConfig) -> None:
        if config.judge_eval is None:
            raise ValueError("judge_eval is not set")
        self.settings = config.judge_eval
        self.seed = self.settings.seed if self.settings.seed is not None else config.seed
        self.base_dir = config.base_dir
        self.spec = judge_spec(self.settings, config.base_dir)
        self._base: dict[str, list[str]] = {}

    @property
    def judge_name(self) -> str:
        spec = self.spec
        return str(spec.get("path") or spec.get("model") or spec)

    def prompts(self, held_out: Preferences, goal: str | None) -> HeldOutPrompts:
        return select_prompts(held_out, self.settings.prompts, self.seed, goal)

    def base_answers(self, llm: Any, prompts: HeldOutPrompts) -> list[str]:
        """The base model's answers; call before training (the weights a full fine-tune changes are still the
        base's).  Reused for a later run with the same prompts."""
        key = prompts.key()
        if key not in self._base:
            self._base[key] = generate(llm, prompts, self.settings, self.seed)
        return self._base[key]

    def evaluate(self, llm: Any, policy_model: Any, prompts: HeldOutPrompts, base: list[str], out_dir: Path,
                 ) -> dict[str, Any]:
        """Policy answers, judged against ``base``; writes ``out_dir/judge_eval.parquet`` (one row per prompt)
        and returns the figures for ``metrics.json``."""
        from curate.models import ModelRegistry
        from curate.pipeline import Context

        started = time.perf_counter()
        policy = generate(llm, prompts, self.settings, self.seed, model=policy_model)
        generated = time.perf_counter()
        ctx = Context.ephemeral(models=ModelRegistry(specs={"judge": self.spec}, base_dir=self.base_dir),
                                seed=self.seed)
        try:
            result, rows = judge_pairs(prompts, policy, base, ctx, self.settings.options)
        finally:
            ctx.models.close()
            ctx.close()
        rows.write_parquet(out_dir / "judge_eval.parquet")
        return {
            **result,
            "judge": self.judge_name,
            "max_new_tokens": self.settings.max_new_tokens,
            "temperature": self.settings.temperature,
            "seed": self.seed,
            "generate_seconds": round(generated - started, 3),
            "judge_seconds": round(time.perf_counter() - generated, 3),
            "rows": str(out_dir / "judge_eval.parquet"),
        }
