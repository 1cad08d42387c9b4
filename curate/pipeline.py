"""Stage protocol, Context and Pipeline: local execution over Polars LazyFrames (docs/architecture.md).

A stage is a dataclass of parameters with ``__call__(lf, ctx=None) -> LazyFrame``.  Three kinds:

- ``expression``: pure Polars expressions; the returned frame stays lazy.
- ``batch``: per-row work that is expensive (models, signatures).  The stage streams its input in fixed-size
  batches through :meth:`Context.map_batches`, which writes each finished batch as a Parquet shard keyed by
  (stage config hash, batch content hash) and returns a scan over the shards: a killed run resumes at the
  first missing shard.
- ``global``: decisions that need the whole column (dedup, selection).  The stage collects only the columns
  it needs (``id`` + text), decides, and returns a semi-join on ``id``.

Stages never drop rows silently: rejected rows go to :meth:`Context.quarantine` with a reason.

Where a stage's work runs is its declared execution shape (:mod:`curate.execution`: ``row``, ``batch``,
``shuffle``, ``driver``), read by the executors; the kind above is what a report shows.  A :class:`Context`
is three parts (:mod:`curate.shards`, :mod:`curate.recorder`, :mod:`curate.compute`), and :class:`Pipeline`
is the one loop over stages, the recipe runner's included (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, overload

import polars as pl
import xxhash

from curate.compute import LocalCompute
from curate.contract import (
    ALL_TABLES,
    Needs,
    canonical,
    check_chain,
    missing_message,
    raise_problems,
    schema_columns,
    stage_problems,
)
from curate.errors import InputDataError
from curate.execution import Resources, Shape
from curate.models import ModelRegistry
from curate.recorder import QUARANTINE_SCHEMA as QUARANTINE_SCHEMA
from curate.recorder import REASON_CODES as REASON_CODES
from curate.recorder import Recorder
from curate.recorder import reason_code as reason_code
from curate.recorder import scan_quarantine as scan_quarantine
from curate.schema import detect_table
from curate.shards import ShardCache, ShardJob
from curate.shards import _fixed_batches as _fixed_batches
from curate.words import count

log = logging.getLogger("curate")

StageKind = Literal["expression", "batch", "global"]

class Stage:
    """Base class of every stage.

    Subclasses are ``pydantic.dataclasses.dataclass`` (parameters validated on construction, from Python or
    YAML alike), set ``name``, ``kind`` and ``paper``, and implement :meth:`apply`.

    **Table contract** (checked by ``curate validate`` without reading a row, by the runner before the first
    stage starts, and by :meth:`__call__` on the frame it gets; see docs/architecture.md and
    :mod:`curate.contract`).  Class-level declarations, so the executor and the validator read them without
    running the stage:

    - ``accepts``: the tables the stage takes (``conversation``, ``candidates``, ``preference``);
      :meth:`accepted_tables` narrows it where a parameter decides (judge ``mode: pairwise``).
    - :meth:`requires`: the columns its parameters name (``keep: highest:COL``, score and constraint columns),
      as :class:`curate.contract.Needs`.
    - :meth:`adds`: the columns it adds, with their types (``None``: decided at run time; a name with ``*`` is
      a pattern, for columns a model names).
    - :meth:`output_table`: the table it returns (``respond``: candidates, ``pairs``: preference); ``is_source``
      marks a stage whose rows are its own (``magpie``): the input's columns do not pass through.
    """

    name: ClassVar[str]
    kind: ClassVar[StageKind] = "expression"
    #: The paper (or tool) the stage follows; shown by ``curate stages``.
    paper: ClassVar[str] = ""
    #: Bump when the stage's output for the same parameters changes, so caches are not reused.
    version: ClassVar[int] = 1
    #: Names of parameters that hold model handles (``models:`` of the recipe); their specs join the cache key.
    model_params: ClassVar[tuple[str, ...]] = ()
    #: The tables the stage takes (its table contract; see the class docstring).
    accepts: ClassVar[frozenset[str]] = ALL_TABLES
    #: A source stage makes its own rows (magpie): the input's columns do not pass through it.
    is_source: ClassVar[bool] = False
    #: How the stage runs (:mod:`curate.execution`): ``row``, ``batch``, ``shuffle`` or ``driver``.
    shape: ClassVar[Shape] = "driver"
    #: Why a ``driver`` stage needs every row in one place (shown in the log and the manifest).
    driver_reason: ClassVar[str] = "no distributed form declared"
    #: What one worker of the stage needs; :meth:`worker_resources` adds a GPU where a model's spec asks for one.
    resources: ClassVar[Resources] = Resources()

    def worker_resources(self, models: ModelRegistry) -> Resources:
        """``resources``, with a GPU per worker when a model the stage uses runs on CUDA."""
        wants_gpu = getattr(models, "wants_gpu", None)
        if wants_gpu is not None and any(wants_gpu(h) for h in self.models_used()):
            return self.resources.with_gpu()
        return self.resources

    def execution_shape(self) -> Shape:
        """``shape``, narrowed by parameters where they decide (a stage overrides this, not ``shape``)."""
        return self.shape

    def accepted_tables(self) -> frozenset[str]:
        """``accepts``, narrowed by parameters where they decide (a stage overrides this, not ``accepts``)."""
        return self.accepts

    def requires(self, table: str) -> list[Needs]:
        """The columns the stage's parameters name, on a ``table`` input (checked before any row is read)."""
        return []

    def adds(self, table: str) -> dict[str, pl.DataType | None]:
        """The columns the stage adds to a ``table`` input: name -> type (``None``: known at run time)."""
        return {}

    def output_table(self, table: str) -> str:
        """The table the stage returns for a ``table`` input."""
        return table

    def table_hint(self, table: str) -> str:
        """What to do when a ``table`` reaches a stage that does not take it (appended to the message)."""
        return ""

    def explain_missing(self, need: Needs, table: str, columns: Mapping[str, pl.DataType | None]) -> str:
        """The message when no option of ``need`` exists in ``columns`` (a stage may say more)."""
        return missing_message(need, table, columns)

    def models_used(self) -> list[str]:
        return [h for p in self.model_params if (h := getattr(self, p, None))]

    def cache_key_extra(self, ctx: Context) -> str:
        """Identity of anything besides parameters and models that the output depends on (e.g. the content
        of reference files a stage reads), so the runner recomputes the stage when it changes."""
        return ""

    @overload
    def __call__(self, lf: pl.DataFrame, ctx: Context | None = None) -> pl.DataFrame: ...
    @overload
    def __call__(self, lf: pl.LazyFrame, ctx: Context | None = None) -> pl.LazyFrame: ...

    def __call__(self, lf: pl.LazyFrame | pl.DataFrame, ctx: Context | None = None) -> pl.LazyFrame | pl.DataFrame:
        """Apply the stage to a canonical frame (``df.pipe(stage, ctx)``: a DataFrame gives a DataFrame, a LazyFrame
        a LazyFrame): a plain one (no ``id``) gets the read stage's content ids
        first (:func:`curate.contract.canonical`), and the stage's table contract is checked on its schema, so
        a missing column is a one-line ``ContractError`` naming the stage, never a Polars error mid-plan."""
        ctx = ctx if ctx is not None else Context.ephemeral()
        eager = isinstance(lf, pl.DataFrame)  # what it is given it returns: DataFrame in, DataFrame out
        with ctx.stage_scope(self):
            try:
                lf = canonical(lf, ctx, check_ids=not ctx.trusted_ids)
                table: str | None = detect_table(lf.collect_schema())
            except InputDataError:
                if not self.is_source:  # a source stage (magpie) may start from any frame
                    raise
                lf, table = (lf.lazy() if isinstance(lf, pl.DataFrame) else lf), None
            if table is not None:
                columns = schema_columns(lf.collect_schema())
                raise_problems(stage_problems(self, table, columns), f"{ctx.stage_label}: ")
            out = self.apply(lf, ctx)
            return out.collect() if eager else out  # type: ignore[return-value]

    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:  # pragma: no cover - abstract
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def fingerprint(self) -> str:
        """Hash of the stage name, version and parameters: the cache key of its work."""
        payload = json.dumps(
            {"stage": self.name, "version": self.version, "params": self.params()}, sort_keys=True, default=str
        )
        return xxhash.xxh3_128_hexdigest(payload.encode())

    @staticmethod
    def table_of(lf: pl.LazyFrame) -> str:
        return detect_table(lf.collect_schema())

    def changed_params(self) -> dict[str, Any]:
        """Parameters that differ from the stage's defaults (what a recipe entry for it would need)."""
        changed = {}
        infos = getattr(type(self), "__pydantic_fields__", {})
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name in infos:  # a pydantic ``Field(default, ge=...)``: the dataclass default is the FieldInfo
                info = infos[f.name]
                default = dataclasses.MISSING if info.is_required() else info.get_default(call_default_factory=True)
            elif f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = dataclasses.MISSING
            if value != default:
                changed[f.name] = value
        return changed

    def _repr_html_(self) -> str:
        """A notebook cell shows the stage as a table of its parameters, the changed ones in bold."""
        changed = self.changed_params()
        rows = "".join(
            f"<tr><td><code>{html.escape(k)}</code></td><td>{'<b>' if k in changed else ''}"
            f"{html.escape(repr(v))}{'</b>' if k in changed else ''}</td></tr>"
            for k, v in self.params().items()
        )
        summary = (type(self).__doc__ or "").strip().split("\n\n")[0]
        return (
            f"<div><b>{html.escape(self.name)}</b> <i>({self.kind} stage)</i>"
            f"<div>{html.escape(' '.join(summary.split()))}</div>"
            + (f"<div><small>paper: {html.escape(self.paper)}</small></div>" if self.paper else "")
            + f"<table><tr><th>parameter</th><th>value</th></tr>{rows}</table></div>"
        )


