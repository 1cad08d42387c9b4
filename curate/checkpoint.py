"""Atomic writes, the output lock and run-directory publishing.

Everything curate writes is first written beside its destination under a temporary name and then renamed
into place, so a run killed at any moment leaves either the old file or the new one, never half of one.
The lock uses ``flock`` on a file in the run directory: the kernel releases it when the process dies, so a
killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import polars as pl
import xxhash

from curate.errors import LockHeldError, environment_error


def file_digest(path: Path) -> str:
    """xxh3 of a file's bytes (or of every file in a folder): the input's identity for the cache."""
    digest = xxhash.xxh3_128()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for item in files:
        digest.update(str(item.relative_to(path) if path.is_dir() else item.name).encode())
        with open(item, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def writing(path: Path, *partial: Path) -> Iterator[None]:
    """Turn an OS refusal while writing ``path`` (disk full, read-only, permissions) into an
    :class:`~curate.errors.EnvironmentIOError` that names it, and remove the ``partial`` files the failed write
    left (a disk-full Parquet write leaves a truncated temporary file behind)."""
    try:
        yield
    except Exception as exc:
        for item in partial:
            with suppress(OSError):
                item.unlink(missing_ok=True)
        converted = environment_error(exc, path)
        if converted is None or converted is exc:
            raise
        raise converted from exc


def write_parquet_atomic(df: pl.DataFrame, path: Path) -> None:
    tmp = _tmp_name(path)
    with writing(path, tmp):
        path.parent.mkdir(parents=True, exist_ok=True)
        df.write_parquet(tmp)
        os.replace(tmp, path)


def write_json_atomic(obj: Any, path: Path) -> None:
    tmp = _tmp_name(path)
    with writing(path, tmp):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(obj, handle, indent=2, sort_keys=False, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)


def tmp_path_for(path: Path) -> Path:
    """A sibling temporary path for ``path`` (same filesystem, so the final rename is atomic)."""
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    return _tmp_name(path)


def commit(tmp: Path, path: Path) -> None:
    with writing(path):
        os.replace(tmp, path)


#: Names of what a writer leaves while it works, with the writer's PID: ``.NAME.tmp-PID`` (atomic writes),
#: ``.staging-PID`` (a publish being assembled), ``.NAME.old-PID`` (a published folder being replaced),
#: ``NAME.PID.THREAD.tmp`` (the OpenAI-compatible response cache).
_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)$|^\.staging-(\d+)$|^\..+\.old-(\d+)$|^.+\.(\d+)\.\d+\.tmp$")


def temp_files(root: Path) -> Iterator[tuple[Path, int]]:
    """``(path, writer PID)`` of every temporary file or folder under ``root`` (not descending into them)."""
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            found = _TEMP_NAME.match(name)
            if found:
                yield Path(folder) / name, int(next(g for g in found.groups() if g is not None))
        dirs[:] = [d for d in dirs if not _TEMP_NAME.match(d)]


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID runs on this machine (a PID we may not signal still counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _replaced_folder(path: Path) -> Path | None:
    """For ``.NAME.old-PID`` (a published folder publish_dir was replacing) the folder ``NAME``; else None."""
    found = _TEMP_NAME.match(path.name)
    return path.with_name(path.name[1:].rsplit(".old-", 1)[0]) if found and found.group(3) else None


def stale_temp_files(root: Path) -> list[Path]:
    """What :func:`remove_temp_files` deletes by default (a dry run lists these)."""
    return [
        path for path, pid in temp_files(root)
        if not pid_alive(pid) and not ((published := _replaced_folder(path)) is not None and not published.exists())
    ]


def remove_temp_files(root: Path, *, pids: set[int] | None = None) -> list[Path]:
    """Delete temporary files under ``root`` left by the writers in ``pids`` (default: every writer that is no
    longer running); returns what was deleted.  A failed run calls it with its own PID, ``curate gc`` with the
    default, so a writer that is still at work (another ``curate report``, say) keeps its files."""
    removed: list[Path] = []
    for path, pid in list(temp_files(root)):
        if (pid in pids) if pids is not None else not pid_alive(pid):
            published = _replaced_folder(path)
            if published is not None and not published.exists():
                os.replace(path, published)  # killed between publish_dir's two renames: this is the output
                continue
            try:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed


def publish_dir(staging: Path, final: Path) -> None:
    """Replace directory ``final`` by ``staging``.

    Two renames: readers see the old directory, then (for microseconds) none, then the new one; never a
    mix of old and new files.
    """
    _fsync_dir(staging)
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    with writing(final):
        if final.exists():
            os.replace(final, old)
        try:
            os.replace(staging, final)
        except OSError:
            if old.exists() and not final.exists():
                os.replace(old, final)  # put the published folder back: a failed publish changes nothing
            raise
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


class RunLock:
    """Exclusive lock on a run directory, held for the life of a run."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the run
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise LockHeldError(
                f"{self.path.parent}: another curate run is writing here ({holder}); "
                "wait for it to finish or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
