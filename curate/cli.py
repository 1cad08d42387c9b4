"""The ``curate`` command: parse arguments, call the library, print, exit with a meaningful code.

Errors become one line on stderr and the error class's exit code (see ``curate.errors``); ``--debug``
adds the traceback and keeps the exit code.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Column, Table
from typer.core import TyperOption

from curate import __version__
from curate.errors import CurateError, environment_error
from curate.words import count

app = typer.Typer(
    name="curate",
    help="Build clean, deduplicated, scored and auditable SFT and DPO data.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

T = TypeVar("T")


def _flag_type(self: TyperOption, ctx: Any) -> str | None:
    """No ``<bool>`` beside a flag in ``--help``: a flag takes no value (typer's rich help prints one for every
    option; its plain help already leaves flags bare).  ``--lora/--no-lora`` style pairs are flags too."""
    return None if self.is_flag else _option_type(self, ctx)


_option_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]


def _examples(*lines: str) -> str:
    """The ``Examples`` block shown under a command's ``--help`` (kept verbatim, one command a line)."""
    body = "\n".join(lines)
    return f"**Examples**\n\n```\n{body}\n```"


def _guard(debug: bool, action: Callable[[], T]) -> T:
    """Run ``action``; turn failures into one line and the error's exit code.

    The exit code never depends on ``--debug``: with it the traceback is printed as well, and the process
    still exits with the error's own code (a scheduler sees the same code in a debug run).  An OS refusal
    that reaches here (disk full, read-only, permissions) is an :class:`EnvironmentIOError`, exit code 8.
    """
    try:
        return action()
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        err.print("interrupted: run the same command again to resume where it stopped")
        raise typer.Exit(130) from None
    except Exception as exc:
        if debug:
            traceback.print_exc()
        error = exc if isinstance(exc, CurateError) else environment_error(exc)
        if error is not None:
            err.print(f"[bold red]error:[/] {error}", markup=True, highlight=False)
            raise typer.Exit(error.exit_code) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        hint = "" if debug else " (run with --debug for the traceback)"
        err.print(f"[bold red]error:[/] unexpected {type(exc).__name__}: {first}{hint}", markup=True, highlight=False)
        raise typer.Exit(1) from None


