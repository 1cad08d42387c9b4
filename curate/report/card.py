"""The dataset card every run writes as ``data/README.md`` (Hugging Face dataset-card format).

Why: a ``data/`` folder that is copied, pushed to a hub or opened with ``datasets.load_dataset("RUN/data")``
should carry its own description: what it was made from (inputs with their hashes), how (stages with the
parameters the recipe set, models), what was set aside (counts per reason code) and what to be careful about
(the run's warnings, :func:`curate.report.findings.findings`, the same the HTML report shows at its top).

The YAML header follows the hub's dataset-card metadata: ``configs`` (one ``default`` config whose
``train`` split is the Parquet file(s) in ``data/``), ``dataset_info`` (``features`` exactly as ``datasets``
derives them from the Parquet schema, so loading through the card gives the same columns and types as loading
the Parquet files directly), and ``license``, ``tags``, ``pretty_name`` from
the recipe's optional ``card:`` section (:class:`curate.recipe.CardSpec`).  The card is written under a
temporary name and renamed, inside the run's staging folder, so it is published with the data it describes.
It holds no time or duration: the same data from the same recipe gives the same card, so a recipe that reads
``RUN/data`` as its input folder (whose identity hashes every file in it) is not invalidated by a re-run alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from curate import checkpoint
from curate.pipeline import scan_quarantine
from curate.report.findings import Finding, findings

CARD = "README.md"
#: Arrow type names that ``datasets`` spells differently in a card.
_DTYPES = {"double": "float64", "float": "float32", "halffloat": "float16"}


def _dtype(t: pa.DataType) -> Any:
    """One Arrow type as a card's feature (the form ``datasets.Features._to_yaml_list`` writes)."""
    if pa.types.is_struct(t):
        return [{"name": t.field(i).name, **_field(t.field(i).type)} for i in range(t.num_fields)]
    if pa.types.is_large_list(t):
        return {"large_list": _dtype(t.value_type)}
    if pa.types.is_list(t):
        return {"list": _dtype(t.value_type)}
    return _DTYPES.get(str(t), str(t))


def _field(t: pa.DataType) -> dict[str, Any]:
    """A named feature's keys: ``dtype`` for a value, ``struct`` / ``list`` / ``large_list`` for nested types."""
    if pa.types.is_struct(t):
        return {"struct": _dtype(t)}
    if pa.types.is_large_list(t):
        return {"large_list": _dtype(t.value_type)}
    if pa.types.is_list(t):
        return {"list": _dtype(t.value_type)}
    return {"dtype": _dtype(t)}


def features(schema: pa.Schema) -> list[dict[str, Any]]:
    """``dataset_info.features`` of a Parquet schema."""
    return [{"name": f.name, **_field(f.type)} for f in schema]


