"""Table contracts: which table a stage takes, the columns its parameters name, what it adds and what it returns.

Every stage declares, on its class (:class:`curate.pipeline.Stage`): ``accepts`` (the tables it takes),
``requires(table)`` (the columns its parameters name, as :class:`Needs`), ``adds(table)`` (the columns it
adds, with their types when known) and ``output_table(table)`` (``respond`` turns conversations into
candidates, ``pairs`` candidates into preference pairs; ``magpie`` is a source: its rows are its own).
From those declarations alone, without reading a row, :func:`check_chain` walks a recipe from the input's
schema to the output and reports every problem at once with the stage that has it; ``curate validate``
prints them, the runner raises them before the first stage starts (exit 2), and :meth:`Stage.__call__`
checks its own contract against the frame it gets, so a missing column is never a raw Polars error.

:func:`canonical` gives a stage called from Python (``df.pipe(stage)``, ``Pipeline.run``) the frame the read
stage of ``curate run`` would give it: content ids and ``source`` when missing, content columns cast to the
canonical types, and rows repeating an earlier row's content set aside as the read stage sets them aside.

See docs/architecture.md ("Table contracts").
"""

from __future__ import annotations

import fnmatch
import gzip
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from curate.errors import InputDataError, RecipeError
from curate.schema import CONTENT_COLUMNS, MESSAGE, RESPONSE, TABLES, content_key, detect_table, hash_expr, with_ids

if TYPE_CHECKING:
    from curate.pipeline import Context, Stage

#: Every canonical table.
ALL_TABLES: frozenset[str] = frozenset(TABLES)

#: The columns at one point of a pipeline: name -> type (``None`` when only known at run time).  A name with
#: ``*`` is a pattern (``reward_*_chosen``): columns whose names a model decides (a reward model's heads).
Columns = Mapping[str, "pl.DataType | None"]


@dataclass(frozen=True)
class Needs:
    """Columns that a stage parameter names.

    Satisfied when every column of one of ``options`` exists (``(("help_chosen", "help_rejected"),
    ("reward_help_chosen", "reward_help_rejected"))``: either naming works).  ``param`` says which parameter
    asks, as the user wrote it (``keep: highest:score``).  ``kind`` checks the type where it is known:
    ``number`` (ints, floats, booleans) or ``number list`` (a list of numbers, one per response).  ``what``
    names the column in messages (``score column``).
    """

    param: str
    options: tuple[tuple[str, ...], ...]
    kind: Literal["any", "number", "number list"] = "any"
    what: str = "column"

    @classmethod
    def column(cls, param: str, name: str, kind: Literal["any", "number", "number list"] = "any",
               what: str = "column") -> Needs:
        return cls(param, ((name,),), kind, what)


class ContractError(RecipeError, InputDataError):
    """A stage's contract does not hold on the frame it gets: a table it does not take, or a column its
    parameters name that is not there.  In a recipe that is a recipe mistake (exit code 2, as ``RecipeError``);
    code that calls a stage on its own frame may catch it as ``InputDataError`` too."""

    exit_code = 2


def _present(columns: Columns, name: str) -> tuple[bool, pl.DataType | None]:
    """Whether a column or a pattern gives ``name``, and its type (``None`` when only known at run time)."""
    if name in columns:
        return True, columns[name]
    return any("*" in c and fnmatch.fnmatchcase(name, c) for c in columns), None


def _fits(dtype: pl.DataType | None, kind: str) -> bool:
    if dtype is None or kind == "any" or dtype == pl.Null:
        return True
    if kind == "number":
        return dtype.is_numeric() or dtype == pl.Boolean
    inner = getattr(dtype, "inner", None)
    return isinstance(dtype, (pl.List, pl.Array)) and inner is not None and (inner.is_numeric() or inner == pl.Null)


def _shown(columns: Columns) -> str:
    return ", ".join(c for c in columns if not c.startswith("_"))


