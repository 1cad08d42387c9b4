"""Selective vs naive translation: how many protected spans (code, math, JSON, URLs, placeholders) survive.

Rows (read in place from ``../shared/data``): Code Alpaca rows with at least one protected span (code in the
input or output, as conversations instruction+input -> output), GSM8K test solutions (calculator annotations
``<<3*4=12>>`` and math), and Magpie example responses with fenced code blocks.

Two backends:

* ``stand-in``: a deterministic transform (Latin letters -> Cyrillic letters, markers kept), a real object of the
  LLM protocol.  It exercises everything but the model; the selective path must keep every span (1.0).  Its
  output is a letter cipher, not Russian (py3langid reads some of it as Bulgarian), so the stage's target-language
  check (``language_check``) is off for it; the model run keeps the check.
* ``model``: the default ``gen`` model (SmolLM2-135M-Instruct, transformers, CPU) on the first ``--model-rows``
  rows (a 135M model is a weak translator: the figure shows what verification catches, not translation quality).

For each: the ``translate`` stage (selective: only prose is sent, markers for inline spans), and a *naive*
whole-text translation (each whole message sent to the same transform/model with the same prompt, no markers),
both checked the same way (:func:`curate.text.verify.span_counts`: each protected text of the source occurs in
the output exactly as often).  ``spans_preserved_rate`` = preserved spans / protected spans; ``quarantined`` =
rows the stage set aside (selective) or rows with any span lost (naive).  One JSON line on stdout; a before/after
example of a code-heavy row translated by the model on stderr.

    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/translate_preserve.py [--rows 60] [--model-rows 4]

``--code-in-prose`` prints only the count of messages (all of Code Alpaca's 2k, every OASST message of the 100
trees) whose units sent to the translator held quoted or unfenced Python code (an ``ast`` oracle, independent of
the segmenter) before code-in-prose detection, how many send none of it now, and the prose false positives.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl

from curate import Context
from curate.llm.base import Generation, Sampling
from curate.schema import MESSAGES, conform
from curate.stages.translate import SYSTEM_PROMPT, USER_PROMPT, Translate
from curate.text import segment as seg
from curate.text import verify

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LATIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
CYRILLIC = str.maketrans(LATIN, "абцдефгхийклмнопярстуввхызАБЦДЕФГХИЙКЛМНОПЯРСТУВВХЫЗ")


class StandIn:
    """Deterministic 'translator' (LLM protocol): Latin letters -> Cyrillic, every ``⟦i⟧`` marker kept."""

    name = "stand-in-cyrillic"

    def _one(self, text: str) -> str:
        return "".join(p if seg.MARKER_RX.fullmatch(p) else p.translate(CYRILLIC) for p in re.split(r"(⟦\d+⟧)", text))

    def chat(self, conversations: Sequence[Sequence[dict[str, str]]], sampling: Sampling) -> list[list[Generation]]:
        return [[Generation(text=self._one(c[-1]["content"].split("\n", 1)[1]), tokens=1)] for c in conversations]

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[Generation]]:
        return [[Generation(text=self._one(p), tokens=1)] for p in prompts]

    def render(self, conversation: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        raise NotImplementedError


def conv(user: str, assistant: str, source: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
            "source": source}


def load_rows(n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    magpie = json.loads((DATA / "magpie_po_example" / "example_instructions_5res.json").read_text())
    for item in magpie:
        fenced = [r for r in item["responses"] if "```" in r]
        if fenced:
            rows.append(conv(item["instruction"], fenced[0], "magpie"))
    for line in (DATA / "gsm8k" / "test.jsonl").read_text().splitlines()[: max(4, n // 4)]:
        item = json.loads(line)
        rows.append(conv(item["question"], item["answer"], "gsm8k"))
    alpaca = json.loads((DATA / "code_alpaca" / "code_alpaca_2k.json").read_text())
    for item in alpaca:
        if len(rows) >= n:
            break
        user = item["instruction"] + (f"\n\n{item['input']}" if item.get("input") else "")
        if not item.get("output") or not any(seg.protected_spans(t) for t in (user, item["output"])):
            continue
        rows.append(conv(user, item["output"], "code_alpaca"))
    return rows[:n]


def frame(rows: list[dict[str, Any]]) -> pl.LazyFrame:
    return conform(pl.LazyFrame(rows, schema={"messages": MESSAGES, "source": pl.String}), "conversation")


def selective(rows: list[dict[str, Any]], backend: Any, target: str,
              **params: Any) -> tuple[dict[str, Any], pl.DataFrame, Context]:
    ctx = Context.ephemeral()
    ctx.models.register("gen", backend)
    out = Translate(target_lang=target, batch_size=64, **params)(frame(rows), ctx).collect()
    notes = ctx.stats["translate"]
    return {"rows": len(rows), "protected_spans": notes["protected_spans"],
            "spans_preserved_rate": notes["spans_preserved_rate"], "quarantined": len(rows) - out.height,
            "quarantine_reasons": notes["quarantine_reasons"]}, out, ctx


def naive(rows: list[dict[str, Any]], backend: Any, target: str) -> tuple[dict[str, Any], list[list[str]]]:
    """Each whole message to the same backend and prompt (no segmentation), then the same span check."""
    system = SYSTEM_PROMPT.format(source="English", target=verify.language_name(target))
    texts = [m["content"] for r in rows for m in r["messages"]]
    outputs: list[str] = [""] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), 8):
        chunk = order[start:start + 8]
        budget = min(1024, 16 + math.ceil(0.5 * len(texts[chunk[-1]])))
        gens = backend.chat([[{"role": "system", "content": system}, {"role": "user", "content": USER_PROMPT.format(
            target=verify.language_name(target), text=texts[i])}] for i in chunk], Sampling(temperature=0.0,
                                                                                              max_tokens=budget))
        for i, g in zip(chunk, gens, strict=True):
            outputs[i] = g[0].text.strip() if g else ""
    total = kept = failed = 0
    per_row: list[list[str]] = []
    k = 0
    for r in rows:
        row_ok = True
        outs = []
        for m in r["messages"]:
            spans = seg.protected_spans(m["content"])
            good, problems = verify.span_counts(outputs[k], spans)
            total, kept = total + len(spans), kept + good
            row_ok = row_ok and not problems
            outs.append(outputs[k])
            k += 1
        failed += not row_ok
        per_row.append(outs)
    rate = round(kept / total, 4) if total else None
    return {"rows": len(rows), "protected_spans": total, "spans_preserved_rate": rate, "quarantined": failed}, per_row


_ORACLE_NODES = (ast.Assign, ast.AugAssign, ast.FunctionDef, ast.ClassDef, ast.For, ast.While, ast.Import,
                 ast.ImportFrom, ast.Return, ast.Lambda)
_CANDIDATE = re.compile(r'"((?:[^"\\]|\\.)+?)"|\'([^\'\n]+?)\'|“([^“”]+?)”|:[ \t]+([^\n]+)$|^([^\n]+)$', re.MULTILINE)


def _python_snippets(unit: str) -> list[str]:
    """Code in a unit sent to the translator, by an oracle independent of the segmenter: a quoted string, a
    colon's tail or a whole line that Python's own parser reads as a statement with a call, assignment,
    definition, loop or import (so ``x``, ``3 + 4`` or ``I. Introduction`` are not code, and neither is prose,
    which does not parse).  Python only: a lower bound on the code in prose."""
    found = []
    for m in _CANDIDATE.finditer(seg.MARKER_RX.sub("_m", unit)):
        snippet = next(g for g in m.groups() if g is not None).strip().rstrip(".,")
        try:
            tree = ast.parse(snippet)
        except (SyntaxError, ValueError):
            continue
        nodes = list(ast.walk(tree))
        # a call counts written as code (``f(x)``, no space before the bracket: ``Alien (1979)`` is prose)
        if any(isinstance(node, _ORACLE_NODES) for node in nodes) or (
                any(isinstance(node, ast.Call) for node in nodes) and re.search(r"\w\(", snippet)):
            found.append(snippet)
    return found


def code_in_prose(rows: list[tuple[str, str]]) -> dict[str, Any]:
    """Messages whose translated units hold quoted or unfenced Python code (the oracle above) under the
    segmentation before code-in-prose detection (VERSION 2: no ``quoted_code``, no single code line), and how
    many of them send none of it now."""
    before = after = 0
    quoted_code = 0
    for _, text in rows:
        with _without_prose_code():
            old = [s for u in seg.mask(text).units for s in _python_snippets(u)]
        new = [s for u in seg.mask(text).units for s in _python_snippets(u)]
        before += bool(old)
        after += bool(old) and not new
        quoted_code += any(s.kind == "quoted_code" for s in seg.protected_spans(text))
    return {"messages": len(rows), "with_code_in_prose_before": before, "protected_now": after,
            "with_quoted_code_spans_now": quoted_code}


class _without_prose_code:
    """The segmenter as it was before quoted/unfenced code detection (VERSION 2)."""

    def __enter__(self) -> None:
        self.saved = seg._prose_code_spans, seg.CODE_SCORE_MIN
        seg._prose_code_spans = lambda text, lo, hi: []
        seg.CODE_SCORE_MIN = math.inf

    def __exit__(self, *exc: object) -> None:
        seg._prose_code_spans, seg.CODE_SCORE_MIN = self.saved


def prose_false_positives() -> dict[str, Any]:
    """Texts of pure prose (MGSM questions in en/de/es/fr, GSM8K questions, OASST prompts) that now get a code
    span they did not get before: the detector's false positives."""
    texts = [line.split("\t")[0] for lang in ("en", "de", "es", "fr")
             for line in (DATA / "mgsm" / f"mgsm_{lang}.tsv").read_text().splitlines() if line.strip()]
    texts += [json.loads(line)["question"] for line in (DATA / "gsm8k" / "test.jsonl").read_text().splitlines()]
    texts += [json.loads(line) for line in
              (DATA / "oasst_en_100_trees" / "prompt_lottery_en_250_text.jsonl").read_text().splitlines()]
    code = ("code", "quoted_code")
    with _without_prose_code():
        old = [sum(s.kind in code for s in seg.protected_spans(t)) for t in texts]
    new = [sum(s.kind in code for s in seg.protected_spans(t)) for t in texts]
    hits = sum(n > o for o, n in zip(old, new, strict=True))
    return {"texts": len(texts), "new_code_spans": hits, "false_positive_rate": round(hits / len(texts), 5)}