def _header(manifest: dict[str, Any], files: list[Path]) -> dict[str, Any]:
    recipe = manifest.get("recipe") or {}
    card = recipe.get("card") or {}
    head: dict[str, Any] = {}
    head["pretty_name"] = card.get("pretty_name") or recipe.get("name") or "curate dataset"
    if card.get("license"):
        head["license"] = card["license"]
    head["tags"] = list(dict.fromkeys(["curate", *(card.get("tags") or [])]))
    head["configs"] = [{"config_name": "default", "data_files": [{"split": "train", "path": [f.name for f in files]}]}]
    # Features only: a ``splits`` entry needs num_bytes of the Arrow form, which ``datasets`` computes itself
    # (the row count is in the text).
    head["dataset_info"] = {"features": features(pq.read_schema(files[0]))}
    return head


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return str("" if v is None else v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join([*lines, *("| " + " | ".join(cell(v) for v in r) + " |" for r in rows)])


def _stage_params(manifest: dict[str, Any]) -> dict[str, Any]:
    """Stage label -> the parameters its recipe entry set (the recipe names only what differs from defaults,
    or what the author chose to spell out); the read stage has none."""
    entries = (manifest.get("recipe") or {}).get("stages") or []
    labels = [s["label"] for s in manifest.get("stages", []) if s.get("name") != "read"]
    params = {}
    for label, entry in zip(labels, entries, strict=False):
        value = next(iter(entry.values()), None) if isinstance(entry, dict) and len(entry) == 1 else entry
        params[label] = value
    return params


def _fmt_params(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "(defaults)"
    return "(defaults)" if value in (None, "", {}) else str(value)


def _quarantine(quarantine_dir: Path | None) -> list[list[Any]]:
    rows: list[list[Any]] = []
    files = sorted(quarantine_dir.glob("*.parquet")) if quarantine_dir is not None and quarantine_dir.is_dir() else []
    for path in files:
        counts = (scan_quarantine(path).group_by("stage", "code").len("rows")
                  .sort(["stage", "rows", "code"], descending=[False, True, False]).collect())
        rows += [list(r) for r in counts.iter_rows()]
    return rows


def card_text(manifest: dict[str, Any], files: list[Path], warnings: list[Finding],
              quarantine_dir: Path | None = None) -> str:
    """The card: YAML header, then the description, warnings, provenance and how to load it."""
    recipe = manifest.get("recipe") or {}
    card = recipe.get("card") or {}
    out = manifest.get("output") or {}
    rows = int(out.get("rows") or 0)
    head = yaml.safe_dump(_header(manifest, files), sort_keys=False, allow_unicode=True, width=1000)
    title = card.get("pretty_name") or recipe.get("name") or "curate dataset"
    description = card.get("description") or recipe.get("description") or ""
    versions = manifest.get("versions") or {}
    parts = [f"---\n{head}---\n", f"# {title}\n", description + "\n" if description else "",
             f"A {out.get('table', '?')} table of {rows:,} rows ({', '.join(f.name for f in files)}), made by curate "
             f"{versions.get('curate', '?')} from the recipe `{recipe.get('name', '?')}` (hash "
             f"`{manifest.get('recipe_hash', '?')}`, seed {manifest.get('seed', '?')}).\n"]
    parts.append("## Known biases and warnings\n")
    parts.append("\n".join(f"- **{w.title}**: {w.figure}" for w in warnings) + "\n" if warnings else
                 "None of curate's checks fired (length bias of pairs, score margins inside the scorer's noise, "
                 "degenerate judge, dedup removing over 10%, audit matches).\n")
    parts.append("## Provenance\n\n### Inputs\n")
    inputs = [[i.get("path"), i.get("adapter"), i.get("xxh3")] for i in manifest.get("inputs") or []]
    parts.append(_table(["path", "adapter", "xxh3"], inputs) + "\n")
    params = _stage_params(manifest)
    parts.append("### Stages\n")
    parts.append(_table(["stage", "rows in", "set aside", "rows out", "parameters set by the recipe"],
                        [[s["label"], s.get("rows_in"), s.get("quarantined"), s.get("rows_out"),
                          "" if s.get("name") == "read" else _fmt_params(params.get(s["label"]))]
                         for s in manifest.get("stages") or []]) + "\n")
    models = recipe.get("models") or {}
    parts.append("### Models\n")
    parts.append(_table(["handle", "backend", "path", "other settings"],
                        [[h, m.get("backend", ""), m.get("path", ""),
                          ", ".join(f"{k}={v}" for k, v in m.items() if k not in ("backend", "path"))]
                         for h, m in models.items()]) + "\n" if models else "No model handles in the recipe.\n")
    quarantined = _quarantine(quarantine_dir)
    parts.append(f"### Set-aside rows by reason code ({int(manifest.get('quarantined') or 0):,} in all)\n")
    parts.append(_table(["stage", "code", "rows"], quarantined) + "\n" if quarantined else "No rows were set aside.\n")
    parts.append("## Loading\n\n```python\nfrom datasets import load_dataset\n\n"
                 'ds = load_dataset("path/to/RUN/data", split="train")  # this folder, through this card\n'
                 'ds = load_dataset("parquet", data_files="path/to/RUN/data/*.parquet", split="train")\n```\n')
    return "\n".join(p for p in parts if p)


def write_card(data_dir: Path, manifest: dict[str, Any], reports_dir: Path | None = None,
               quarantine_dir: Path | None = None) -> Path:
    """Write ``data_dir/README.md`` for the Parquet file(s) in ``data_dir`` (atomically: temp file + rename)."""
    files = sorted(data_dir.glob("*.parquet"))
    data = pl.scan_parquet(files) if files else None
    text = card_text(manifest, files, findings(manifest, data, reports_dir), quarantine_dir)
    target = data_dir / CARD
    tmp = checkpoint.tmp_path_for(target)  # .README.md.tmp-PID: a killed run's leftover is cleaned like the rest
    with checkpoint.writing(target, tmp):
        tmp.write_text(text, encoding="utf-8")
    checkpoint.commit(tmp, target)
    return target


__all__ = ["CARD", "card_text", "features", "write_card"]