class Context:
    """What a stage may use besides its input, in three parts with one job each:

    - ``cache`` (:class:`curate.shards.ShardCache`): batch and row results on disk, keyed by content;
    - ``recorder`` (:class:`curate.recorder.Recorder`): the stage's label, notes and counts, and the rows set aside;
    - ``compute`` (:class:`curate.compute.LocalCompute`, or the Ray executor's): where batch and shared work runs;

    plus the run's seed, batch size and model registry.  Its methods are the few a stage calls (``map_batches``,
    ``map_rows``, ``note``, ``count``, ``quarantine``, ``compute_shared``), each handing over to its part.

    ``Context.ephemeral()`` (what ``lf.pipe(stage)`` gets) caches in a temporary folder that lives as long
    as the context; the recipe runner passes one rooted in the run directory.
    """

    def __init__(
        self,
        cache_dir: Path,
        seed: int = 0,
        batch_size: int = 1024,
        progress: bool = False,
        stage_label: str = "stage",
        stats: dict[str, dict[str, Any]] | None = None,
        models: ModelRegistry | None = None,
        trusted_ids: bool = False,
        *,
        recorder: Recorder | None = None,
        compute: LocalCompute | None = None,
        _tmp: tempfile.TemporaryDirectory[str] | None = None,
    ) -> None:
        self.cache = ShardCache(Path(cache_dir))
        self.recorder = recorder if recorder is not None else Recorder(stage_label=stage_label, stats=stats or {})
        self.compute = compute if compute is not None else LocalCompute()
        self.seed = seed
        self.batch_size = batch_size
        self.progress = progress
        self.models = models if models is not None else ModelRegistry()
        #: True where every frame a stage gets already has unique ids (the runner after its read stage,
        #: ``Pipeline.run`` after its one check): ``Stage.__call__`` then skips the repeated-id check of
        #: :func:`curate.contract.canonical`, which would read the ids once per stage.
        self.trusted_ids = trusted_ids
        self._tmp = _tmp

    @classmethod
    def ephemeral(cls, **kwargs: Any) -> Context:
        tmp = tempfile.TemporaryDirectory(prefix="curate-")
        ctx = cls(cache_dir=Path(tmp.name), _tmp=tmp, **kwargs)
        # Removed with the context, or at exit before tempfile's own finalizer would (which warns,
        # ResourceWarning "Implicitly cleaning up", seen by a notebook run with warnings as errors).
        weakref.finalize(ctx, tmp.cleanup)
        return ctx

    def __repr__(self) -> str:
        return (f"Context(cache_dir={str(self.cache_dir)!r}, seed={self.seed}, batch_size={self.batch_size}, "
                f"stage_label={self.stage_label!r}, compute={type(self.compute).__name__})")

    # -- the parts' state, where callers read it -------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        return self.cache.cache_dir

    @property
    def stage_label(self) -> str:
        return self.recorder.stage_label

    @stage_label.setter
    def stage_label(self, label: str) -> None:
        self.recorder.stage_label = label

    @property
    def stats(self) -> dict[str, dict[str, Any]]:
        return self.recorder.stats

    @property
    def quarantined(self) -> list[tuple[str, pl.LazyFrame]]:
        return self.recorder.quarantined

    # -- stage bookkeeping -------------------------------------------------------------------------
    class _Scope:
        def __init__(self, ctx: Context, stage: Stage) -> None:
            self.ctx, self.stage, self.previous = ctx, stage, ctx.stage_label

        def __enter__(self) -> None:
            if self.ctx.stage_label in ("stage", ""):
                self.ctx.stage_label = self.stage.name

        def __exit__(self, *exc: object) -> None:
            self.ctx.stage_label = self.previous if self.previous not in ("stage", "") else "stage"

    def stage_scope(self, stage: Stage) -> Context._Scope:
        return Context._Scope(self, stage)

    # -- the recorder --------------------------------------------------------------------------------
    def note(self, key: str, value: Any) -> None:
        """Record a figure of the current stage (counts, thresholds) for the manifest."""
        self.recorder.note(key, value)

    def count(self, key: str, n: int) -> None:
        """Add ``n`` to a counter of the current stage (a stage may call a batch helper more than once)."""
        self.recorder.count(key, n)

    def quarantine(
        self, rejected: pl.LazyFrame, reason: pl.Expr | str, code: pl.Expr | str | None = None, *,
        duplicate_of: pl.Expr | str | None = None,
    ) -> None:
        """Set rows aside with their reason (:meth:`curate.recorder.Recorder.quarantine`)."""
        self.recorder.quarantine(rejected, reason, code, duplicate_of=duplicate_of)

    def take_quarantine(self) -> list[pl.LazyFrame]:
        return self.recorder.take_quarantine()

    def quarantine_frame(self, stage: str | None = None, *, row: Literal["struct", "json"] = "struct") -> pl.DataFrame:
        """Rows quarantined so far in this context (:meth:`curate.recorder.Recorder.quarantine_frame`)."""
        return self.recorder.quarantine_frame(stage, row=row)

    # -- the cache and the compute -------------------------------------------------------------------
    def _job(self) -> ShardJob:
        return ShardJob(self.recorder, self.compute_batches, self.batch_size, self.progress)

    def map_batches(
        self, lf: pl.LazyFrame, fn: Callable[[pl.DataFrame], pl.DataFrame], key: str, *,
        batch_size: int | None = None, columns: Sequence[str] | None = None, desc: str | None = None,
    ) -> pl.LazyFrame:
        """``fn`` over ``lf`` in batches, each batch's result cached as a shard (:meth:`ShardCache.map_batches`:
        per row where ``fn`` returns one row per input id, else per batch); results in input order."""
        return self.cache.map_batches(lf, fn, key, batch_size=batch_size, columns=columns, desc=desc, job=self._job())

    def map_rows(
        self, lf: pl.LazyFrame, fn: Callable[[pl.DataFrame], pl.DataFrame], key: str, *,
        batch_size: int | None = None, columns: Sequence[str] | None = None, desc: str | None = None,
    ) -> pl.LazyFrame:
        """Like :meth:`map_batches`, for work whose output has exactly one row per input ``id``
        (:meth:`ShardCache.map_rows`): only ids without a cached result are computed."""
        return self.cache.map_rows(lf, fn, key, batch_size=batch_size, columns=columns, desc=desc, job=self._job())

    def compute_batches(
        self, batches: Iterable[pl.DataFrame], fn: Callable[[pl.DataFrame], pl.DataFrame]
    ) -> Iterator[pl.DataFrame]:
        """``fn`` of each batch, in order, where the compute runs it (this process, or Ray workers)."""
        return self.compute.batches(batches, fn, self.recorder)

    def compute_shared(
        self, shared: Any, chunks: Iterable[Any], fn: Callable[[Any, Any], Any], *,
        pack: Callable[[Any], Any], unpack: Callable[[Any], Any], name: str,
    ) -> Iterator[Any]:
        """``fn(shared, chunk)`` of each chunk, in order (:meth:`curate.compute.LocalCompute.shared`)."""
        return self.compute.shared(shared, chunks, fn, self.recorder, pack=pack, unpack=unpack, name=name)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None




