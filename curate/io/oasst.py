"""OpenAssistant message trees (``message_tree_id``, ``prompt: {text, role, replies: [...], rank}``).

Two readings of a tree, chosen with the ``mode`` option:

- ``candidates`` (default): every prompter message with at least two *ranked*, non-deleted assistant
  replies gives one candidates row: prompt = the messages from the root down to that prompter message,
  responses = those replies, ``score = -rank`` (OASST ranks 0 = best; negating makes higher better, as
  curate's scores are everywhere).  Unranked replies are left out (they cannot be ordered).
- ``conversations``: one conversation per tree following the best reply at each step (lowest rank; the
  first reply when none is ranked) down to a leaf; a trailing unanswered prompter message is dropped.

A tree that yields nothing (no ranked sibling group, no assistant reply) gives one error row, so it is
counted in quarantine rather than silently missing.  The tree is walked in Python (it is recursive JSON).
"""

from __future__ import annotations

import json
from typing import Any, Literal

import polars as pl

from curate.io._base import Adapter, Conversion, Options, require
from curate.schema import MESSAGES, RESPONSES

_ROLES = {"prompter": "user", "assistant": "assistant"}
_ITEM = {
    "prompt": MESSAGES,
    "responses": RESPONSES,
    "messages": MESSAGES,
    "message_id": pl.String,
    "lang": pl.String,
    "error": pl.String,
}
_ITEMS = pl.List(pl.Struct(_ITEM))


class OasstOptions(Options):
    mode: Literal["candidates", "conversations"] = "candidates"


def _live(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in node.get("replies") or [] if isinstance(r, dict) and not r.get("deleted")]


def _msg(node: dict[str, Any]) -> dict[str, str]:
    role = _ROLES.get(str(node.get("role")))
    if role is None:
        raise ValueError(f"message {node.get('message_id')} has unknown role {node.get('role')!r}")
    text = node.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"message {node.get('message_id')} has no text")
    return {"role": role, "content": text}


def sibling_groups(root: dict[str, Any]) -> list[dict[str, Any]]:
    """Candidates rows of one tree: each prompter message with >= 2 ranked assistant replies."""
    rows: list[dict[str, Any]] = []
    stack: list[tuple[dict[str, Any], list[dict[str, str]]]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        here = [*path, _msg(node)]
        replies = _live(node)
        ranked = sorted(
            (r for r in replies if r.get("role") == "assistant" and r.get("rank") is not None),
            key=lambda r: r["rank"],
        )
        if node.get("role") == "prompter" and len(ranked) >= 2:
            responses = [
                {"content": _msg(r)["content"], "model": r.get("model_name"), "score": float(-r["rank"])}
                for r in ranked
            ]
            rows.append({"prompt": here, "responses": responses, "message_id": node.get("message_id")})
        stack.extend((r, here) for r in reversed(replies))
    return rows  # depth-first, in the tree's own order


def best_path(root: dict[str, Any]) -> list[dict[str, str]]:
    """The conversation that follows the best-ranked reply at every step, ending on an assistant turn."""
    path = [_msg(root)]
    node = root
    while replies := _live(node):
        ranked = [r for r in replies if r.get("rank") is not None]
        node = min(ranked, key=lambda r: r["rank"]) if ranked else replies[0]
        path.append(_msg(node))
    while path and path[-1]["role"] != "assistant":
        path.pop()
    return path


def _tree_items(tree_json: str | None, mode: str) -> list[dict[str, Any]]:
    empty = dict.fromkeys(_ITEM)
    if tree_json is None:
        return [{**empty, "error": "column 'prompt': expected a message tree, got null"}]
    root = json.loads(tree_json)
    lang = root.get("lang")
    try:
        if mode == "candidates":
            groups = sibling_groups(root)
            if not groups:
                return [
                    {**empty, "lang": lang, "error": "tree has no prompter message with >= 2 ranked replies"}
                ]
            return [{**empty, **g, "lang": lang} for g in groups]
        path = best_path(root)
    except ValueError as exc:
        return [{**empty, "lang": lang, "error": f"column 'prompt': {exc}"}]
    if not path:
        return [{**empty, "lang": lang, "error": "tree has no assistant reply"}]
    return [{**empty, "messages": path, "message_id": root.get("message_id"), "lang": lang}]


class Oasst(Adapter):
    """OpenAssistant message trees -> candidates (ranked sibling replies) or conversations (best path)."""

    name = "oasst"
    table = "candidates"
    expects = "message_tree_id, prompt: {text, role, replies: [...]} (option mode: candidates|conversations)"
    options = OasstOptions

    def matches(self, columns: frozenset[str]) -> bool:
        return {"message_tree_id", "prompt"} <= columns

    def table_for(self, opts: OasstOptions) -> str:
        return "candidates" if opts.mode == "candidates" else "conversation"

    def convert(self, lf: pl.LazyFrame, schema: pl.Schema, opts: OasstOptions) -> Conversion:
        dtype = require(schema, "prompt", self.name)
        if not isinstance(dtype, pl.Struct):
            tree = pl.col("prompt").cast(pl.String) if dtype == pl.String else pl.lit(None, pl.String)
        else:
            tree = pl.col("prompt").struct.json_encode()
        mode = opts.mode

        def expand(batch: pl.Series) -> pl.Series:
            return pl.Series(batch.name, [_tree_items(t, mode) for t in batch.to_list()], dtype=_ITEMS)

        lf = lf.with_columns(tree.map_batches(expand, return_dtype=_ITEMS).alias("__item")).explode("__item")
        item = pl.col("__item")
        content = (
            {"prompt": item.struct.field("prompt"), "responses": item.struct.field("responses")}
            if mode == "candidates"
            else {"messages": item.struct.field("messages")}
        )
        columns = {
            **content,
            "_error": item.struct.field("error"),
            "message_id": item.struct.field("message_id"),
            "lang": item.struct.field("lang"),
        }
        return Conversion(lf, columns, {"prompt", "__item"})
