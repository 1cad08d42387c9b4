"""Model handles that travel to Ray workers as specs and load there, once per worker process.

A batch stage's function closes over the model it got from ``ctx.models``.  Shipping a loaded model to
every actor would copy its weights through the object store; a :class:`ModelProxy` pickles as its spec and
loads the real backend on first use in each process (cached per process, so an actor of a pool loads it
once for all the batches it runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate.models import ModelKind, ModelRegistry

#: Loaded backends of this process, by (kind, spec fingerprint).
_LOADED: dict[tuple[str, str], Any] = {}


class ModelProxy:
    """Stands for a model handle; attribute access loads the backend in the current process."""

    def __init__(self, handle: str, kind: ModelKind, spec: dict[str, Any], fingerprint: str, base_dir: Path,
                 cache_dir: Path | None) -> None:
        self._meta = (handle, kind, spec, fingerprint, base_dir, cache_dir)

    def _target(self) -> Any:
        handle, kind, spec, fingerprint, base_dir, cache_dir = self._meta
        key = (kind, fingerprint)
        if key not in _LOADED:
            _LOADED[key] = ModelRegistry({handle: spec}, base_dir, cache_dir).get(handle, kind)
        return _LOADED[key]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_meta":
            raise AttributeError(name)
        return getattr(self._target(), name)

    def __getstate__(self) -> dict[str, Any]:
        return {"_meta": self._meta}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._meta = state["_meta"]

    def __repr__(self) -> str:
        return f"ModelProxy({self._meta[0]!r}, {self._meta[1]!r})"


class ProxyRegistry(ModelRegistry):
    """A registry whose handles are :class:`ModelProxy` objects: LLMs and reward models for batch stages, and
    embedding encoders, which encode on Ray actors while the embedding stages' index and decisions stay on the
    driver (where the proxy also loads, for the encoder's dimension and fingerprint)."""

    def get(self, handle: str, kind: ModelKind) -> Any:
        if handle in self._loaded:
            return super().get(handle, kind)
        spec = dict(self.spec(handle))
        return ModelProxy(handle, kind, spec, self.fingerprint(handle), self.base_dir, self.cache_dir)

    def wants_gpu(self, handle: str) -> bool:
        """True when the handle's spec asks for CUDA (``device: cuda``/``cuda:N``; vLLM always does)."""
        spec = self.spec(handle)
        return str(spec.get("device", "")).startswith("cuda") or spec.get("backend") == "vllm"
