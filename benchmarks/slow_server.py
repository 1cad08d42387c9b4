"""A slow OpenAI-compatible server: the openai backend's fixed concurrency vs its AIMD window (issue 18, item 12).

Server: curate's own test server (curate.llm.serve) over the tiny model of tests/tiny_llm.py, one request at a
time on the model, each working ``service_seconds`` first, so latency grows with the requests in flight as on
a saturated real server.  For ``--stretch`` seconds from the start it is slow (``--slow`` seconds per
request: with more than ``timeout / slow`` requests queued, the later ones cannot be answered in time), then
normal (``--normal``).  It abandons a request whose client hung up (``abort``: like vLLM's abort on
disconnect), or, with ``--no-abort`` runs as well, finishes every request like a server that never looks.

Client: the openai backend with ``concurrency`` 16, ``timeout`` 1 s, the default retries (5) and backoff, no
request cache; ``adaptive: false`` is the fixed concurrency of before (a slot held through retries and
backoff), ``adaptive: true`` the AIMD window.  Each run sends ``--prompts`` greedy requests.

Prints one JSON line per (client, server) pair: requests the client sent and the server received (a request
still in the server's accept queue when its client gives up is sent, never received), client timeouts,
requests the server abandoned / answered, the most in flight at the server, the run's seconds, whether it completed (or
the error), and the window's lowest size; the last line holds all of them.

Run as: flock /tmp/curate-bench.lock .venv/bin/python benchmarks/slow_server.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from curate.errors import ModelError
from curate.llm import Sampling, load_llm
from curate.llm.serve import OpenAICompatServer


def one_run(llm: Any, args: argparse.Namespace, adaptive: bool, abort: bool) -> dict[str, Any]:
    server = OpenAICompatServer(llm, service_seconds=args.slow, abort_on_disconnect=abort).start()
    client = load_llm({"backend": "openai", "base_url": server.base_url, "model": "tiny", "concurrency": 16,
                       "timeout": args.timeout, "cache": False, "adaptive": adaptive}, base_dir=Path("."))
    calm = threading.Event()

    def end_stretch() -> None:
        if not calm.wait(args.stretch):
            server.service_seconds = args.normal

    threading.Thread(target=end_stretch, daemon=True).start()
    prompts = [f"Question {i}: tell me about rivers and stones" for i in range(args.prompts)]
    t0 = time.perf_counter()
    error = None
    try:
        out = client.generate(prompts, Sampling(temperature=0.0, max_tokens=4))
        completed = len(out) == len(prompts) and all(row for row in out)
    except ModelError as e:
        completed, error = False, str(e)[:120]
    seconds = time.perf_counter() - t0
    calm.set()
    server.service_seconds = args.normal
    deadline = time.monotonic() + 120  # let the server finish (or drop) what it still holds, for its counts
    while server.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    server.stop()
    return {
        "benchmark": "slow_server", "adaptive": adaptive, "server_aborts_abandoned": abort,
        "prompts": args.prompts, "slow_s": args.slow, "stretch_s": args.stretch, "timeout_s": args.timeout,
        "requests_sent": client.http_requests, "requests_received": server.requests, "timeouts": client.timeouts,
        "abandoned_at_server": server.abandoned,
        "answered": server.answered, "max_in_flight_at_server": server.max_in_flight,
        "seconds": round(seconds, 2), "completed": completed, "error": error,
        "window_lowest": client.window.lowest if adaptive else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--slow", type=float, default=0.4, help="seconds per request during the stretch")
    parser.add_argument("--normal", type=float, default=0.01, help="seconds per request after it")
    parser.add_argument("--stretch", type=float, default=20.0, help="seconds the server is slow")
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--no-abort", action="store_true", help="also run against a server that never aborts")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_llm import build_tiny_llm

    with tempfile.TemporaryDirectory() as tmp:
        llm = load_llm({"backend": "transformers", "path": str(build_tiny_llm(Path(tmp) / "tiny")), "device": "cpu"})
        llm.generate(["warm up"], Sampling(temperature=0.0, max_tokens=2))
        results = []
        for abort in (True, False) if args.no_abort else (True,):
            for adaptive in (False, True):
                results.append(one_run(llm, args, adaptive, abort))
                print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"benchmark": "slow_server", "runs": results}))


if __name__ == "__main__":
    main()
