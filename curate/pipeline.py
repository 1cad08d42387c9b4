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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, overload

import polars as pl
import xxhash

from curate import checkpoint, faults
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
from curate.schema import detect_table
from curate.words import count

log = logging.getLogger("curate")

StageKind = Literal["expression", "batch", "global"]

#: Columns of every quarantine table: ``code`` is a stable name of the reason (``group_by("code")``), ``reason``
#: the human text (with ids, thresholds, similarities), ``duplicate_of`` the kept row a dedup stage matched.
QUARANTINE_SCHEMA = {"stage": pl.String, "code": pl.String, "reason": pl.String, "id": pl.String,
                     "duplicate_of": pl.String, "row": pl.String}

#: ``(pattern, code)``: the code of a reason no stage named explicitly is that of the first pattern matching the
#: reason (after a reader's ``FILE, row N: `` and a stage's ``subsample METHOD: `` / ``reward_augment: ``
#: prefix); failing all, the reason's words before the first ``:``/``(`` as snake_case.  Documented in the README.
REASON_CODES: tuple[tuple[str, str], ...] = (
    (r"^(exact duplicate|identical content to|duplicate instruction|repeats the text)", "exact_duplicate"),
    (r"^near duplicate", "near_duplicate"),
    (r"^too similar to", "too_similar"),
    (r"^(over budget|not in )", "not_selected"),
    (r"^malformed JSON", "malformed_json"),
    (r"^nested (more than \d+ levels deep|too deep)", "too_deep"),
    (r"^(the line|the element) holds .* more than max_line_mb|^a field of this record is longer", "line_too_long"),
    (r"^invalid UTF-8|NUL character \(U\+0000\)|lone surrogate", "invalid_text"),
    (r"^column '", "invalid_field"),
    (r"^refusal", "refusal"),
    (r"^(prompt|response) shorter than|^instruction too short", "too_short"),
    (r"^(prompt|response) longer than|^instruction too long", "too_long"),
    (r"(^truncated|^instruction truncated)", "truncated"),
    (r"^empty or whitespace-only prompt|^empty instruction|^no user turn", "empty_prompt"),
    (r"^(empty or whitespace-only response|no response|the model gave (no non-empty|an empty) response)",
     "empty_response"),
    (r"^does not match include pattern", "include_mismatch"),
    (r"^matches exclude pattern", "exclude_match"),
    (r"^contaminated", "contaminated"),
    (r"^constraint failed", "constraint_failed"),
    (r"^null score", "null_score"),
    (r"^(equal scores|scores .* give the same goal)", "tied_scores"),
)


def reason_code(reason: pl.Expr) -> pl.Expr:
    """The stable code of a reason text (see :data:`REASON_CODES`)."""
    text = reason.str.replace(r"^[^:]*, row \d+: ", "").str.replace(r"^(subsample \w+|reward_augment): ", "")
    fallback = (
        text.str.extract(r"^([^:(]*)").str.to_lowercase().str.replace_all(r"[^a-z0-9]+", "_").str.strip_chars("_")
        .str.slice(0, 40)
    )
    code: pl.Expr = pl.when(fallback.is_null() | (fallback == "")).then(pl.lit("other")).otherwise(fallback)
    for pattern, name in reversed(REASON_CODES):
        code = pl.when(text.str.contains(pattern)).then(pl.lit(name)).otherwise(code)
    return code


def scan_quarantine(path: Path) -> pl.LazyFrame:
    """A quarantine Parquet with the columns of :data:`QUARANTINE_SCHEMA`.  Files written before ``code`` and
    ``duplicate_of`` existed stay readable: the code is derived from the reason, and ``duplicate_of`` is the id a
    dedup reason ends with (``... of <id>``)."""
    lf = pl.scan_parquet(path)
    names = lf.collect_schema().names()
    if "code" not in names:
        lf = lf.with_columns(reason_code(pl.col("reason")).alias("code"))
    if "duplicate_of" not in names:
        lf = lf.with_columns(pl.col("reason").str.extract(r" of ([0-9a-f]{32})$").alias("duplicate_of"))
    return lf.select([pl.col(c).cast(t) for c, t in QUARANTINE_SCHEMA.items()])


