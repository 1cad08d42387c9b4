"""``curate report``: one self-contained HTML page describing a finished run directory.

The page inlines its CSS, its plots (SVG) and one short script (search over the rows it shows), and loads
nothing, so it can be mailed, attached to an issue or opened on an air-gapped machine and look the same.
Warnings (:mod:`curate.report.findings`) come first, then the stage funnel and the data browser
(:mod:`curate.report.browser`: output rows and set-aside rows), then the statistics.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from curate.errors import InputDataError
from curate.report import browser, html, sections
from curate.report.findings import findings

__all__ = ["write_report"]


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of ``run_dir`` (default ``RUN/report.html``) and return its path."""
    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise InputDataError(f"{run_dir}: no manifest.json (not a finished run directory)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("status") == "failed":  # curate.runner: a failed run publishes quarantine/ and its manifest
        error = manifest.get("error") or {}
        kept = (manifest.get("last_success") or {}).get("finished_at")
        raise InputDataError(
            f"{run_dir}: the last run failed in stage {error.get('stage')} (exit {error.get('exit_code')}): "
            f"{error.get('message')} (a failed run has no report"
            + (f"; data/ still holds the run finished at {kept})" if kept else ")")
        )
    output = (manifest.get("output") or {}).get("path")
    # Lazy: each section reads the columns it needs and reduces them (lengths, scores, counts) while streaming,
    # so a million-row run's report holds numbers, not texts (a full read held GBs).
    data = pl.scan_parquet(run_dir / output) if output and (run_dir / output).is_file() else None
    seed = int(manifest.get("seed") or 0)
    parts = [
        sections.funnel(run_dir, manifest),
        browser.output_rows(data, seed),
        browser.set_aside_rows(run_dir, manifest, data, seed),
        sections.lengths(run_dir, manifest, data),
        sections.scores(data),
        sections.margins(data, manifest),
        sections.languages(data),
        sections.dedup(run_dir, manifest, data),
        sections.audit(run_dir),
        sections.embedding_map(run_dir, manifest, data),
        sections.models(manifest),
        sections.summary(manifest),
        sections.recipe(manifest),
    ]
    name = (manifest.get("recipe") or {}).get("name", run_dir.name)
    subtitle = f"{run_dir} · finished {manifest.get('finished_at', '?')}"
    target = Path(out) if out is not None else run_dir / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    # The same findings the dataset card lists (curate.report.findings), above everything else.
    warned = [(w.code, w.title, w.figure) for w in findings(manifest, data, run_dir / "reports")]
    tmp.write_text(html.page(f"curate report: {name}", subtitle, parts, top=html.warnings(warned)), encoding="utf-8")
    tmp.replace(target)
    return target