def missing_message(need: Needs, table: str, columns: Columns) -> str:
    """``keep: highest:x: no column 'x' in the preference table at this point (columns: ...)``."""
    wanted = " or ".join(" + ".join(f"'{c}'" for c in option) for option in need.options)
    return f"{need.param}: no {need.what} {wanted} in the {table} table at this point (columns: {_shown(columns)})"


def stage_problems(stage: Stage, table: str, columns: Columns) -> list[str]:
    """What is wrong with running ``stage`` on a ``table`` with ``columns`` (one sentence each, no prefix)."""
    accepted = stage.accepted_tables()
    if table not in accepted:
        takes = " or ".join(t for t in ("conversation", "candidates", "preference") if t in accepted)
        return [f"takes a {takes} table, but a {table} table reaches it here{stage.table_hint(table)}"]
    problems = []
    for need in stage.requires(table):
        found = next((option for option in need.options if all(_present(columns, c)[0] for c in option)), None)
        if found is None:
            problems.append(stage.explain_missing(need, table, columns))
            continue
        for name in found:
            dtype = _present(columns, name)[1]
            if not _fits(dtype, need.kind):
                problems.append(f"{need.param}: column '{name}' is {dtype}, not a {need.kind}")
    return problems


def columns_after(stage: Stage, table: str, columns: Columns) -> tuple[str, dict[str, pl.DataType | None]]:
    """The table and columns ``stage`` returns for a ``table`` with ``columns``.

    The same table keeps every column and adds the stage's; a new table (``respond``, ``pairs``) replaces the
    old table's own columns by the new one's and keeps the metadata; a source stage's rows are its own.
    """
    out = stage.output_table(table)
    if stage.is_source:
        kept: dict[str, pl.DataType | None] = dict(TABLES[out])
    elif out != table:
        kept = dict(TABLES[out])
        kept.update({c: t for c, t in columns.items() if c not in TABLES[table] and c not in kept})
    else:
        kept = dict(columns)
    kept.update(stage.adds(table))
    return out, kept


def check_chain(
    stages: Sequence[Stage], table: str, columns: Columns, *, output_table: str | None = None, first: int = 1
) -> tuple[list[str], str, dict[str, pl.DataType | None]]:
    """Walk ``stages`` from an input ``table`` with ``columns``: every problem (``stage 3 minhash_dedup: ...``),
    the final table and its columns.  ``first`` is the number of the first stage (the runner's labels:
    ``00-read`` then ``01-...``).  After a problem the walk goes on with the stage's declared output, so one
    mistake does not hide the next."""
    problems: list[str] = []
    current: dict[str, pl.DataType | None] = dict(columns)
    for number, stage in enumerate(stages, start=first):
        where = f"stage {number} {stage.name} (stages[{number - first}])"
        found = stage_problems(stage, table, current)
        problems += [f"{where}: {p}" for p in found]
        if found and table not in stage.accepted_tables():  # go on as if a table it takes had reached it
            assumed = sorted(stage.accepted_tables())[0]
            table, current = columns_after(stage, assumed, TABLES[assumed])
            continue
        table, current = columns_after(stage, table, current)
    if output_table is not None and output_table != table:
        problems.append(f"output.table is '{output_table}' but the stages produce a {table} table "
                        f"(set output.table: {table}, or drop it)")
    return problems, table, current


def raise_problems(problems: list[str], origin: str = "") -> None:
    """One ``ContractError`` listing every problem (the CLI prints it on one line, exit code 2)."""
    if problems:
        raise ContractError(f"{origin}{'; '.join(problems)}")


def schema_columns(schema: pl.Schema | Mapping[str, pl.DataType]) -> dict[str, pl.DataType | None]:
    """A frame's columns without curate's internal ones (``_line``, ``_file``, ``_error``, ...)."""
    return {c: t for c, t in schema.items() if not c.startswith("_")}


