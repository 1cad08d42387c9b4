"""``curate validate``: every problem of a recipe found in one pass, reported at once.

Why: a user fixing a recipe by re-running validate after each error learns about the third mistake on the third
try.  Each check here runs even when an earlier one failed, as far as it can: a stage with a bad parameter does
not hide a missing input file, a missing input does not hide the other inputs' table contracts, one undefined
model handle does not hide a wrong model path.  The problems become one error (the CLI prints it on one line):
a :class:`RecipeError` (exit code 2) when any of them is a recipe mistake (a stage, a parameter, a contract, a
model handle or model path: the recipe names them), else an :class:`InputDataError` (exit code 3: the input
files themselves).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.errors import CurateError, InputDataError, RecipeError
from curate.words import count


@dataclass
class Validated:
    """What the checks found: the recipe, one line per readable input, its input and output tables, and the one
    error listing every problem (None when the recipe passed)."""

    recipe: Any
    lines: list[str] = field(default_factory=list)
    table: str = ""
    final: str = ""
    error: CurateError | None = None


@dataclass
class _Problems:
    origin: str
    items: list[tuple[type[CurateError], str]] = field(default_factory=list)

    def add(self, kind: type[CurateError], message: str) -> None:
        prefix = f"{self.origin}: "
        self.items.append((kind, message[len(prefix):] if message.startswith(prefix) else message))

    def error(self) -> CurateError | None:
        if not self.items:
            return None
        messages = [m for _, m in self.items]
        text = messages[0] if len(messages) == 1 else f"{count(len(messages), 'problem')}: " + "; ".join(messages)
        kind = RecipeError if any(issubclass(k, RecipeError) for k, _ in self.items) else InputDataError
        return kind(f"{self.origin}: {text}")


def _raw_inputs(path: Path, overrides: list[str]) -> list[str]:
    """The input paths a recipe's YAML names (for a recipe that does not parse as a whole), or none."""
    from curate.recipe import apply_overrides, yaml_load

    try:
        data = yaml_load(path.read_text(encoding="utf-8"))
        data = apply_overrides(data, overrides) if isinstance(data, dict) and overrides else data
    except Exception:  # the recipe's own error already says why it cannot be read
        return []
    raw = data.get("input") if isinstance(data, dict) else None
    items = [raw] if isinstance(raw, (str, dict)) else raw if isinstance(raw, list) else []
    return [str(i if isinstance(i, str) else i.get("path")) for i in items
            if isinstance(i, str) or (isinstance(i, dict) and isinstance(i.get("path"), str))]


def _missing_input(spec_path: str, resolved: Path) -> str:
    return f"input {spec_path!r} not found (looked at {resolved})"


def _model_problems(recipe: Any, problems: _Problems) -> None:
    """Undefined model handles and missing local model paths of the handles the stages use (nothing loaded)."""
    from curate.models import ModelKind, ModelRegistry

    uses: dict[str, ModelKind] = {}
    registry = ModelRegistry(specs=dict(recipe.models), base_dir=recipe.base_dir)
    for stage in recipe.stage_objects:
        for handle in stage.models_used():
            try:
                backend = registry.spec(handle).get("backend")
            except RecipeError as exc:
                if str(exc) not in [m for _, m in problems.items]:
                    problems.add(RecipeError, f"{stage.name}: {exc}")
                continue
            uses[handle] = ("embed" if backend == "sentence-transformers"
                            else "reward" if stage.name == "reward_score" else "llm")
    for message in registry.missing_paths(uses):
        problems.add(RecipeError, message)  # the recipe names the path: a recipe mistake (exit 2)


def validate_recipe(path: str | Path, overrides: list[str] | None = None) -> Validated:
    """Check a recipe without running it (stages and parameters, inputs and the table each gives, every stage's
    table contract, model handles and paths); ``Validated.error`` lists every problem found.  A recipe that does
    not load raises that error at once (with its missing inputs, when its YAML names them)."""
    from curate.contract import recipe_input, recipe_problems
    from curate.recipe import load_recipe

    path = Path(path)
    overrides = list(overrides or [])
    problems = _Problems(str(path))
    try:
        recipe = load_recipe(path, overrides)
    except RecipeError as exc:
        for message in getattr(exc, "problems", None) or [str(exc)]:  # parse_recipe lists each mistake
            problems.add(RecipeError, message)
        if path.is_file():  # a recipe that does not parse: its input paths can still be checked
            for spec_path in _raw_inputs(path, overrides):
                resolved = Path(spec_path).expanduser()
                resolved = resolved if resolved.is_absolute() else path.resolve().parent / resolved
                if not resolved.exists():
                    problems.add(InputDataError, _missing_input(spec_path, resolved))
        error = problems.error()
        if error is None:
            raise
        raise error from None
    present = []
    for spec in recipe.input:
        resolved = recipe.resolve(spec.path)
        missing = [p for p in [resolved, *recipe.join_paths(spec)] if not p.exists()]
        for p in missing:
            problems.add(InputDataError, _missing_input(spec.path, p) if p == resolved
                         else f"input {spec.path!r}: joined file {p} not found")
        if not missing:
            present.append(spec)
    result = Validated(recipe)
    if present:
        try:
            result.table, columns, result.lines = recipe_input(recipe.model_copy(update={"input": present}))
        except CurateError as exc:
            problems.add(type(exc), str(exc))
        else:
            contract, result.final = recipe_problems(recipe, result.table, columns)
            for message in contract:
                problems.add(RecipeError, message)
    _model_problems(recipe, problems)
    result.error = problems.error()
    return result
