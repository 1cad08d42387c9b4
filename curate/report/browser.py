"""The report's data browser: rows a reader can look at, inside the one self-contained page.

A summary of counts and histograms says nothing about what the rows *say*; a reader deciding whether to
train on a dataset wants to read some (the Hugging Face datasets viewer and Data-Juicer's analysis both show
rows next to their statistics).  Two sections:

- **Output rows**: the first :data:`FIRST` rows and a random sample of up to :data:`SAMPLE` more, drawn with
  the run's seed (the same run shows the same rows).  Preference rows show the prompt, then chosen and
  rejected side by side with their scores, the margin and their lengths; candidates show every response with
  its score; conversations show their turns.
- **Set-aside rows**: per quarantine reason ``code``, a seeded sample (:data:`SET_ASIDE` rows over all codes,
  at least :data:`PER_CODE_MIN` per code), each with its stage and reason; a duplicate (``duplicate_of``) is
  shown next to the kept twin, looked up in the output, else in the dedup stage's cached input.

Bounded: every text is cut at :data:`TEXT_CHARS` characters with an ellipsis and its full length, so a
million-row run with long rows still makes a page of a few hundred kilobytes.  Everything from the data goes
through :func:`curate.report.html.esc`; the page's one inline script (``html.SCRIPT``) only hides and shows
these rows by a search text and a group, reading the DOM, never building markup from row text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curate.pipeline import scan_quarantine
from curate.report.html import esc, fmt

Section = tuple[str, str, str]
#: Rows shown from the start of the output.
FIRST = 10
#: Rows of the seeded random sample of the output (drawn from the rows after the first ones).
SAMPLE = 40
#: Set-aside rows shown over all reason codes, and the least per code when there are many codes.
SET_ASIDE = 50
PER_CODE_MIN = 3
#: Characters of one text shown; longer texts end in an ellipsis and their full length.
TEXT_CHARS = 1200
_CONTENT = {"id", "prompt", "chosen", "rejected", "messages", "responses", "source"}


def plural(n: int, word: str) -> str:
    """``1 char``, ``2 chars``, ``1,200 rows``."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def cut(text: Any, limit: int = TEXT_CHARS, total: int | None = None) -> str:
    """Escaped text, cut at ``limit`` characters with an ellipsis and the full length (``total``: the length to
    state, e.g. the characters of a message list's contents without the role labels)."""
    text = "" if text is None else str(text)
    if len(text) <= limit:
        return esc(text)
    return f'{esc(text[:limit])}<span class="cut"> … [{total or len(text):,} chars in all]</span>'


def _messages(value: Any) -> tuple[str, int]:
    """A message list as ``[role] content`` lines, and its characters of content."""
    if isinstance(value, str):
        return value, len(value)
    if not isinstance(value, list):
        return ("" if value is None else json.dumps(value, default=str)), 0
    lines, chars = [], 0
    for m in value:
        if isinstance(m, dict):
            content = "" if m.get("content") is None else str(m.get("content"))
            chars += len(content)
            lines.append(f"[{m.get('role')}] {content}" if m.get("role") else content)
        else:
            lines.append(str(m))
    return "\n".join(lines), chars


def _text_block(title: str, value: Any, extra: str = "") -> str:
    text, chars = _messages(value)
    shown = f'<div class="text">{cut(text, total=chars or None)}</div>' if text else '<p class="none">(empty)</p>'
    return f'<div><div class="meta"><b>{esc(title)}</b> · {plural(chars, "char")}{extra}</div>{shown}</div>'


def _scalars(row: dict[str, Any], skip: set[str]) -> str:
    """Other columns of a row: numbers and short strings (scores, tags) inline as ``name=value``; nested or long
    values (a judge's rationale, a model path) folded under a "more columns" line, each cut short."""
    short, long = [], []
    for key, value in row.items():
        if key in _CONTENT or key in skip or value is None:
            continue
        shown = fmt(value) if isinstance(value, int | float | str | bool) else json.dumps(value, default=str)
        item = f"{esc(key)}=<b>{esc(shown if len(shown) <= 300 else shown[:300] + ' …')}</b>"
        (short if isinstance(value, int | float | bool) or len(shown) <= 40 else long).append(item)
    out = f'<div class="meta">{" · ".join(short)}</div>' if short else ""
    if long:
        out += (f'<details class="meta"><summary>{plural(len(long), "more column")}</summary>{"<br>".join(long)}'
                "</details>")
    return out


