"""``curate init``: write a starter recipe, with a few sample rows beside it, for a chosen use.

Why a folder and not just a YAML file: a recipe that validates and runs the moment it is written teaches
more than a template full of placeholders.  The sample rows (our own, a mix of prose, code, math and one
near-duplicate) make every starter runnable at once; the comments in each recipe say what to replace.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from string import Template

from curate.errors import RecipeError

#: use -> (recipe template, extra data files the template reads, as (packaged name, name under data/)).
STARTERS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "magpie-dpo": ("magpie-dpo.yaml", (("sample_instructions.jsonl", "instructions.jsonl"),)),
    "select-sft": ("select-sft.yaml", (("sample_instructions.jsonl", "instructions.jsonl"),)),
    "translate": ("translate.yaml", (("sample_instructions.jsonl", "instructions.jsonl"),)),
    "audit": ("audit.yaml", (("sample_instructions.jsonl", "instructions.jsonl"),
                             ("sample_references.jsonl", "references.jsonl"))),
    "clean-sft": ("clean-sft.yaml", (("sample_chats.jsonl", "chats.jsonl"),)),
}

#: use -> one line saying what its recipe does (``curate init`` without a use lists them).
SUMMARIES: dict[str, str] = {
    "clean-sft": "clean an SFT conversation table: rule filters, exact + MinHash dedup, deita scores (CPU)",
    "select-sft": "keep a diverse, high-quality subset of an SFT pool (deita scores + diversity rule)",
    "magpie-dpo": "synthesise instructions (Magpie), two responses each, an LLM judge -> DPO pairs",
    "translate": "translate a conversation table with a local model, checking each translation",
    "audit": "flag rows that match benchmark items (decontamination), drop semantic near-duplicates",
}


def starter_lines() -> list[str]:
    """One line per starter, ``name  summary``, in the order :data:`SUMMARIES` gives them."""
    width = max(len(use) for use in STARTERS)
    return [f"{use:<{width}}  {SUMMARIES.get(use, '')}".rstrip() for use in SUMMARIES | dict.fromkeys(STARTERS)]


def _template(name: str) -> str:
    return resources.files("curate.templates").joinpath(name).read_text(encoding="utf-8")


def write_starter(use: str, directory: Path, *, name: str | None = None, force: bool = False) -> list[Path]:
    """Write ``DIRECTORY/<use>.yaml`` and its ``data/`` files; return the paths written.

    Existing files are never overwritten unless ``force``; the check happens before anything is written,
    so a refused call leaves the folder as it was.
    """
    if use not in STARTERS:
        import difflib

        near = difflib.get_close_matches(use, STARTERS, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise RecipeError(f"unknown starter '{use}'{hint} (choose one of: {', '.join(STARTERS)})")
    template, data_files = STARTERS[use]
    recipe_name = name or re.sub(r"[^A-Za-z0-9_]+", "_", use)
    recipe_path = directory / f"{use.replace('-', '_')}.yaml"
    targets = [recipe_path, *(directory / "data" / dest for _, dest in data_files)]
    # A data file that another starter already wrote, unchanged, is shared rather than a conflict.
    unchanged = {directory / "data" / dest for packaged, dest in data_files
                 if (directory / "data" / dest).is_file()
                 and (directory / "data" / dest).read_text(encoding="utf-8") == _template(packaged)}
    existing = [p for p in targets if p.exists() and p not in unchanged]
    if existing and not force:
        raise RecipeError(
            f"{', '.join(str(p) for p in existing)} already {'exists' if len(existing) == 1 else 'exist'}: "
            "pass --force to overwrite, or pick another folder"
        )
    out_dir = f"runs/{recipe_name}"
    text = Template(_template(template)).substitute(
        name=recipe_name, file=str(recipe_path), out_dir=out_dir, shown_out=str(directory / out_dir)
    )
    (directory / "data").mkdir(parents=True, exist_ok=True)
    recipe_path.write_text(text, encoding="utf-8")
    for packaged, dest in data_files:
        (directory / "data" / dest).write_text(_template(packaged), encoding="utf-8")
    return targets
