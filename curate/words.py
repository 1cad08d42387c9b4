"""Counted nouns for messages a user reads: ``1 row``, ``2 rows``, ``1 entry``, ``3 entries``.

Why: "1 row(s)" or "1 rows" in a CLI line or an error reads as unfinished; one helper keeps every message right
without each caller spelling out its own singular/plural test.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Nouns whose plural is not the singular plus ``s``.
_IRREGULAR = {"entry": "entries", "match": "matches", "batch": "batches", "index": "indexes", "this": "these",
              "was": "were", "is": "are", "has": "have", "does": "do"}


def plural(noun: str, n: int) -> str:
    """``noun`` as it reads after the number ``n`` (``row`` / ``rows``; ``entry`` / ``entries``)."""
    if n == 1:
        return noun
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def count(n: int, noun: str) -> str:
    """``1 row``, ``2 rows``, ``1,204 entries``: the number with thousands separators and its noun."""
    return f"{n:,} {plural(noun, n)}"


def listed(noun: str, items: Iterable[object]) -> str:
    """``key 'a'`` / ``keys 'a', 'b'``: a noun for the items that follow it, then the items (repr, in order)."""
    shown = [repr(item) if isinstance(item, str) else str(item) for item in items]
    return f"{plural(noun, len(shown))} {', '.join(shown)}"
