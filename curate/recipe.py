"""YAML recipe -> validated :class:`Recipe`.

A recipe names its inputs (with an adapter, or ``auto``), the stages in order with their parameters, and
where the output goes.  YAML is read with ``yaml.safe_load``: a recipe is data and cannot run code.
Every mistake is reported with its path in the recipe (``stages[2].minhash_dedup.threshold: ...``);
``--set key=value`` overrides are applied before validation so they are checked the same way.

Paths inside a recipe are relative to the recipe file, so a recipe runs the same from any directory.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import pydantic
import xxhash
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from curate.errors import RecipeError
from curate.io.readers import DEFAULT_LIMITS, Limits
from curate.pipeline import Stage
from curate.stages import STAGES


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    adapter: str = "auto"
    options: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None
    #: What one row may hold (curate.io.readers.Limits): a row past a limit is rejected with its reason.
    max_nesting: int = Field(default=DEFAULT_LIMITS.max_nesting, ge=1)
    max_line_mb: float = Field(default=DEFAULT_LIMITS.max_line_bytes / (1 << 20), gt=0)
    #: A CSV/TSV file without a header row: ``header: false`` and the names of its columns, in order.
    header: bool = True
    columns: list[str] | None = None
    #: Files joined to this one on a key column (curate.io.loading.Join): ``{on: question_id, files: [...]}``.
    join: dict[str, Any] | None = None

    def limits(self) -> Limits:
        return Limits(max_nesting=self.max_nesting, max_line_bytes=max(1, int(self.max_line_mb * (1 << 20))))


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dir: str | None = None
    table: Literal["conversation", "candidates", "preference"] | None = None


class ExportSpec(BaseModel):
    """``export:`` in a recipe: after publishing, write a trainer-ready copy to ``RUN/export/<format>/``."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["dpo", "kto", "sft", "listwise"]
    test_size: float = Field(default=0.0, ge=0.0, lt=1.0)
    seed: int | None = None
    save_to_disk: bool = False


