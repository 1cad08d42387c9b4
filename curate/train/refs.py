"""Reference log-probabilities: computed once, stored in a cache, reused by every later run.

DPO (Rafailov et al. 2023) compares the policy's log-probability of each response with the frozen reference
model's, ``log pi(y|x) - log pi_ref(y|x)``.  The reference never changes during training, so computing it at
every step (TRL's default) spends a third of the forward passes on numbers that are the same each epoch and
each run.  Here they are computed once per (model, row), before training, in length-sorted no-grad batches
(little padding; on a GPU wider than training batches), and written to a Parquet in a cache, never beside the
data (a ``data/`` folder holds only what a trainer, ``curate inspect`` and ``curate export`` load):

    RUN/cache/ref_logps/ref_logps-<model key>.parquet              data in a run directory (RUN/data/*.parquet)
    OUTPUT/cache/ref_logps/<data xxh3>-<model key>.parquet          any other file (--compare, a user's Parquet)

  (``_key``, ``ref_chosen_logps``, ``ref_rejected_logps``; ``OUTPUT`` is the training run's ``output`` folder,
  ``<data xxh3>`` the hash of the data file's bytes, so another file, or the same file changed, gets its own.)

- The file name carries the **model key**: a hash of the model's identity (resolved path, weight file sizes and
  modification times, tokenizer, chat template) and of everything that changes the numbers (max lengths,
  mixed-precision dtype, TRL's major.minor).  Another model or setting gets another file.
- Inside, rows are keyed by ``_key``, the hash of the row's content (prompt, chosen, rejected), so a subset, a
  re-ordering or a few new rows reuse what is there and compute only the missing rows.
- The file is replaced atomically.  When the run's cache is not writable the training output's cache is used.
  A file an older curate wrote beside the data (``<stem>.ref_logps-<key>.parquet``, which broke ``curate
  inspect``/``export`` and ``datasets.load_dataset`` on the folder) is moved into the cache on first use.

The log-probs are TRL's own (``DPOTrainer.compute_ref_log_probs``: same collator, truncation, adapter handling
and fused LM head), so training on stored values is the same computation as TRL's ``precompute_ref_log_probs``;
``tests/test_train.py`` checks stored against freshly computed values.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import polars as pl
import xxhash

from curate import checkpoint

REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}


def _file_identity(path: Path) -> list[Any]:
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else []
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files if not p.name.startswith(".")]


def model_key(folder: Path, gguf_file: str | None, tokenizer: Any, extra: dict[str, Any]) -> str:
    """Identity of (model weights, tokenizer, chat template, settings that change the log-probs)."""
    weights = folder / gguf_file if gguf_file else folder
    payload = {
        "model": str(weights.resolve()),
        "files": _file_identity(weights),
        "tokenizer": type(tokenizer).__name__,
        "vocab": len(tokenizer),
        "chat_template": tokenizer.chat_template or "",
        **extra,
    }
    return xxhash.xxh3_64_hexdigest(json.dumps(payload, sort_keys=True, default=str).encode())


def run_dir_of(data_file: Path) -> Path | None:
    """The run directory a data file belongs to (``RUN/data/x.parquet`` with ``RUN/manifest.json``), or None."""
    folder = data_file.parent
    if folder.name == "data" and (folder.parent / "manifest.json").is_file():
        return folder.parent
    return None


class RefStore:
    """The stored reference log-probs of one model key, for the rows of one data file (see the module doc)."""

    def __init__(self, data_file: Path, key: str, output_dir: Path) -> None:
        run = run_dir_of(data_file)
        cache = run / "cache" if run is not None else None
        if cache is not None and (os.access(cache, os.W_OK) if cache.exists() else os.access(run, os.W_OK)):
            self.path = cache / "ref_logps" / f"ref_logps-{key}.parquet"
            self.where = "the run's cache"
        else:
            digest = checkpoint.file_digest(data_file)[:16]
            self.path = output_dir / "cache" / "ref_logps" / f"{digest}-{key}.parquet"
            self.where = "the training output's cache"
        legacy = data_file.parent / f"{data_file.name.split('.')[0]}.ref_logps-{key}.parquet"
        #: a file an older curate wrote beside the data: moved into the cache (it broke readers of data/)
        self.legacy = legacy if legacy.is_file() else None
        self._table: dict[str, tuple[float, float]] | None = None

    def _load(self) -> dict[str, tuple[float, float]]:
        if self._table is None:
            self._table = {}
            if self.legacy is not None and not self.path.is_file() and os.access(self.legacy.parent, os.W_OK):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(self.legacy), str(self.path))
            if self.path.is_file():
                frame = pl.read_parquet(self.path)
                for k, c, r in zip(frame["_key"].to_list(), frame[REF_COLUMNS[0]].to_list(),
                                   frame[REF_COLUMNS[1]].to_list(), strict=True):
                    self._table[k] = (c, r)
        return self._table

    def lookup(self, keys: list[str]) -> dict[str, tuple[float, float]]:
        table = self._load()
        return {k: table[k] for k in keys if k in table}

    def add(self, keys: list[str], chosen: list[float], rejected: list[float]) -> None:
        table = self._load()
        for k, c, r in zip(keys, chosen, rejected, strict=True):
            table[k] = (float(c), float(r))
        frame = pl.DataFrame({
            "_key": list(table),
            REF_COLUMNS[0]: [v[0] for v in table.values()],
            REF_COLUMNS[1]: [v[1] for v in table.values()],
        }, schema={"_key": pl.String, REF_COLUMNS[0]: pl.Float64, REF_COLUMNS[1]: pl.Float64})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_parquet_atomic(frame, self.path)


def _order(dataset: Any) -> list[int]:
    """Rows longest first: batches of similar length pad little, and an out-of-memory shows at the start."""
    lengths = [len(p) + max(len(c), len(r)) for p, c, r in
               zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True)]
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def policy_logps(trainer: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Summed completion log-probs of the *trained* policy (adapter on), as TRL's loss computes them."""
    import torch

    kwargs = {k: v for k, v in batch.items() if k not in NON_MODEL_KEYS}
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad(), trainer.accelerator.autocast():
        out = trainer.model(**kwargs, labels=labels, use_cache=False, fused_lm_head=True).log_probs
    seq = batch["completion_mask"].size(1) - 1
    return out[:, -seq:].sum(dim=1).chunk(2, dim=0)