def render_row(row: dict[str, Any]) -> str:
    """One row of any table (or a raw input record a reader set aside) as readable HTML."""
    head = [f"id <b>{esc(row.get('id'))}</b>"] if row.get("id") else []
    if row.get("source"):
        head.append(f"source {esc(row.get('source'))}")
    out = f'<div class="meta">{" · ".join(head)}</div>' if head else ""
    skip: set[str] = set()
    if "chosen" in row and "rejected" in row:
        sc, sr = row.get("score_chosen"), row.get("score_rejected")
        skip |= {"score_chosen", "score_rejected"}
        _, cc = _messages(row.get("chosen"))
        _, rc = _messages(row.get("rejected"))
        margin = [f"length margin <b>{cc - rc:+,}</b> chars"]
        if isinstance(sc, int | float) and isinstance(sr, int | float):
            margin.insert(0, f"score margin <b>{fmt(float(sc) - float(sr))}</b>")
        out += _text_block("prompt", row.get("prompt"))
        out += f'<div class="meta">{" · ".join(margin)}</div>'
        out += ('<div class="cols">'
                + _text_block("chosen", row.get("chosen"), f" · score {esc(fmt(sc))}" if sc is not None else "")
                + _text_block("rejected", row.get("rejected"), f" · score {esc(fmt(sr))}" if sr is not None else "")
                + "</div>")
    elif "responses" in row:
        out += _text_block("prompt", row.get("prompt"))
        responses = row.get("responses") if isinstance(row.get("responses"), list) else []
        blocks = []
        for i, r in enumerate(responses[:8]):
            r = r if isinstance(r, dict) else {"content": r}
            score = f" · score {esc(fmt(r.get('score')))}" if r.get("score") is not None else ""
            model = f" · {esc(str(r.get('model'))[-40:])}" if r.get("model") else ""
            blocks.append(_text_block(f"response {i + 1}", r.get("content"), score + model))
        more = f'<div class="meta">… {plural(len(responses) - 8, "more response")}</div>' if len(responses) > 8 else ""
        out += f'<div class="cols">{"".join(blocks)}</div>{more}'
    elif "messages" in row:
        out += _text_block("conversation", row.get("messages"))
    elif "prompt" in row:
        out += _text_block("prompt", row.get("prompt"))
    else:  # a raw record (a reader's malformed line, an adapter's rejected row): its fields as they were
        out += f'<div class="text">{cut(json.dumps(row, ensure_ascii=False, default=str))}</div>'
        return out
    return out + _scalars(row, skip)


def _record(group: str, body: str) -> str:
    return f'<div class="rec" data-group="{esc(group)}">{body}</div>'


def _tools(groups: list[tuple[str, str]], total: int) -> str:
    """The search box and group menu above a browser's rows (the inline script wires them)."""
    options = '<option value="">all groups</option>' + "".join(
        f'<option value="{esc(value)}">{esc(label)}</option>' for value, label in groups)
    return ('<div class="tools"><input type="search" placeholder="search the rows shown (any text, id, code)" '
            f'aria-label="search rows"> <select aria-label="group">{options}</select> '
            f'<span class="shown">{total} shown</span></div>')


def _sample_indices(n: int, start: int, k: int, seed: int) -> list[int]:
    """``k`` distinct row numbers in ``[start, n)``, sorted, the same for the same seed."""
    if n <= start or k <= 0:
        return []
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(np.arange(start, n), size=min(k, n - start), replace=False))


def _rows_at(lf: pl.LazyFrame, indices: list[int]) -> list[dict[str, Any]]:
    """The rows at these positions (one streaming pass; only they are kept)."""
    if not indices:
        return []
    return (lf.with_row_index("__row").filter(pl.col("__row").is_in(indices)).drop("__row")
            .collect(engine="streaming").to_dicts())


def output_rows(data: pl.LazyFrame | None, seed: int) -> Section:
    """The first rows and a seeded random sample of the output, searchable."""
    title = "Output rows"
    if data is None:
        return "rows", title, '<p class="none">No output table to browse.</p>'
    n = int(data.select(pl.len()).collect(engine="streaming").item())
    if n == 0:
        return "rows", title, '<p class="none">The output has no rows.</p>'
    first = data.head(FIRST).collect().to_dicts()
    picked = _sample_indices(n, FIRST, SAMPLE, seed)
    sample = _rows_at(data, picked)
    groups = [("first", f"first {len(first)} rows")]
    body = f'<h3 class="group" data-group="first">First {len(first)} of {plural(n, "row")}</h3>'
    body += "".join(_record("first", f'<div class="meta">row {i:,}</div>' + render_row(r))
                    for i, r in enumerate(first))
    if sample:
        groups.append(("sample", f"random sample of {len(sample)}"))
        body += (f'<h3 class="group" data-group="sample">Random sample of {plural(len(sample), "more row")} '
                 f"(seed {seed}; rows {FIRST:,} to {n - 1:,})</h3>")
        body += "".join(_record("sample", f'<div class="meta">row {i:,}</div>' + render_row(r))
                        for i, r in zip(picked, sample, strict=True))
    note = (f"<p>Texts longer than {TEXT_CHARS:,} characters are cut (marked with their full length). "
            "The search box filters the rows shown here, not the whole output.</p>")
    return "rows", title, f"<div>{_tools(groups, len(first) + len(sample))}{note}{body}</div>"