class CardSpec(BaseModel):
    """``card:`` in a recipe: what the dataset card (``RUN/data/README.md``, curate.report.card) says beyond
    what the run records itself: the data's license, hub tags, a title and a description (default: the recipe's)."""

    model_config = ConfigDict(extra="forbid")

    license: str | None = None
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    pretty_name: str | None = None


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str
    description: str = ""
    seed: int = 0
    on_error: Literal["raise", "quarantine"] = "raise"
    batch_size: int = Field(default=4096, ge=1)
    input: list[InputSpec]
    output: OutputSpec = Field(default_factory=OutputSpec)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    stages: list[dict[str, Any]] = Field(default_factory=list)
    export: list[ExportSpec] = Field(default_factory=list)
    #: Dataset-card metadata (license, tags, description, pretty_name); the card is written either way.
    card: CardSpec | None = None
    #: Settings of ``curate train`` (validated by ``curate.train.TrainConfig`` when that command runs).
    train: dict[str, Any] | None = None
    #: Scheduled refresh (``curate run --incremental`` does the same): re-runs reuse every model result
    #: by row content, the manifest records the run it refreshed, and stage outputs of earlier inputs are
    #: pruned after publishing (the content caches stay).  A ``--fresh`` run cannot be a refresh.
    refresh: bool = False

    # Not part of the YAML: where relative paths resolve from, and the built stage objects.
    base_dir: Path = Field(default=Path("."), exclude=True)
    stage_objects: list[Stage] = Field(default_factory=list, exclude=True)

    @field_validator("models")
    @classmethod
    def _model_prices(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """A model's optional ``price_per_million: {input: X, output: Y}`` (curate.progress) is checked here, with
        the recipe, not when the model first loads mid-run."""
        from pydantic_core import PydanticCustomError

        from curate.progress import parse_price

        for handle, spec in value.items():
            try:
                parse_price(str(handle), spec)
            except RecipeError as exc:
                raise PydanticCustomError("price_per_million", str(exc).removeprefix("models.")) from None
        return value

    @field_validator("export", mode="before")
    @classmethod
    def _one_or_many_exports(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("stages", mode="before")
    @classmethod
    def _bare_stage_names(cls, value: Any) -> Any:
        return _bare_stages(value)

    @field_validator("input", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, (str, dict)):
            value = [value]
        if isinstance(value, list):
            return [{"path": v} if isinstance(v, str) else v for v in value]
        return value

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def join_paths(self, spec: InputSpec) -> list[Path]:
        """The files an input's ``join:`` names, resolved against the recipe's folder."""
        files = (spec.join or {}).get("files") or []
        return [self.resolve(f if isinstance(f, str) else f.get("path", "")) for f in
                ([files] if isinstance(files, str) else files)]

    def resolved_join(self, spec: InputSpec) -> dict[str, Any] | None:
        """An input's ``join:`` with its files' paths resolved (what :func:`curate.io.load` takes), or None."""
        if not spec.join:
            return None
        files = spec.join.get("files") or []
        items = [files] if isinstance(files, str) else files
        return {**spec.join, "files": [{**({"path": f} if isinstance(f, str) else f), "path": str(p)}
                                       for f, p in zip(items, self.join_paths(spec), strict=True)]}

    def content(self) -> dict[str, Any]:
        """The recipe as data (what the manifest records and the hash covers)."""
        return self.model_dump(mode="json")

    def hash(self) -> str:
        payload = self.content()
        payload.get("output", {}).pop("dir", None)
        payload.pop("train", None)  # training settings do not change the data
        payload.pop("card", None)  # nor does the card's description
        return xxhash.xxh3_64_hexdigest(json.dumps(payload, sort_keys=True).encode())


def _bare_stages(value: Any) -> Any:
    """``- filter`` (a stage with its defaults) as ``- filter: {}``, the form every other place reads."""
    return [{v: {}} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value


class _RecipeLoader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 booleans: only true/false are booleans, so ``on: prompt`` stays a key."""


_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_RecipeLoader)


#: The models behind each place in a recipe, for suggesting the key a typo meant (``inputs`` -> ``input``).
_SECTIONS: dict[str, type[BaseModel]] = {"input": InputSpec, "output": OutputSpec, "export": ExportSpec,
                                         "card": CardSpec}


def _recipe_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys a recipe accepts at ``loc`` (the location of an unknown key)."""
    model: type[BaseModel] = Recipe if len(loc) <= 1 else _SECTIONS.get(str(loc[0]), Recipe)
    return [name for name, f in model.model_fields.items() if not f.exclude]


def unknown_key_hint(key: str, known: list[str]) -> str:
    """``"; did you mean 'x'?"`` for the nearest known key, or the list of known keys."""
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"; did you mean '{near[0]}'?" if near else f" (known: {', '.join(sorted(known))})"


def _format_pydantic(
    error: pydantic.ValidationError, prefix: str, keys_at: Any = _recipe_keys
) -> list[str]:
    """One line per mistake with its path in the recipe; unknown keys name the nearest known one."""
    lines = []
    for item in error.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in item["loc"])
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument") and item["loc"]:
            key = str(item["loc"][-1])
            lines.append(f"{prefix}{loc}: unknown key '{key}'{unknown_key_hint(key, keys_at(item['loc']))}")
            continue
        got = item.get("input")
        shown = ""
        if not isinstance(got, (dict, list)) and got is not None and repr(got) not in item["msg"]:
            shown = f" (got {got!r})"
        lines.append(f"{prefix}{loc}: {item['msg']}{shown}")
    return lines


def stage_class(name: str, where: str = "stages") -> type[Stage]:
    """The stage class of a recipe name, or ``RecipeError`` suggesting the nearest name."""
    if name not in STAGES:
        near = difflib.get_close_matches(name, STAGES, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else f"; known stages: {', '.join(sorted(STAGES))}"
        raise RecipeError(f"{where}: unknown stage '{name}'{hint}")
    return STAGES[name]


def build_stage(name: str, params: Any, where: str) -> Stage:
    """Instantiate one stage from its recipe entry, raising ``RecipeError`` with the entry's path."""
    stage_class(name, where)
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RecipeError(f"{where}.{name}: parameters must be a mapping, got {type(params).__name__}")
    try:
        return STAGES[name](**params)
    except pydantic.ValidationError as exc:
        params_known = [f.name for f in dataclasses.fields(STAGES[name])]
        raise RecipeError(
            "; ".join(_format_pydantic(exc, f"{where}.{name}", keys_at=lambda _loc: params_known))
        ) from None
    except TypeError as exc:
        raise RecipeError(f"{where}.{name}: {exc}") from None


def _parse_stage_entry(entry: Any, index: int) -> tuple[str, Any]:
    where = f"stages[{index}]"
    if isinstance(entry, str):
        return entry, {}
    if not isinstance(entry, dict) or len(entry) != 1:
        raise RecipeError(f"{where}: each stage is a mapping with one key, the stage name, e.g. '- filter: {{}}'")
    (name, params), = entry.items()
    return str(name), params


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides: dotted paths into the recipe; values parsed as YAML scalars.

    A path may start with a stage name instead of ``stages.N.name`` when that stage occurs once:
    ``minhash_dedup.threshold=0.7``.
    """
    data = copy.deepcopy(data)
    if "stages" in data:
        data["stages"] = _bare_stages(data["stages"])
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml_load(raw)
        except yaml.YAMLError:
            value = raw
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise RecipeError(f"--set {item!r}: empty key")
        stage_names = [_parse_stage_entry(e, i)[0] for i, e in enumerate(data.get("stages") or [])]
        if parts[0] in STAGES and parts[0] not in data:
            positions = [i for i, n in enumerate(stage_names) if n == parts[0]]
            if len(positions) != 1:
                raise RecipeError(
                    f"--set {item!r}: stage '{parts[0]}' occurs {len(positions)} times; use stages.N.{parts[0]}..."
                )
            parts = ["stages", str(positions[0]), *parts]
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RecipeError(f"--set {item!r}: '{'.'.join(parts[: depth + 1])}' is not a list index")
                node = node[int(part)]
            elif isinstance(node, dict):
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
            else:
                raise RecipeError(f"--set {item!r}: '{'.'.join(parts[:depth])}' is not a mapping")
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise RecipeError(f"--set {item!r}: '{last}' is not a list index")
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise RecipeError(f"--set {item!r}: cannot set a key inside a {type(node).__name__}")
    return data


def parse_recipe(data: Any, *, base_dir: Path = Path("."), origin: str = "<recipe>") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{origin}: a recipe is a YAML mapping with 'name', 'input' and 'stages'")
    errors: list[str] = []
    stage_objects: list[Stage] = []
    for index, entry in enumerate(data.get("stages") or []):
        try:
            name, params = _parse_stage_entry(entry, index)
            stage_objects.append(build_stage(name, params, f"stages[{index}]"))
        except RecipeError as exc:
            errors.append(str(exc))
    try:
        recipe = Recipe.model_validate({**data, "base_dir": base_dir})
    except pydantic.ValidationError as exc:
        errors = _format_pydantic(exc, "").copy() + errors
        errors = [e.lstrip(".") for e in errors]
        recipe = None
    if errors:
        error = RecipeError(f"{origin}: " + "; ".join(errors))
        error.problems = errors  # type: ignore[attr-defined]  # each mistake, for curate validate's count
        raise error
    assert recipe is not None
    recipe.stage_objects = stage_objects
    return recipe


def _recipe_folders(path: Path) -> list[Path]:
    """Where a mistyped recipe path may have meant, nearest first: the folder it names, the current folder,
    ``recipes/`` there and in every folder above it (a project's subfolder), and this checkout's ``recipes/``."""
    cwd = Path.cwd()
    folders = [path.parent, cwd, *(up / "recipes" for up in (cwd, *cwd.parents)),
               Path(__file__).resolve().parents[1] / "recipes"]
    seen: dict[Path, None] = {}
    for folder in folders:
        full = (cwd / folder).resolve() if not folder.is_absolute() else folder.resolve()
        if full.is_dir():
            seen.setdefault(full)
    return list(seen)


def _shown(path: Path) -> str:
    """``path`` as the user would type it from here: relative when it is below the current folder or in a folder
    above it (``../recipes/x.yaml``), else absolute (never ``../work/main/recipes/x.yaml``)."""
    parts = Path(os.path.relpath(path, Path.cwd())).parts
    ups = len(parts) - len([p for p in parts if p != ".."])
    return str(Path(*parts)) if ups == 0 or len(parts) - ups <= 2 else str(path)


def _nearby_recipes_hint(path: Path) -> str:
    """Suggest the nearest recipe file by name (from any folder: see :func:`_recipe_folders`), or ``curate init``."""
    by_stem: dict[str, Path] = {}
    for folder in _recipe_folders(path):
        for found in sorted(folder.glob("*.y*ml")):
            by_stem.setdefault(found.stem, found)  # the nearest folder wins a name found twice
    near = difflib.get_close_matches(path.stem, list(by_stem), n=1, cutoff=0.5)
    if near:
        return f"; did you mean {_shown(by_stem[near[0]])}?"
    return "; `curate init` lists starter recipes, and `curate init NAME` writes one with sample data"


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file{_nearby_recipes_hint(path)}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = yaml_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}: invalid YAML{at}: {problem}") from None
    if isinstance(data, dict) and overrides:
        data = apply_overrides(data, overrides)
    return parse_recipe(data, base_dir=path.resolve().parent, origin=str(path))
