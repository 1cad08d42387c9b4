"""Checks of a translation against its source: protected spans, untranslated leftovers, length ratio.

Used by the ``translate`` stage (selective translation, Paul et al. 2025) after reassembly, and by
``benchmarks/translate_preserve.py`` to score a naive whole-text translation the same way.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

from curate.text.segment import Span

#: Names of common target languages for the prompt (any other code is used as given).
LANGUAGE_NAMES = {
    "ar": "Arabic", "bn": "Bengali", "de": "German", "en": "English", "es": "Spanish", "fa": "Persian",
    "fr": "French", "he": "Hebrew", "hi": "Hindi", "id": "Indonesian", "it": "Italian", "ja": "Japanese",
    "ko": "Korean", "nl": "Dutch", "pl": "Polish", "pt": "Portuguese", "ru": "Russian", "sw": "Swahili",
    "te": "Telugu", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese",
}

LeftoverMethod = Literal["langid", "overlap"]
_LETTERS = re.compile(r"[^\W\d_]")
_WORDS = re.compile(r"[^\W\d_]{3,}")
_CHUNKS = re.compile(r"(?<=[.!?。！？])\s+|\n+")


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code.lower(), code)


def span_counts(text: str, spans: Sequence[Span]) -> tuple[int, list[str]]:
    """``(preserved, problems)``: a protected text is preserved when it occurs in ``text`` exactly as often as
    the spans list holds it (``exactly once`` for a unique span); ``problems`` names the others."""
    wanted = Counter(s.text for s in spans)
    kind = {s.text: s.kind for s in spans}
    preserved, problems = 0, []
    for piece, n in wanted.items():
        got = text.count(piece)
        if got == n:
            preserved += n
        else:
            preview = piece if len(piece) <= 40 else piece[:37] + "..."
            problems.append(f"{kind[piece]} {preview!r} found {got} time(s), expected {n}")
    return preserved, problems


@lru_cache(maxsize=1)
def langid_available() -> bool:
    try:
        import py3langid  # noqa: F401
    except ImportError:
        return False
    return True


def untranslated_ratio(source: str, output: str, source_lang: str, method: LeftoverMethod,
                       min_letters: int = 20) -> float | None:
    """Share of the output prose that is still in the source language (``None``: too little text to tell).

    ``langid``: the output is cut into sentences/lines; each with at least ``min_letters`` letters is classified
    with py3langid (Lui & Baldwin 2012's langid.py model); the ratio is the letters of chunks identified as
    ``source_lang`` over the letters of all classified chunks.  ``overlap`` (no detector installed): the share
    of the output's words (3+ letters, case-folded) that occur verbatim among the source's words; names and
    technical terms count too, so its threshold should be looser.
    """
    if method == "langid":
        import py3langid

        total = left = 0
        for chunk in _CHUNKS.split(output):
            letters = len(_LETTERS.findall(chunk))
            if letters < min_letters:
                continue
            total += letters
            if py3langid.classify(chunk)[0] == source_lang:
                left += letters
        return left / total if total else None
    words = [w.casefold() for w in _WORDS.findall(output)]
    if len(words) < 3:
        return None
    known = {w.casefold() for w in _WORDS.findall(source)}
    return sum(w in known for w in words) / len(words)
