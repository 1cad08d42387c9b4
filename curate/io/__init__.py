"""Input: read data files (Parquet, JSONL, JSON, CSV/TSV, HF folders) and adapt known formats to curate's
canonical tables (docs/architecture.md).

- :func:`read` (notebooks): ``curate.io.read("data.jsonl")`` -> canonical LazyFrame; raises at a bad row.
- :func:`load` (the runner): good rows and rejected rows (with reasons and raw rows), nothing raised per row.
- :func:`read_raw` / :func:`adapt` / :func:`detect_adapter`: the two halves, for custom plumbing.
"""

from __future__ import annotations

from curate.io.adapters import ADAPTERS, adapt, detect_adapter
from curate.io.loading import Loaded, load, read
from curate.io.readers import Limits, RawInput, read_raw

__all__ = ["ADAPTERS", "Limits", "Loaded", "RawInput", "adapt", "detect_adapter", "load", "read", "read_raw"]
