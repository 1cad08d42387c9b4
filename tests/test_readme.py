"""Every README code block runs as written, top to bottom, in a scratch copy of the files it needs.

- ``console`` blocks: each ``$ command`` runs in bash (the venv's ``curate`` first on PATH) in the scratch
  folder; the lines printed under it in the README must appear in its output, in order, up to whitespace and
  timings (``0.05s``); an ``...`` line elides rows.  A command whose README output is an ``error:`` line must
  fail; every other command must exit 0.
- ``python`` blocks: each runs as a script in a subprocess in the same folder, after the console blocks above
  it (the ``datasets`` example reads the run a console block made), and must exit 0.
- ``bash`` blocks are not run: they are ``make`` targets (the install and the whole suite), a crontab line,
  Ray cluster commands and the command synopsis.  ``yaml`` blocks are configuration, checked by the recipe
  tests.

Commands in :data:`SKIPPED` load a model and are not run here (each says which test covers it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: Model-heavy README commands (by their start), with the tests that run the same thing shrunk.
SKIPPED = {
    "curate run recipes/quickstart.yaml": "SmolLM2-135M writes, answers and judges (~85 s); tests/test_quickstart.py",
    "curate run recipes/audit.yaml": "MiniLM encodes 208 rows and two benchmarks (~35 s); tests/test_audit.py",
    "curate run recipes/translate.yaml": "SmolLM2-135M translates; tests/test_translate.py",
    "curate train": "trains a model; tests/test_train.py",
}
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(README.read_text(encoding="utf-8"))]


def _norm(line: str) -> str:
    line = re.sub(r"\b\d+\.\d+s\b", "<s>", line)
    return " ".join(line.split())


def _commands(body: str) -> list[tuple[str, list[str]]]:
    """``(command, expected output lines)`` of a console block."""
    out: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            out.append((line[2:].strip(), []))
        elif out and line.strip() and line.strip() != "...":
            out[-1][1].append(line)
    return out


def _skipped(command: str) -> bool:
    return any(command.startswith(prefix) for prefix in SKIPPED)


def _check_output(command: str, expected: list[str], printed: str) -> None:
    got = [_norm(t) for t in printed.splitlines()]
    position = 0
    for line in expected:
        want = _norm(line)
        try:
            position = got.index(want, position) + 1
        except ValueError:
            pytest.fail(f"README `$ {command}` shows\n  {line}\nbut it printed:\n{printed}")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    for name in ("recipes", "sample_data"):
        shutil.copytree(ROOT / name, folder / name)
    return folder


def _env(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({"HF_DATASETS_CACHE": str(folder / ".hf"), "HF_HUB_OFFLINE": "1", "COLUMNS": "120",
                "TQDM_DISABLE": "1", "PYTHONWARNINGS": "error::UserWarning"})
    return env


def test_readme_lists_the_blocks_it_skips() -> None:
    commands = [c for kind, body in blocks() if kind == "console" for c, _ in _commands(body)]
    assert all(any(c.startswith(p) for c in commands) for p in SKIPPED), "a SKIPPED entry no longer in README"
    assert [kind for kind, _ in blocks() if kind == "python"], "no python block found"


@pytest.mark.slow
def test_readme_blocks_run_as_written(scratch: Path) -> None:
    env = _env(scratch)
    ran = 0
    for index, (kind, body) in enumerate(blocks()):
        if kind == "console":
            for command, expected in _commands(body):
                if _skipped(command):
                    continue
                done = subprocess.run(["bash", "-c", command], cwd=scratch, env=env, capture_output=True, text=True,
                                      timeout=300)
                printed = done.stdout + done.stderr
                failing = bool(expected) and expected[0].startswith("error:")
                assert (done.returncode != 0) == failing, f"`$ {command}` exited {done.returncode}:\n{printed}"
                _check_output(command, expected, printed)
                ran += 1
        elif kind == "python":
            script = scratch / f"readme_block_{index}.py"
            script.write_text(body, encoding="utf-8")
            done = subprocess.run([sys.executable, script.name], cwd=scratch, env=env, capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, f"README python block {index} failed:\n{body}\n{done.stdout}{done.stderr}"
            ran += 1
    assert ran >= 10
