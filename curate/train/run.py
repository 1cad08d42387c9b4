"""``curate train``: read and check every data file, then train one run or several (curated vs baseline).

Order matters: all data (training sets, baseline or pool, held-out pairs) is read and validated, and the
hardware settings are checked, before the first model loads, so a bad row or a GPU-only option fails in a
second, not after a model load.

Held-out pairs: ``eval_data`` if given; otherwise ``eval_fraction`` of the first training set's prompts
(split by prompt, seeded).  Either way, every held-out prompt is removed from every training set of the
invocation, so no run is evaluated on a prompt it trained on, and all runs are evaluated on the same pairs
(each conditioned on its own goal when its data is reward-augmented, see ``curate.train.goal``).

Resume: each run's ``metrics.json`` records its key (:func:`run_key`: settings, device and precision, the exact
training and held-out rows, goal, model weights).  Running the same command again reuses a finished run instead of
training it again, so a comparison killed during its second arm trains only that arm.

With ``judge_eval``, the judge model's path is checked with the data (before training), and one
:class:`~curate.train.winrate.WinRateEval` serves every run, so curated and baseline are judged against the
same base-model answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from curate.errors import InputDataError
from curate.train.config import TrainConfig
from curate.train.data import Preferences, random_subset, read_preferences, split_held_out, with_goal, without_groups
from curate.train.evaluate import EVAL_PAIRS
from curate.train.goal import goal_for
from curate.train.trainer import Notify, cpu_note, resolve_hardware, train_one
from curate.train.winrate import WinRateEval


@dataclass
class TrainOutcome:
    runs: list[dict[str, Any]]
    out_dir: Path
    comparison: Path | None = None
    notes: list[str] = field(default_factory=list)
    #: curated - baseline on the shared held-out pairs (``curate.train.compare.difference``)
    difference: dict[str, Any] | None = None


@dataclass
class _Plan:
    label: str
    train: Preferences
    held_out: Preferences | None
    goal: str | None = None


def _plan(config: TrainConfig, compare: tuple[Path, Path] | None) -> tuple[list[_Plan], str]:
    resolve = config.resolve
    first_paths = [compare[0]] if compare else [resolve(p) for p in config.data]
    main = read_preferences(first_paths)
    baseline: Preferences | None = None
    pool: Preferences | None = None
    if compare:
        baseline = read_preferences([compare[1]])
    elif config.baseline == "random":
        pool = read_preferences([resolve(p) for p in config.pool])
    elif config.baseline is not None:
        baseline = read_preferences([resolve(config.baseline)])

    held_out: Preferences | None = None
    if config.eval_data:
        held_out = read_preferences([resolve(p) for p in config.eval_data])
        main = without_groups(main, held_out)
        held_name = ", ".join(config.eval_data)
    elif config.eval_fraction > 0:
        main, held_out = split_held_out(main, config.eval_fraction, config.seed)
        held_name = f"{config.eval_fraction:g} of the prompts of {', '.join(map(str, main.files))} (seed {config.seed})"
    else:
        held_name = "none"
    if held_out is not None:
        baseline = without_groups(baseline, held_out) if baseline is not None else None
        pool = without_groups(pool, held_out) if pool is not None else None
    if main.rows == 0:
        files = ", ".join(map(str, main.files))
        raise InputDataError(f"{files}: no training rows left after removing the held-out prompts")
    if pool is not None:
        baseline = random_subset(pool, main.rows, config.seed)

    runs = [("curated" if baseline is not None else "run", main)]
    if baseline is not None:
        runs.append(("baseline", baseline))
    plans: list[_Plan] = []
    for label, data in runs:
        eval_for = held_out
        goal = goal_for(config, data) if held_out is not None else None
        if goal is not None and held_out is not None:
            if not config.eval_data and "goal_score" not in held_out.frame.columns:
                raise InputDataError(
                    f"{held_out.files[0]}: reward-augmented rows without 'goal_score' (an export?) cannot be split "
                    "into a held-out set: give eval_data: (plain preference pairs), or train on the run's data/"
                )
            eval_for = with_goal(held_out, goal.prompt, goal.system, goal.separator, goal.template_goal)
        plans.append(_Plan(label, data, eval_for, goal.prompt if goal is not None else None))
    return plans, held_name


def run_train(config: TrainConfig, *, compare: tuple[Path, Path] | None = None,
              notify: Notify | None = None) -> TrainOutcome:
    """Train (and evaluate) every run of ``config``; write ``metrics.json`` per run and, for several runs,
    ``comparison.json``/``comparison.md``."""
    say = notify or (lambda _msg: None)
    plans, held_name = _plan(config, compare)
    hardware = resolve_hardware(config)
    winrate = WinRateEval(config) if config.judge_eval is not None else None  # checks the judge's path now
    out_dir = config.resolve(config.output)
    outcome = TrainOutcome([], out_dir)
    if hardware.device == "cpu":
        outcome.notes.append(cpu_note(hardware))
        say(cpu_note(hardware))
    for plan in plans:
        run_dir = out_dir if len(plans) == 1 else out_dir / plan.label
        key = run_key(config, plan, hardware.precision, hardware.device)
        metrics = finished_run(run_dir, key, plan)
        if metrics is not None:
            say(f"  {plan.label}: finished before with the same data, settings and model: reusing "
                f"{run_dir / 'metrics.json'} (delete it to train again)")
        else:
            metrics = train_one(config, plan.train, plan.held_out, run_dir, label=plan.label, hardware=hardware,
                                notify=say, extra={"held_out": held_name, "eval_goal_prompt": plan.goal,
                                                   "run_key": key},
                                winrate=winrate, goal=plan.goal)
        outcome.runs.append(metrics)
    if len(plans) > 1:
        from curate.train.compare import write_comparison

        outcome.comparison = write_comparison(outcome.runs, out_dir, held_name)
        outcome.difference = json.loads(outcome.comparison.read_text(encoding="utf-8"))["difference"]
    return outcome


def run_key(config: TrainConfig, plan: _Plan, precision: str, device: str) -> str:
    """Identity of one run: settings (not where it writes or how often it prints), the device and precision it
    trains in, the exact training and held-out rows (content keys), the goal, and the model's weights.  A
    ``metrics.json`` with this key is that run, done."""
    import trl

    from curate.llm._common import resolve_model_path
    from curate.train.refs import _file_identity

    folder, gguf = resolve_model_path(config.model, config.base_dir, config.gguf_file)
    weights = folder / gguf if gguf else folder

    def rows(prefs: Preferences | None) -> str | None:
        if prefs is None:
            return None
        return xxhash.xxh3_128_hexdigest("\n".join(sorted(prefs.frame.get_column("_key").to_list())).encode())

    settings = {k: v for k, v in config.settings().items() if k not in ("output", "logging_steps")}
    payload = {"settings": settings, "label": plan.label, "goal": plan.goal, "train": rows(plan.train),
               "held_out": rows(plan.held_out), "model": [str(weights), _file_identity(weights)],
               "trl": ".".join(trl.__version__.split(".")[:2]), "hardware": [device, precision]}
    return xxhash.xxh3_128_hexdigest(json.dumps(payload, sort_keys=True, default=str).encode())


def finished_run(run_dir: Path, key: str, plan: _Plan) -> dict[str, Any] | None:
    """The metrics of a finished run with this key (a killed comparison keeps its finished arm), else None."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if metrics.get("run_key") != key or (plan.held_out is not None and not (run_dir / EVAL_PAIRS).is_file()):
        return None
    return metrics