#: ``step(index, stage, lf, ctx) -> LazyFrame``: how :meth:`Pipeline.run` runs one stage (default ``stage(lf, ctx)``).
StageStep = Callable[[int, Stage, pl.LazyFrame, Context], pl.LazyFrame]


class Pipeline:
    """An ordered list of stages, applied lazily: ``Pipeline([Filter(), ExactDedup()]).run(lf)``."""

    def __init__(self, stages: Iterable[Stage]) -> None:
        self.stages = list(stages)

    @overload
    def __call__(self, lf: pl.DataFrame, ctx: Context | None = None) -> pl.DataFrame: ...
    @overload
    def __call__(self, lf: pl.LazyFrame, ctx: Context | None = None) -> pl.LazyFrame: ...

    def __call__(self, lf: pl.LazyFrame | pl.DataFrame, ctx: Context | None = None) -> pl.LazyFrame | pl.DataFrame:
        return self.run(lf, ctx)

    @overload
    def run(self, lf: pl.DataFrame, ctx: Context | None = None, *, progress: bool = False,
            step: StageStep | None = None, output_table: str | None = None, prefix: str = "") -> pl.DataFrame: ...
    @overload
    def run(self, lf: pl.LazyFrame, ctx: Context | None = None, *, progress: bool = False,
            step: StageStep | None = None, output_table: str | None = None, prefix: str = "") -> pl.LazyFrame: ...

    def run(
        self, lf: pl.LazyFrame | pl.DataFrame, ctx: Context | None = None, *, progress: bool = False,
        step: StageStep | None = None, output_table: str | None = None, prefix: str = "",
    ) -> pl.LazyFrame | pl.DataFrame:
        """Apply the stages in order (a DataFrame gives a DataFrame, a LazyFrame a LazyFrame).  ``progress=True``
        shows a bar over the stages (tqdm.auto: a widget in Jupyter, text elsewhere or without ipywidgets) and
        turns on the batch bars of model and signature stages.

        A plain frame is made canonical once, as the read stage of ``curate run`` would (content ids, rows
        repeating an earlier row's content set aside under ``00-read``), and the whole chain's table contract is
        checked before the first stage runs (with ``output_table``, the last stage must give it): every problem at
        once, as ``curate validate`` reports them, each after ``prefix``.  A context that trusts its ids (the
        recipe runner's, after its read stage) skips the repeated-id check.

        ``step(index, stage, lf, ctx)`` runs each stage instead of ``stage(lf, ctx)``: the recipe runner
        (:class:`curate.runner.Runner`) drives a pipeline with a step that reuses a finished stage's output,
        sends the stage to its executor and writes the output to the run directory."""
        ctx = ctx if ctx is not None else Context.ephemeral()
        if progress:
            ctx.progress = True
        try:
            out = canonical(lf, ctx, label="00-read", check_ids=not ctx.trusted_ids)
            table: str | None = detect_table(out.collect_schema())
        except InputDataError:
            if not (self.stages and self.stages[0].is_source):  # a source stage (magpie) may start from any frame
                raise
            out, table = (lf.lazy() if isinstance(lf, pl.DataFrame) else lf), None
        if table is not None:
            problems = check_chain(self.stages, table, schema_columns(out.collect_schema()), output_table=output_table)
            raise_problems(problems[0], prefix)
        bar = _stage_bar(len(self.stages)) if progress else None
        trusted, ctx.trusted_ids = ctx.trusted_ids, True  # ids checked once above, not again per stage
        try:
            for index, stage in enumerate(self.stages, start=1):
                ctx.stage_label = f"{index:02d}-{stage.name}"
                if bar is not None:
                    bar.set_description(ctx.stage_label)
                out = stage(out, ctx) if step is None else step(index, stage, out, ctx)
                if bar is not None:
                    bar.update(1)
        finally:
            ctx.trusted_ids = trusted
            if bar is not None:
                bar.close()
        ctx.stage_label = "stage"
        return out.collect() if isinstance(lf, pl.DataFrame) else out  # DataFrame in, DataFrame out

    def __repr__(self) -> str:
        """One line per stage with only the parameters that differ from its defaults, as a recipe would list them
        (``Filter(refusals=True)``, ``ExactDedup()``)."""
        inner = "".join(
            f"  {type(s).__name__}({', '.join(f'{k}={v!r}' for k, v in s.changed_params().items())}),\n"
            for s in self.stages
        )
        return f"Pipeline([\n{inner}])"

    def _repr_html_(self) -> str:
        """A notebook cell shows one row per stage with the parameters that differ from its defaults."""
        rows = "".join(
            f"<tr><td>{i:02d}</td><td><b>{html.escape(s.name)}</b></td><td>{s.kind}</td><td>"
            + (", ".join(f"<code>{html.escape(k)}={html.escape(repr(v))}</code>"
                         for k, v in s.changed_params().items()) or "<i>defaults</i>")
            + "</td></tr>"
            for i, s in enumerate(self.stages, start=1)
        )
        return (f"<div><b>Pipeline</b> of {count(len(self.stages), 'stage')}<table><tr><th>#</th><th>stage</th>"
                f"<th>kind</th><th>parameters (non-default)</th></tr>{rows}</table></div>")


def _stage_bar(total: int) -> Any:
    """A tqdm.auto bar (a widget in Jupyter), or a plain text one when ipywidgets is missing.

    Without ipywidgets, ``tqdm.auto`` is never imported: in a Jupyter kernel its import warns (TqdmWarning,
    "IProgress not found") before falling back to text, so the text bar is chosen here, silently."""
    import importlib.util

    if importlib.util.find_spec("ipywidgets") is None:
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    # disable=False: asked for by progress=True, so shown even when TQDM_DISABLE was set before tqdm was imported
    # (tqdm reads it once, at import: a CLI run earlier in the same process sets it for model libraries' bars).
    return tqdm(total=total, unit="stage", leave=True, disable=False)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
