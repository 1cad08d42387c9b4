"""Run a recipe into a run directory: ingest, stages with checkpoints, atomic publish, manifest.

Run directory layout::

    RUN/
      data/<table>.parquet     the output, published by rename
      quarantine/*.parquet     every row a stage or the reader removed: stage, reason, id, row (JSON)
      manifest.json            recipe + hash, versions, seed, inputs, per-stage rows/seconds, output
      cache/stages/NN-name-KEY stage outputs (data.parquet, quarantine.parquet, stats.json = done marker)
      cache/shards/...         batch shards of batch stages
      .lock                    flock held while a run writes here

Each stage's key chains the previous key with the stage's fingerprint, so changing a parameter
recomputes that stage and everything after it, and nothing before it.  A stage directory counts as done
only when its ``stats.json`` exists; everything inside is written under a temporary name first.  A run
killed at any point therefore resumes at the first unfinished stage (and, inside a batch stage, at the
first unfinished shard) and ends with exactly the rows of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl
import xxhash

from curate import checkpoint, faults
from curate.checkpoint import file_digest
from curate.errors import CurateError, InputDataError, RecipeError, environment_error
from curate.events import done_fields, new_run_id
from curate.execution import Resources
from curate.io import Loaded, load
from curate.io.loading import reader_columns
from curate.io.readers import check_input
from curate.models import ModelRegistry
from curate.pipeline import QUARANTINE_SCHEMA, Context, Pipeline, Stage, reason_code
from curate.progress import reporting as progress_events
from curate.progress import stage_event, usage_summary
from curate.recipe import Recipe
from curate.schema import detect_table
from curate.words import count

INGEST_VERSION = 2  # 2: NUL / lone-surrogate rows rejected, folders read whole, row limits
#: Rows per Polars streaming morsel during a run.
STREAMING_CHUNK_ROWS = 5000


@dataclass
class StageReport:
    label: str
    name: str
    kind: str
    rows_in: int
    rows_out: int
    quarantined: int
    seconds: float
    cached: bool
    notes: dict[str, Any] = field(default_factory=dict)
    cache_dir: str = ""
    #: the row balance (curate.funnel): rows_out = rows_in - quarantined - consumed + created - unaccounted
    created: int = 0
    consumed: int = 0
    unaccounted: int = 0
    #: rows where each boolean column the stage added is true (``mode: flag`` stages)
    flagged: dict[str, int] = field(default_factory=dict)


@dataclass
class RunResult:
    run_dir: Path
    output: Path
    table: str
    rows: int
    seconds: float
    stages: list[StageReport]
    quarantined: int

    @property
    def manifest_path(self) -> Path:
        return self.run_dir / "manifest.json"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("curate", "polars", "pyarrow", "numpy", "datasketch", "pydantic", "xxhash"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _count(path: Path) -> int:
    if not path.exists():
        return 0
    return int(pl.scan_parquet(path).select(pl.len()).collect().item())


def _empty_quarantine() -> pl.LazyFrame:
    return pl.LazyFrame(schema=QUARANTINE_SCHEMA)


@dataclass
class _StepState:
    """What one stage's step hands the next: the chain's cache key, the rows out, the executor (None: local)."""

    key: str
    rows: int
    engine: Any = None


@dataclass(frozen=True)
class _RemoteRead:
    """The read stage as a task for a worker (``--executor ray``): what comes back is its report and paths."""

    recipe: Recipe
    run_dir: Path
    resume: bool
    limit: int | None

    def __call__(self, _: int) -> tuple[str, Path, StageReport, str, list[dict[str, Any]]]:
        return Runner(self.recipe, self.run_dir, resume=self.resume, limit=self.limit)._ingest()


class Runner:
    """Executes one recipe into one run directory (held under lock for the whole run)."""

    def __init__(
        self,
        recipe: Recipe,
        run_dir: Path,
        *,
        resume: bool = True,
        limit: int | None = None,
        progress: bool = False,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        executor: str = "local",
        address: str | None = None,
        incremental: bool = False,
        run_id: str | None = None,
    ) -> None:
        self.recipe = recipe
        #: One per invocation (``curate run`` passes the id its JSON log lines carry); in the manifest.
        self.run_id = run_id or new_run_id()
        #: ``local`` (this process) or ``ray`` (curate.distributed; ``address`` as for ``ray.init``).
        self.executor = executor
        self.address = address
        self.refresh = incremental or recipe.refresh
        if self.refresh and not resume:
            raise RecipeError("a refresh (--incremental or refresh: true) reuses the cache; drop --fresh")
        self.run_dir = run_dir
        self.resume = resume
        self.limit = limit
        self.progress = progress
        self.on_event = on_event or (lambda event: None)
        self._listener = on_event  # progress events (curate.progress) only where someone listens
        self.stage_root = run_dir / "cache" / "stages"
        # What a failed run publishes (see _failure_record): the stage it was in, the stages it finished.
        self._phase = "start"
        self._reports: list[StageReport] = []
        self._chain: list[Path] = []
        self._inputs: list[dict[str, Any]] = []
        self._ctx: Context | None = None
        #: What one stage's step hands the next (set when the stages start; its engine is the Ray executor or None).
        self._step_state: _StepState | None = None

    # -- helpers -------------------------------------------------------------------------------------
    def _emit(self, event: str, **data: Any) -> None:
        stage_event(event, data.get("label"))  # progress events name the stage between its batches too
        self.on_event({"event": event, **data})

    def _stage_dir(self, index: int, name: str, key: str) -> Path:
        return self.stage_root / f"{index:02d}-{name}-{key[:16]}"

    @staticmethod
    def _done(stage_dir: Path) -> dict[str, Any] | None:
        stats = stage_dir / "stats.json"
        if not stats.exists():
            return None
        return json.loads(stats.read_text())

    def _sink(self, stage_dir: Path, data: pl.LazyFrame, quarantine: list[pl.LazyFrame]) -> None:
        """Write a stage's output and quarantine in one pass over the input (shared subplans run once)."""
        stage_dir.mkdir(parents=True, exist_ok=True)
        data_tmp = checkpoint.tmp_path_for(stage_dir / "data.parquet")
        q_tmp = checkpoint.tmp_path_for(stage_dir / "quarantine.parquet")
        q_frame = pl.concat(quarantine, how="vertical") if quarantine else _empty_quarantine()
        sinks = [
            data.sink_parquet(data_tmp, lazy=True, maintain_order=True),
            q_frame.sink_parquet(q_tmp, lazy=True, maintain_order=True),
        ]
        with checkpoint.writing(stage_dir, data_tmp, q_tmp):
            pl.collect_all(sinks)
        checkpoint.commit(data_tmp, stage_dir / "data.parquet")
        checkpoint.commit(q_tmp, stage_dir / "quarantine.parquet")

    # -- ingest --------------------------------------------------------------------------------------
    def _ingest(self) -> tuple[str, Path, StageReport, str, list[dict[str, Any]]]:
        started = time.perf_counter()
        recipe = self.recipe
        specs = []
        for spec in recipe.input:
            path = recipe.resolve(spec.path)
            try:  # before hashing: a FIFO or /dev/zero would block the hash forever
                check_input(path)
            except InputDataError as exc:
                raise InputDataError(f"{exc} (input of recipe '{recipe.name}')") from None
            specs.append((spec, path, file_digest(path)))
        key_payload = {
            "v": INGEST_VERSION,
            "inputs": [[s.adapter, s.options, s.source, digest, s.max_nesting, s.max_line_mb,
                        *([s.header, s.columns] if not s.header or s.columns else []),
                        *([s.join, [file_digest(f) for f in recipe.join_paths(s)]] if s.join else [])]
                       for s, _, digest in specs],
            "limit": self.limit,
            "on_error": recipe.on_error,
        }
        key = xxhash.xxh3_128_hexdigest(json.dumps(key_payload, sort_keys=True, default=str).encode())
        stage_dir = self._stage_dir(0, "read", key)
        inputs_info = [{"path": str(p), "adapter": s.adapter, "xxh3": d} for s, p, d in specs]
        done = self._done(stage_dir) if self.resume else None
        if done is not None:
            report = StageReport(**{**done["report"], "cached": True})
            return done["table"], stage_dir, report, key, done["inputs"]

        loaded: list[Loaded] = []
        for (spec, path, _), info in zip(specs, inputs_info, strict=True):
            item = load(path, spec.adapter, options=spec.options, source=spec.source, limits=spec.limits(),
                        columns=reader_columns(path, spec.header, spec.columns), join=recipe.resolved_join(spec))
            if item.skipped:  # files of a folder input that were not read: said, and kept in the manifest
                info["skipped"] = [{"path": name, "reason": why} for name, why in item.skipped]
                logging.getLogger("curate").warning(
                    "%s: %s not read: %s", path, count(len(item.skipped), "file"),
                    "; ".join(f"{name} ({why})" for name, why in item.skipped[:10]),
                )
            if loaded and item.table != loaded[0].table:
                raise InputDataError(
                    f"{path}: adapter '{item.adapter}' gives a {item.table} table but earlier inputs "
                    f"give {loaded[0].table}; one recipe works on one table"
                )
            info["adapter"] = item.adapter
            loaded.append(item)
        table = loaded[0].table
        frames = [item.adapted.with_columns(pl.lit(i, pl.Int32).alias("_input")) for i, item in enumerate(loaded)]
        combined = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
        if self.limit is not None:
            combined = combined.head(self.limit)

        # Pass 1 streams every adapted row (good or not) to disk once.  The rest reads that file: the
        # adapter never runs twice, and the raw input is read again only for rows that failed.
        stage_dir.mkdir(parents=True, exist_ok=True)
        staged = stage_dir / "adapted.parquet"
        tmp = checkpoint.tmp_path_for(staged)
        with checkpoint.writing(staged, tmp):
            combined.with_row_index("_pos").sink_parquet(tmp, maintain_order=True)
        checkpoint.commit(tmp, staged)
        scan = pl.scan_parquet(staged)
        names = scan.collect_schema().names()
        keys = ["_file", "_line"] if "_file" in names else ["_line"]
        errors = scan.filter(pl.col("_error").is_not_null()).select("_input", *keys, "_error").collect()
        last_line = scan.group_by("_input").agg(pl.col("_line").max()).collect()
        last = dict(zip(last_line["_input"].to_list(), last_line["_line"].to_list(), strict=True))
        rejected: list[pl.LazyFrame] = []
        first_problem: tuple[int, int, str] | None = None
        for i, item in enumerate(loaded):
            if i not in last and self.limit is not None:
                continue  # --limit stopped before this input
            bad = item.bad_lines
            if self.limit is not None:
                bad = bad.filter(pl.col("_line") <= last.get(i, 0))
            mine = errors.filter(pl.col("_input") == i).drop("_input")
            candidates = [(int(r["_line"]), r["reason"]) for r in bad.head(1).iter_rows(named=True)]
            candidates += [(int(r["_line"]), r["_error"]) for r in mine.head(1).iter_rows(named=True)]
            if candidates and first_problem is None:
                line, reason = min(candidates)
                first_problem = (i, line, reason)
            name = item.path.name
            parts = [bad.lazy().select("_line", "reason", "row")]
            if mine.height:
                parts.append(
                    mine.lazy().join(item.raw_rows(mine.lazy()), on=keys, how="left", maintain_order="left")
                    .select("_line", pl.col("_error").alias("reason"), "row")
                )
            rejected.append(
                pl.concat(parts, how="vertical_relaxed").sort("_line", maintain_order=True).select(
                    pl.lit("00-read").alias("stage"),
                    reason_code(pl.col("reason")).alias("code"),
                    pl.concat_str([pl.lit(f"{name}, row "), pl.col("_line").cast(pl.String),
                                   pl.lit(": "), pl.col("reason")]).alias("reason"),
                    pl.lit(None, dtype=pl.String).alias("id"),
                    pl.lit(None, dtype=pl.String).alias("duplicate_of"),
                    pl.col("row").cast(pl.String),
                )
            )
        if recipe.on_error == "raise" and first_problem is not None:
            index, line, reason = first_problem
            raise InputDataError(
                f"{loaded[index].path}, row {line}: {reason} "
                "(set 'on_error: quarantine' in the recipe to set such rows aside and go on)"
            )

        # Rows whose content repeats an earlier row exactly share its id: keep the first, quarantine the rest.
        good_scan = scan.filter(pl.col("_error").is_null())
        ids = good_scan.select("id", "_pos", "_line", "source").collect().with_columns(
            pl.col("id").is_first_distinct().alias("_first")
        )
        firsts = ids.filter(pl.col("_first"))
        repeats = ids.filter(~pl.col("_first")).join(
            firsts.select("id", pl.col("_line").alias("_first_line"), pl.col("source").alias("_first_source")),
            on="id",
        )
        ctx = Context(cache_dir=self.run_dir / "cache", seed=recipe.seed, stage_label="00-read")
        internal = [c for c in ("_pos", "_line", "_file", "_error", "_input") if c in names]
        if repeats.height:
            ctx.quarantine(
                scan.join(repeats.lazy().select("_pos", "_first_line", "_first_source"), on="_pos", how="inner",
                          maintain_order="left")
                .drop(internal),
                pl.concat_str([pl.lit("identical content to "), pl.col("_first_source").fill_null("input"),
                               pl.lit(" row "), pl.col("_first_line").cast(pl.String), pl.lit(" (same id)")]),
                "exact_duplicate", duplicate_of=pl.col("id"),
            )
        good = scan.join(firsts.lazy().select("_pos"), on="_pos", how="semi", maintain_order="left").drop(internal)
        self._sink(stage_dir, good, [*rejected, *ctx.take_quarantine()])
        faults.reached("stage:00-read")
        staged.unlink()
        rows_out = _count(stage_dir / "data.parquet")
        quarantined = _count(stage_dir / "quarantine.parquet")
        report = StageReport(
            label="00-read", name="read", kind="input", rows_in=rows_out + quarantined, rows_out=rows_out,
            quarantined=quarantined, seconds=round(time.perf_counter() - started, 3), cached=False,
            notes={"identical_rows": repeats.height, "invalid_rows": quarantined - repeats.height,
                   "skipped_files": sum(len(item.skipped) for item in loaded)},
        )
        checkpoint.write_json_atomic(
            {"report": asdict(report), "table": table, "inputs": inputs_info}, stage_dir / "stats.json"
        )
        return table, stage_dir, report, key, inputs_info

    def _step(self, index: int, stage: Stage, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        """One stage of the run (the step :meth:`Pipeline.run` calls): its folder is keyed by everything upstream,
        so a finished one is reused; otherwise the stage runs (on the data plane when the executor takes its
        shape, else here with its batch work on the executor) and its output and quarantine are written."""
        state, chain, reports = self._step_state, self._chain, self._reports
        assert state is not None  # set by _run before the pipeline runs
        model_keys = "|".join(ctx.models.fingerprint(h) for h in stage.models_used())
        extra = stage.cache_key_extra(ctx)
        state.key = xxhash.xxh3_128_hexdigest(f"{state.key}|{stage.fingerprint()}|{model_keys}|{extra}".encode())
        label = ctx.stage_label
        self._phase = label
        stage_dir = self._stage_dir(index, stage.name, state.key)
        done = self._done(stage_dir) if self.resume else None
        if done is not None:
            report = StageReport(**{**done["report"], "cached": True})
        else:
            self._emit("stage_start", label=label, name=stage.name, rows_in=state.rows)
            t0 = time.perf_counter()
            ctx.stats.pop(label, None)
            source_path = chain[-1] / "data.parquet"
            source = pl.scan_parquet(source_path)
            engine = state.engine
            if engine is None:
                self._sink(stage_dir, stage(source, ctx), ctx.take_quarantine())
            elif not engine.run_stage(stage, source_path, stage_dir, ctx, detect_table(source.collect_schema())):
                self._sink(stage_dir, engine.apply(stage, source, ctx), ctx.take_quarantine())
            faults.reached(f"stage:{label}")
            rows_out = _count(stage_dir / "data.parquet")
            notes = dict(ctx.stats.get(label, {}))
            if stage.models_used() and "rows_computed" in notes:
                # rows a model actually ran on, and rows served from the content-keyed cache
                notes["model_rows_computed"] = notes["rows_computed"]
                notes["model_rows_reused"] = notes.get("rows_cached", 0)
            report = StageReport(
                label=label, name=stage.name, kind=stage.kind, rows_in=state.rows, rows_out=rows_out,
                quarantined=_count(stage_dir / "quarantine.parquet"),
                seconds=round(time.perf_counter() - t0, 3), cached=False, notes=notes,
            )
            _account(report, source.collect_schema(), stage_dir / "data.parquet")
            checkpoint.write_json_atomic({"report": asdict(report), "params": stage.params()},
                                         stage_dir / "stats.json")
        report.cache_dir = stage_dir.name
        reports.append(report)
        chain.append(stage_dir)
        state.rows = report.rows_out
        self._emit("stage_done", **asdict(report))
        return pl.scan_parquet(stage_dir / "data.parquet")

    def _on_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` here, or as a task on a worker under ``--executor ray``: the card and the report read the
        output's rows (samples, lengths, plots), which the driver of a Ray run never holds."""
        engine = self._step_state.engine if self._step_state is not None else None
        if engine is None:
            return fn(*args)
        return engine.run_tasks(lambda _: fn(*args), [0], Resources())[0]

    def _engine(self) -> Any:
        """The Ray executor (connected) for ``--executor ray``, else None (this process runs everything)."""
        if self.executor != "ray":
            return None
        from curate.distributed import RayExecutor

        return RayExecutor(self.address)

    # -- run -----------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        # Small streaming morsels bound memory on wide rows (conversations are kilobytes each): at 1M
        # preference rows the default morsel size nearly doubled peak RSS for no gain in speed
        # (benchmarks/streaming.py).
        with pl.Config(streaming_chunk_size=STREAMING_CHUNK_ROWS), progress_events(self._listener):
            try:
                return self._run()
            except Exception as exc:  # an OS refusal outside the locked part (e.g. a read-only --out)
                converted = environment_error(exc) if not isinstance(exc, CurateError) else None
                if converted is None:
                    raise
                raise converted from exc

    def _run(self) -> RunResult:
        started = time.perf_counter()
        with checkpoint.RunLock(self.run_dir), self._failure_record(started), contextlib.ExitStack() as closing:
            self._phase = "00-read"
            # What a killed run left (.NAME.tmp-PID, .staging-PID; a published folder caught between its two
            # renames is put back): the lock proves its writer is gone.
            checkpoint.remove_temp_files(self.run_dir)
            if not self.resume and (self.run_dir / "cache").exists():
                shutil.rmtree(self.run_dir / "cache")
            self._emit("run_start", recipe=self.recipe.name, run_dir=str(self.run_dir))
            engine = self._engine()
            if engine is not None:
                closing.callback(engine.close)  # a failed run leaves no Ray it started, nor scratch files
            if engine is None:
                table, stage_dir, report, key, inputs = self._ingest()
            else:  # the read runs on a worker: the driver never holds the input's rows or ids
                read = _RemoteRead(self.recipe, self.run_dir, self.resume, self.limit)
                table, stage_dir, report, key, inputs = engine.run_tasks(read, [0], Resources())[0]
                report.notes["ran_on"] = "ray: one task on a worker (the whole read)"
            report.cache_dir = stage_dir.name
            reports = [report]
            chain = [stage_dir]
            self._reports, self._chain, self._inputs = reports, chain, inputs
            self._emit("stage_done", **asdict(report))
            if report.rows_out == 0:
                raise InputDataError(
                    f"no usable rows in the input of recipe '{self.recipe.name}' "
                    f"({count(report.quarantined, 'row')} set aside, each with its reason, in "
                    f"{self.run_dir / 'quarantine'})"
                )
            rows = report.rows_out
            previous = previous_run(self.run_dir) if self.refresh else None
            ctx_args = dict(
                cache_dir=self.run_dir / "cache", seed=self.recipe.seed, batch_size=self.recipe.batch_size,
                progress=self.progress,
                models=ModelRegistry(dict(self.recipe.models), self.recipe.base_dir, self.run_dir / "cache" / "models"),
            )
            ctx = engine.context(**ctx_args) if engine is not None else Context(**ctx_args)
            ctx.trusted_ids = True  # the read stage gave every row a unique content id
            self._ctx = ctx
            # The pipeline checks every stage's table contract on the read stage's schema before any stage runs (a
            # column a parameter names that nothing makes is a recipe error naming the stage, exit 2, not a Polars
            # error mid-run), then runs each stage through _step: the run directory's cache, the executor, the sink.
            self._step_state = _StepState(key=key, rows=rows, engine=engine)
            Pipeline(self.recipe.stage_objects).run(
                pl.scan_parquet(stage_dir / "data.parquet"), ctx, step=self._step,
                output_table=self.recipe.output.table, prefix=f"recipe '{self.recipe.name}': ",
            )
            self._phase = "publish"
            result = self._publish(table, chain, reports, inputs, started, previous)
            if self.refresh:
                _prune_stage_dirs(self.stage_root, {p.name for p in chain})
        exports: list[dict[str, Any]] = []
        for spec in self.recipe.export:
            from curate.export import export

            done = export(
                result.output, spec.format, self.run_dir / "export" / spec.format, test_size=spec.test_size,
                seed=self.recipe.seed if spec.seed is None else spec.seed, save_to_disk=spec.save_to_disk,
            )
            exports.append({"format": spec.format, "out": str(done.out_dir), "splits": done.splits})
            self._emit("export_done", **exports[-1])
        self._emit("run_done", output=str(result.output), rows=result.rows, seconds=result.seconds,
                   quarantined=result.quarantined, **done_fields(self.run_dir, exports))
        return result

    def _staging_with_quarantine(self, reports: list[StageReport], chain: list[Path]) -> Path:
        """A fresh ``.staging-PID`` folder holding ``quarantine/``: every finished stage's set-aside rows (links)."""
        staging = self.run_dir / f".staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        with checkpoint.writing(staging):
            (staging / "quarantine").mkdir(parents=True)
            for report, stage_dir in zip(reports, chain, strict=True):
                if report.quarantined:
                    _link_or_copy(stage_dir / "quarantine.parquet", staging / "quarantine" / f"{report.label}.parquet")
        return staging

    @contextmanager
    def _failure_record(self, started: float) -> Iterator[None]:
        """On any failure inside the locked part of a run: delete this process's temporary files, name an OS
        refusal (disk full, read-only) as :class:`EnvironmentIOError`, and publish what the failed run has to
        show (:meth:`_publish_failure`).  An interrupt (Ctrl-C) only cleans up: it is a pause, not a result."""
        try:
            yield
        except BaseException as exc:
            try:
                checkpoint.remove_temp_files(self.run_dir, pids={os.getpid()})
            except OSError as cleanup:
                logging.getLogger("curate").warning("temporary files not removed: %s", cleanup)
            if not isinstance(exc, Exception):
                raise
            error: BaseException = exc
            if not isinstance(exc, CurateError):
                error = environment_error(exc) or exc
                if error is not exc and getattr(exc, "filename", None) is None:
                    # No file named (Polars never names one): say which stage failed and where it writes.
                    error = type(error)(f"stage {self._phase}, writing under {self.run_dir / 'cache'} or the "
                                        f"system temporary folder: {error}")
            self._publish_failure(error, started)
            self._emit("run_failed", stage=self._phase, error=str(error), exit_code=getattr(error, "exit_code", 1))
            if error is exc:
                raise
            raise error from exc

    def _manifest_fields(self, reports: list[StageReport], inputs: Any, started: float) -> dict[str, Any]:
        """What every manifest records, a finished run's and a failed run's alike."""
        return {
            "run_id": self.run_id,
            "recipe": self.recipe.content(),
            "recipe_hash": self.recipe.hash(),
            "seed": self.recipe.seed,
            "versions": package_versions(),
            "command": sys.argv,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.perf_counter() - started, 3),
            "inputs": inputs,
            "limit": self.limit,
            "stages": [asdict(r) for r in reports],
            "quarantined": sum(r.quarantined for r in reports),
            "executor": {"name": self.executor, **({"address": self.address} if self.address else {})},
            # requests, tokens in/out and cost (models with a price_per_million) per stage and in total
            "model_usage": usage_summary([asdict(r) for r in reports]),
        }

    def _publish_failure(self, error: BaseException, started: float) -> None:
        """A failed run publishes ``quarantine/`` (the rows its finished stages set aside, with reasons) and a
        ``manifest.json`` marked ``status: failed`` (error, exit code, the stage it failed in), so the error
        line's "see RUN/quarantine" points at something.  ``data/`` and ``reports/`` are left alone: the
        last successful run's output stays published, and the manifest keeps that run as ``last_success``
        (so ``curate gc`` keeps its cache and a refresh records it).  Never raises: a disk too full for this
        must not hide the error that stopped the run."""
        try:
            previous = _read_manifest(self.run_dir)
            if previous is not None and previous.get("status", "ok") == "ok":
                last_success: dict[str, Any] | None = previous
                last_digest = file_digest(self.run_dir / "manifest.json")
            else:
                last_success = (previous or {}).get("last_success")
                last_digest = (previous or {}).get("last_success_xxh3")
            reports, chain = self._reports, self._chain
            manifest = {
                "status": "failed",
                "error": {
                    "type": type(error).__name__, "message": str(error),
                    "exit_code": getattr(error, "exit_code", 1), "stage": self._phase,
                    # what the failed stage had noted (its shard folders: curate gc keeps them for the resume)
                    "notes": dict(self._ctx.stats.get(self._phase, {})) if self._ctx is not None else {},
                },
                **self._manifest_fields(reports, self._inputs, started),
                "last_success": last_success,
                "last_success_xxh3": last_digest,
            }
            staging = self._staging_with_quarantine(reports, chain)
            checkpoint.write_json_atomic(manifest, staging / "manifest.json")
            checkpoint.publish_dir(staging / "quarantine", self.run_dir / "quarantine")
            checkpoint.commit(staging / "manifest.json", self.run_dir / "manifest.json")
            shutil.rmtree(staging, ignore_errors=True)
        except Exception as exc:
            logging.getLogger("curate").warning("failed run not recorded in %s: %s", self.run_dir, exc)
            with contextlib.suppress(OSError):
                checkpoint.remove_temp_files(self.run_dir, pids={os.getpid()})

    def _publish(
        self, table: str, chain: list[Path], reports: list[StageReport], inputs: list[dict[str, Any]],
        started: float, previous: dict[str, Any] | None = None,
    ) -> RunResult:
        # The last stage decides the table (respond/pairs turn conversations into candidates or pairs).
        table = detect_table(pl.scan_parquet(chain[-1] / "data.parquet").collect_schema())
        expected = self.recipe.output.table
        if expected is not None and expected != table:
            raise RecipeError(f"output.table is '{expected}' but the pipeline produces a {table} table")
        staging = self._staging_with_quarantine(reports, chain)
        (staging / "data").mkdir()
        final_data = chain[-1] / "data.parquet"
        _link_or_copy(final_data, staging / "data" / f"{table}.parquet")
        (staging / "reports").mkdir()
        for report in reports:  # stage reports (e.g. the audit's matches) are outputs too: publish them
            produced = report.notes.get("report")
            if produced and Path(produced).is_file():
                _link_or_copy(Path(produced), staging / "reports" / f"{report.label}{Path(produced).suffix}")
        rows = reports[-1].rows_out
        manifest = {
            "status": "ok",
            **self._manifest_fields(reports, inputs, started),
            "output": {"path": f"data/{table}.parquet", "table": table, "rows": rows},
            "model_rows": {
                "computed": sum(r.notes.get("model_rows_computed", 0) for r in reports if not r.cached),
                "reused": sum(r.notes.get("model_rows_reused", 0) for r in reports if not r.cached),
            },
        }
        if self.refresh:
            manifest["refresh"] = {"previous": previous, "input_rows": reports[0].rows_in}
        # Every byte is written into staging before the first rename (a full disk fails here, with the
        # published run untouched); the renames need no space.
        try:  # the dataset card (data/README.md) is published with the data it describes, but never fails a run
            from curate.report.card import write_card

            self._on_worker(write_card, staging / "data", manifest, staging / "reports", staging / "quarantine")
        except Exception as exc:
            refused = environment_error(exc, staging / "data" / "README.md")
            if refused is not None:  # a full or read-only disk fails the publish like every other write here
                raise refused from exc
            logging.getLogger("curate").warning("data/README.md not written: %s: %s", type(exc).__name__, exc)
        checkpoint.write_json_atomic(manifest, staging / "manifest.json")
        checkpoint.publish_dir(staging / "data", self.run_dir / "data")
        checkpoint.publish_dir(staging / "quarantine", self.run_dir / "quarantine")
        checkpoint.publish_dir(staging / "reports", self.run_dir / "reports")
        faults.reached("publish")
        checkpoint.commit(staging / "manifest.json", self.run_dir / "manifest.json")
        shutil.rmtree(staging, ignore_errors=True)
        try:  # the HTML report is a view of the outputs: never let it fail a run that produced them
            from curate.report import write_report

            self._on_worker(write_report, self.run_dir)
        except Exception as exc:
            logging.getLogger("curate").warning("report.html not written: %s: %s", type(exc).__name__, exc)
        return RunResult(
            run_dir=self.run_dir, output=self.run_dir / "data" / f"{table}.parquet", table=table, rows=rows,
            seconds=manifest["seconds"], stages=reports, quarantined=manifest["quarantined"],
        )


def _account(report: StageReport, before: pl.Schema, output: Path) -> None:
    """Fill the report's row balance and flag counts (curate.funnel); a stage whose rows do not balance is
    logged, so no row is lost without a word."""
    from curate.funnel import balance, flag_counts

    sums = balance(report.rows_in, report.rows_out, report.quarantined, report.notes)
    report.created, report.consumed, report.unaccounted = sums["created"], sums["consumed"], sums["unaccounted"]
    report.flagged = flag_counts(before, output)
    if report.unaccounted:
        logging.getLogger("curate").warning(
            "%s: rows do not balance: %d in - %d set aside - %d consumed + %d created = %d, but %d out",
            report.label, report.rows_in, report.quarantined, report.consumed, report.created,
            report.rows_in - report.quarantined - report.consumed + report.created, report.rows_out)


def collect_garbage(run_dir: Path, *, dry_run: bool = False) -> tuple[list[Path], int]:
    """Delete cache entries that the run's current manifest does not use; returns (paths, bytes freed).

    Kept: the stage directories of the last run and the batch-shard folders its stages read; after a failed
    run also those of its ``last_success`` (what ``data/`` holds) and the shards of the stage it failed in
    (what its resume reuses).  Everything else under ``cache/`` is left from earlier parameters or inputs,
    and is only a speed-up for re-running those; removing it never changes an output.  Temporary files of
    writers that are no longer running (``.NAME.tmp-PID`` left by a killed or failed run) go too.  Holds
    the run lock, so it never races a run.
    """
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists():
        raise InputDataError(f"{run_dir}: no manifest.json (not a finished run directory)")
    manifest = json.loads(manifest_path.read_text())
    stages = [*manifest["stages"], *(manifest.get("last_success") or {}).get("stages", [])]
    keep_stages = {s.get("cache_dir") for s in stages}
    failed_notes = (manifest.get("error") or {}).get("notes") or {}
    keep_shards = {d for s in [*stages, {"notes": failed_notes}] for d in s.get("notes", {}).get("shard_dirs", [])}
    if None in keep_stages or "" in keep_stages:
        raise InputDataError(f"{manifest_path}: written by an older curate; run the recipe again before gc")
    doomed: list[Path] = []
    with checkpoint.RunLock(run_dir):
        cache = run_dir / "cache"
        for folder, keep in ((cache / "stages", keep_stages), (cache / "shards", keep_shards)):
            if folder.is_dir():
                doomed += [p for p in sorted(folder.iterdir()) if p.name not in keep]
        doomed += [p for p in checkpoint.stale_temp_files(run_dir) if not any(p.is_relative_to(d) for d in doomed)]
        freed = sum(f.stat().st_size for p in doomed for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
        if not dry_run:
            checkpoint.remove_temp_files(run_dir)
            for path in doomed:
                if path.exists():
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
    return doomed, freed


def _read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The run directory's manifest, or ``None`` when there is none (or it cannot be read)."""
    try:
        return json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def previous_run(run_dir: Path) -> dict[str, Any] | None:
    """What a refresh records of the run it replaces (the one whose output ``data/`` holds): its manifest's
    hash, time, rows and inputs.  After a failed run that is the manifest's ``last_success``."""
    path = run_dir / "manifest.json"
    old = _read_manifest(run_dir)
    if old is None:
        return None
    digest = file_digest(path)
    if old.get("status") == "failed":
        old, digest = old.get("last_success"), old.get("last_success_xxh3")
        if not old:
            return None
    return {
        "manifest_xxh3": digest,
        "finished_at": old.get("finished_at"),
        "rows": old.get("output", {}).get("rows"),
        "input_rows": (old.get("stages") or [{}])[0].get("rows_in"),
        "recipe_hash": old.get("recipe_hash"),
        "inputs": old.get("inputs"),
    }


def _prune_stage_dirs(stage_root: Path, keep: set[str]) -> None:
    """After a refresh, stage outputs of earlier inputs are dead weight (each is a full copy of a stage's
    output); the content-keyed shards under ``cache/shards`` are what makes the next refresh cheap and stay."""
    if stage_root.is_dir():
        for path in stage_root.iterdir():
            if path.is_dir() and path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def default_run_dir(recipe: Recipe) -> Path:
    if recipe.output.dir:
        return recipe.resolve(recipe.output.dir)
    return Path("runs") / recipe.name


def run_recipe(
    recipe: Recipe | str | Path,
    out: str | Path | None = None,
    *,
    resume: bool = True,
    limit: int | None = None,
    overrides: list[str] | None = None,
    progress: bool = False,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    executor: str = "local",
    address: str | None = None,
    incremental: bool = False,
) -> RunResult:
    """Run a recipe (a :class:`Recipe` or a YAML path) and return what it produced."""
    from curate.recipe import load_recipe

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides or [])
    run_dir = Path(out) if out is not None else default_run_dir(recipe)
    return Runner(recipe, run_dir, resume=resume, limit=limit, progress=progress, on_event=on_event,
                  executor=executor, address=address, incremental=incremental).run()
