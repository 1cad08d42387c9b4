"""The openai backend against a real OpenAI-compatible server on 127.0.0.1 (curate.llm.serve over the tiny
model): parity with the local model, retries under injected faults, the request cache, and the API key
never leaking into logs, errors or reprs."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from curate.errors import ModelError
from curate.llm import Sampling, load_llm
from curate.llm.openai import OpenAIBackend
from curate.llm.serve import OpenAICompatServer

GREEDY = Sampling(temperature=0.0, max_tokens=8)
CONV = [{"role": "user", "content": "Hello there!"}]
SECRET = "sk-test-SECRET-0123456789"


@pytest.fixture(scope="module")
def local(tiny_llm_path: Path):
    return load_llm({"backend": "transformers", "path": str(tiny_llm_path)})


@pytest.fixture(scope="module")
def server(local):
    srv = OpenAICompatServer(local, hang_seconds=3.0).start()
    yield srv
    srv.stop()


@pytest.fixture()
def client(server: OpenAICompatServer, tmp_path: Path):
    server.faults.clear()

    def make(**spec) -> OpenAIBackend:
        base = {"backend": "openai", "base_url": server.base_url, "model": "tiny", "backoff": 0.01,
                "timeout": 2.0, "max_retries": 4, "cache_dir": str(tmp_path / "cache")}
        return load_llm({**base, **spec}, base_dir=tmp_path)

    return make


def test_matches_the_local_model(client, local, server) -> None:
    llm = client()
    prompts = ["Hi", "Write a short poem about the sea."]
    assert [r[0].text for r in llm.generate(prompts, GREEDY)] == [r[0].text for r in local.generate(prompts, GREEDY)]
    assert llm.chat([CONV], GREEDY)[0][0].text == local.chat([CONV], GREEDY)[0][0].text
    out = llm.chat([CONV, CONV], Sampling(temperature=1.0, max_tokens=6, n=2, seed=3, logprobs=2))
    assert [len(row) for row in out] == [2, 2]
    g = out[0][0]
    assert g.logprobs is not None and len(g.logprobs) == g.tokens and all(len(d) <= 2 for d in g.logprobs)
    comp = llm.generate(["Hi"], Sampling(temperature=0.0, max_tokens=5, logprobs=3))[0][0]
    assert comp.logprobs == local.generate(["Hi"], Sampling(temperature=0.0, max_tokens=5, logprobs=3))[0][0].logprobs


def test_retries_injected_faults(client, server) -> None:
    llm = client(cache=False)
    before = server.requests
    server.faults.extend(["500", "429", "malformed", "drop"])
    out = llm.generate(["Hi"], GREEDY)
    assert out[0][0].tokens > 0
    assert server.requests - before == 5  # four failures, then the answer


def test_timeout_is_retried(client, server) -> None:
    llm = client(cache=False, timeout=1.0)  # generous beside a real answer on a loaded CI machine
    before = server.requests
    server.faults.append("timeout")  # the server sleeps 3 s on this one
    assert llm.chat([CONV], GREEDY)[0][0].tokens > 0
    assert server.requests - before == 2


def test_gives_up_after_max_retries(client, server) -> None:
    llm = client(cache=False, max_retries=2)
    server.faults.extend(["503", "503", "503", "503"])
    with pytest.raises(ModelError, match="failed after 3 tries: HTTP 503"):
        llm.generate(["Hi"], GREEDY)
    server.faults.clear()


def test_client_errors_are_not_retried(client, server) -> None:
    llm = client(cache=False)
    before = server.requests
    server.faults.append("400")
    with pytest.raises(ModelError, match="HTTP 400"):
        llm.generate(["Hi"], GREEDY)
    assert server.requests - before == 1


def test_concurrency_is_bounded(client, server) -> None:
    deadline = time.monotonic() + 10
    while server.in_flight and time.monotonic() < deadline:  # hung handlers of earlier fault tests
        time.sleep(0.05)
    server.max_in_flight = 0
    server.faults.extend(["slow"] * 6)  # late answers, so requests overlap as far as the client lets them
    llm = client(cache=False, concurrency=2, timeout=5.0)
    out = llm.generate([f"prompt {i}" for i in range(6)], GREEDY)
    assert len(out) == 6 and server.max_in_flight == 2


def test_cache_second_run_makes_no_http_call(client, server) -> None:
    prompts = [f"prompt number {i}" for i in range(6)]
    first = client(concurrency=3).generate(prompts, GREEDY)
    before = server.requests
    again = client(concurrency=3)  # a new backend object: a resumed run, same cache folder
    assert again.generate(prompts, GREEDY) == first
    assert server.requests == before and again.http_requests == 0 and again.cache_hits == 6
    # A different request (other sampling) is not served from the cache.
    again.generate(prompts[:1], Sampling(temperature=0.0, max_tokens=9))
    assert server.requests == before + 1


def test_api_key_never_leaks(client, server, monkeypatch, caplog) -> None:
    monkeypatch.setenv("CURATE_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    llm = client(api_key_env="CURATE_TEST_KEY", cache=False, max_retries=1)
    server.api_key = SECRET
    try:
        assert llm.generate(["Hi"], GREEDY)[0][0].tokens > 0
        assert server.auth_headers[-1] == f"Bearer {SECRET}"  # it is sent...
        server.faults.extend(["500", "500", "echo"])  # ...but never logged or shown, even when echoed back
        with pytest.raises(ModelError) as e1:
            llm.generate(["Hi"], GREEDY)
        with pytest.raises(ModelError) as e2:
            llm.generate(["Hi"], GREEDY)
        server.api_key = "another-key"
        with pytest.raises(ModelError, match="HTTP 401") as e3:
            llm.generate(["Hi"], GREEDY)
    finally:
        server.api_key = None
        server.faults.clear()
    assert "***" in str(e2.value)  # the echoed key was scrubbed
    for text in (str(e1.value), str(e2.value), str(e3.value), repr(e2.value), caplog.text, repr(llm), llm.name):
        assert SECRET not in text
    assert "CURATE_TEST_KEY" in repr(llm)


def test_missing_key_variable(client, monkeypatch) -> None:
    monkeypatch.delenv("CURATE_NO_SUCH_KEY", raising=False)
    with pytest.raises(ModelError, match="CURATE_NO_SUCH_KEY"):
        client(api_key_env="CURATE_NO_SUCH_KEY")


def test_render_needs_a_local_tokenizer(client, local, tiny_llm_path: Path) -> None:
    with pytest.raises(ModelError, match="tokenizer"):
        client().render(CONV)
    llm = client(tokenizer=str(tiny_llm_path), endpoint="completions")
    assert llm.render(CONV) == local.render(CONV)
    assert llm.chat([CONV], GREEDY)[0][0].text == local.chat([CONV], GREEDY)[0][0].text


def test_unreachable_server(tmp_path: Path) -> None:
    llm = load_llm({"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x", "max_retries": 1,
                    "backoff": 0.01, "cache": False})
    with pytest.raises(ModelError, match="connection failed"):
        llm.generate(["Hi"], GREEDY)
