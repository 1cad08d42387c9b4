"""Checks of a translation against its source: protected spans, untranslated leftovers, length ratio, target
language.

Used by the ``translate`` stage (selective translation, Paul et al. 2025) after reassembly, and by
``benchmarks/translate_preserve.py`` to score a naive whole-text translation the same way.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

from curate.text.segment import Span
from curate.words import count

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
            problems.append(f"{kind[piece]} {preview!r} found {count(got, 'time')}, expected {n}")
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
        total = left = 0
        for chunk in _CHUNKS.split(output):
            letters = len(_LETTERS.findall(chunk))
            if letters < min_letters:
                continue
            total += letters
            if _identifier().classify(chunk)[0] == source_lang:
                left += letters
        return left / total if total else None
    words = [w.casefold() for w in _WORDS.findall(output)]
    if len(words) < 3:
        return None
    known = {w.casefold() for w in _WORDS.findall(source)}
    return sum(w in known for w in words) / len(words)


#: Target codes py3langid names differently (Norwegian Bokmål is its ``no``; old Hebrew/Indonesian codes;
#: Filipino is its ``tl``).  Region and script subtags are dropped first (``pt-BR`` -> ``pt``).
_LANGID_CODES = {"nb": "no", "iw": "he", "in": "id", "fil": "tl"}
#: Below this many letters a message is not checked (see :func:`wrong_language` for how it was chosen).
MIN_LETTERS = 40
#: A message passes when the target keeps at least this (length-tempered, normalised) probability.
MIN_TARGET_PROB = 0.1


@lru_cache(maxsize=1)
def _identifier() -> Any:
    """py3langid's model, loaded once for both checks, with normalised probabilities (softmax tempered by
    sqrt(bytes)); normalising does not change the most likely language the leftover check reads."""
    from py3langid import langid

    return langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)


def langid_code(code: str) -> str | None:
    """The py3langid label of a target language code, or ``None`` when py3langid cannot identify it."""
    base = re.split(r"[-_]", code.strip().lower(), maxsplit=1)[0]
    base = _LANGID_CODES.get(base, base)
    return base if base in set(_identifier().nb_classes) else None


def wrong_language(text: str, target: str, min_letters: int = MIN_LETTERS,
                   min_prob: float = MIN_TARGET_PROB) -> tuple[str, float, int] | None:
    """``(identified, p_target, letters)`` when ``text`` is identified as another language than ``target``,
    ``None`` when it is the target or too short to tell (``target``: a py3langid label, see :func:`langid_code`).

    A text fails when py3langid's most likely language is not the target **and** the target's normalised
    probability is below ``min_prob``.  Measured on MGSM's human translations (250 questions each in de, en, es,
    fr, ja, ru, sw, zh; cut to the first N letters, py3langid 0.4): top-1 alone at 40 letters wrongly fails
    19/1961 genuine texts (es read as Galician/Aragonese, ru as Bulgarian, zh as Wu, fr as Occitan/Walloon,
    en as Nigerian Pidgin); adding ``p_target < 0.1`` leaves 2/1961 while still failing 13726/13727 texts
    checked against one of the 7 other languages; at 60 letters 0/1830 and 0/12810 missed.  The price: a
    close relative of the target (Galician for Spanish, Bulgarian for Russian) often keeps ``p_target``
    above 0.1 and passes, so this check catches a model answering in a *third* language, not a dialect slip.
    """
    letters = len(_LETTERS.findall(text))
    if letters < min_letters:
        return None
    ranked = _identifier().rank(text)
    best = ranked[0][0]
    p_target = next((p for lang, p in ranked if lang == target), 0.0)
    if best == target or p_target >= min_prob:
        return None
    return best, p_target, letters