def _as_expr(value: pl.Expr | str | None) -> pl.Expr:
    if value is None:
        return pl.lit(None, dtype=pl.String)
    return pl.lit(value) if isinstance(value, str) else value


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


@dataclass
class Context:
    """What a stage may use besides its input: the cache, the seed, the quarantine and progress output.

    ``Context.ephemeral()`` (what ``lf.pipe(stage)`` gets) caches in a temporary folder that lives as long
    as the context; the recipe runner passes one rooted in the run directory.
    """

    cache_dir: Path
    seed: int = 0
    batch_size: int = 1024
    progress: bool = False
    quarantined: list[tuple[str, pl.LazyFrame]] = field(default_factory=list)
    stage_label: str = "stage"
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: ModelRegistry = field(default_factory=ModelRegistry)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)
    #: the removed rows themselves (``row`` as a struct in :meth:`quarantine_frame`), beside ``quarantined``
    _quarantined_rows: list[tuple[str, pl.LazyFrame]] = field(default_factory=list, repr=False)
    #: True where every frame a stage gets already has unique ids (the runner after its read stage,
    #: ``Pipeline.run`` after its one check): ``Stage.__call__`` then skips the repeated-id check of
    #: :func:`curate.contract.canonical`, which would read the ids once per stage.
    trusted_ids: bool = False

    @classmethod
    def ephemeral(cls, **kwargs: Any) -> Context:
        tmp = tempfile.TemporaryDirectory(prefix="curate-")
        ctx = cls(cache_dir=Path(tmp.name), _tmp=tmp, **kwargs)
        # Removed with the context, or at exit before tempfile's own finalizer would (which warns,
        # ResourceWarning "Implicitly cleaning up", seen by a notebook run with warnings as errors).
        weakref.finalize(ctx, tmp.cleanup)
        return ctx

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

    def note(self, key: str, value: Any) -> None:
        """Record a figure of the current stage (counts, thresholds) for the manifest."""
        self.stats.setdefault(self.stage_label, {})[key] = value

    def count(self, key: str, n: int) -> None:
        """Add ``n`` to a counter of the current stage (a stage may call a batch helper more than once)."""
        notes = self.stats.setdefault(self.stage_label, {})
        notes[key] = notes.get(key, 0) + n

    # -- quarantine --------------------------------------------------------------------------------
    def quarantine(
        self, rejected: pl.LazyFrame, reason: pl.Expr | str, code: pl.Expr | str | None = None, *,
        duplicate_of: pl.Expr | str | None = None,
    ) -> None:
        """Register rows a stage removes as ``stage, code, reason, id, duplicate_of, row`` (row as JSON).

        ``reason`` is the human text; ``code`` a stable name of it (``exact_duplicate``, ``refusal``, ...; by
        default derived from the reason by :func:`reason_code`), so ``group_by("code")`` counts rows per cause;
        ``duplicate_of`` the id of the row a dedup stage kept instead."""
        reason_expr = _as_expr(reason).cast(pl.String)
        names = rejected.collect_schema().names()
        data_columns = [c for c in names if not c.startswith("_")]
        frame = rejected.select(
            pl.lit(self.stage_label).alias("stage"),
            (reason_code(reason_expr) if code is None else _as_expr(code).cast(pl.String)).alias("code"),
            reason_expr.alias("reason"),
            (pl.col("id") if "id" in names else pl.lit(None, dtype=pl.String)).alias("id"),
            _as_expr(duplicate_of).cast(pl.String).alias("duplicate_of"),
            pl.struct(data_columns).struct.json_encode().alias("row"),
        )
        self.quarantined.append((self.stage_label, frame))
        self._quarantined_rows.append((self.stage_label, rejected.select(data_columns)))

    def take_quarantine(self) -> list[pl.LazyFrame]:
        frames = [frame for _, frame in self.quarantined]
        self.quarantined.clear()
        self._quarantined_rows.clear()
        return frames

    def quarantine_frame(self, stage: str | None = None, *, row: Literal["struct", "json"] = "struct") -> pl.DataFrame:
        """Rows quarantined so far in this context (notebook use), of every stage or of one ``stage`` (its name,
        ``filter``, or its label in a pipeline, ``02-exact_dedup``).  ``row`` is the removed row as a struct
        where the rows removed share one schema (one stage's usually do), else as JSON (``row="json"`` always)."""
        def wanted(label: str) -> bool:
            return stage is None or label == stage or label.split("-", 1)[-1] == stage

        frames = [frame for label, frame in self.quarantined if wanted(label)]
        if not frames:
            return pl.DataFrame(schema=QUARANTINE_SCHEMA)
        out = pl.concat(frames).collect()
        if row == "struct":
            rows = [rows for label, rows in self._quarantined_rows if wanted(label)]
            schemas = {tuple(r.collect_schema().items()) for r in rows}
            if len(rows) == len(frames) and len(schemas) == 1:
                structs = pl.concat(rows).select(pl.struct(pl.all()).alias("row")).collect()
                out = out.with_columns(structs.get_column("row"))
        return out

    # -- batch stages --------------------------------------------------------------------------------
    def _shard_dir(self, key: str) -> Path:
        """The shard folder of ``key``, recorded in the stage's notes so ``curate gc`` knows it is in use."""
        shard_dir = self.cache_dir / "shards" / key[:32]
        shard_dir.mkdir(parents=True, exist_ok=True)
        used = self.stats.get(self.stage_label, {}).get("shard_dirs", [])
        self.note("shard_dirs", sorted({*used, shard_dir.name}))
        return shard_dir

    def map_batches(
        self,
        lf: pl.LazyFrame,
        fn: Callable[[pl.DataFrame], pl.DataFrame],
        key: str,
        *,
        batch_size: int | None = None,
        columns: Sequence[str] | None = None,
        desc: str | None = None,
    ) -> pl.LazyFrame:
        """Run ``fn`` over ``lf`` in batches, caching each batch's result as a Parquet shard.

        The cache is keyed by content.  When the input has unique ``id``s and ``fn`` returns one row per
        input id (every model and signature stage does), results are reused per row, as in :meth:`map_rows`:
        only the ids with no cached result for ``key`` are batched and passed to ``fn``, so a re-run on an
        input that grew by N rows costs N rows of model work wherever they sit (the scheduled refresh of
        docs/architecture.md).  On an empty cache the batches are the input's fixed-size batches in order.
        A row's result must not depend on its batch (model stages seed each row from its id), so a refresh
        gives what a fresh run gives.
        Otherwise (no ``id``, repeated ids, or an ``fn`` that changes the row set) each batch's result is
        a shard named by the hash of the batch's ids.  Either way a killed run recomputes only unfinished
        shards (published by rename).  Returns the results in input order.  ``columns`` limits what ``fn``
        receives (and what the result holds).
        """
        size = batch_size or self.batch_size
        source = lf.select(columns) if columns is not None else lf
        if "id" in source.collect_schema().names() and _ids_unique(source):
            try:
                return self._map_per_row(source, fn, key, size, desc, strict=False)
            except _NotOneToOne:
                log.info("%s: results are not one row per id; caching whole batches", self.stage_label)
        return self._map_per_batch(source, fn, key, size, desc)

    def _map_per_batch(
        self, source: pl.LazyFrame, fn: Callable[[pl.DataFrame], pl.DataFrame], key: str, size: int,
        desc: str | None,
    ) -> pl.LazyFrame:
        shard_dir = self._shard_dir(key) / "by-batch"
        shard_dir.mkdir(exist_ok=True)
        paths: list[Path] = []
        pending: list[Path] = []
        reused = 0

        def needed() -> Iterator[pl.DataFrame]:
            nonlocal reused
            for batch in _iter_batches(source, size, progress=self.progress, desc=desc or self.stage_label):
                ids = batch.get_column("id") if "id" in batch.columns else batch.hash_rows().cast(pl.String)
                path = shard_dir / f"{_ids_hash(ids.to_list())}.parquet"
                paths.append(path)
                if path.exists():
                    reused += 1
                else:
                    pending.append(path)
                    yield batch

        computed = 0
        for result in self.compute_batches(needed(), fn):
            checkpoint.write_parquet_atomic(result, pending.pop(0))
            faults.shard_written()
            computed += 1
        self.count("batches_computed", computed)
        self.count("batches_cached", reused)
        if not paths:
            return pl.LazyFrame(schema=fn(source.head(0).collect()).schema)
        return pl.scan_parquet(paths)

    def _map_per_row(
        self, source: pl.LazyFrame, fn: Callable[[pl.DataFrame], pl.DataFrame], key: str, size: int,
        desc: str | None, *, strict: bool,
    ) -> pl.LazyFrame:
        shard_dir = self._shard_dir(key)
        existing = sorted(shard_dir.glob("*.parquet"))
        todo = source
        shards_used = 0
        if existing:
            done = pl.scan_parquet(existing, include_file_paths="_shard").select("id", "_shard")
            todo = source.join(done.select("id"), on="id", how="anti", maintain_order="left")
            shards_used = int(done.join(source.select("id"), on="id", how="semi").select(
                pl.col("_shard").n_unique()).collect().item())
        computed = batches = 0
        batch_iter = _iter_batches(todo, size, progress=self.progress, desc=desc or self.stage_label)
        pending: list[pl.DataFrame] = []
        written: list[Path] = []
        in_order = True

        def remember(stream: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
            for batch in stream:
                pending.append(batch)
                yield batch

        for result in self.compute_batches(remember(batch_iter), fn):
            batch = pending.pop(0)
            if "id" not in result.columns or result.height != batch.height or not (
                result.get_column("id").sort().equals(batch.get_column("id").sort())
            ):
                if strict:
                    raise RuntimeError(f"{self.stage_label}: map_rows needs one output row per input id")
                raise _NotOneToOne
            in_order = in_order and result.get_column("id").equals(batch.get_column("id"))
            written.append(shard_dir / f"{_ids_hash(batch.get_column('id').to_list())}.parquet")
            checkpoint.write_parquet_atomic(result, written[-1])
            faults.shard_written()
            computed += batch.height
            batches += 1
        total = int(source.select(pl.len()).collect().item())
        self.count("rows_computed", computed)
        self.count("rows_cached", total - computed)
        self.count("batches_computed", batches)
        self.count("batches_cached", shards_used)
        if not existing and written and in_order:
            return pl.scan_parquet(written)  # every row computed now, in input order: a plain (streaming) scan
        shards = sorted(shard_dir.glob("*.parquet"))
        if not shards:
            return pl.LazyFrame(schema=fn(source.head(0).collect()).schema)
        results = pl.scan_parquet(shards)
        if results.select(pl.col("id").is_duplicated().any()).collect().item():
            # Shards written before results were reused per row may repeat an id: the first (in shard-name
            # order) wins, deterministically.
            results = results.unique("id", keep="first", maintain_order=True)
        return source.select("id").join(results, on="id", how="inner", maintain_order="left")

    def compute_batches(
        self, batches: Iterable[pl.DataFrame], fn: Callable[[pl.DataFrame], pl.DataFrame]
    ) -> Iterator[pl.DataFrame]:
        """``fn`` of each batch, in order.  The one place work happens: the Ray executor
        (:mod:`curate.distributed`) overrides it to run the same batches on a cluster, so shards, seeds and
        output stay those of a local run."""
        from curate.progress import metered

        for batch in batches:
            with metered(self):  # the model usage of fn's calls goes to the stage's notes
                result = fn(batch)
            yield result

    def compute_shared(
        self, shared: Any, chunks: Iterable[Any], fn: Callable[[Any, Any], Any], *,
        pack: Callable[[Any], Any], unpack: Callable[[Any], Any], name: str,
    ) -> Iterator[Any]:
        """``fn(shared, chunk)`` of each chunk, in order: work over chunks that all read one large read-only
        value (a FAISS index, MinHash signatures).  Here: in this process.  The Ray executor puts
        ``pack(shared)`` in the object store once and each worker process ``unpack``s it once, so the value
        is neither shipped nor rebuilt per chunk; it counts the chunks as ``ray_<name>``."""
        for chunk in chunks:
            yield fn(shared, chunk)

    def map_rows(
        self,
        lf: pl.LazyFrame,
        fn: Callable[[pl.DataFrame], pl.DataFrame],
        key: str,
        *,
        batch_size: int | None = None,
        columns: Sequence[str] | None = None,
        desc: str | None = None,
    ) -> pl.LazyFrame:
        """Like :meth:`map_batches`, cached per row: for work whose output has exactly one row per input ``id``.

        Only the ids without a cached result for ``key`` are batched and passed to ``fn``, wherever they
        sit in the input: a refreshed input that gained N rows costs N rows of work, even when the new
        rows are in the middle.  ``fn`` must return one row per input row, with the same ``id``; anything
        else is a bug in the stage and raises.  Returns the results in input order.
        """
        size = batch_size or self.batch_size
        source = lf.select(columns) if columns is not None else lf
        return self._map_per_row(source, fn, key, size, desc, strict=True)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None



class _NotOneToOne(Exception):
    """``fn`` of :meth:`Context.map_batches` changed the row set: fall back to whole-batch shards."""


def _ids_hash(ids: list[str]) -> str:
    return xxhash.xxh3_128_hexdigest("\n".join(ids).encode())


def _ids_unique(lf: pl.LazyFrame) -> bool:
    return bool(lf.select(pl.col("id").n_unique() == pl.len()).collect().item())

def _iter_batches(lf: pl.LazyFrame, size: int, *, progress: bool, desc: str) -> Iterator[pl.DataFrame]:
    """Fixed-size, deterministic batches of ``lf`` (the same input always yields the same batches)."""
    from curate.progress import iter_batches  # bars, progress events, requests inside a batch

    yield from iter_batches(lf, size, bar=progress, desc=desc, cut=_fixed_batches)


def _fixed_batches(lf: pl.LazyFrame, size: int) -> Iterator[pl.DataFrame]:
    pending: list[pl.DataFrame] = []
    pending_rows = 0
    for chunk in lf.collect_batches(chunk_size=size, maintain_order=True):
        pending.append(chunk)
        pending_rows += chunk.height
        while pending_rows >= size:
            merged = pl.concat(pending, rechunk=False)
            yield merged.slice(0, size)
            rest = merged.slice(size)
            pending = [rest] if rest.height else []
            pending_rows = rest.height
    if pending_rows:
        yield pl.concat(pending)


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
    def run(self, lf: pl.DataFrame, ctx: Context | None = None, *, progress: bool = False) -> pl.DataFrame: ...
    @overload
    def run(self, lf: pl.LazyFrame, ctx: Context | None = None, *, progress: bool = False) -> pl.LazyFrame: ...

    def run(
        self, lf: pl.LazyFrame | pl.DataFrame, ctx: Context | None = None, *, progress: bool = False
    ) -> pl.LazyFrame | pl.DataFrame:
        """Apply the stages in order (a DataFrame gives a DataFrame, a LazyFrame a LazyFrame).  ``progress=True``
        shows a bar over the stages (tqdm.auto: a widget in Jupyter, text elsewhere or without ipywidgets) and
        turns on the batch bars of model and signature stages.

        A plain frame is made canonical once, as the read stage of ``curate run`` would (content ids, rows
        repeating an earlier row's content set aside under ``00-read``), and the whole chain's table contract is
        checked before the first stage runs: every problem at once, as ``curate validate`` reports them."""
        ctx = ctx if ctx is not None else Context.ephemeral()
        if progress:
            ctx.progress = True
        try:
            out = canonical(lf, ctx, label="00-read", check_ids=True)
            table: str | None = detect_table(out.collect_schema())
        except InputDataError:
            if not (self.stages and self.stages[0].is_source):  # a source stage (magpie) may start from any frame
                raise
            out, table = (lf.lazy() if isinstance(lf, pl.DataFrame) else lf), None
        if table is not None:
            raise_problems(check_chain(self.stages, table, schema_columns(out.collect_schema()))[0])
        bar = _stage_bar(len(self.stages)) if progress else None
        trusted, ctx.trusted_ids = ctx.trusted_ids, True  # ids checked once above, not again per stage
        try:
            for index, stage in enumerate(self.stages, start=1):
                ctx.stage_label = f"{index:02d}-{stage.name}"
                if bar is not None:
                    bar.set_description(ctx.stage_label)
                out = stage(out, ctx)
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
    return tqdm(total=total, unit="stage", leave=True)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
