"""The notebook API as a Polars user expects it: types in = types out, removed rows per stage with a stable code,
a Pipeline display of non-default parameters, ``curate.read`` that can set bad rows aside, quiet progress."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

import curate
from curate.errors import InputDataError
from curate.pipeline import QUARANTINE_SCHEMA, scan_quarantine
from curate.schema import conform
from curate.stages import ExactDedup, Filter, MinHashDedup

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "instructions_alpaca.jsonl"


def _conversations(texts: list[str]) -> pl.DataFrame:
    rows = [[{"role": "user", "content": t}, {"role": "assistant", "content": f"Answer {i} to {t}."}]
            for i, t in enumerate(texts)]
    return conform(pl.DataFrame({"messages": rows}).lazy(), "conversation").collect()


def test_pipe_returns_the_type_it_was_given() -> None:
    df = _conversations(["What is rain?", "What is rain?", "Name a colour."])
    ctx = curate.Context.ephemeral()
    eager = df.pipe(ExactDedup(on="prompt"), ctx)
    assert isinstance(eager, pl.DataFrame) and eager.height == 2
    lazy = df.lazy().pipe(ExactDedup(on="prompt"), ctx)
    assert isinstance(lazy, pl.LazyFrame) and lazy.collect().height == 2
    piped = curate.Pipeline([Filter(), ExactDedup()])
    assert isinstance(df.pipe(piped, ctx), pl.DataFrame)
    assert isinstance(piped.run(df.lazy(), ctx), pl.LazyFrame)


def test_quarantine_codes_group_and_rows_are_structs() -> None:
    """On the bundled sample, reasons that embed ids fold into a few codes; dedup rows name what they duplicate."""
    ctx = curate.Context.ephemeral()
    lf = curate.read(SAMPLE, on_error="quarantine", ctx=ctx)
    curate.Pipeline([Filter(refusals=True), ExactDedup(), MinHashDedup(threshold=0.7)]).run(lf, ctx).collect()
    removed = ctx.quarantine_frame()
    assert removed.columns == list(QUARANTINE_SCHEMA)
    counts = dict(removed.group_by("code").len().iter_rows())
    assert counts["exact_duplicate"] >= 5 and counts["near_duplicate"] >= 5
    assert set(counts) == {"malformed_json", "invalid_field", "refusal", "exact_duplicate", "near_duplicate"}
    assert removed["reason"].n_unique() > 2 * len(counts)  # the human text still carries ids and similarities
    dups = ctx.quarantine_frame(stage="exact_dedup")
    # Rows repeating an earlier row's content are set aside before the stages, as curate run's read stage does.
    identical = ctx.quarantine_frame(stage="read").filter(pl.col("code") == "exact_duplicate").height
    assert identical > 0
    assert set(dups["stage"]) == {"02-exact_dedup"} and dups.height == counts["exact_duplicate"] - identical
    assert isinstance(dups.schema["row"], pl.Struct) and dups["row"][0]["messages"][0]["role"] == "user"
    assert dups["duplicate_of"].is_not_null().all()
    assert ctx.quarantine_frame(stage="02-exact_dedup").height == dups.height
    assert ctx.quarantine_frame(stage="exact_dedup", row="json").schema["row"] == pl.String
    assert set(ctx.quarantine_frame(stage="read")["code"]) == {"malformed_json", "invalid_field", "exact_duplicate"}


def test_older_quarantine_files_stay_readable(tmp_path: Path) -> None:
    old = pl.DataFrame({
        "stage": ["02-exact_dedup", "01-filter"],
        "reason": ["exact duplicate (prompt) of " + "a" * 32, "response shorter than 2 chars"],
        "id": ["b" * 32, "c" * 32],
        "row": ["{}", "{}"],
    })
    old.write_parquet(tmp_path / "q.parquet")
    read = scan_quarantine(tmp_path / "q.parquet").collect()
    assert read.columns == list(QUARANTINE_SCHEMA)
    assert read["code"].to_list() == ["exact_duplicate", "too_short"]
    assert read["duplicate_of"].to_list() == ["a" * 32, None]


def test_pipeline_display_lists_only_changed_parameters() -> None:
    pipe = curate.Pipeline([Filter(refusals=True), ExactDedup(), MinHashDedup(threshold=0.7)])
    assert repr(pipe) == "Pipeline([\n  Filter(refusals=True),\n  ExactDedup(),\n  MinHashDedup(threshold=0.7),\n])"
    shown = pipe._repr_html_()
    assert "threshold=0.7" in shown and "num_perm" not in shown and "ngram" not in shown
    assert MinHashDedup(num_perm=64).changed_params() == {"num_perm": 64}


def test_read_sets_bad_rows_aside_on_request() -> None:
    with pytest.raises(InputDataError, match=r"instructions_alpaca\.jsonl, row 44: malformed JSON.*on_error"):
        curate.read(SAMPLE)
    ctx = curate.Context.ephemeral()
    good = curate.read(SAMPLE, on_error="quarantine", ctx=ctx).collect()
    bad = ctx.quarantine_frame(stage="read")
    lines = sum(1 for line in SAMPLE.read_text().splitlines() if line.strip())
    assert good.height + bad.height == lines
    assert bad["reason"][0].startswith("instructions_alpaca.jsonl, row 44: malformed JSON")


def test_progress_without_ipywidgets_is_plain_text_and_silent(tmp_path: Path) -> None:
    """In a Jupyter kernel without ipywidgets, tqdm.auto warns ("IProgress not found") on import.  IPython is not
    installed here, so the kernel is stood in for by the two names tqdm looks up to decide it runs in one."""
    script = tmp_path / "cell.py"
    script.write_text(textwrap.dedent("""
        import sys, types, warnings
        shell = type("ZMQInteractiveShell", (), {})
        ipython = types.ModuleType("IPython")
        ipython.get_ipython = lambda: shell()
        sys.modules["IPython"] = ipython
        sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")
        import polars as pl
        import curate
        from curate.schema import conform
        from curate.stages import ExactDedup
        rows = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."}]]
        df = conform(pl.DataFrame({"messages": rows}).lazy(), "conversation").collect()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = curate.Pipeline([ExactDedup()]).run(df, progress=True)
        assert out.height == 1
        assert not caught, [str(w.message) for w in caught]
    """))
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}  # `curate run` in this process sets it
    done = subprocess.run([sys.executable, "-W", "error", str(script)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1/1" in done.stderr  # the text bar


@pytest.mark.parametrize(("reason", "code"), [
    ("instructions_alpaca.jsonl, row 44: malformed JSON: Expecting ',' delimiter (char 73)", "malformed_json"),
    ("data.jsonl, row 63: column 'output': expected a non-empty string, got an empty string", "invalid_field"),
    ("identical content to instructions_alpaca.jsonl row 78 (same id)", "exact_duplicate"),
    ("near duplicate (minhash, jaccard 0.86) of 45158fb7a5c835cbe1a9f57ed8eb6114", "near_duplicate"),
    ("response shorter than 2 chars", "too_short"),
    ("instruction too short (4 < 8 chars)", "too_short"),
    ("truncated response (no end-of-sentence punctuation)", "truncated"),
    ("subsample deita: too similar to 0123 (cos 0.93)", "too_similar"),
    ("subsample deita: not in top 3", "not_selected"),
    ("reward_augment: equal scores (3.0 == 3.0), twins would contradict", "tied_scores"),
    ("contaminated: matches mt_bench item 81 (prompt of row; cos 0.97, 13-gram overlap 0.5)", "contaminated"),
    ("wrong language: messages[2]: identified as en", "wrong_language"),
    ("", "other"),
])
def test_reason_codes(reason: str, code: str) -> None:
    from curate.pipeline import reason_code

    assert pl.select(reason_code(pl.lit(reason))).item() == code