def _version(value: bool) -> None:
    if value:
        out.print(f"curate {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """curate: recipes of stages over Polars frames, from raw data to training-ready Parquet."""


@app.command(epilog=_examples(
    "curate run recipes/quickstart.yaml",
    "curate run recipes/clean_sft.yaml --out runs/demo --set minhash_dedup.threshold=0.7",
    "curate run recipes/select_sft.yaml --limit 100 --fresh",
    "curate run nightly.yaml --quiet --log-json   # cron: exit code + JSON lines",
))
def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML, e.g. recipes/quickstart.yaml"),
    out_dir: Path | None = typer.Option(
        None, "--out", "-o", help="Run directory (default: the recipe's output.dir or runs/NAME)."
    ),
    resume: bool = typer.Option(
        True, "--resume/--fresh", help="Reuse finished stages and batches (default), or start over."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Use only the first N usable input rows."),
    overrides: list[str] = typer.Option([], "--set", help="Override a recipe value: key=value (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or summary table."),
    log_json: bool = typer.Option(False, "--log-json", help="One JSON line per event on stdout, for schedulers."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
    executor: str = typer.Option(
        "local", "--executor", help="local (this process) or ray (Ray Data; pip install 'curate[dist]')."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster for --executor ray, e.g. ray://head:10001 (default: RAY_ADDRESS)."
    ),
    incremental: bool = typer.Option(
        False, "--incremental", help="Scheduled refresh: model work only for new rows; records the previous run."
    ),
) -> None:
    """Run a recipe end to end and publish its output atomically (a re-run reuses every finished stage)."""
    from curate.events import SIGTERM_EXIT, Terminated, json_stdout, new_run_id
    from curate.recipe import load_recipe
    from curate.runner import Runner, default_run_dir

    show = not quiet and not log_json
    run_id = new_run_id()
    # What a run_failed line this process writes itself says (errors before or outside the runner's own).
    state: dict[str, Any] = {"runner": None, "error": "", "exit_code": None, "log": None}

    def on_event(event: dict[str, Any]) -> None:
        if state["log"] is not None:
            state["log"](event)
        elif show and event["event"] == "export_done":
            out.print(f"  export {event['format']}: {event['out']} {event['splits']}", highlight=False)
        elif show and event["event"] == "stage_done":
            from curate.funnel import describe

            cached = " (cached)" if event["cached"] else ""
            extra = describe(event)
            if "model_requests" in event["notes"]:  # requests, tokens and cost of a model stage (curate.progress)
                from curate.progress import usage_line

                extra = "; ".join(filter(None, [extra, usage_line(event["notes"])]))
            out.print(
                f"  {event['label']:<22} {event['rows_in']:>9,} -> {event['rows_out']:>9,} rows"
                f"  {event['quarantined']:>7,} set aside  {event['seconds']:>8.2f}s{cached}"
                + (f"  {extra}" if extra else ""),
                highlight=False,
            )

    on_event.progress_events = log_json  # type: ignore[attr-defined]  # curate.progress: no timer without a reader

    def action() -> None:
        loaded = load_recipe(recipe, overrides)
        run_dir = out_dir if out_dir is not None else default_run_dir(loaded)
        if show:
            out.print(f"curate run [bold]{loaded.name}[/] -> {run_dir}", highlight=False)
        progress = show and sys.stderr.isatty()
        if not progress:
            # Model libraries draw their own tqdm bars (e.g. GGUF de-quantising); off in logs and cron jobs.
            os.environ.setdefault("TQDM_DISABLE", "1")
        if executor not in ("local", "ray"):
            from curate.errors import RecipeError

            raise RecipeError(f"--executor {executor}: choose local or ray")
        state["runner"] = Runner(loaded, run_dir, resume=resume, limit=limit, progress=progress, on_event=on_event,
                                 executor=executor, address=address, incremental=incremental, run_id=run_id)
        result = state["runner"].run()
        if show:
            out.print(
                f"done in {result.seconds:.2f}s: {count(result.rows, f'{result.table} row')} -> {result.output}\n"
                f"  set aside: {count(result.quarantined, 'row')} in {result.run_dir / 'quarantine'}\n"
                f"  manifest:  {result.manifest_path}",
                highlight=False,
            )
            from curate.progress import usage_line

            usage = json.loads(result.manifest_path.read_text()).get("model_usage")
            if usage:
                out.print(f"  models:    {usage_line(usage)}", highlight=False)
            # Both are views a failure never stops a run for: named only when this run wrote them (data/ is
            # replaced whole, so a card there is this run's; a report older than the manifest is an earlier run's).
            card, report = result.output.parent / "README.md", result.run_dir / "report.html"
            if card.is_file():
                out.print(f"  card:      {card}", highlight=False)
            if report.is_file() and report.stat().st_mtime >= result.manifest_path.stat().st_mtime:
                out.print(f"  report:    {report}", highlight=False)

    def watched() -> None:
        """``action``, remembering how it failed for the ``run_failed`` line (SIGTERM exits 143, not 130)."""
        try:
            action()
        except Terminated:
            state.update(error="terminated (SIGTERM): run the same command again to resume", exit_code=SIGTERM_EXIT)
            raise
        except KeyboardInterrupt:
            state["error"] = "interrupted: run the same command again to resume where it stopped"
            raise
        except Exception as exc:
            state["error"] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, CurateError) else str(exc)
            raise

    if not log_json:
        _guard(debug, action)
        return
    # Scheduler mode: stdout carries JSON lines only, each with ts, run_id and level (curate.events).
    with json_stdout(run_id) as writer:
        state["log"] = writer
        try:
            _guard(debug, watched)
        except typer.Exit as stop:
            code = state["exit_code"] or stop.exit_code
            if code and not writer.failed:  # the runner reports its own failures; this covers the rest
                stage = getattr(state["runner"], "_phase", "start")  # the stage it was in ("start": before the run)
                writer({"event": "run_failed", "stage": stage, "error": state["error"], "exit_code": code})
            if code != stop.exit_code:
                raise typer.Exit(code) from None
            raise


@app.command(epilog=_examples(
    "curate validate recipes/quickstart.yaml",
    "curate validate my.yaml --set models.gen.path=/models/Qwen2.5-7B-Instruct",
))
def validate(
    recipe: Path = typer.Argument(..., help="Recipe YAML to check."),
    overrides: list[str] = typer.Option([], "--set", help="Override a recipe value: key=value."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Check a recipe without running it: stages and parameter types, input paths and the table each input
    gives, every stage's table contract (the columns its parameters name exist where it runs), model paths."""
    from curate.validation import validate_recipe

    def action() -> None:
        # Every problem at once (curate.validation): a bad stage does not hide a missing input or model path.
        checked = validate_recipe(recipe, overrides)
        for line in checked.lines:
            out.print(f"  {line}", highlight=False)
        if checked.error is not None:
            raise checked.error
        loaded = checked.recipe
        stages = ", ".join(s.name for s in loaded.stage_objects) or "(no stages)"
        out.print(f"{recipe}: ok ({count(len(loaded.input), 'input')}; stages: {stages}; {checked.table} -> "
                  f"{checked.final} table)", highlight=False)

    _guard(debug, action)


def _short(value: Any) -> str:
    """Four significant digits for floats, so a distribution table fits an 80-column terminal."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command(epilog=_examples(
    "curate stages",
    "curate stages minhash_dedup",
))
def stages(name: str | None = typer.Argument(None, help="A stage to describe in full.")) -> None:
    """List the stages with their parameters, defaults and the paper each comes from."""
    from curate.recipe import stage_class
    from curate.stages import STAGES

    def describe(stage_name: str) -> None:
        # Read from the class, never built: a stage with required parameters (audit's references) describes too.
        # Plain text (no reST markup), one line per parameter: curate.stagedoc.
        from curate.stagedoc import describe as stage_page

        out.print(stage_page(stage_class(stage_name), stage_name), markup=False, highlight=False)

    if name is not None:
        _guard(False, lambda: describe(name))
        return
    table = Table("stage", "kind", "parameters (default)", "paper", show_lines=False)
    for stage_name, cls in sorted(STAGES.items()):
        params = ", ".join(
            f"{k}={_default_text(v)}" for k, v in cls.__pydantic_fields__.items()  # type: ignore[attr-defined]
        )
        table.add_row(stage_name, cls.kind, params, cls.paper)
    out.print(table)


def _default_text(info: Any) -> str:
    """A pydantic field's default as a recipe would spell it, or ``(required)``."""
    if info.default_factory is not None:
        return repr(info.default_factory())
    return "(required)" if info.is_required() else repr(info.default)


@app.command(epilog=_examples(
    "curate inspect runs/quickstart",
    "curate inspect runs/quickstart/data/preference.parquet --json",
    "curate inspect sample_data/instructions_alpaca.jsonl --head 3",
    "curate inspect runs/preference_clean --sample 5 --seed 1",
))
def inspect(
    path: Path = typer.Argument(..., help="A Parquet file, a folder of them, a run directory, or a raw JSONL/JSON/"
                                          "CSV/TSV file (read through the adapters)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    head: int = typer.Option(0, "--head", min=0, help="Print the first N rows."),
    sample: int = typer.Option(0, "--sample", min=0, help="Print N rows drawn at random (--seed)."),
    seed: int = typer.Option(0, "--seed", help="Seed of --sample."),
    adapter: str = typer.Option("auto", "--adapter", help="Adapter of a raw file (default: detected)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Row count, schema, null counts, length and score distributions of a dataset; --head/--sample print rows
    (preference rows as prompt, chosen and rejected side by side)."""
    from curate.summary import inspect_frame, rows_text, summarize

    def action() -> None:
        summary = summarize(path, adapter)
        shown = None
        if head or sample:
            frame = inspect_frame(path, adapter)[0].collect()
            picked = frame.head(head) if head else frame.sample(min(sample, frame.height), seed=seed)
            shown = rows_text(picked, summary["table"])
        if as_json:
            print(json.dumps({**summary, **({"rows_shown": shown} if shown is not None else {})}, default=str,
                             indent=2))
            return
        origin = (f", adapter: {summary['adapter']}, {count(summary['rejected'], 'row')} rejected"
                  if "adapter" in summary else "")
        out.print(f"[bold]{path}[/]: {count(summary['rows'], 'row')}, table: {summary['table'] or 'not canonical'}"
                  f"{origin}", highlight=False)
        if shown is not None:
            rows = Table(*(shown[0].keys() if shown else ["rows"]), box=None, show_lines=True)
            for row in shown:
                rows.add_row(*row.values())
            out.print(rows, highlight=False)
            return
        schema = Table("column", "type", "nulls", box=None)
        for column, dtype in summary["schema"].items():
            schema.add_row(column, dtype, f"{summary['nulls'].get(column, 0):,}")
        out.print(schema)
        for title, block in (("lengths", summary["lengths"]), ("scores", summary["scores"])):
            if not block:
                continue
            table = Table(title, "count", "mean", "min", "p10", "p50", "p90", "max", box=None)
            for metric, dist in block.items():
                table.add_row(metric, *[_short(dist.get(k, "-")) for k in
                                        ("count", "mean", "min", "p10", "p50", "p90", "max")])
            out.print(table)

    _guard(debug, action)


@app.command(epilog=_examples(
    "curate export runs/preference_clean --format kto --out exports/kto --test-size 0.1",
    "curate export runs/clean_sft --format sft --out exports/sft --save-to-disk",
))
def export(
    source: Path = typer.Argument(..., help="A run directory or a Parquet file of a canonical table."),
    fmt: str = typer.Option(..., "--format", "-f", help="dpo | kto | sft | listwise"),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for train.parquet (and test.parquet)."),
    test_size: float = typer.Option(0.0, "--test-size", help="Held-out fraction, split by prompt."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split."),
    save_to_disk: bool = typer.Option(False, "--save-to-disk", help="Also write a datasets.DatasetDict."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Write the dataset a TRL trainer takes as is (DPO/ORPO/CPO/RM, KTO, SFT, listwise)."""
    from curate.export import export as run_export

    def action() -> None:
        if not sys.stderr.isatty():
            os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # save_to_disk's bars: off in pipes
        result = run_export(source, fmt, out_dir, test_size=test_size, seed=seed, save_to_disk=save_to_disk)
        table = Table("format", "split", Column("rows", justify="right"), "path", box=None, pad_edge=False)
        for split, rows in result.splits.items():
            table.add_row(result.format, split, f"{rows:,}", str(result.out_dir / f"{split}.parquet"))
        if "save_to_disk" in result.report:
            table.add_row("datasets", ", ".join(result.splits), f"{sum(result.splits.values()):,}",
                          result.report["save_to_disk"])
        # Paths are the point of the table: never fold them into an 80-column pipe.
        Console(width=max(out.width, 200), soft_wrap=True).print(table, highlight=False)
        if fmt == "kto":
            out.print(f"desirable {result.report['desirable']:,} / undesirable {result.report['undesirable']:,}",
                      highlight=False)
        if result.report.get("prompts_in_both_splits"):
            out.print(f"{count(result.report['prompts_in_both_splits'], 'prompt')} in both splits", highlight=False)
        out.print(f"settings and sources: {result.out_dir / 'export.json'}", highlight=False)

    _guard(debug, action)


@app.command(epilog=_examples(
    "curate gc runs/quickstart --dry-run",
    "curate gc runs/quickstart",
))
def gc(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be deleted."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Delete cache entries the run's latest manifest no longer uses (old parameters, old inputs)."""
    from curate.runner import collect_garbage

    def action() -> None:
        doomed, freed = collect_garbage(run_dir, dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        out.print(f"{verb} {count(len(doomed), 'cache entry')} ({freed / 2**20:.1f} MiB)",
                  highlight=False)
        for path in doomed:
            out.print(f"  {path}", highlight=False)

    _guard(debug, action)


@app.command(epilog=_examples(
    "curate report runs/quickstart          # writes runs/quickstart/report.html",
    "curate report runs/audit --out /tmp/audit.html",
))
def report(
    run_dir: Path = typer.Argument(..., help="A finished run directory (it has manifest.json)."),
    out_file: Path | None = typer.Option(None, "--out", "-o", help="HTML file to write (default RUN/report.html)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Write a self-contained HTML report of a run: funnel, lengths, scores, length bias, dedup, audit."""
    from curate.report import write_report

    def action() -> None:
        out.print(f"report -> {write_report(run_dir, out_file)}", highlight=False)

    _guard(debug, action)


@app.command(epilog=_examples(
    "curate scaling runs/scaling.csv --target 0.95",
    "curate scaling points.jsonl --plot scaling.png --json",
))
def scaling(
    metrics_file: Path = typer.Argument(..., help="CSV, JSON or JSONL of (size, score) points, one per subset."),
    target: float = typer.Option(0.95, "--target", help="Share of P_max the suggested size must reach."),
    size: str | None = typer.Option(None, "--size", help="Column of the subset size (default: size, n, ...)."),
    score: str | None = typer.Option(None, "--score", help="Column of the score (default: score, metric, ...)."),
    as_json: bool = typer.Option(False, "--json", help="Print the fit as JSON."),
    plot: Path | None = typer.Option(None, "--plot", help="Also draw points, fit and target size to this PNG."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Fit the data-scaling plateau P(n) = P_max - (P_max - P_0) e^(-k n) and the size reaching --target x P_max."""
    from curate.scaling import fit_file

    def action() -> None:
        fit = fit_file(metrics_file, target=target, size=size, score=score)
        if plot is not None:
            from curate.scaling import plot_fit

            plot_fit(metrics_file, plot, target=target, size=size, score=score)
            err.print(f"plot: {plot}", highlight=False)
        if as_json:
            print(json.dumps(fit.to_dict()))
            return

        def fmt(value: float | None, err: float | None = None) -> str:
            text = "-" if value is None else f"{value:.6g}"
            return text if err is None else f"{text} ± {err:.2g}"

        table = Table("parameter", "value", box=None)
        table.add_row("P_max", fmt(fit.p_max, fit.p_max_err))
        table.add_row("P_0", fmt(fit.p_0, fit.p_0_err))
        table.add_row("k", fmt(fit.k, fit.k_err))
        table.add_row(f"size at {fit.target:g} x P_max", fmt(fit.size_at_target))
        table.add_row("R^2 / RMSE", f"{fit.r2:.4f} / {fit.rmse:.3g} ({fit.points} points)")
        out.print(table)
        if fit.note:
            out.print(f"note: {fit.note}", highlight=False)

    _guard(debug, action)


@app.command(epilog=_examples(
    "curate init                            # list the starters, one line each",
    "curate init clean-sft                  # ./clean_sft.yaml + ./data/chats.jsonl",
    "curate init select-sft my-project      # my-project/select_sft.yaml + my-project/data/",
    "curate init audit --name decontam --force",
))
def init(
    use: str | None = typer.Argument(None, help="A starter: clean-sft | select-sft | magpie-dpo | translate | audit "
                                                "(without one: list them)."),
    directory: Path = typer.Argument(Path("."), help="Folder to write into (created if missing)."),
    name: str | None = typer.Option(None, "--name", help="Recipe name (default: the use, e.g. magpie_dpo)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Write a starter recipe for a use, with sample rows beside it so it validates and runs at once; without a
    use, list the starters."""
    from curate.starter import starter_lines, write_starter

    def action() -> None:
        if use is None:
            out.print("starters (curate init NAME [FOLDER] writes NAME's recipe and sample data):", highlight=False)
            for line in starter_lines():
                out.print(f"  {line}", highlight=False, markup=False)
            return
        written = write_starter(use, directory, name=name, force=force)
        for path in written:
            out.print(f"  wrote {path}", highlight=False)
        out.print(f"next: curate validate {written[0]}  then  curate run {written[0]}", highlight=False)

    _guard(debug, action)


@app.command(epilog=_examples(
    "curate train recipes/train_validate.yaml",
    "curate train --data runs/preference_clean --max-steps 50 --out runs/train_demo",
    "curate train cfg.yaml --compare curated.parquet random_subset.parquet --set beta=0.2",
))
def train(
    config: Path | None = typer.Argument(None, help="Train settings YAML, or a recipe with a train: section."),
    data: list[Path] = typer.Option([], "--data", "-d", help="Preference Parquet / run dir to train on (repeatable)."),
    eval_data: list[Path] = typer.Option([], "--eval-data", help="Held-out preference Parquet (repeatable)."),
    compare: tuple[Path, Path] | None = typer.Option(
        None, "--compare", help="Train on CURATED and on BASELINE with the same settings; print one table."),
    model: str | None = typer.Option(None, "--model", "-m", help="default | model folder | .gguf file."),
    loss: str | None = typer.Option(None, "--loss", help="sigmoid (DPO) | ipo | hinge."),
    beta: float | None = typer.Option(None, "--beta", help="DPO beta."),
    learning_rate: float | None = typer.Option(None, "--lr", help="Learning rate (default 2e-4 LoRA, 5e-6 full)."),
    epochs: float | None = typer.Option(None, "--epochs", help="Epochs (when --max-steps is not given)."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Optimizer steps (overrides --epochs)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Pairs per step."),
    max_length: int | None = typer.Option(None, "--max-length", help="Max tokens of prompt + response."),
    max_prompt_length: int | None = typer.Option(
        None, "--max-prompt-length", help="Max prompt tokens (keeps its end)."),
    lora: bool | None = typer.Option(None, "--lora/--no-lora", help="Train a LoRA adapter (default) or all weights."),
    lora_rank: int | None = typer.Option(None, "--lora-rank", help="LoRA rank."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of shuffling, splits and the random baseline."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda."),
    out_dir: Path | None = typer.Option(None, "--out", "-o", help="Output folder (metrics.json, comparison.json)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a train setting: key=value (repeatable)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Train a model with DPO on preference data and report held-out reward accuracy, margin and log-prob drift.

    Validation training (TRL's DPOTrainer; LoRA by default; GPU when present). Reference log-probs are cached
    (the run's cache/, never beside the data), so a second run skips the reference model. With --compare (or
    baseline: random in the config) two runs train with the same seed and settings and one comparison table
    is printed.

    Example: curate train --data runs/preference_clean --eval-data heldout.parquet --max-steps 100
    """
    from curate.train import load_train_config, run_train
    from curate.train.compare import table

    def action() -> None:
        if not sys.stderr.isatty():
            os.environ.setdefault("TQDM_DISABLE", "1")  # GGUF de-quantising bars: off in logs and cron jobs
        extra = {
            "data": [str(p.resolve()) for p in data] or None,
            "eval_data": [str(p.resolve()) for p in eval_data] or None,
            "model": str(Path(model).resolve()) if model and model != "default" else model,
            "loss": loss, "beta": beta, "learning_rate": learning_rate, "epochs": epochs, "max_steps": max_steps,
            "batch_size": batch_size, "max_length": max_length, "max_prompt_length": max_prompt_length,
            "lora": lora, "lora_rank": lora_rank, "seed": seed, "device": device,
            "output": str(out_dir.resolve()) if out_dir is not None else None,
        }
        if compare is not None and not extra["data"]:
            extra["data"] = [str(compare[0].resolve())]
        settings = load_train_config(config, overrides, extra)
        pair = (compare[0].resolve(), compare[1].resolve()) if compare is not None else None
        outcome = run_train(settings, compare=pair, notify=lambda msg: err.print(msg, highlight=False))
        # Ten columns: never squeeze them into an 80-column pipe (CI logs, `| tee`), let long lines run on.
        Console(width=max(out.width, 200)).print(table(outcome.runs, diff=outcome.difference))
        for metrics in outcome.runs:
            path = outcome.out_dir / ("" if len(outcome.runs) == 1 else metrics["run"]) / "metrics.json"
            out.print(f"  {metrics['run']}: {path}", highlight=False)
        if outcome.comparison is not None:
            out.print(f"  comparison: {outcome.comparison}", highlight=False)

    _guard(debug, action)


@app.command("judge-eval", epilog=_examples(
    "curate judge-eval pairs.jsonl                 # the length and random baselines",
    "curate judge-eval pairs.jsonl -j model:default -j length -j rm:default --out runs/je",
    "curate judge-eval pairs.csv --label-map '{\"0\": \"a\", \"1\": \"b\", \"2\": \"tie\"}' --json",
    "curate judge-eval hh.jsonl.gz -j recipe:recipes/quickstart.yaml#judge --limit 200",
))
def judge_eval(
    labelled: Path = typer.Argument(..., help="Labelled pairs: prompt, response_a, response_b, label (a/b/tie), "
                                              "or a preference table (chosen is the label)."),
    judges: list[str] = typer.Option([], "--judge", "-j", help="length | random | rm:default | rm:PATH | "
                                     "model:HANDLE_OR_PATH | recipe:FILE#STAGE (repeatable; default length, random)."),
    limit: int | None = typer.Option(None, "--limit", "-n", help="Only the first N pairs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the A/B order of preference rows, the coin and intervals."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    out_dir: Path | None = typer.Option(None, "--out", "-o", help="Write judge_eval.json, judge_eval.html, "
                                        "verdicts.parquet here (and cache model work in OUT/cache)."),
    label_map: str | None = typer.Option(None, "--label-map", help="JSON mapping the file's labels to a/b/tie."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Measure judges and reward models against human labels: agreement (2- and 3-way, 95% intervals), decided
    share, swap consistency, position bias, length bias, per category; seconds and model calls."""
    from curate.errors import RecipeError
    from curate.judge_eval import evaluate, write_outputs
    from curate.judge_eval.html import COLUMNS

    def action() -> None:
        if not sys.stderr.isatty():
            os.environ.setdefault("TQDM_DISABLE", "1")  # GGUF de-quantising bars: off in logs and pipes
        mapping = None
        if label_map is not None:
            try:
                mapping = json.loads(label_map)
            except json.JSONDecodeError as exc:
                raise RecipeError(f"--label-map: not valid JSON ({exc}); e.g. "
                                  '\'{"0": "a", "1": "b", "2": "tie"}\'') from None
            if not isinstance(mapping, dict):
                raise RecipeError("--label-map: give a JSON object, e.g. {\"1\": \"a\", \"2\": \"b\"}")
        result, verdicts = evaluate(
            labelled, judges or ["length", "random"], limit=limit, seed=seed, label_map=mapping,
            cache_dir=out_dir / "cache" if out_dir is not None else None,
            notify=lambda msg: err.print(msg, highlight=False),
        )
        if out_dir is not None:
            for path in write_outputs(result, verdicts, out_dir):
                err.print(f"  wrote {path}", highlight=False)
        if as_json:
            print(json.dumps(result))
            return

        def cell(value: Any) -> str:
            if value is None:
                return "-"
            if isinstance(value, list):
                return f"{value[0]:.3f}-{value[1]:.3f}"
            return f"{value:.3f}" if isinstance(value, float) else str(value)

        table = Table(*COLUMNS, box=None)
        for j in result["judges"]:
            table.add_row(j["name"], *(cell(j[k]) for k in (
                "agreement", "agreement_ci", "agreement_decided", "agreement_3way", "decided", "swap_consistency",
                "position_bias", "length_bias", "seconds", "calls")))
        Console(width=max(out.width, 160)).print(table)
        labels = result["labels"]
        out.print(f"{count(result['n'], 'pair')} from {result['file']} (labels a {labels.get('a', 0)}, "
                  f"b {labels.get('b', 0)}, tie {labels.get('tie', 0)})", highlight=False)

    _guard(debug, action)


rm_app = typer.Typer(help="Embedding reward models: fit a Bradley-Terry ensemble on frozen sentence vectors.",
                     no_args_is_help=True, rich_markup_mode="markdown", epilog=_examples(
                         "curate rm fit labels.jsonl --out models/rm",
                         "curate run recipe.yaml   # with reward_score: {path: models/rm}",
                     ))
app.add_typer(rm_app, name="rm")


@rm_app.command("fit", epilog=_examples(
    "curate rm fit ../shared/data/hh_rlhf_harmless_base_test/test.jsonl.gz --out models/hh-rm",
    "curate rm fit labels.jsonl --out models/rm --head mlp --ensemble 5 --folds 5 --cache .curate-cache",
    "curate rm fit prefs.parquet --out models/rm --encoder ./my-sentence-encoder --limit 2000",
))
def rm_fit(
    labelled: Path = typer.Argument(..., help="A preference file curate reads (preference, pairwise, hh-rlhf, "
                                              "or scored/ranked candidates)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Model folder to write (rm.json, weights.npz, README.md)."),
    encoder: str = typer.Option("default", "--encoder",
                                help="Sentence-transformers folder, 'default' (MiniLM), or an embed spec as JSON "
                                     "('{\"path\": \"default\", \"normalize\": false}')."),
    head: str = typer.Option("linear", "--head", help="linear | mlp"),
    features: str = typer.Option("joint,response", "--features",
                                 help="Comma-separated parts: joint (last user turn + response), response, prompt, "
                                      "product (prompt * response)."),
    ensemble: int = typer.Option(5, "--ensemble", min=1, help="Ensemble members (bootstrap resamples)."),
    folds: int = typer.Option(5, "--folds", min=2, help="Cross-validation folds (grouped by prompt)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the folds, resamples and MLP init."),
    cache: Path = typer.Option(Path(".curate-cache"), "--cache", help="Embedding vector cache folder."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Use only the first N pairs."),
    adapter: str = typer.Option("auto", "--adapter", help="Input adapter (auto-detected by default)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Fit an embedding reward model on labelled pairs and print its cross-validated accuracy."""

    def action() -> None:
        from curate.errors import RecipeError
        from curate.reward.embedding_rm import check_features, fit_embedding_rm, load_pairs

        if head not in ("linear", "mlp"):
            raise RecipeError(f"--head must be linear or mlp, got {head!r}")
        pairs, info = load_pairs(labelled, adapter, limit=limit)
        out.print(f"read {count(info['rows'], 'row')} from {labelled} ({info['adapter']} adapter, {info['table']} "
                  f"table); {info['rejected']} rejected"
                  + (f" (first: {info['first_rejected']})" if info["rejected"] else "")
                  + f"; {count(info['pairs'], 'pair')}", highlight=False)
        if encoder.lstrip().startswith("{"):
            try:
                spec = {"backend": "sentence-transformers", **json.loads(encoder)}
            except json.JSONDecodeError as exc:
                raise RecipeError(f"--encoder: not a JSON object ({exc})") from None
        else:
            spec = {"backend": "sentence-transformers", "path": encoder}
        desc = (f"{count(info['pairs'], 'pair')} from {labelled.name} ({info['adapter']} adapter; "
                f"{count(info['rejected'], 'row')} rejected by the adapter"
                f"{'; first ' + count(limit, 'pair') if limit else ''})")
        try:
            parts = check_features([p.strip() for p in features.split(",") if p.strip()])
        except ValueError as exc:
            raise RecipeError(f"--features: {exc}") from None
        card = fit_embedding_rm(pairs, out_dir, encoder=spec, features=parts, head=head, members=ensemble,
                                folds=folds, seed=seed, cache_dir=cache, description=desc)
        cv = card["cv"]
        out.print(f"{folds}-fold accuracy {cv['accuracy']:.3f} (95% CI {cv['ci95'][0]:.3f}-{cv['ci95'][1]:.3f}); "
                  f"fit {card['fit_seconds']:.1f} s, cross-validation {card['cv_seconds']:.1f} s, "
                  f"encoding {card['encode_seconds']:.1f} s; wrote {out_dir}", highlight=False)

    _guard(debug, action)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
