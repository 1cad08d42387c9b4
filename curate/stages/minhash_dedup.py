"""Placeholder: being written (MinHash near-duplicate removal)."""

from __future__ import annotations

from typing import ClassVar

import polars as pl
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

from curate.pipeline import Context, Stage


@dataclass(config=ConfigDict(extra="forbid"))
class MinHashDedup(Stage):
    name: ClassVar[str] = "minhash_dedup"
    kind: ClassVar = "global"

    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        raise NotImplementedError
