"""Shared by the embedding benchmarks: real texts from ../shared/data and seeded edits/paraphrases of them."""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

#: Word swaps of a "light edit" (meaning kept, some n-grams broken).
SWAPS = {
    "how many": "how much", "calculate": "compute", "write": "create", "function": "routine", "total": "overall",
    "each": "every", "buys": "purchases", "costs": "is priced at", "find": "determine", "make": "produce",
    "given": "provided", "list": "array", "number": "value", "returns": "gives back", "explain": "describe",
    "describe": "explain", "people": "persons", "money": "cash", "day": "daytime",
}
#: Paraphrase templates: the text is embedded in a request written another way.
TEMPLATES = [
    "I need help with this one. {text} Please work it out step by step.",
    "Here is a task for you: {text}",
    "Could you solve the following? {text} Show your reasoning.",
    "My teacher gave me this and I am stuck: {text}",
]
#: Phrase-level rewrites applied by the paraphrase (on top of the template).
REWRITES = [
    (r"\bHow many\b", "What is the number of"), (r"\bWhat is\b", "Tell me"), (r"\bWrite\b", "Please write"),
    (r"\bhas\b", "owns"), (r"\bthen\b", "after that"), (r"\bIf\b", "Suppose"), (r"\bwants to\b", "would like to"),
    (r"\bCompose\b", "Write"), (r"\bDescribe\b", "Give a description of"), (r"\bdoes\b", "will"),
]


def jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def corpus_instructions(limit_code: int = 1000) -> list[str]:
    """Self-Instruct seed + user-oriented instructions and Code Alpaca instructions (distinct, real)."""
    texts = [r["instruction"] for r in jsonl(DATA / "self_instruct" / "seed_tasks.jsonl")]
    texts += [r["instruction"] for r in jsonl(DATA / "self_instruct" / "user_oriented_instructions.jsonl")]
    code = json.loads((DATA / "code_alpaca" / "code_alpaca_2k.json").read_text())
    texts += [r["instruction"] for r in code[:limit_code]]
    return list(dict.fromkeys(t.strip() for t in texts if t.strip()))


def edit(text: str, rng: random.Random) -> str:
    """Numbers changed and a few words swapped: a careless copy of a benchmark item."""
    out = re.sub(r"\d+", lambda m: str(int(m.group()) + rng.randint(1, 9)), text)
    for old, new in rng.sample(sorted(SWAPS.items()), len(SWAPS)):
        if re.search(rf"\b{re.escape(old)}\b", out, flags=re.IGNORECASE):
            out = re.sub(rf"\b{re.escape(old)}\b", new, out, count=1, flags=re.IGNORECASE)
    if out == text:  # no number and no swappable word: swap two adjacent words so the copy is an edit
        words = out.split(" ")
        if len(words) > 3:
            k = rng.randrange(1, len(words) - 2)
            words[k], words[k + 1] = words[k + 1], words[k]
            out = " ".join(words)
    return out


def paraphrase(text: str, rng: random.Random) -> str:
    """A template wrapping plus phrase rewrites: same request, other words around and inside it."""
    out = text
    for pattern, new in REWRITES:
        out = re.sub(pattern, new, out)
    return rng.choice(TEMPLATES).format(text=out)
