"""Split a message into translatable prose and protected spans, mask the spans, and put it back together.

Selective translation (Paul et al. 2025): an instruction or response is translated only where it is natural
language; code, formulas, structured data, links and template slots are kept byte for byte.  This module is
the segmentation half of that, pure Python (no Polars, no model), so it is tested on its own.

**Protected spans** (``Span.kind``), found in this order (an earlier kind wins where two overlap):

1. ``code_block``: fenced code (CommonMark): a line opening with ``N >= 3`` backticks or tildes (any info
   string, any indentation) runs to a line holding only ``>= N`` of the same character.  A ````` ```` `````
   fence therefore contains ```` ``` ```` lines without closing (nested fences).  An unclosed fence runs to the
   end of the message, as CommonMark says: code the writer forgot to close is still code.
2. ``json``: a line starting with ``{`` / ``[`` whose text from there parses as a JSON object or array that
   ends at a line end (the whole message, or a block inside it); ``yaml``: a run of >= 2 ``key: value`` lines
   with code-like keys (``lowercase_or_camel``; prose labels such as ``Input:`` or ``Step 1:`` are capitalised
   or contain spaces and stay prose), optional ``- item`` lines, that ``yaml.safe_load`` reads as a mapping.
3. ``code``: bare (unfenced) code, a heuristic: a run of >= 2 lines that look like code (statements ending in
   ``;`` / ``{``, ``def``/``class``/``import`` lines, assignments, calls, SQL keywords in capitals, closing
   brackets), or a whole one-line message that does.  Lines ending in ``.``, ``?`` or ``!`` are never code.
4. ``indented_code``: a CommonMark indented code block among the lines left, a run of lines indented by >= 4
   columns (a tab counts to the next multiple of 4) that starts at the start of the message, after a blank
   line or after a block found above.  An indented line right after a prose line is a lazy paragraph
   continuation and stays prose; inside a list item (``-``, ``*``, ``+``, ``1.`` / ``1)``) the indentation is
   counted from the item's content column, so an item's indented continuation stays prose and only >= 4
   columns past it is code.  Blank lines inside the run belong to it, trailing ones do not; the span keeps its
   indentation.  (Found after bare code so that a bare-code run keeps its indented body in one block.)
5. Inline, inside the remaining prose: HTML code elements (``<code>…</code>``, ``<pre>``, ``<script>``…),
   ``inline_code`` (backtick strings, CommonMark), ``math`` (``$$…$$``, ``\\[…\\]``, ``\\(…\\)``, ``$…$``),
   embedded ``json`` (an object/array that parses, e.g. ``send {"a": 1} to it``), ``url``, ``email``,
   ``placeholder`` (``{name}``, ``{0:.2f}``, ``{{ name }}``, ``%s``/``%(name)d``, GSM8K's ``<<3*4=12>>``),
   ``tag`` (markup tags such as ``<br/>`` or ``<tag>``, comments, entities) and ``marker`` (text that already
   looks like one of our markers, so it can never be confused with one).
6. ``quoted_code``: code quoted inside prose (``Why is this not printing? "def hello(name):\n    print(name)"``,
   quotes included, across lines) or written after a colon on the rest of its line (``Fix this: x = [i for i
   in y]``), where :func:`code_score` (a code-likeness score from keywords, identifiers, calls, operators,
   brackets, statement ends, indentation and line breaks) reaches :data:`CODE_SCORE_MIN`.  Such a span wins
   over the inline spans inside it and yields to one it would cut through.

**Dollar rule** (currency is not math): ``$…$`` is math only when the opening ``$`` is followed by a
non-space, the closing ``$`` is preceded by a non-space and *not followed by a digit*, the content holds no
unescaped ``$`` and no line break (Pandoc's ``tex_math_dollars`` rule plus the last two).  So ``$5 and $10``
and ``$5-$10`` are prose, ``$x^2$`` and ``$5$`` are math.  Every unbalanced delimiter (``$``, ``$$``, ``\\(``,
``\\[``, a backtick run) simply matches nothing and stays prose.

**Markers** (:func:`mask`).  A protected span that fills its lines (a code block, a display formula on its
own lines, a JSON block) is a *block*: it splits the message into separate translation units and is **never
sent** to the model, so the model cannot drop, reorder or "fix" it.  A span inside a sentence (inline code, a
URL, ``$x$``) must stay in the sentence because translation reorders words, so it is replaced by a numbered
marker ``⟦0⟧``, ``⟦1⟧``, … (numbered per unit).  We chose ``⟦N⟧`` (U+27E6/U+27E7) because it is short, never
markup (a model does not translate, close or escape it as it would ``<x0/>``), cannot collide with the
``<tag>``/``{name}`` spans we protect, and text that already looks like a marker is itself protected.
Whitespace around a unit is kept aside and restored; a unit with no letter outside its markers (whitespace,
punctuation, a lone formula) is not sent at all.  ``unmask(mask(t), mask(t).units) == t`` for every ``t``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

#: Bump when the segmentation of some text changes (cached translations are keyed on it).
VERSION = 3  # 2: indented code blocks are protected; 3: code quoted in prose or after a colon

_BIDI = "\u200e\u200f\u202a-\u202e\u2066-\u2069"
#: A marker as the model may return it: spaces or bidi controls inside the brackets are tolerated.
MARKER_RX = re.compile(rf"⟦[\s{_BIDI}]*(\d+)[\s{_BIDI}]*⟧")
PROSE = "prose"


def marker(i: int) -> str:
    """The marker of the ``i``-th protected span of a unit."""
    return f"⟦{i}⟧"


@dataclass(frozen=True)
class Span:
    """A piece of a message: ``kind`` is ``prose`` or the kind of protected span; ``block`` when a protected
    span fills its lines (it is then never sent to the model)."""

    text: str
    kind: str = PROSE
    block: bool = False

    @property
    def protected(self) -> bool:
        return self.kind != PROSE


# -- block pass (whole lines) -------------------------------------------------------------------------------
_FENCE_OPEN = re.compile(r"([ \t]*)(?:(`{3,})([^`]*)|(~{3,})(.*))")
_YAML_KEY = re.compile(r"[ \t]*(?:-[ \t]+)?[a-z_][A-Za-z0-9_.-]*:(?:[ \t]+\S.*)?[ \t\r]*")
_YAML_OTHER = re.compile(r"[ \t]*(?:-[ \t]+\S.*|#.*|---)[ \t\r]*")
_CODE_LINE = re.compile(
    r"""[ \t]*(?:
      .*[;{][ \t\r]*                                                        # statement / block opener
    | [}\])]+[;,)]*[ \t\r]*                                                 # closing brackets
    | (?:def|class|async[ \t]+def|if|elif|else|for|while|try|except|finally|with)\b.*:[ \t\r]*   # python header
    | (?:import[ \t]+[\w.]+|from[ \t]+[\w.]+[ \t]+import\b|\#include\b|\#!|<\?php|@\w+).*          # imports
    | (?:return|yield|raise)(?:[ \t]+.*)?                                   # statements
    | (?:print|console\.log|System\.out\.\w+|printf|puts|echo)[ \t]*\(.*    # output calls
    | [A-Za-z_][\w.]*(?:\[[^\]\n]*\])?[ \t]*(?:[-+*/%]|//|\*\*)?=[ \t]*[^=\s].*   # assignment
    | [A-Za-z_][\w.]*\(.*\)[ \t]*;?[ \t\r]*                                 # call statement
    | (?:SELECT|INSERT[ \t]+INTO|UPDATE|DELETE[ \t]+FROM|CREATE[ \t]+TABLE|DROP[ \t]+TABLE|ALTER[ \t]+TABLE
        |FROM|WHERE|GROUP[ \t]+BY|ORDER[ \t]+BY|LIMIT|(?:LEFT[ \t]+|INNER[ \t]+)?JOIN|VALUES)\b.*   # SQL
    | //.*                                                                  # comment
    )""",
    re.VERBOSE,
)
#: A list item opening: bullet or ordered marker (CommonMark: up to 9 digits, ``.`` or ``)``), then spaces/tabs.
_LIST_ITEM = re.compile(r"([ \t]*)([-*+]|\d{1,9}[.)])(?:([ \t]+)(\S)?|[\r]?$)")
_THEMATIC_BREAK = re.compile(r"[ \t]*(?:([-*_])[ \t]*)(?:\1[ \t]*){2,}\r?")
_CONTINUATION = re.compile(r"(?:[ \t]{2,}|\t)\S.*|.*,[ \t\r]*")
_SENTENCE_END = re.compile(r".*[.?!][\"')\]]*[ \t\r]*")


def _lines(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every line (``end`` excludes the ``\\n``; a ``\\r`` stays in the line)."""
    out, pos = [], 0
    for part in text.split("\n"):
        out.append((pos, pos + len(part)))
        pos += len(part) + 1
    return out


def _is_code_line(line: str) -> bool:
    if not line.strip() or _SENTENCE_END.fullmatch(line):
        return False
    return bool(_CODE_LINE.fullmatch(line))


def _block_spans(text: str) -> tuple[list[tuple[int, int, str]], list[tuple[int, int]]]:
    """Protected blocks (start, end, kind) and the prose regions left between them."""
    lines = _lines(text)
    blocks: list[tuple[int, int, str]] = []
    free: list[bool] = [True] * len(lines)
    i = 0
    while i < len(lines):  # fenced code first: nothing inside a fence is anything else
        start, end = lines[i]
        m = _FENCE_OPEN.fullmatch(text, start, end)
        if m is None:
            i += 1
            continue
        fence = m.group(2) or m.group(4)
        close = re.compile(rf"[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t\r]*")
        j = i + 1
        while j < len(lines) and not close.fullmatch(text, *lines[j]):
            j += 1
        last = min(j, len(lines) - 1)
        blocks.append((start + len(m.group(1)), lines[last][1], "code_block"))
        for k in range(i, last + 1):
            free[k] = False
        i = last + 1

    i = 0
    while i < len(lines):  # JSON blocks, YAML runs, bare code runs on the lines no fence holds
        if not free[i]:
            i += 1
            continue
        start, end = lines[i]
        line = text[start:end]
        found = _json_block(text, lines, i) or _yaml_run(text, lines, free, i) or _code_run(text, lines, free, i)
        if found is None:
            i += 1
            continue
        last, kind = found
        indent = len(line) - len(line.lstrip())
        blocks.append((start + indent, lines[last][0] + len(text[lines[last][0]:lines[last][1]].rstrip()), kind))
        for k in range(i, last + 1):
            free[k] = False
        i = last + 1
    # CommonMark indented code last, on the lines nothing else holds: a bare-code run keeps its indented body
    # (and its unindented first line, which CommonMark alone would leave as a paragraph) in one block
    for first, last in _indented_runs(text, lines, free):
        blocks.append((lines[first][0], lines[last][1], "indented_code"))
    blocks.sort()
    regions, pos = [], 0
    for s, e, _ in blocks:
        if s > pos:
            regions.append((pos, s))
        pos = e
    if pos < len(text):
        regions.append((pos, len(text)))
    return blocks, regions


def _columns(line: str) -> int:
    """Width of a line's leading whitespace in columns (a tab advances to the next multiple of 4)."""
    col = 0
    for ch in line:
        if ch == " ":
            col += 1
        elif ch == "\t":
            col += 4 - col % 4
        else:
            break
    return col


def _item_content_column(line: str) -> int | None:
    """Column where a list item's content starts (CommonMark: 1 to 4 spaces after the marker; an empty item or
    5+ spaces count as one), or ``None`` when the line opens no list item."""
    m = _LIST_ITEM.match(line)
    if m is None or _THEMATIC_BREAK.fullmatch(line):
        return None
    marker_end = _columns(m.group(1)) + len(m.group(2))
    if m.group(4) is None:  # "-" alone on its line, or followed by blanks only
        return marker_end + 1
    gap = _columns(" " * marker_end + m.group(3)) - marker_end
    return marker_end + (gap if gap <= 4 else 1)


def _indented_runs(text: str, lines: list[tuple[int, int]], free: list[bool]) -> list[tuple[int, int]]:
    """``(first, last)`` line ranges of CommonMark indented code blocks among the ``free`` lines.

    A small block-structure walk: ``items`` holds the content columns of the open list items.  A line opens
    a code block when it is indented >= 4 columns past the innermost open item (0 outside lists) and nothing
    is open above it (start of message, blank line, fence); a prose line followed by an indented line is a
    lazy continuation (CommonMark: indented code cannot interrupt a paragraph).  After a blank line, a line
    less indented than an item's content closes that item.  A block found earlier (not ``free``: a fence, JSON,
    YAML, bare code) ends a paragraph like a blank line does.
    """
    runs: list[tuple[int, int]] = []
    items: list[int] = []
    fresh = True  # the next line may open a block: start of message, after a blank line or a block
    i = 0
    while i < len(lines):
        line = text[lines[i][0]:lines[i][1]]
        if not free[i]:
            fresh, i = True, i + 1
            continue
        if not line.strip():
            fresh, i = True, i + 1
            continue
        indent = _columns(line)
        item = _item_content_column(line) if indent < (items[-1] if items else 0) + 4 else None
        if fresh or item is not None:  # a blank line or a new item closes the items this line is left of
            while items and indent < items[-1]:
                items.pop()
        base = items[-1] if items else 0
        if fresh and indent >= base + 4:
            last = j = i
            while j + 1 < len(lines) and free[j + 1]:
                nxt = text[lines[j + 1][0]:lines[j + 1][1]]
                if nxt.strip() and _columns(nxt) < base + 4:
                    break
                j += 1
                if nxt.strip():
                    last = j
            runs.append((i, last))
            i = last + 1
            fresh = True  # a code block closes like a fence: what follows is not its continuation
            continue
        if item is not None:
            items.append(item)
        fresh = False
        i += 1
    return runs


def _json_block(text: str, lines: list[tuple[int, int]], i: int) -> tuple[int, str] | None:
    start, end = lines[i]
    stripped = text[start:end].lstrip()
    if not stripped.startswith(("{", "[")):
        return None
    at = end - len(stripped)
    try:
        value, stop = json.JSONDecoder().raw_decode(text, at)
    except ValueError:
        return None
    if not isinstance(value, (dict, list)):
        return None
    for j in range(i, len(lines)):
        if lines[j][0] <= stop <= lines[j][1]:
            return (j, "json") if not text[stop:lines[j][1]].strip() else None
    return None


def _yaml_run(text: str, lines: list[tuple[int, int]], free: list[bool], i: int) -> tuple[int, str] | None:
    if not _YAML_KEY.fullmatch(text[lines[i][0]:lines[i][1]]):
        return None
    j, keys = i, 0
    while j < len(lines) and free[j]:
        line = text[lines[j][0]:lines[j][1]]
        if _YAML_KEY.fullmatch(line):
            keys += 1
        elif not (_YAML_OTHER.fullmatch(line) or (line[:1] in (" ", "\t") and line.strip())):
            break
        j += 1
    if keys < 2:
        return None
    try:
        value = yaml.safe_load(text[lines[i][0]:lines[j - 1][1]])
    except yaml.YAMLError:
        return None
    return (j - 1, "yaml") if isinstance(value, dict) else None


def _code_run(text: str, lines: list[tuple[int, int]], free: list[bool], i: int) -> tuple[int, str] | None:
    if not _is_code_line(text[lines[i][0]:lines[i][1]]):
        return None
    j, last, code = i + 1, i, 1
    while j < len(lines) and free[j]:
        line = text[lines[j][0]:lines[j][1]]
        if _is_code_line(line):
            last, code = j, code + 1
        elif line.strip() and not (_CONTINUATION.fullmatch(line) and not _SENTENCE_END.fullmatch(line)):
            break
        j += 1
    whole = not text[:lines[i][0]].strip() and not text[lines[last][1]:].strip()
    if code >= 2 or whole:
        return last, "code"
    # one code line as its own paragraph (after a blank line, a line ending in ':' or a '# comment' line, before a
    # blank line or the end), as answers quote a statement between sentences: code if code_score says so too
    previous = text[lines[i - 1][0]:lines[i - 1][1]].rstrip() if i else ""
    after = text[lines[last][1]:]
    introduced = previous.endswith(":") or re.fullmatch(r"[ \t]*#[ \t]+\S.*", previous) is not None  # or a # comment
    alone = (introduced or not previous.strip()) and (
        introduced or not after.strip() or re.match(r"\n[ \t\r]*(?:\n|$)", after) is not None)
    line = text[lines[i][0]:lines[last][1]]
    if line.count('"') % 2 or previous.count('"') % 2:  # the end or start of a quote: quoted code, found inline
        return None
    return (last, "code") if alone and code_score(line) >= CODE_SCORE_MIN else None


# -- inline pass --------------------------------------------------------------------------------------------
_INLINE = re.compile(
    r"""
     (?P<html_code><(?P<tagname>pre|code|script|style|kbd|samp)\b[^>]*>.*?</(?P=tagname)[ \t]*>)
    |(?P<inline_code>(?<!`)(?P<ticks>`+)(?!`)(?:(?!\n[ \t]*\n).)+?(?<!`)(?P=ticks)(?!`))
    |(?P<math_dd>(?<![\\$])\$\$(?:(?!\n[ \t]*\n)[^$\\]|\\.)+?\$\$)
    |(?P<math_br>\\\[.+?\\\])
    |(?P<math_pa>\\\(.+?\\\))
    |(?P<math_d>(?<![\\$])\$(?=[^\s$])(?:[^$\n\\]|\\.)+?(?<![\s\\])\$(?![\d$]))
    |(?P<url>(?:\b(?:https?|ftp|file)://|\bwww\.)[^\s<>"'`\\^{}|⟦⟧]+)
    |(?P<email>(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b)
    |(?P<placeholder>\{\{[^{}\n]+?\}\}|\{[A-Za-z_0-9.\[\]]*(?:![rsa])?(?::[^{}\s]*)?\}
        |(?<![\w%])%(?:\(\w+\))?[-+\#0]*\d*(?:\.\d+)?[sdifxXoeEgGcrb](?!\w)|<<[^<>\n]*>>)
    |(?P<tag><!--.*?-->|</?[A-Za-z][\w:.-]*(?:\s+[\w:.@-]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?)*\s*/?>
        |&(?:[A-Za-z]+|\#\d+|\#x[0-9A-Fa-f]+);)
    |(?P<marker>⟦[^⟦⟧\n]*⟧)
    """,
    re.VERBOSE | re.DOTALL,
)
_KINDS = {"html_code": "code", "inline_code": "inline_code", "math_dd": "math", "math_br": "math",
          "math_pa": "math", "math_d": "math", "url": "url", "email": "email", "placeholder": "placeholder",
          "tag": "tag", "marker": "marker"}


def _trim_url(url: str) -> str:
    while url and url[-1] in ".,;:!?'\"*_~":
        url = url[:-1]
    while url.endswith(")") and url.count(")") > url.count("("):
        url = url[:-1]
    while url.endswith("]") and url.count("]") > url.count("["):
        url = url[:-1]
    return url


def _json_inline(text: str, lo: int, hi: int, limit: int) -> tuple[int, int] | None:
    """First JSON object/array starting in ``[lo, hi)`` and ending by ``limit``."""
    decoder = json.JSONDecoder()
    i = lo
    while i < hi:
        brace, bracket = text.find("{", i, hi), text.find("[", i, hi)
        cands = [c for c in (brace, bracket) if c >= 0]
        if not cands:
            return None
        i = min(cands)
        try:
            value, stop = decoder.raw_decode(text, i)
        except ValueError:
            i += 1
            continue
        if isinstance(value, (dict, list)) and stop <= limit:
            return i, stop
        i += 1
    return None


# -- code quoted in prose, or after a colon without fences ---------------------------------------------------
#: Words that are code in any common language and (almost) never English prose.
_CODE_WORDS = frozenset(
    "def elif lambda None True False null nullptr undefined var const void int bool boolean str dict enum "
    "println printf sprintf cout cin endl std namespace typedef struct async await isinstance len range "
    "fn impl mut pub usize println! SELECT FROM WHERE INSERT UPDATE DELETE".split()
)
_STRING_LITERAL = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')
_CODE_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*!?|\S")
_IDENT_SHAPE = re.compile(r"_*[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+|[a-z]+[A-Z][A-Za-z0-9]*|[a-z_]\w*(?:\.[a-z_]\w*)+")
_CALL = re.compile(r"[A-Za-z_][\w.]*\((?!\s*\))|[A-Za-z_][\w.]*\(\)")
_OPERATOR = re.compile(r"==|!=|<=|>=|\+=|-=|\*=|/=|=>|->|::|&&|\|\||\+\+|--(?=\w)|(?<![=!<>+\-*/ ])\s?=\s?(?![=>])")
_INDENTED = re.compile(r"\n(?:[ ]{2,}|\t)\S")
_STATEMENT_END = re.compile(r"[;{}][ \t]*(?:\n|$)")
_ARITHMETIC = re.compile(r"[\w)\]][ \t]*(?:[*/%+^]|\*\*|-(?!-))[ \t]*[\w(\[]")
_COMPREHENSION = re.compile(r"[\[({][^\[\](){}\n]*\bfor[ \t]+\w+(?:[ \t]*,[ \t]*\w+)*[ \t]+in\b")
#: A statement's start (``name = ...``, ``name(...)``): a trailing ``# comment.`` does not make it a sentence.
_STATEMENT_START = re.compile(r"[ \t]*[A-Za-z_][\w.]*(?:\[[^\]\n]*\])?[ \t]*(?:[-+*/%]?=(?!=)|\()")
#: Minimum code-likeness (:func:`code_score`) of a quoted string or a colon's tail to be protected as code.
CODE_SCORE_MIN = 1.0


def code_score(text: str) -> float:
    """How much ``text`` looks like code, from 0 (prose) up: evidence per word, counted from keywords that are
    never English (``def``, ``elif``, ``None``, ``const``...), identifiers with underscores, camelCase or
    ``a.b``, calls ``f(x)``, operators (``==``, ``+=``, ``=>``, an ``=`` assignment), brackets, line-ending
    ``;``/``{``/``}``, indented lines and line breaks.  Each signal is capped per word so that one long
    identifier cannot make a sentence code, and text without a structural signal (call, operator, bracket,
    statement end, indentation) scores 0: keywords alone (``None of them``) are prose.  Text ending like a
    sentence (``.``, ``?``, ``!`` after a letter) is halved."""
    if _STATEMENT_START.match(text):  # a statement's trailing comment is prose inside code: not counted
        text = re.sub(r"[ \t]#[^\n]*", "", text)
    # words inside string literals ("Hello World") are data, not evidence either way
    words = [t for t in _CODE_TOKEN.findall(_STRING_LITERAL.sub('""', text)) if t[0].isalpha() or t[0] == "_"]
    if not words:
        return 0.0
    calls = len(_CALL.findall(text))
    operators = len(_OPERATOR.findall(text))
    brackets = sum(text.count(c) for c in "()[]{}")
    ends = len(_STATEMENT_END.findall(text))
    indents = len(_INDENTED.findall(text))
    if not (calls or operators or brackets >= 2 or ends or indents):
        return 0.0
    keywords = sum(t in _CODE_WORDS for t in words)
    idents = sum(bool(_IDENT_SHAPE.fullmatch(t)) for t in re.findall(r"[A-Za-z_][\w.]*", text))
    arithmetic = len(_ARITHMETIC.findall(text))
    comprehensions = len(_COMPREHENSION.findall(text))
    evidence = (2.0 * calls + 1.5 * operators + 1.5 * keywords + 1.0 * idents + 0.25 * brackets
                + 1.5 * ends + 1.5 * indents + 0.5 * text.count("\n") + 0.75 * arithmetic + 3.0 * comprehensions)
    score = evidence / len(words) ** 0.8  # sub-linear: long code holds many plain words (for, in, names)
    if re.search(r"[A-Za-z][.?!][\"')\]]*\s*$", text) and not _STATEMENT_START.match(text):
        score /= 2
    return score


_QUOTED = re.compile(
    r"""(?:(?<![\w"'`\\])"(?P<dq>(?:[^"\\]|\\.)+?)"(?![\w"])
        |(?<![\w'`\\])'(?P<sq>(?:[^'\\\n]|\\.)+?)'(?![\w'])
        |“(?P<cq>[^“”]+?)”|‘(?P<csq>[^‘’\n]+?)’)""",
    re.VERBOSE | re.DOTALL,
)
#: A colon after a prose head (words, no ``=``/braces/``;``) and the rest of the line; a trailing ``.``/``,`` after a
#: closing bracket or quote is the sentence's, not the code's.
_COLON_TAIL = re.compile(
    r"^(?P<head>[^\n:={};]*[A-Za-z][^\n:={};]*):[ \t]+"
    r"(?P<tail>[^\n]*?[^\s.,])(?:(?<=[)\]\"'])[.,])?[ \t\r]*$",
    re.MULTILINE,
)


def _prose_code_spans(text: str, lo: int, hi: int) -> list[tuple[int, int, str]]:
    """Code quoted inside prose (``"def f(x):\\n    return x"``, with its quotes) and code after a colon on
    the rest of its line (``Try this: x = [i for i in y]``) whose :func:`code_score` reaches
    :data:`CODE_SCORE_MIN`.  Kind ``quoted_code``."""
    out: list[tuple[int, int, str]] = []
    for m in _QUOTED.finditer(text, lo, hi):
        inner = next(g for g in m.groups() if g is not None)
        if len(inner.strip()) >= 3 and code_score(inner) >= CODE_SCORE_MIN:
            out.append((m.start(), m.end(), "quoted_code"))
    for m in _COLON_TAIL.finditer(text, lo, hi):
        start, end = m.start("tail"), m.end("tail")
        tail = m.group("tail")
        if any(s < end and start < e for s, e, _ in out) or tail[:1] in "\"'“‘":
            continue
        if not re.search(r"[A-Za-z][.?!]$", tail) and code_score(tail) >= CODE_SCORE_MIN:
            out.append((start, end, "quoted_code"))
    return sorted(out)


def _inline_spans(text: str, lo: int, hi: int) -> list[tuple[int, int, str]]:
    """Inline protected spans of ``text[lo:hi]``: the inline kinds, then code in prose where it does not cut
    through one of them (a quoted-code span swallows the placeholders or tags inside it)."""
    found = _plain_inline_spans(text, lo, hi)
    for start, end, kind in _prose_code_spans(text, lo, hi):
        if any(s < end and start < e and not (start <= s and e <= end) for s, e, _ in found):
            continue
        found = [f for f in found if not (start <= f[0] and f[1] <= end)] + [(start, end, kind)]
    return sorted(found)


def _plain_inline_spans(text: str, lo: int, hi: int) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    pos = lo
    while pos < hi:
        m = _INLINE.search(text, pos, hi)
        mstart = m.start() if m else hi
        js = _json_inline(text, pos, mstart, hi)
        if js is not None:
            out.append((js[0], js[1], "json"))
            pos = js[1]
            continue
        if m is None:
            break
        group = next(g for g in _KINDS if m.group(g) is not None)
        end = m.end()
        if group == "url":
            end = m.start() + len(_trim_url(m.group()))
        if end > m.start():
            out.append((m.start(), end, _KINDS[group]))
        pos = max(end, m.start() + 1)
    return out


def _is_block(text: str, start: int, end: int) -> bool:
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    return not text[line_start:start].strip() and not text[end:line_end].strip()


def segment(text: str) -> list[Span]:
    """``text`` as prose and protected spans, in order; ``"".join(s.text for s in segment(t)) == t``."""
    if not text:
        return []
    blocks, regions = _block_spans(text)
    found = list(blocks)
    for lo, hi in regions:
        found.extend(_inline_spans(text, lo, hi))
    found.sort()
    spans: list[Span] = []
    pos = 0
    for start, end, kind in found:
        if start > pos:
            spans.append(Span(text[pos:start]))
        spans.append(Span(text[start:end], kind, _is_block(text, start, end)))
        pos = end
    if pos < len(text):
        spans.append(Span(text[pos:]))
    return spans


def protected_spans(text: str) -> list[Span]:
    """The protected spans of ``text`` (what a translation must keep byte for byte)."""
    return [s for s in segment(text) if s.protected]


# -- masking ------------------------------------------------------------------------------------------------
_LETTER = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class Masked:
    """A message ready for translation.

    ``parts``: literal text (kept as is) or the index of a unit; ``units``: the texts sent to the model (prose
    with ``⟦i⟧`` markers, stripped); ``unit_spans[u][i]``: the protected text behind marker ``i`` of unit ``u``;
    ``spans``: every protected span of the message (blocks included), in order.
    """

    parts: tuple[str | int, ...]
    units: tuple[str, ...]
    unit_spans: tuple[tuple[str, ...], ...]
    spans: tuple[Span, ...]


def mask(text: str) -> Masked:
    """Segment ``text`` and turn each run of prose (with its inline spans) between blocks into one unit."""
    spans = segment(text)
    parts: list[str | int] = []
    units: list[str] = []
    unit_spans: list[tuple[str, ...]] = []
    run: list[Span] = []

    def flush() -> None:
        if not run:
            return
        inline = [s.text for s in run if s.protected]
        masked_parts, k = [], 0
        for s in run:
            if s.protected:
                masked_parts.append(marker(k))
                k += 1
            else:
                masked_parts.append(s.text)
        masked = "".join(masked_parts)
        core = masked.strip()
        if not _LETTER.search(MARKER_RX.sub("", core)):
            parts.append("".join(s.text for s in run))
        else:
            lead = masked[: len(masked) - len(masked.lstrip())]
            trail = masked[len(masked.rstrip()):]
            if lead:
                parts.append(lead)
            parts.append(len(units))
            units.append(core)
            unit_spans.append(tuple(inline))
            if trail:
                parts.append(trail)
        run.clear()

    for s in spans:
        if s.protected and s.block:
            flush()
            parts.append(s.text)
        else:
            run.append(s)
    flush()
    return Masked(tuple(parts), tuple(units), tuple(unit_spans), tuple(s for s in spans if s.protected))


def fill(translation: str, spans: Sequence[str]) -> str:
    """Put the protected texts back in place of the markers of one translated unit (unknown markers stay)."""

    def put(m: re.Match[str]) -> str:
        k = int(m.group(1))
        return spans[k] if k < len(spans) else m.group()

    return MARKER_RX.sub(put, translation)


def unmask(masked: Masked, translations: Sequence[str]) -> str:
    """Reassemble a message from the translation of each of its units."""
    if len(translations) != len(masked.units):
        raise ValueError(f"{len(translations)} translations for {len(masked.units)} units")
    return "".join(
        p if isinstance(p, str) else fill(translations[p], masked.unit_spans[p]) for p in masked.parts
    )


def marker_problems(translation: str, n_markers: int) -> list[tuple[str, str]]:
    """``(category, detail)`` for every marker of a unit that is missing, repeated or unknown in its translation."""
    counts: dict[int, int] = {}
    for m in MARKER_RX.finditer(translation):
        counts[int(m.group(1))] = counts.get(int(m.group(1)), 0) + 1
    problems = []
    for k in range(n_markers):
        if counts.get(k, 0) == 0:
            problems.append(("marker lost", f"{marker(k)} missing"))
        elif counts[k] > 1:
            problems.append(("marker duplicated", f"{marker(k)} appears {counts[k]} times"))
    problems += [("unknown marker", f"{marker(k)} was not in the source") for k in sorted(counts) if k >= n_markers]
    return problems


def prose_of(unit: str) -> str:
    """A unit's text without its markers (what length and language checks look at)."""
    return MARKER_RX.sub(" ", unit)
