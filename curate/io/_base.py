"""What an adapter is: a named conversion from raw columns to one canonical table.

An adapter declares the table it produces, the columns that make :func:`curate.io.detect_adapter` pick it,
and its options (a pydantic model, so a recipe typo is reported, not ignored).  :meth:`Adapter.convert`
returns a :class:`Conversion`: the (possibly exploded) raw frame, expressions for the canonical content
columns and ``_error``, and which raw columns those consumed.  :func:`curate.io.adapt` does the rest the same
way for every adapter: metadata columns, ``source``, ``id`` (via :func:`curate.schema.conform`), ``_line``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError

from curate.errors import InputDataError


class Options(BaseModel):
    """Base of adapter options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Conversion:
    """An adapter's result before the common finishing in :func:`curate.io.adapt`.

    ``frame`` still holds every raw column (plus helper columns named ``__*``, dropped afterwards);
    ``columns`` maps output names (the table's content columns, ``_error``, and any new metadata) to
    expressions over ``frame``; ``consumed`` names the raw columns that became content and are not kept.
    """

    frame: pl.LazyFrame
    columns: dict[str, pl.Expr]
    consumed: set[str] = field(default_factory=set)


class Adapter:
    """Base class; subclasses set the class attributes and implement :meth:`matches` and :meth:`convert`."""

    name: ClassVar[str]
    table: ClassVar[str]
    #: The columns this adapter reads, as shown in detection errors and the docs.
    expects: ClassVar[str]
    options: ClassVar[type[Options]] = Options
    #: True for curate's own tables: metadata passes through unrenamed, an existing ``source`` is kept.
    canonical: ClassVar[bool] = False

    def table_for(self, opts: Any) -> str:
        """The table this adapter produces with these options (``oasst`` has two)."""
        return self.table

    def matches(self, columns: frozenset[str]) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def convert(self, lf: pl.LazyFrame, schema: pl.Schema, opts: Any) -> Conversion:  # pragma: no cover
        raise NotImplementedError

    def parse_options(self, options: Mapping[str, Any] | None, file: str) -> Options:
        try:
            return self.options(**dict(options or {}))
        except ValidationError as exc:
            allowed = ", ".join(self.options.model_fields) or "none"
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}" for e in exc.errors()
            )
            raise InputDataError(
                f"{file}: bad options for the {self.name} adapter ({problems}); its options: {allowed}"
            ) from None


def require(schema: pl.Schema, column: str, adapter: str) -> pl.DataType:
    """The dtype of a column the adapter cannot do without, or an ``InputDataError`` naming it.

    :func:`curate.io.adapt` prefixes the file name.
    """
    if column not in schema:
        names = [c for c in schema.names() if c not in ("_line", "_file")]
        raise InputDataError(f"the {adapter} adapter needs column '{column}'; the input has {names}")
    return schema[column]


def first_present(schema: pl.Schema, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in schema), None)
