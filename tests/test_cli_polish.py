"""The command line's polish (issue 19): help without type noise on flags, ``curate init`` listing its starters
and the clean-sft starter end to end, plain-text ``curate stages NAME``, the export table, plurals, ``validate``
reporting every error at once, and "did you mean" for recipe paths from any folder."""

from __future__ import annotations

from pathlib import Path

import click
import typer.main
from typer.testing import CliRunner

from curate.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


def _commands(group: click.Command, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the CLI (``()`` is ``curate`` itself, ``("rm", "fit")`` a subcommand)."""
    paths = [prefix]
    for name, command in getattr(group, "commands", {}).items():
        paths += _commands(command, (*prefix, name))
    return paths


# -- --help ------------------------------------------------------------------------------------------------
def test_no_help_text_shows_a_type_beside_a_flag() -> None:
    paths = _commands(typer.main.get_command(app))
    assert ("rm", "fit") in paths and ("export",) in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, (path, result.output)
    # value options still name their type
    assert "<int>" in runner.invoke(app, ["export", "--help"]).output
