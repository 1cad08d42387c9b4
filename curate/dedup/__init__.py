"""Deduplication algorithms shared by the dedup stages and executors (no stage logic here)."""

from __future__ import annotations
