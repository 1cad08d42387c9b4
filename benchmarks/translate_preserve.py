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
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60)
    parser.add_argument("--model-rows", type=int, default=4)
    parser.add_argument("--target", default="fr", help="target language of the model run")
    args = parser.parse_args()

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