def _twin_sources(run_dir: Path, manifest: dict[str, Any], label: str, data: pl.LazyFrame | None
                  ) -> list[pl.LazyFrame]:
    """Where the kept twin of a row ``label`` set aside can be: the output, then the stage's own input (the
    previous stage's cached output), then the rows as read."""
    out = [data] if data is not None else []
    stages = manifest.get("stages") or []
    labels = [s.get("label") for s in stages]
    chosen = [labels.index(label) - 1] if label in labels and labels.index(label) > 0 else []
    for i in [*chosen, 0]:
        cache = stages[i].get("cache_dir") if 0 <= i < len(stages) else None
        path = run_dir / "cache" / "stages" / cache / "data.parquet" if cache else None
        if path is not None and path.is_file():
            out.append(pl.scan_parquet(path))
    return out


def _find_twins(sources: list[pl.LazyFrame], ids: set[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for lf in sources:
        missing = sorted(ids - set(found))
        if not missing:
            break
        if "id" not in lf.collect_schema().names():
            continue
        for row in lf.filter(pl.col("id").is_in(missing)).collect(engine="streaming").to_dicts():
            found.setdefault(row["id"], row)
    return found


def set_aside_rows(run_dir: Path, manifest: dict[str, Any], data: pl.LazyFrame | None, seed: int) -> Section:
    """A seeded sample of the quarantined rows per reason code, duplicates beside their kept twin."""
    title = "Set-aside rows"
    files = sorted((run_dir / "quarantine").glob("*.parquet"))
    codes: list[tuple[Path, pl.DataFrame]] = []
    for path in files:
        frame = scan_quarantine(path).select("code").with_row_index("__row").collect()
        if frame.height:
            codes.append((path, frame))
    if not codes:
        return "setaside", title, '<p class="none">No rows were set aside.</p>'
    counts = pl.concat([f for _, f in codes]).group_by("code").len().sort(["len", "code"], descending=[True, False])
    per_code = max(PER_CODE_MIN, SET_ASIDE // max(counts.height, 1))
    rng = np.random.default_rng(seed)
    picked: dict[str, list[tuple[Path, int]]] = {}
    for code in counts["code"].to_list():
        where = [(path, int(i)) for path, f in codes for i in f.filter(pl.col("code") == code)["__row"].to_list()]
        take = sorted(rng.choice(len(where), size=min(per_code, len(where)), replace=False).tolist())
        picked[code] = [where[i] for i in take]
    rows: dict[tuple[Path, int], dict[str, Any]] = {}
    for path in files:
        wanted = [i for code_rows in picked.values() for p, i in code_rows if p == path]
        if wanted:
            got = (scan_quarantine(path).with_row_index("__row").filter(pl.col("__row").is_in(wanted))
                   .collect().to_dicts())
            rows |= {(path, int(r["__row"])): r for r in got}
    twins: dict[str, dict[str, Any]] = {}
    by_stage: dict[str, set[str]] = {}
    for r in rows.values():
        if r.get("duplicate_of"):
            by_stage.setdefault(r["stage"], set()).add(r["duplicate_of"])
    for label, ids in by_stage.items():
        twins |= _find_twins(_twin_sources(run_dir, manifest, label, data), ids)
    total = dict(zip(counts["code"].to_list(), counts["len"].to_list(), strict=True))
    groups, body, shown = [], "", 0
    for code, where in picked.items():
        groups.append((code, f"{code} ({total[code]:,})"))
        body += (f'<h3 class="group" data-group="{esc(code)}">{esc(code)}: {len(where)} of '
                 f'{plural(total[code], "set-aside row")}</h3>')
        for key in where:
            r = rows.get(key)
            if r is None:
                continue
            shown += 1
            try:
                original = json.loads(r["row"]) if r.get("row") else None
            except json.JSONDecodeError:
                original = {"row": r["row"]}
            meta = (f'<div class="meta">stage <b>{esc(r.get("stage"))}</b> · code <b>{esc(code)}</b> · '
                    f'{cut(r.get("reason"), 400)}</div>')
            removed = render_row(original) if isinstance(original, dict) else (
                '<p class="none">(the row itself was not recorded)</p>')
            twin_id = r.get("duplicate_of")
            if twin_id:
                twin = twins.get(twin_id)
                kept = render_row(twin) if twin is not None else (
                    f'<p class="none">kept twin {esc(twin_id)} is neither in the output nor in the cached input '
                    "(set aside later, or the cache was removed)</p>")
                card = (f'<div class="cols"><div><div class="meta"><b>set aside</b> {esc(r.get("id"))}</div>'
                        f'{removed}</div><div><div class="meta"><b>kept twin</b> {esc(twin_id)}</div>{kept}</div>'
                        "</div>")
            else:
                card = removed
            body += _record(code, meta + card)
    note = (f"<p>Up to {per_code} rows per reason code, drawn with seed {seed}; every set-aside row is in "
            f"quarantine/ ({sum(total.values()):,} rows in {len(files)} file(s)).</p>")
    return "setaside", title, f"<div>{_tools(groups, shown)}{note}{body}</div>"


__all__ = ["cut", "output_rows", "render_row", "set_aside_rows"]
