"""How a stage runs: its execution shape and the resources one of its workers needs (docs/architecture.md).

Every stage declares these as class attributes, beside its table contract, so an executor decides where the
stage's work goes by reading the class, never by the stage's name:

- ``row``: the output for a block of rows is a function of that block alone (``filter``).  An executor may cut
  the input into blocks anywhere and run the stage on each block where the block lives; concatenating the
  blocks' outputs (and quarantines) in order gives the whole input's.
- ``batch``: model or signature work over fixed batches through ``ctx.map_batches`` / ``ctx.map_rows`` (cached
  per batch or row); the stage's own figures (means, agreement rates) need every row, so the stage runs once
  and only its batches go to workers (models loaded once per worker).
- ``shuffle``: a global decision with a keyed distributed form: the rows that can affect each other share a
  key (exact dedup: the text hash; MinHash: a band hash), so the decision runs per hash partition of the keys.
  The stage implements :class:`KeyedStage` besides ``apply``: ``apply`` is the single-process form, the keyed
  methods the distributed one, built from the same functions so both decide the same rows.
- ``driver``: needs every row in one place (a greedy selection over a growing index, one FAISS index over all
  vectors, pairs built per prompt); the class says why in ``driver_reason``.  The stage gets the columns it
  reads; its model and search work still goes to the workers through the context's compute.

``resources`` is what one worker of the stage needs (CPUs, GPUs, memory); a model stage asks for a GPU when
its model's spec does (:meth:`curate.pipeline.Stage.worker_resources`).  NeMo Curator's stages declare
``resources`` the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pathlib import Path

    import polars as pl

    from curate.distributed.plane import Block, Plane
    from curate.pipeline import Context

Shape = Literal["row", "batch", "shuffle", "driver"]
SHAPES: tuple[Shape, ...] = ("row", "batch", "shuffle", "driver")


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs: ``cpus`` and ``gpus`` per worker (Ray's ``num_cpus`` / ``num_gpus``),
    ``memory_mb`` the memory one worker may use (``None``: no reservation)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_mb: int | None = None

    def with_gpu(self) -> Resources:
        return replace(self, gpus=max(self.gpus, 1.0))

    def as_ray_options(self) -> dict[str, float | int]:
        options: dict[str, float | int] = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.memory_mb:
            options["memory"] = self.memory_mb * 1024 * 1024
        return options


@runtime_checkable
class KeyedStage(Protocol):
    """The keyed (distributed) form of a ``shuffle`` stage, run by an executor in three steps over blocks of
    the input: :meth:`shuffle_keys` per block, :meth:`decide` per hash partition of ``shuffle_on`` (every row
    sharing a key lands in one partition), :meth:`finish` per block with the rows the decision removed."""

    #: The key column the rows are hash-partitioned on.
    shuffle_on: str

    def record(self, ctx: Context, *, removed: int, groups: int, total: int) -> None:
        """The stage's figures from the decisions' totals (summed over partitions)."""
        ...

    def shuffle_keys(self, lf: pl.LazyFrame, table: str) -> pl.LazyFrame:
        """What the decision reads of each row (``id``, the key, ranking columns); ``_pos`` is added by the
        caller (the row's position in the whole input)."""
        ...

    def decide(self, keys: pl.DataFrame, names: list[str]) -> pl.DataFrame:
        """The removed rows of one partition's keys (``id``, ``_dup_of``, ``_pos``); ``names`` are the input's
        columns (ranking rules read them)."""
        ...

    def finish(self, lf: pl.LazyFrame, removed: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        """Quarantine the ``removed`` rows of ``lf`` with their reasons and return the rest."""
        ...


@runtime_checkable
class PlaneStage(Protocol):
    """A ``shuffle`` stage whose distributed form takes more steps than :class:`KeyedStage`'s three (MinHash:
    signatures, band buckets, verified edges, connected components, decisions per cluster partition).  It
    writes its blocks' parts itself through the plane's ``run`` and returns their folder."""

    def has_plane_form(self) -> bool:
        """False where the parameters leave the distributed form (the stage then runs on the driver)."""
        ...

    def run_on_plane(self, plane: Plane, blocks: list[Block], folder: Path, ctx: Context, table: str,
                     names: list[str]) -> Path:
        ...