def sequence_logps(trainer: Any, dataset: Any, batch_size: int, *, reference: bool) -> tuple[list[float], list[float]]:
    """(chosen, rejected) summed completion log-probs for every row of a tokenized dataset, in its order.

    ``reference``: the frozen reference (TRL's ``compute_ref_log_probs``: LoRA adapters disabled, or the
    reference model); otherwise the current policy.
    """
    import torch

    n = len(dataset)
    chosen = [0.0] * n
    rejected = [0.0] * n
    order = _order(dataset)
    columns = {name: dataset[name] for name in ("prompt_ids", "chosen_ids", "rejected_ids")}
    device = trainer.accelerator.device
    model = trainer.ref_model or trainer.model
    was_training = trainer.model.training
    trainer.model.eval()
    try:
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            examples = [{name: values[i] for name, values in columns.items()} for i in idx]
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                     for k, v in trainer.data_collator(examples).items()}
            if reference:
                c, r = trainer.compute_ref_log_probs(model, batch)
            else:
                c, r = policy_logps(trainer, batch)
            for i, cv, rv in zip(idx, c.float().cpu().tolist(), r.float().cpu().tolist(), strict=True):
                chosen[i], rejected[i] = cv, rv
    finally:
        trainer.model.train(was_training)
    return chosen, rejected


def attach_reference(trainer: Any, dataset: Any, batch_size: int, store: RefStore | None) -> tuple[Any, dict]:
    """``dataset`` with ``ref_chosen_logps``/``ref_rejected_logps`` columns, from the store where it has the
    rows and computed (then stored) where it has not.  Returns the dataset and what was done."""
    start = time.perf_counter()
    keys = list(dataset["_key"])
    found = store.lookup(keys) if store is not None else {}
    missing = [i for i, k in enumerate(keys) if k not in found]
    if missing:
        part = dataset.select(missing) if len(missing) < len(keys) else dataset
        chosen, rejected = sequence_logps(trainer, part, batch_size, reference=True)
        new = {keys[i]: (c, r) for i, c, r in zip(missing, chosen, rejected, strict=True)}
        found.update(new)
        if store is not None:
            store.add(list(new), [v[0] for v in new.values()], [v[1] for v in new.values()])
    for column in REF_COLUMNS:
        if column in dataset.column_names:
            dataset = dataset.remove_columns(column)
    dataset = dataset.add_column(REF_COLUMNS[0], [found[k][0] for k in keys])
    dataset = dataset.add_column(REF_COLUMNS[1], [found[k][1] for k in keys])
    info = {"rows": len(keys), "computed": len(missing), "reused": len(keys) - len(missing),
            "seconds": round(time.perf_counter() - start, 3),
            "file": str(store.path) if store is not None else None}
    return dataset, info
