"""HTML building blocks: every piece of user text goes through :func:`esc` here, never raw into markup.

Rows come from arbitrary datasets (scraped chats, model output): a prompt containing ``<script>`` must
show as text, not run, when the report is opened.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from html import escape, unescape
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;background:#fff;line-height:1.4;padding:0 1em}*{box-sizing:border-box}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #4c72b0;padding-bottom:.2em;margin-top:1.6em}
section{margin-bottom:1.5em}table{border-collapse:collapse;margin:.6em 0;font-size:.88em;max-width:100%}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#eef2f8;overflow-wrap:normal}td.num{text-align:right;font-variant-numeric:tabular-nums;
white-space:nowrap}
.plot{max-width:100%;height:auto;display:block;margin:.5em 0}.none{color:#777;font-style:italic}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:.6em;margin:.6em 0}
.pair div{border:1px solid #ddd;background:#fafafa;padding:.4em;white-space:pre-wrap;font-size:.82em;
overflow-wrap:anywhere}.pair b{display:block;margin-bottom:.3em}nav a{margin-right:.8em}
pre{background:#f6f8fa;border:1px solid #ddd;padding:.6em;font-size:.82em;white-space:pre-wrap;
overflow-wrap:anywhere}
.warn{border:2px solid #c44e52;background:#fdf0f0;padding:.5em .9em;margin:.8em 0}.warn ul{margin:.3em 0}
.tools{position:sticky;top:0;background:#fff;padding:.4em 0;z-index:1;border-bottom:1px solid #eee}
.tools input{width:22em;max-width:60%;padding:.2em .4em}.rec{border:1px solid #ccc;border-radius:4px;margin:.6em 0;
padding:.4em .6em;font-size:.86em}.rec .meta{color:#555;font-size:.92em;margin-bottom:.3em;overflow-wrap:anywhere}
.rec .meta b{color:#222}.rec .text{white-space:pre-wrap;overflow-wrap:anywhere;background:#fafafa;
border:1px solid #e4e4e4;padding:.3em .4em;margin:.2em 0}.rec .cut{color:#a33;font-style:italic}
.cols{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:.5em}.cols>div{min-width:0}
.absent li{color:#555}
"""

#: The page's only script: filters the rows a browser section shows by a search text and a group (first rows,
#: random sample, a quarantine code).  It reads the DOM and builds no markup, so row text never reaches it as
#: code; the page works without it (every row is shown).
SCRIPT = """
document.querySelectorAll('.tools').forEach(function (tools) {
  var box = tools.parentElement, q = tools.querySelector('input'), g = tools.querySelector('select'),
      n = tools.querySelector('.shown');
  function apply() {
    var text = q.value.toLowerCase(), group = g ? g.value : '', shown = 0;
    box.querySelectorAll('.rec').forEach(function (r) {
      var hit = (!group || r.dataset.group === group) && (!text || r.textContent.toLowerCase().indexOf(text) >= 0);
      r.hidden = !hit; shown += hit ? 1 : 0;
    });
    box.querySelectorAll('.group').forEach(function (h) { h.hidden = !!group && h.dataset.group !== group; });
    n.textContent = shown + ' shown';
  }
  q.addEventListener('input', apply); if (g) g.addEventListener('change', apply);
});
"""


def esc(value: Any) -> str:
    """Escape anything for HTML text or attribute context."""
    return escape("" if value is None else str(value), quote=True)


def fmt(value: Any) -> str:
    """Numbers short and readable (3 significant decimals); everything else as text."""
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain table; numeric cells are right-aligned so columns of counts line up."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for v in row:
            cls = ' class="num"' if isinstance(v, int | float) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{esc(fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def none(message: str) -> str:
    """The one line a section shows when the run has nothing for it (the section itself stays)."""
    return f'<p class="none">{esc(message)}</p>'


def pair(left_title: str, left: str, right_title: str, right: str) -> str:
    """Two texts side by side (a removed near-duplicate and the row it duplicates)."""
    return (f'<div class="pair"><div><b>{esc(left_title)}</b>{esc(left)}</div>'
            f'<div><b>{esc(right_title)}</b>{esc(right)}</div></div>')


def section(sid: str, title: str, body: str) -> str:
    """One report section; ``sid`` is a fixed identifier (tests and links rely on it)."""
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def warnings(items: Sequence[tuple[str, str, str]]) -> str:
    """The warning box at the top of the page: one line per (code, title, figure), or nothing."""
    if not items:
        return ""
    lines = "".join(f'<li data-code="{esc(code)}"><b>{esc(title)}</b>: {esc(figure)}</li>'
                    for code, title, figure in items)
    return f'<div id="warnings" class="warn"><b>Warnings</b><ul>{lines}</ul></div>'


def is_empty(body: str) -> bool:
    """A section body that is only the :func:`none` line: the page lists it once at the end, not as a section."""
    return re.fullmatch(r'\s*<p class="none">[^<]*</p>\s*', body) is not None


def absent(items: Sequence[tuple[str, str, str]]) -> str:
    """The closing list of what this run has no data for: one line per (section id, title, reason)."""
    lines = "".join(f'<li data-section="{esc(sid)}"><b>{esc(title)}</b>: '
                    f'{esc(unescape(re.sub(r"<[^>]+>", "", body)))}</li>' for sid, title, body in items)
    return f"<ul>{lines}</ul>"


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]], top: str = "") -> str:
    """The whole self-contained document: inline CSS, one inline script (:data:`SCRIPT`), no external
    references; ``top`` (the warnings) goes above the navigation, where a reader looks first.  Sections whose
    body is only a "no data" line are gathered into one list at the end ("Not in this run")."""
    shown = [s for s in sections if not is_empty(s[2])]
    missing = [s for s in sections if is_empty(s[2])]
    if missing:
        shown.append(("absent", "Not in this run", absent(missing)))
    nav = " ".join(f'<a href="#{esc(sid)}">{esc(name)}</a>' for sid, name, _ in shown)
    body = "\n".join(section(sid, name, html) for sid, name, html in shown)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>"
        f"<h1>{esc(title)}</h1><p>{esc(subtitle)}</p>{top}<nav>{nav}</nav>\n{body}\n"
        f"<script>{SCRIPT}</script></body></html>\n"
    )
