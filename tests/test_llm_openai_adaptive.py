"""The openai backend against an overloaded OpenAI-compatible server on 127.0.0.1 (curate.llm.serve over the
tiny model): the AIMD window halves on timeouts and grows back on answers, a timed-out request is abandoned
(the server sees the connection close and stops its work), and the run completes with the answers a calm
server gives (issue 18, item 12).  Assertions are on counts the server records, never on wall time; the
timeouts are generous beside a real answer on a loaded machine."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from curate.errors import ModelError
from curate.llm import Sampling, load_llm
from curate.llm.openai import AIMDWindow, OpenAIBackend
from curate.llm.serve import OpenAICompatServer

PROMPTS = [f"Question {i}: tell me about rivers and stones" for i in range(40)]


@pytest.fixture(scope="module")
def local(tiny_llm_path: Path):
    return load_llm({"backend": "transformers", "path": str(tiny_llm_path)})


def serve(local, **kw) -> OpenAICompatServer:
    return OpenAICompatServer(local, hang_seconds=120.0, slow_seconds=0.5, **kw).start()


def client(server: OpenAICompatServer, tmp_path: Path, **spec) -> OpenAIBackend:
    # 10 s: far above a real answer with 8 queued on the serial model of a loaded machine (an answer timing out
    # would add a timeout and a halving the counts below do not expect); the hung requests cost that once.
    base = {"backend": "openai", "base_url": server.base_url, "model": "tiny", "backoff": 0.01, "timeout": 10.0,
            "max_retries": 4, "concurrency": 8, "cache": False}
    return load_llm({**base, **spec}, base_dir=tmp_path)


def wait_idle(server: OpenAICompatServer) -> None:
    """Until the server has let go of every request (its handlers end shortly after their clients)."""
    deadline = time.monotonic() + 60
    while server.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)


def test_window_halves_once_per_event_and_grows_by_one_per_window() -> None:
    w = AIMDWindow(8)
    sent = w.epoch
    w.congestion(sent)
    for _ in range(7):  # the other requests sent with it fail too: the same event, no further halving
        w.congestion(sent)
    assert (w.size(), w.lowest) == (4, 4)
    w.congestion(w.epoch)  # a request sent after the halving times out: a new event
    assert w.size() == 2
    for _ in range(2):
        w.success()
    assert w.size() == 3  # one window's worth of answers (2) grows it by one
    for _ in range(3 + 4 + 5 + 6):
        w.success()
    assert w.size() == 7
    for _ in range(100):
        w.success()
    assert w.size() == 8 == w.ceiling and w.lowest == 2


@pytest.mark.slow
def test_timeouts_shrink_the_concurrency_the_server_sees_and_answers_grow_it_back(local, tmp_path: Path) -> None:
    """The first 8 requests hang (all 8 slots); they time out together.  Adaptive: one halving, so the
    retries and the 32 other requests reach the server at most 4 at a time until answers grow the window
    back.  Fixed (adaptive: false): the 8 retries go out at once.  Both complete with the calm answers."""
    seeds = tuple(range(100, 100 + len(PROMPTS)))
    sampling = Sampling(temperature=1.0, max_tokens=6, seed=seeds)
    calm = [[g.text for g in row] for row in local.generate(PROMPTS, sampling)]
    seen = {}
    for adaptive in (True, False):
        server = serve(local)
        try:
            server.faults.extend(["timeout"] * 8 + ["slow"] * 32)
            llm = client(server, tmp_path, adaptive=adaptive)
            out = llm.generate(PROMPTS, sampling)
            assert [[g.text for g in row] for row in out] == calm  # complete and identical
            assert llm.timeouts == 8 and server.requests == 48 and server.answered == 40
            wait_idle(server)
            assert server.abandoned == 8  # each hung request stopped when its client hung up
            seen[adaptive] = (list(server.answering_at_arrival), llm.window)
        finally:
            server.stop()
    arrivals, window = seen[True]
    # Up to the 4th answer the window is 4: the first 7 arrivals find at most 4 requests being answered.
    assert max(arrivals[:7]) <= 4 and window.lowest == 4
    assert window.size() == 8  # 40 answers grew it back to the ceiling
    assert max(arrivals[7:]) > 4  # and the server saw the larger window
    fixed, _ = seen[False]
    assert max(fixed[:7]) > 4  # without the window, the 8 retries arrive together


def test_a_timed_out_request_is_abandoned_by_the_server(local, tmp_path: Path) -> None:
    """A request slower than the timeout: the client closes the connection, and the server, watching it,
    stops working on it instead of finishing an answer nobody reads."""
    server = serve(local, service_seconds=120.0)
    try:
        llm = client(server, tmp_path, timeout=1.5, max_retries=0)
        with pytest.raises(ModelError, match="failed after 1 tries: timed out"):
            llm.generate(["Hi"], Sampling(temperature=0.0, max_tokens=4))
        wait_idle(server)
        assert (server.requests, server.abandoned, server.answered, server.in_flight) == (1, 1, 0, 0)
        assert llm.timeouts == 1 and llm.window.size() == 4
    finally:
        server.stop()


def test_adaptive_is_a_spec_option(local, tmp_path: Path) -> None:
    server = serve(local)
    try:
        assert client(server, tmp_path).adaptive is True
        assert client(server, tmp_path, adaptive=False).adaptive is False
    finally:
        server.stop()
