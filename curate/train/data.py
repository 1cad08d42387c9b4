"""Preference data for training: read, validate (before any model loads), split, subsample, hand to TRL.

Why here and not in TRL: a DPO run that fails after a minute of model loading on row 4,812 of a file is a
minute lost per mistake, and TRL's errors (a KeyError inside ``datasets.map``, a chat template failing on a
``None``) name neither the file nor the row.  So every file is checked here first and the first problem is
reported as ``FILE, row N, column 'chosen': ...`` (rows 1-based), with how many other rows share it.

Parquet is read as is; any other file curate reads (JSONL, hh-rlhf transcripts, pairwise labels, ...) goes
through ``curate.io``'s adapters first.  Accepted shapes (docs/architecture.md): TRL's conversational
explicit-prompt format (``prompt``, ``chosen``, ``rejected`` as ``list<struct<role, content>>``, what curate
writes) or its standard format (all three plain strings).  A string prompt with message-list responses is
refused: TRL would silently mis-template it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import InputDataError, where
from curate.schema import ROLES, hash_expr
from curate.words import count

RESPONSE_COLUMNS = ("chosen", "rejected")
COLUMNS = ("prompt", *RESPONSE_COLUMNS)
#: Metadata kept when present (scores for the report, goal columns of reward-augmented data).
OPTIONAL = ("id", "score_chosen", "score_rejected", "goal_score", "parent_id")


@dataclass
class Preferences:
    """Validated preference rows: ``prompt``, ``chosen``, ``rejected``, ``_key`` (content hash: the row's
    identity for stored reference log-probs), ``_group`` (prompt without system turns: the unit of a
    held-out split), ``_file``/``_row`` (where each row came from), plus the optional metadata columns."""

    frame: pl.DataFrame
    files: list[Path]
    conversational: bool

    @property
    def rows(self) -> int:
        return self.frame.height


def resolve_files(path: Path) -> list[Path]:
    """A Parquet file, a folder of them, or a run directory (its ``data/``)."""
    if not path.exists():
        raise InputDataError(f"{path}: no such file or directory (training data is a preference Parquet or a run "
                             "directory; for a recipe's own output, `curate run` the recipe first)")
    if path.is_file():
        return [path]
    folder = path / "data" if (path / "data").is_dir() else path
    files = sorted(p for p in folder.glob("*.parquet") if ".ref_logps-" not in p.name)
    if not files:
        raise InputDataError(f"{path}: no Parquet files here (a run directory has them under data/)")
    return files


def _is_messages(dtype: pl.DataType) -> bool:
    if not isinstance(dtype, pl.List) or not isinstance(dtype.inner, pl.Struct):
        return False
    fields = {f.name for f in dtype.inner.fields}
    return {"role", "content"} <= fields


def _check_schema(schema: pl.Schema, file: Path) -> bool:
    """Raise on a missing or mistyped column; return whether the file is conversational."""
    for column in COLUMNS:
        if column not in schema:
            raise InputDataError(
                f"{where(str(file), column=column)}: missing; preference data needs prompt, chosen and rejected "
                f"(columns here: {', '.join(schema.names())})"
            )
    kinds = {}
    for column in COLUMNS:
        dtype = schema[column]
        if dtype == pl.String:
            kinds[column] = "string"
        elif _is_messages(dtype):
            kinds[column] = "messages"
        else:
            raise InputDataError(
                f"{where(str(file), column=column)}: type {dtype}; expected a message list "
                "(list<struct<role, content>>) or, for all three columns, a string"
            )
    if len(set(kinds.values())) > 1:
        strings = [c for c, k in kinds.items() if k == "string"]
        lists = [c for c, k in kinds.items() if k == "messages"]
        raise InputDataError(
            f"{where(str(file), column=strings[0])}: {' and '.join(repr(c) for c in strings)} "
            f"{'is a string' if len(strings) == 1 else 'are strings'} but {' and '.join(repr(c) for c in lists)} "
            f"{'is a message list' if len(lists) == 1 else 'are message lists'}: never mix the two formats "
            "(write the prompt as [{\"role\": \"user\", \"content\": ...}])"
        )
    return kinds["prompt"] == "messages"


def _row_problems(conversational: bool) -> list[tuple[str, pl.Expr, pl.Expr]]:
    """(column, bad-row condition, reason) for every row-level rule, in the order they are reported."""
    rules: list[tuple[str, pl.Expr, pl.Expr]] = []
    if not conversational:
        for column in COLUMNS:
            col = pl.col(column)
            rules.append((column, col.is_null() | (col.str.strip_chars() == ""), pl.lit(f"empty {column}")))
        return rules
    prompt = pl.col("prompt")
    roles = prompt.list.eval(pl.element().struct.field("role"))
    rules.append(("prompt", prompt.is_null() | (prompt.list.len() == 0), pl.lit("empty prompt (no message)")))
    bad_role = roles.list.eval(~pl.element().is_in(list(ROLES)) | pl.element().is_null()).list.any()
    rules.append(("prompt", bad_role.fill_null(False),
                  pl.format("a message has a role outside {} (roles: {})", pl.lit(", ".join(ROLES)),
                            roles.list.join(", "))))
    for column in RESPONSE_COLUMNS:
        col = pl.col(column)
        last = col.list.last()
        text = last.struct.field("content")
        rules.append((column, col.is_null() | (col.list.len() == 0), pl.lit("empty response (no message)")))
        rules.append((column, (last.struct.field("role") != "assistant").fill_null(True),
                      pl.format("the response must end with an assistant message, got role '{}'",
                                last.struct.field("role"))))
        rules.append((column, text.is_null() | (text.str.strip_chars() == ""),
                      pl.lit("empty response (the assistant message has no text)")))
    return rules


def _check_rows(frame: pl.DataFrame, file: Path, conversational: bool) -> None:
    for column, bad, reason in _row_problems(conversational):
        hits = frame.lazy().with_row_index("_i", offset=1).filter(bad).select("_i", reason.alias("_why"))
        hits = hits.collect()
        if hits.height:
            first = hits.row(0, named=True)
            others = f" ({count(hits.height - 1, 'more row')} like it)" if hits.height > 1 else ""
            raise InputDataError(f"{where(str(file), row=first['_i'], column=column)}: {first['_why']}{others}")


def group_key(conversational: bool) -> pl.Expr:
    """The held-out split's unit: the prompt without system turns, so reward-augmented twins (same question,
    different goal system message) always land on the same side."""
    if not conversational:
        return pl.col("prompt")
    turns = pl.col("prompt").list.eval(
        pl.element().filter(pl.element().struct.field("role") != "system").struct.json_encode()
    )
    return turns.list.join("\x1e")


def _adapted(file: Path) -> pl.DataFrame:
    """A non-Parquet input (JSONL, hh-rlhf transcripts, pairwise labels, ...) through curate's readers and
    adapters, as preference rows.  Rows the adapter rejects are left out, as ``curate run`` sets them aside."""
    from curate.io import load

    loaded = load(file, "auto")
    if loaded.table != "preference":
        raise InputDataError(f"{file}: adapter '{loaded.adapter}' gives a {loaded.table} table; training needs "
                             "preference rows (prompt, chosen, rejected)")
    names = loaded.frame.collect_schema().names()
    return loaded.frame.select([*COLUMNS, *[c for c in OPTIONAL if c in names]]).collect()


def read_preferences(paths: list[Path]) -> Preferences:
    """Read and validate preference files; the first problem raises ``InputDataError`` naming file/row/column."""
    frames: list[pl.DataFrame] = []
    files: list[Path] = []
    modes: set[bool] = set()
    for path in paths:
        for file in resolve_files(Path(path)):
            if file.suffix == ".parquet":
                try:
                    schema = pl.scan_parquet(file).collect_schema()
                except (pl.exceptions.PolarsError, OSError) as exc:
                    raise InputDataError(f"{file}: not a readable Parquet file ({exc})") from None
                conversational = _check_schema(schema, file)
                keep = [*COLUMNS, *[c for c in OPTIONAL if c in schema]]
                frame = pl.read_parquet(file, columns=keep)
            else:
                frame = _adapted(file)
                conversational = _check_schema(frame.schema, file)
            if frame.height == 0:
                raise InputDataError(f"{file}: no rows")
            _check_rows(frame, file, conversational)
            if conversational:
                frame = frame.with_columns([pl.col(c).list.eval(pl.struct(
                    pl.element().struct.field("role"), pl.element().struct.field("content"))) for c in COLUMNS])
            frames.append(frame.with_columns(
                pl.lit(str(file)).alias("_file"), pl.int_range(1, pl.len() + 1).alias("_row")))
            files.append(file)
            modes.add(conversational)
    if not frames:
        raise InputDataError("no training data given")
    if len(modes) > 1:
        raise InputDataError(f"{', '.join(map(str, files))}: some files use message lists and some plain strings; "
                             "use one format for a run")
    conversational = modes.pop()
    frame = pl.concat(frames, how="diagonal_relaxed")
    key = pl.struct(*COLUMNS).struct.json_encode()
    frame = frame.with_columns(hash_expr(key).alias("_key"), group_key(conversational).alias("_group"))
    return Preferences(frame, files, conversational)


def _bucket(seed: int) -> pl.Expr:
    """xxh3 of (seed, group) mapped to [0, 1): stable per prompt across row order, machines and versions."""
    digest = hash_expr(pl.concat_str([pl.lit(f"{seed}\x1f"), pl.col("_group")]))
    return digest.str.slice(0, 12).str.to_integer(base=16) / float(16**12)


def split_held_out(prefs: Preferences, fraction: float, seed: int) -> tuple[Preferences, Preferences]:
    """Hold out ``fraction`` of the prompts (all rows of a prompt on one side), seeded."""
    marked = prefs.frame.with_columns((_bucket(seed) < fraction).alias("_held"))
    train = marked.filter(~pl.col("_held")).drop("_held")
    held = marked.filter(pl.col("_held")).drop("_held")
    if held.height == 0 or train.height == 0:
        raise InputDataError(
            f"{', '.join(map(str, prefs.files))}: holding out {fraction:g} of {prefs.rows} rows leaves an empty "
            "side; give eval_data: or change eval_fraction"
        )
    return (Preferences(train, prefs.files, prefs.conversational),
            Preferences(held, prefs.files, prefs.conversational))


def without_groups(prefs: Preferences, held: Preferences) -> Preferences:
    """``prefs`` minus every row whose prompt is in ``held`` (no run trains on a held-out prompt)."""
    frame = prefs.frame.join(held.frame.select("_group").unique(), on="_group", how="anti")
    return Preferences(frame, prefs.files, prefs.conversational)


def random_subset(pool: Preferences, size: int, seed: int) -> Preferences:
    """``size`` rows of ``pool`` drawn uniformly without replacement with ``seed`` (the random baseline)."""
    if pool.rows < size:
        raise InputDataError(f"{', '.join(map(str, pool.files))}: the pool has {pool.rows} rows, fewer than the "
                             f"{size} of the curated data; a same-size random baseline needs a larger pool")
    frame = pool.frame.sample(n=size, seed=seed, shuffle=True)
    return Preferences(frame, pool.files, pool.conversational)


def with_goal(prefs: Preferences, goal_prompt: str, system: str = "prepend", separator: str = "\n\n",
              template_goal: Any = None) -> Preferences:
    """Condition every prompt on ``goal_prompt`` the way ``reward_augment`` does (a system message; an existing
    system message gets it prepended/appended/replaced).  Rows that already carry a goal (``goal_score``) keep
    only their original-direction twin (the one whose goal is the chosen response's score) and have that goal
    text swapped for ``goal_prompt`` (``template_goal(score)`` gives the old text)."""
    frame = prefs.frame
    if "goal_score" in frame.columns and template_goal is not None:
        frame = frame.filter(pl.col("goal_score") == pl.col("score_chosen"))
        if "score_rejected" in frame.columns:
            frame = frame.filter(pl.col("score_chosen") > pl.col("score_rejected"))
        rows = frame.to_dicts()
        for row in rows:
            old = template_goal(row["goal_score"])
            first = row["prompt"][0]
            if first["role"] == "system" and old in first["content"]:
                row["prompt"] = [{"role": "system", "content": first["content"].replace(old, goal_prompt, 1)},
                                 *row["prompt"][1:]]
        frame = pl.DataFrame(rows, schema=frame.schema)
    elif not prefs.conversational:
        raise InputDataError("goal conditioning needs message-list prompts (a system message holds the goal)")
    else:
        first = pl.col("prompt").list.first()
        has_system = (first.struct.field("role") == "system").fill_null(False)
        old_text = first.struct.field("content").fill_null("")
        goal = pl.lit(goal_prompt)
        merged = {"prepend": pl.concat_str([goal, pl.lit(separator), old_text]),
                  "append": pl.concat_str([old_text, pl.lit(separator), goal]),
                  "replace": goal}[system]
        content = pl.when(has_system).then(merged).otherwise(goal)
        rest = pl.when(has_system).then(pl.col("prompt").list.slice(1)).otherwise(pl.col("prompt"))
        prompt = pl.concat_list([pl.struct(pl.lit("system").alias("role"), content.alias("content")), rest])
        frame = frame.with_columns(prompt.cast(frame.schema["prompt"]).alias("prompt"))
    key = pl.struct(*COLUMNS).struct.json_encode()
    frame = frame.with_columns(hash_expr(key).alias("_key"))
    return Preferences(frame, prefs.files, prefs.conversational)


def to_dataset(prefs: Preferences) -> Any:
    """The rows as a ``datasets.Dataset`` in TRL's preference format, plus ``_key`` for stored references."""
    from datasets import Dataset

    return Dataset.from_dict(prefs.frame.select(*COLUMNS, "_key").to_dict(as_series=False))
