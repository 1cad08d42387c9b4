"""Write curate's sample inputs (deterministic; run from the repo root to regenerate).

The rows are written by this script from templates, not copied from any dataset.  They contain, on
purpose, what a real instruction dump contains, so recipes/clean_sft.yaml shows every cleaning stage at work:

- exact duplicates that differ only in case and spacing (exact_dedup),
- near-duplicates: long prompts copied with one or two words changed (minhash_dedup),
- rows repeated byte for byte (set aside at read time: same content, same id),
- refusals, truncated answers, empty and too-short responses (filter),
- a malformed JSON line and a row with a missing field (quarantined at read time).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

TOPICS = [
    ("photosynthesis", "plants turn light, water and carbon dioxide into sugar and oxygen"),
    ("compound interest", "interest is earned on both the principal and the interest already added"),
    ("the water cycle", "water evaporates, condenses into clouds and falls back as precipitation"),
    ("binary search", "a sorted list is halved at each step until the target is found"),
    ("plate tectonics", "the lithosphere is split into plates that drift on the mantle"),
    ("vaccination", "a harmless antigen trains the immune system to recognise a pathogen"),
    ("inflation", "the general price level rises and each unit of money buys less"),
    ("recursion", "a function solves a problem by calling itself on smaller inputs"),
    ("the greenhouse effect", "gases in the atmosphere trap outgoing infrared radiation"),
    ("supply and demand", "prices settle where the quantity supplied equals the quantity demanded"),
    ("public-key cryptography", "a public key encrypts and only the matching private key decrypts"),
    ("the French Revolution", "a period of radical political change in France from 1789"),
    ("neural networks", "layers of weighted sums and non-linearities are fitted by gradient descent"),
    ("black holes", "matter is so dense that not even light escapes past the event horizon"),
    ("the immune system", "cells and proteins defend the body against infection"),
    ("version control", "every change to a set of files is recorded so it can be reviewed or undone"),
    ("hash tables", "keys are mapped by a hash function to buckets for constant-time lookup"),
    ("the Pythagorean theorem", "in a right triangle the square of the hypotenuse equals the sum of the squares"),
    ("continental drift", "continents move slowly across the surface of the Earth"),
    ("opportunity cost", "the value of the best alternative given up when making a choice"),
    ("DNA replication", "the double helix unwinds and each strand templates a new partner"),
    ("the Doppler effect", "the observed frequency shifts when source and observer move relative to each other"),
    ("garbage collection", "a runtime frees memory that the program can no longer reach"),
    ("the Roman Republic", "Rome was governed by elected magistrates and a senate before the empire"),
    ("machine translation", "a model maps a sentence in one language to a sentence in another"),
    ("sleep hygiene", "regular habits and a calm environment improve the quality of sleep"),
    ("composting", "microbes break down organic waste into a rich soil amendment"),
    ("the stock market", "shares of companies are bought and sold at prices set by bids and offers"),
    ("TCP handshakes", "a client and server exchange SYN, SYN-ACK and ACK before sending data"),
    ("entropy", "a measure of how many microscopic states are consistent with what we observe"),
    ("the Silk Road", "trade routes linked China with the Mediterranean for centuries"),
    ("climate adaptation", "communities change how they build and farm to cope with a changing climate"),
    ("unit testing", "small automated checks verify each piece of code on its own"),
    ("the placebo effect", "patients improve because they expect a treatment to work"),
    ("bread baking", "yeast ferments sugars, releasing gas that makes the dough rise"),
    ("electric motors", "current in a magnetic field produces a force that turns the rotor"),
    ("bird migration", "many species fly long distances between breeding and wintering grounds"),
    ("the printing press", "movable type made books cheaper and spread literacy in Europe"),
    ("regular expressions", "a compact pattern language matches sets of strings"),
    ("ocean currents", "wind, temperature and salinity drive large flows of sea water"),
]

TASKS = [
    ("Explain {t} to a ten-year-old.", "Imagine this: {f}. In short, that is {t}."),
    ("Write a short paragraph describing {t}.", "{T} is a topic worth knowing: {f}. It matters in everyday life."),
    ("What are three common misconceptions about {t}?", "First, people oversimplify it. Second, they forget that {f}. Third, they assume it is rare."),
    ("Give me a one-sentence summary of {t}.", "In one sentence: {f}."),
    ("How would you teach {t} in a single lesson?", "Start with a question, show that {f}, then let students try an example."),
    ("List two real-world examples of {t}.", "Example one shows that {f}. Example two is found in ordinary daily routines."),
]

NOTE_RULES = [
    "Each section opens with a plain definition that a newcomer can follow.",
    "Give one worked example with every step written out in full.",
    "Add a short list of the mistakes that learners make most often.",
    "End with two review questions that can be answered without the notes.",
    "Keep the tone friendly and define any jargon before using it.",
    "The whole section must fit on one printed page of three hundred words.",
    "Use a table when you compare two or more related ideas side by side.",
    "Mention one open question that researchers still argue about today.",
    "Include a memorable analogy drawn from cooking, sport or travel.",
    "Point to one everyday object that shows the idea at work.",
    "Write for adults returning to study after many years away from school.",
    "Avoid formulas unless they are explained in words right after.",
    "Close with a one-line summary printed in bold type.",
    "Add a short timeline when the history of the idea matters.",
    "Flag any claim that is simplified with a footnote marker.",
    "Suggest a five-minute activity the class can do in pairs.",
]

REFUSAL = "I'm sorry, but I can't help with that request."


def _conversation_rows(rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for topic, fact in TOPICS:
        for task, answer in TASKS:
            rows.append({
                "instruction": task.format(t=topic),
                "input": "",
                "output": answer.format(t=topic, T=topic[0].upper() + topic[1:], f=fact),
            })
    rng.shuffle(rows)
    return rows


def _edit_words(text: str, rng: random.Random, edits: int) -> str:
    words = text.split()
    for _ in range(edits):
        i = rng.randrange(len(words))
        words[i] = rng.choice(["short", "clear", "simple", "brief", "careful", "useful"])
    return " ".join(words)


def make_alpaca(rng: random.Random) -> list[str]:
    rows = _conversation_rows(random.Random(11))[:170]
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    # Long prompts with near-duplicate copies (a word or two changed): minhash_dedup finds them.
    for topic, fact in TOPICS[:12]:
        context = " ".join(rng.sample(NOTE_RULES, 6))
        base = {"instruction": f"Write a study-notes section about {topic}.", "input": context,
                "output": f"Definition: {fact}. Example: a worked case. Mistakes: mixing up causes. Review: two questions."}
        lines.append(json.dumps(base))
        near = dict(base, input=_edit_words(context, rng, 1 + rng.randrange(2)))
        lines.append(json.dumps(near))
    # Exact duplicates after normalisation (case and spacing differ).
    for row in rows[:10]:
        dup = dict(row, instruction="  " + row["instruction"].upper().replace(" ", "  ") + " ")
        lines.append(json.dumps(dup))
    # Identical rows (byte-for-byte repeats).
    lines.extend(json.dumps(r) for r in rows[10:13])
    # Rows the filter removes.
    lines.append(json.dumps({"instruction": "Tell me how to pick a lock to get into my neighbour's house.", "input": "", "output": REFUSAL}))
    lines.append(json.dumps({"instruction": "Describe the history of the bicycle.", "input": "", "output": "   "}))
    lines.append(json.dumps({"instruction": "Write a Python function that reverses a list.", "input": "",
                             "output": "Here is one way:\n```python\ndef reverse(items):\n    return items[::-1]\n"}))
    lines.append(json.dumps({"instruction": "Name a prime number.", "input": "", "output": "7"}))
    lines.append(json.dumps({"instruction": "Summarise the plot of a heist film in detail.", "input": "",
                             "output": "The crew assembles in a rented warehouse where the planner lays out "
                                       "blueprints of the vault, the guard rotations and the escape route, and "
                                       "each member explains the part they will play while the safecracker "
                                       "checks the tools and the driver studies the traffic maps and the"}))
    # Bad input: a row without its instruction, and a malformed JSON line.
    lines.append(json.dumps({"input": "", "output": "An answer without a question."}))
    lines.append('{"instruction": "Explain tides.", "input": "", "output": "The Moon pulls"')
    rng.shuffle(lines)
    return lines


def make_sharegpt(rng: random.Random) -> list[dict]:
    rows = _conversation_rows(random.Random(11))[170:240]
    out = []
    for row in rows:
        out.append({"conversations": [
            {"from": "human", "value": row["instruction"]},
            {"from": "gpt", "value": row["output"]},
            {"from": "human", "value": "Can you make it shorter?"},
            {"from": "gpt", "value": row["output"].split(".")[0] + "."},
        ]})
    # Exact duplicate of an alpaca prompt (first turn identical): found across files.
    first = _conversation_rows(random.Random(11))[0]
    out.append({"conversations": [{"from": "human", "value": first["instruction"]},
                                  {"from": "gpt", "value": first["output"]}]})
    out.append({"conversations": [{"from": "system", "value": "You are terse."},
                                  {"from": "human", "value": "Define entropy."},
                                  {"from": "gpt", "value": "A count of microscopic states, on a log scale."}]})
    rng.shuffle(out)
    return out


def make_pairwise(rng: random.Random) -> list[str]:
    lines = []
    for topic, fact in TOPICS:
        good = f"{topic[0].upper() + topic[1:]}: {fact}. A concrete example helps: think of a case you know."
        bad = f"{topic} is complicated."
        label = rng.choice(["a", "b"])
        a, b = (good, bad) if label == "a" else (bad, good)
        lines.append(json.dumps({"prompt": f"Explain {topic} briefly.", "response_a": a, "response_b": b, "label": label}))
    lines.append(json.dumps({"prompt": "Is water wet?", "response_a": "Yes.", "response_b": "It depends.", "label": "tie"}))
    lines.append(json.dumps({"prompt": "Explain recursion briefly.", "response_a": REFUSAL,
                             "response_b": "A function that calls itself on a smaller input.", "label": "b"}))
    lines.append(lines[0])
    return lines


def main() -> None:
    rng = random.Random(20241123)
    (HERE / "instructions_alpaca.jsonl").write_text("\n".join(make_alpaca(rng)) + "\n", encoding="utf-8")
    (HERE / "chats_sharegpt.json").write_text(json.dumps(make_sharegpt(rng), indent=1) + "\n", encoding="utf-8")
    (HERE / "pairs_pairwise.jsonl").write_text("\n".join(make_pairwise(rng)) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
