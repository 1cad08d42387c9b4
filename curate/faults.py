"""Crash points for testing resume: ``CURATE_CRASH_AT`` makes the process SIGKILL itself at a chosen spot.

A kill at a random moment is a race a test cannot win reliably on a fast machine, so the resume tests name
the moment instead: ``shard:N`` (right after the N-th batch shard of this process is committed),
``stage:LABEL`` (after a stage's files are written, before it is marked done), ``publish`` (after
``data/`` is replaced, before ``manifest.json``), ``plane:LABEL`` (a Ray data-plane stage's blocks are all
written, its stage folder not yet), ``embed:flush`` (after the vector cache's first write).
The kill is a real SIGKILL: no cleanup, no ``finally``.  ``CURATE_STOP_AT`` names a point the same way and
the process stops itself there (SIGSTOP) instead, holding whatever it holds (its run lock), until a test
continues or kills it: an overlap that is certain, not a race.
Unset (always, outside tests), this costs one dictionary lookup per call.
"""

from __future__ import annotations

import os
import signal

_shards_written = 0


def _crash() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def shard_written() -> None:
    global _shards_written
    spec = os.environ.get("CURATE_CRASH_AT")
    if not spec or not spec.startswith("shard:"):
        return
    _shards_written += 1
    if _shards_written >= int(spec.split(":", 1)[1]):
        _crash()


def reached(point: str) -> None:
    if os.environ.get("CURATE_CRASH_AT") == point:
        _crash()
    if os.environ.get("CURATE_STOP_AT") == point:
        os.kill(os.getpid(), signal.SIGSTOP)