# -- frames from Python --------------------------------------------------------------------------------------
def _rebuild(column: str, dtype: pl.DataType, target: pl.Struct) -> pl.Expr | None:
    """``column`` (a list of structs) as the canonical list of ``target`` structs, fields matched by name
    (a Python dict ``{"content": ..., "role": ...}`` gives its fields in its own order), or None if it is
    not a list of structs."""
    inner = getattr(dtype, "inner", None)
    if not isinstance(dtype, pl.List) or not isinstance(inner, pl.Struct):
        return None
    names = {f.name for f in inner.fields}
    fields = [
        (pl.element().struct.field(f.name) if f.name in names else pl.lit(None)).cast(f.dtype).alias(f.name)
        for f in target.fields
    ]
    return pl.col(column).list.eval(pl.struct(fields)).alias(column)


def canonical(
    lf: pl.LazyFrame | pl.DataFrame, ctx: Context, *, label: str = "read", check_ids: bool = False
) -> pl.LazyFrame:
    """``lf`` in the canonical shape every stage expects, as ``curate run``'s read stage gives it.

    - Without ``id``, the content columns are cast to the canonical types (message structs matched by field
      name), ``source`` is added (null) when missing, and ``id`` is the content hash
      (:func:`curate.schema.with_ids`, the read stage's id).
    - Rows with the id of an earlier row are set aside to quarantine under ``label`` (``identical content to
      row N (same id)``), as ``curate run``'s read stage sets identical rows aside: a dedup stage can only tell
      rows apart by id, so this is what makes it decide the same rows through the API as through a run.  Null
      ids are filled with content ids first.  Both happen when ids were just computed and with ``check_ids``:
      ``Stage.__call__`` asks for it unless its context trusts the ids (``Context.trusted_ids``: the runner
      after its read stage, and ``Pipeline.run`` after checking once at its start).  Both are lazy
      expressions (a window over ``id``): an expression stage stays lazy, and a run never reads its ids twice.
    - A frame that fits no table raises ``InputDataError`` with the columns each table needs.
    """
    schema = lf.schema if isinstance(lf, pl.DataFrame) else lf.collect_schema()
    frame = lf.lazy() if isinstance(lf, pl.DataFrame) else lf
    has_id = "id" in schema and schema["id"] == pl.String
    if has_id and "source" in schema and not check_ids:
        return frame
    try:
        table = detect_table(schema)
    except InputDataError as exc:
        raise InputDataError(f"{exc}; build the frame with those columns, or read a file with curate.read") from None
    if not (has_id and "source" in schema):
        casts = []
        for column in CONTENT_COLUMNS[table]:
            if schema[column] != TABLES[table][column]:
                rebuilt = _rebuild(column, schema[column], RESPONSE if column == "responses" else MESSAGE)
                casts.append(rebuilt if rebuilt is not None else pl.col(column).cast(TABLES[table][column]))
        if casts:
            frame = frame.with_columns(casts)
        if "source" not in schema:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("source"))
    if not has_id:
        if "id" in schema:
            raise InputDataError(f"column 'id' is {schema['id']}, not a string: drop it (curate computes content "
                                 "ids) or cast it to a string")
        frame = with_ids(frame, table).select("id", pl.exclude("id"))
    elif not (isinstance(lf, pl.DataFrame) and lf.get_column("id").null_count() == 0):
        frame = frame.with_columns(pl.coalesce(pl.col("id"), hash_expr(content_key(table))).alias("id"))
    return _set_aside_repeats(frame, ctx, label)


def _set_aside_repeats(frame: pl.LazyFrame, ctx: Context, label: str) -> pl.LazyFrame:
    """``frame`` without the rows whose id an earlier row has; those go to quarantine under ``label``."""
    flagged = frame.with_row_index("_pos").with_columns(pl.col("_pos").min().over("id").alias("_first"))
    previous = ctx.stage_label
    ctx.stage_label = label
    try:
        ctx.quarantine(flagged.filter(pl.col("_pos") != pl.col("_first")),
                       pl.format("identical content to row {} (same id)", pl.col("_first") + 1))
    finally:
        ctx.stage_label = previous
    return flagged.filter(pl.col("_pos") == pl.col("_first")).drop("_pos", "_first")


