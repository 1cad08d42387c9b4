"""The events of a run as a scheduler reads them: ``curate run --log-json``.

Why: a cron job or an orchestrator needs to know, without parsing prose, which run a line belongs to, whether
it is still alive, how it ended and with which exit code.  Under ``--log-json`` stdout therefore carries only
JSON lines (one object each), every one with ``ts`` (ISO-8601, UTC), ``run_id`` (one per invocation, also in
the manifest), ``level`` and ``event``:

* ``run_start``, ``stage_start``, ``stage_done``, ``export_done``: as the runner emits them (``level: info``);
* ``progress`` (:mod:`curate.progress`): rows and requests done inside a model stage, at least every
  ``CURATE_PROGRESS_SECONDS`` (30) seconds;
* ``log``: a warning or error from curate or a library (``logger``, ``message``; ``level`` as logged), and
  Python warnings (``logger: py.warnings``);
* ``run_done``: rows, seconds, set-aside rows, ``model_rows`` (computed / reused), ``model_usage`` (requests,
  tokens, cost), ``refresh`` (``previous``: the run a refresh replaced), ``exports``, ``card`` and
  ``report`` paths;
* ``run_failed`` (``level: error``): ``stage``, ``error``, ``exit_code``: any error, an interrupt (Ctrl-C,
  130) or a termination (SIGTERM, 143).  It is the last line of a failed run.

Anything else that would reach stdout (a library's ``print``, a C extension writing to file descriptor 1) is
sent to stderr while the run lasts, so every stdout line parses.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

#: The exit code of a run stopped by SIGTERM (128 + 15, as a shell reports it).
SIGTERM_EXIT = 128 + signal.SIGTERM
_LEVELS = {"run_failed": "error"}


def new_run_id() -> str:
    """Sortable and unique enough for a scheduler: UTC start time and 6 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: a run cleans up as after Ctrl-C (its finished shards stay for the
    resume) and the command exits 143.  A ``KeyboardInterrupt`` so every interrupt path treats it alike."""


class JsonLines:
    """Writes events as JSON lines to one stream, whole lines only (progress events come from a timer thread)."""

    def __init__(self, stream: IO[str], run_id: str) -> None:
        self.stream, self.run_id = stream, run_id
        self._lock = threading.Lock()
        self.failed = False

    def __call__(self, event: dict[str, Any]) -> None:
        name = event.get("event", "log")
        line = {"ts": now_iso(), "run_id": self.run_id, "level": event.get("level") or _LEVELS.get(name, "info"),
                **{k: v for k, v in event.items() if k != "level"}}
        self.failed = self.failed or name == "run_failed"
        text = json.dumps(line, default=str, ensure_ascii=False)
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()


class _JsonLogHandler(logging.Handler):
    """Log records (warnings and up) as ``log`` events."""

    def __init__(self, emit: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(logging.WARNING)
        self._emit = emit

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not end the run
            message = str(record.msg)
        try:
            self._emit({"event": "log", "level": record.levelname.lower(), "logger": record.name, "message": message})
        except Exception:
            self.handleError(record)


@contextmanager
def json_stdout(run_id: str) -> Iterator[JsonLines]:
    """While inside: a :class:`JsonLines` writer on the real stdout, everything else that writes to stdout sent
    to stderr (``sys.stdout`` and, where stdout is a real file descriptor, fd 1 itself), log records of
    level warning and up and Python warnings as ``log`` events, and SIGTERM raised as :class:`Terminated`."""
    sys.stdout.flush()
    real = sys.stdout
    saved_fd: int | None = None
    try:
        fd = real.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stdout (a test runner): nothing below Python
        fd = -1
    if fd == 1:
        saved_fd = os.dup(1)
        os.dup2(2, 1)  # fd 1 is stderr now: a C library's printf cannot break the JSON stream
        real = os.fdopen(os.dup(saved_fd), "w", encoding="utf-8", buffering=1)
    writer = JsonLines(real, run_id)
    handler = _JsonLogHandler(writer)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    old_show = warnings.showwarning

    def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        writer({"event": "log", "level": "warning", "logger": "py.warnings",
                "message": f"{category.__name__}: {message} ({Path(filename).name}:{lineno})"})

    warnings.showwarning = show
    old_stdout = sys.stdout
    sys.stdout = sys.stderr
    old_term = _on_sigterm()
    try:
        yield writer
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        sys.stdout = old_stdout
        warnings.showwarning = old_show
        root.removeHandler(handler)
        root.setLevel(old_level)
        if saved_fd is not None:
            real.close()
            os.dup2(saved_fd, 1)
            os.close(saved_fd)


def _on_sigterm() -> Any:
    """Raise :class:`Terminated` on SIGTERM (main thread only; elsewhere signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


def done_fields(run_dir: Path, exports: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``run_done`` adds from the published manifest: run id, model rows computed / reused, model usage
    (requests, tokens, cost), the refreshed run, exports, and the card's and report's paths (each only when
    this run wrote it)."""
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
        written = (run_dir / "manifest.json").stat().st_mtime
    except (OSError, ValueError):
        return {"exports": exports}
    card, report = run_dir / "data" / "README.md", run_dir / "report.html"
    out: dict[str, Any] = {
        "run_id": manifest.get("run_id"),
        "model_rows": manifest.get("model_rows", {"computed": 0, "reused": 0}),
        "model_usage": manifest.get("model_usage"),
        "refresh": {"previous": (manifest.get("refresh") or {}).get("previous")} if "refresh" in manifest else None,
        "exports": exports,
        "card": str(card) if card.is_file() else None,
        "report": str(report) if report.is_file() and report.stat().st_mtime >= written else None,
    }
    return {k: v for k, v in out.items() if v is not None or k in ("card", "report")}