def oasst_messages() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    def walk(message: dict[str, Any]) -> None:
        out.append(("oasst", message["text"]))
        for reply in message.get("replies", []):
            walk(reply)

    for line in (DATA / "oasst_en_100_trees" / "en_100_tree.jsonl").read_text().splitlines():
        walk(json.loads(line)["prompt"])
    return out


def code_alpaca_messages() -> list[tuple[str, str]]:
    alpaca = json.loads((DATA / "code_alpaca" / "code_alpaca_2k.json").read_text())
    return [("code_alpaca", t) for item in alpaca
            for t in (item["instruction"] + (f"\n\n{item['input']}" if item.get("input") else ""), item["output"])
            if t]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60)
    parser.add_argument("--model-rows", type=int, default=4)
    parser.add_argument("--target", default="fr", help="target language of the model run")
    parser.add_argument("--code-in-prose", action="store_true",
                        help="only count messages with quoted/unfenced code (code_alpaca, OASST) and prose false "
                             "positives, before and after code-in-prose detection (no translation)")
    args = parser.parse_args()

    if args.code_in_prose:
        print(json.dumps({"machine": f"{os.cpu_count()} cpu", "segment_version": seg.VERSION,
                          "code_alpaca": code_in_prose(code_alpaca_messages()),
                          "oasst": code_in_prose(oasst_messages()), "prose": prose_false_positives()}))
        return
    rows = load_rows(args.rows)
    result: dict[str, Any] = {"machine": f"{os.cpu_count()} cpu", "data": dict(pl.Series([r["source"] for r in rows])
                                                                               .value_counts().iter_rows())}
    t0 = time.perf_counter()
    # language_check off: the cipher is Cyrillic letters, not Russian (2 of 60 rows read as Bulgarian, bg)
    result["stand_in"], _, _ = selective(rows, StandIn(), "ru", language_check="off")
    result["stand_in_naive"], _ = naive(rows, StandIn(), "ru")
    result["stand_in_seconds"] = round(time.perf_counter() - t0, 2)

    if args.model_rows > 0:
        from curate.models import ModelRegistry

        llm = ModelRegistry().get("gen", "llm")
        # code-heavy rows first (fenced code or bare code), short ones so a 2-core CPU finishes in minutes
        heavy = sorted([r for r in rows if r["source"] in ("code_alpaca", "magpie")],
                       key=lambda r: sum(len(m["content"]) for m in r["messages"]))[: args.model_rows]
        t0 = time.perf_counter()
        result["model"], out, ctx = selective(heavy, llm, args.target)
        result["model_naive"], naive_outputs = naive(heavy, llm, args.target)
        result["model_seconds"] = round(time.perf_counter() - t0, 2)
        result["model_name"] = "SmolLM2-135M-Instruct (default gen)"
        # before/after of the most code-heavy of these rows (share of protected characters)
        def code_share(row: dict[str, Any]) -> float:
            text = "".join(m["content"] for m in row["messages"])
            return sum(len(s.text) for s in seg.protected_spans(text)) / max(1, len(text))

        pick = max(range(len(heavy)), key=lambda i: code_share(heavy[i]))
        source_id = frame(heavy[pick:pick + 1]).collect()["id"][0]
        kept = out.filter(pl.col("parent_id") == source_id)
        quarantine = ctx.quarantine_frame().filter(pl.col("id") == source_id)
        after = (kept["messages"][0].to_list() if kept.height else
                 json.loads(quarantine["row"][0])["translated_messages"])
        print(json.dumps({"before": heavy[pick]["messages"], "after_selective": after,
                          "verdict": "kept" if kept.height else quarantine["reason"][0],
                          "after_naive": naive_outputs[pick]}, ensure_ascii=False, indent=1), file=sys.stderr)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
