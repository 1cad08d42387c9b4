"""The data-scaling plateau fit (curate.scaling) and ``curate scaling``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.errors import InputDataError
from curate.scaling import fit_file, fit_plateau, plateau, size_for

SIZES = np.array([100, 250, 500, 1000, 2000, 4000, 8000], dtype=np.float64)
TRUE = (0.8, 0.3, 0.001)  # P_max, P_0, k


def test_recovers_known_parameters_exactly() -> None:
    fit = fit_plateau(SIZES, plateau(SIZES, *TRUE))
    assert fit.p_max == pytest.approx(0.8, abs=1e-6)
    assert fit.p_0 == pytest.approx(0.3, abs=1e-6)
    assert fit.k == pytest.approx(0.001, rel=1e-5)
    assert fit.r2 == pytest.approx(1.0)
    # P(n) = 0.95 * 0.8  <=>  n = ln(0.5 / 0.04) / 0.001
    assert fit.size_at_target == pytest.approx(np.log(0.5 / 0.04) / 0.001, rel=1e-5)
    assert fit.predict(fit.size_at_target) == pytest.approx(0.95 * 0.8, abs=1e-6)


def test_recovers_parameters_from_noisy_points_in_fractions() -> None:
    fractions = np.array([0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0])
    rng = np.random.default_rng(0)
    scores = plateau(fractions, 0.72, 0.41, 12.0) + rng.normal(0, 0.003, len(fractions))
    fit = fit_plateau(fractions, scores, target=0.9)
    assert fit.p_max == pytest.approx(0.72, abs=0.01)
    assert fit.p_0 == pytest.approx(0.41, abs=0.02)
    assert fit.k == pytest.approx(12.0, rel=0.15)
    assert fit.p_max_err is not None and fit.p_max_err < 0.01
    assert fit.target == 0.9 and 0 < fit.size_at_target < 1


def test_size_for_edges() -> None:
    assert size_for(0.8, 0.79, 1.0, 0.95) == 0.0  # already there with no data
    assert size_for(0.5, 0.6, 1.0, 0.95) == 0.0  # falling: the start is the best
    assert size_for(-0.2, -0.6, 1.0, 0.95) is None  # a share of a negative P_max is no goal
    assert size_for(0.8, 0.3, 0.0, 0.95) is None


def test_too_few_points_and_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="at least 3 points at distinct sizes"):
        fit_plateau([100, 200], [0.5, 0.6])
    with pytest.raises(InputDataError, match="at least 3 points"):
        fit_plateau([100, 100, 200, 200], [0.5, 0.51, 0.6, 0.61])
    with pytest.raises(InputDataError, match="target"):
        fit_plateau(SIZES, plateau(SIZES, *TRUE), target=1.5)
    bad = tmp_path / "m.csv"
    bad.write_text("rows,quality\n1,2\n")
    with pytest.raises(InputDataError, match="no score column"):
        fit_file(bad)
    with pytest.raises(InputDataError, match="not found"):
        fit_file(tmp_path / "missing.csv")


def test_readers_agree(tmp_path: Path) -> None:
    scores = plateau(SIZES, *TRUE)
    (tmp_path / "m.csv").write_text("n,accuracy\n" + "".join(f"{n},{s}\n" for n, s in zip(SIZES, scores, strict=True)))
    points = [{"size": float(n), "score": float(s)} for n, s in zip(SIZES, scores, strict=True)]
    (tmp_path / "m.json").write_text(json.dumps({"points": points}))
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(p) + "\n" for p in points))
    fits = [fit_file(tmp_path / f"m.{ext}") for ext in ("csv", "json", "jsonl")]
    assert all(f.k == pytest.approx(0.001, rel=1e-5) for f in fits)


def test_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    metrics = tmp_path / "m.csv"
    metrics.write_text("size,score\n" + "".join(f"{n},{plateau(n, *TRUE)}\n" for n in SIZES))
    result = runner.invoke(app, ["scaling", str(metrics), "--json"])
    assert result.exit_code == 0, result.output
    fit = json.loads(result.output)
    assert fit["p_max"] == pytest.approx(0.8, abs=1e-6) and fit["k"] == pytest.approx(0.001, rel=1e-5)
    table = runner.invoke(app, ["scaling", str(metrics), "--target", "0.9"])
    assert table.exit_code == 0 and "P_max" in table.output and "size at 0.9 x P_max" in table.output
    few = tmp_path / "few.csv"
    few.write_text("size,score\n1,0.5\n2,0.6\n")
    failed = runner.invoke(app, ["scaling", str(few)])
    assert failed.exit_code == InputDataError.exit_code
    assert "at least 3 points" in failed.stderr and "Traceback" not in failed.stderr


def test_cli_plot(tmp_path: Path) -> None:
    metrics = tmp_path / "m.csv"
    metrics.write_text("size,score\n" + "".join(f"{n},{plateau(n, *TRUE)}\n" for n in SIZES))
    png = tmp_path / "fit.png"
    result = CliRunner().invoke(app, ["scaling", str(metrics), "--json", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["p_max"] == pytest.approx(0.8, abs=1e-6)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