# -- recipes -------------------------------------------------------------------------------------------------
def recipe_input(recipe: Any, origin: str = "") -> tuple[str, dict[str, pl.DataType | None], list[str]]:
    """The table and columns a recipe's read stage gives, from each input's adapted schema (the reader reads
    what it needs to find the columns and types, the adapter only plans), and one line per input naming its
    adapter and table.  Inputs that give different tables are an ``InputDataError`` naming each (the run would
    stop at its read stage with exit code 3); the columns are the union over the inputs, as the read stage
    concatenates them."""
    from curate.io import load
    from curate.io.loading import reader_columns

    prefix = f"{origin}: " if origin else ""
    found: list[tuple[str, str, str]] = []
    columns: dict[str, pl.DataType | None] = {}
    with tempfile.TemporaryDirectory(prefix="curate-validate-") as scratch:
        for spec in recipe.input:
            path = recipe.resolve(spec.path)
            if not path.exists():
                raise InputDataError(f"{prefix}input {spec.path!r} not found (looked at {path})")
            # the run's own reading rules: limits, a headerless CSV's columns, joined files
            data = load(_head_of(path, Path(scratch)), spec.adapter, options=spec.options, source=spec.source,
                        limits=spec.limits(), columns=reader_columns(path, spec.header, spec.columns),
                        join=recipe.resolved_join(spec))
            for column, dtype in schema_columns(data.frame.collect_schema()).items():
                columns.setdefault(column, dtype)
            found.append((spec.path, data.adapter, data.table))
    if len({table for _, _, table in found}) > 1:
        each = "; ".join(f"{path} ({adapter} adapter) gives a {table} table" for path, adapter, table in found)
        raise InputDataError(
            f"{prefix}the inputs give different tables: {each}; one recipe works on one table: choose adapters or "
            "options that give the same table (e.g. oasst with options: {mode: conversations} gives conversations), "
            "or split the inputs into two recipes"
        )
    lines = [f"input {path}: adapter {adapter} -> {table} table" for path, adapter, table in found]
    return found[0][2], columns, lines


#: Line-based inputs larger than this are validated on their first lines (:func:`_head_of`).
HEAD_BYTES = 4 << 20


def _head_of(path: Path, scratch: Path) -> Path:
    """``path``, or for a JSONL/CSV/TSV file (``.gz`` too) larger than :data:`HEAD_BYTES`, a copy of its first
    whole lines up to that size in ``scratch``: the columns (and, nearly always, their types) are those of the
    whole file, and validating a 10 GB input takes a moment instead of a full read."""
    from curate.io.readers import format_of

    gz = path.suffix.lower() == ".gz"
    if not path.is_file() or format_of(path) not in ("jsonl", "csv", "tsv") or (
            not gz and path.stat().st_size <= HEAD_BYTES):
        return path
    with (gzip.open(path, "rb") if gz else path.open("rb")) as fh:
        head = fh.read(HEAD_BYTES)
        if len(head) < HEAD_BYTES:
            return path  # a small file compressed: read it whole
    cut = head.rfind(b"\n")
    if cut <= 0:
        return path  # one line longer than the head: the reader's own limits decide
    copy = scratch / path.name.removesuffix(".gz").removesuffix(".GZ")
    copy.write_bytes(head[: cut + 1])
    return copy


def recipe_problems(recipe: Any, table: str, columns: Columns) -> tuple[list[str], str]:
    """Every table-contract problem of a recipe's stages from its input ``table`` and ``columns``, and the
    table the stages produce (``output.table`` is checked against it)."""
    problems, final, _ = check_chain(recipe.stage_objects, table, columns, output_table=recipe.output.table)
    return problems, final
