"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public datasets in ``../shared/data`` (read in place, never copied); skips when absent."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_llm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama model folder with a ChatML template (tests/tiny_llm.py); built once per session."""
    from tiny_llm import CHATML, build_tiny_llm  # tests/ is on sys.path (pytest rootdir-relative import)

    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm") / "chatml", chat_template=CHATML)


@pytest.fixture(scope="session")
def tiny_llm_builder(tmp_path_factory: pytest.TempPathFactory):
    """``builder(chat_template: str) -> Path``: a tiny model folder per chat template, built once per session."""
    import hashlib

    from tiny_llm import build_tiny_llm

    root = tmp_path_factory.mktemp("tiny_llms")

    def builder(chat_template: str) -> Path:
        name = hashlib.sha1(chat_template.encode()).hexdigest()[:12]
        return build_tiny_llm(root / name, chat_template=chat_template)

    return builder


@pytest.fixture(scope="session")
def encoder():
    """The bundled all-MiniLM-L6-v2 encoder, loaded once per test session for every embedding test."""
    from curate.embed import DEFAULT_SPEC, load_encoder

    return load_encoder(dict(DEFAULT_SPEC))
