"""The funnel balances: rows in - set aside - consumed + created = rows out for every stage, or the difference is
named (manifest, log, CLI table, report); ``mode: flag`` stages show their flagged counts in the CLI table."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import ClassVar

import polars as pl
import pytest
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass
from synth_fakes import FakeLLM
from tiny_llm import CHATML
from typer.testing import CliRunner

from curate import Context, Stage
from curate.cli import app
from curate.funnel import balance, describe
from curate.runner import run_recipe
from curate.stages import STAGES, Magpie


def _alpaca(path: Path, instructions: list[str]) -> Path:
    path.write_text("".join(json.dumps({"instruction": t, "output": f"An answer to: {t}."}) + "\n"
                            for t in instructions))
    return path


@dataclass(config=ConfigDict(extra="forbid"))
class DropsSilently(Stage):
    """A broken stage for this test only: it loses its first ``n`` rows without quarantining them."""

    n: int = 2
    name: ClassVar[str] = "drops_silently"

    def apply(self, lf: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        return lf.slice(self.n)


def test_magpie_with_count_says_its_input_rows_are_ignored() -> None:
    """The issue's `01-magpie 208 -> 4 rows, 0 set aside`: the samples replace the input rows, and say so."""
    llm = FakeLLM(CHATML, generate_fn=lambda prompt, sampling, k: "Why is the sky blue at noon?")
    ctx = Context.ephemeral()
    ctx.models.register("gen", llm)
    seeds = pl.LazyFrame({"x": list(range(7))})
    out = Magpie(count=3)(seeds, ctx).collect()
    notes = ctx.stats["magpie"]
    set_aside = ctx.quarantine_frame().height
    assert (out.height, set_aside) == (1, 2)  # three identical samples: one kept, two duplicates
    assert (notes["rows_consumed"], notes["rows_created"]) == (7, 3)
    assert balance(7, out.height, set_aside, notes)["unaccounted"] == 0
    report = {"created": 3, "consumed": 7, "notes": notes}
    assert describe(report) == "3 created; 7 input rows ignored (count: 3 samples)"


def test_runner_balances_every_stage_and_names_a_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(STAGES, "drops_silently", DropsSilently)
    _alpaca(tmp_path / "in.jsonl", [f"Question number {i} about the weather today?" for i in range(6)])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ninput: in.jsonl\nstages:\n  - filter: {}\n  - drops_silently: {n: 2}\n")
    with caplog.at_level(logging.WARNING, logger="curate"):
        result = run_recipe(recipe, tmp_path / "run")
    read, kept, broken = result.stages
    assert (read.unaccounted, kept.unaccounted) == (0, 0)
    assert (broken.rows_in, broken.rows_out, broken.quarantined, broken.unaccounted) == (6, 4, 0, 2)
    assert "02-drops_silently: rows do not balance" in caplog.text
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"][2]["unaccounted"] == 2
    printed = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "cli"), "--fresh"])
    assert printed.exit_code == 0, printed.output
    assert "2 rows lost without a reason" in printed.output
    assert "unaccounted" in (tmp_path / "cli" / "report.html").read_text()


def test_reward_augment_reports_created_and_consumed(tmp_path: Path) -> None:
    rows = [{"prompt": f"Question {i}?", "chosen": f"Good answer {i}.", "rejected": "Bad.",
             "score_chosen": 8.0, "score_rejected": 2.0 if i else 8.0} for i in range(5)]
    pl.DataFrame(rows).write_parquet(tmp_path / "in.parquet")
    recipe = tmp_path / "ra.yaml"
    recipe.write_text("name: ra\ninput: in.parquet\nstages:\n  - reward_augment: {low: 1, high: 10}\n")
    stage = run_recipe(recipe, tmp_path / "run").stages[1]
    assert (stage.rows_in, stage.quarantined, stage.consumed, stage.created, stage.rows_out) == (5, 1, 4, 8, 8)
    assert stage.unaccounted == 0


@pytest.mark.slow
def test_flag_mode_counts_show_in_the_cli_table(tmp_path: Path) -> None:
    """An audit in ``mode: flag`` keeps every row: the CLI line says how many it flagged, not only the report."""
    benchmark = "Write a function that checks whether a string is a palindrome."
    _alpaca(tmp_path / "in.jsonl", [benchmark, "Name three rivers in South America, please.",
                                    "What is the boiling point of water at sea level?"])
    (tmp_path / "refs.jsonl").write_text(json.dumps({"id": "b-1", "text": benchmark}) + "\n")
    recipe = tmp_path / "audit.yaml"
    recipe.write_text("name: a\ninput: in.jsonl\nstages:\n  - audit: {references: [refs.jsonl], mode: flag}\n")
    printed = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run")])
    assert printed.exit_code == 0, printed.output
    line = next(t for t in printed.output.splitlines() if "01-audit" in t)
    assert "3 ->         3 rows" in line and "1 flagged (contaminated)" in line
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"][1]["flagged"] == {"contaminated": 1}
