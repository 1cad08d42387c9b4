"""A small OpenAI-compatible HTTP server over any curate :class:`~curate.llm.base.LLM` (stdlib only).

Why it exists: the ``openai`` backend must be tested against a real server on 127.0.0.1 (retries, timeouts,
malformed bodies, the request cache), and a local model behind the OpenAI API is handy for trying a
recipe's HTTP path without a GPU server.  It serves ``POST /v1/completions``, ``POST /v1/chat/completions``
and ``GET /v1/models``; one request at a time reaches the model (models are not thread-safe).

Faults can be injected for tests: ``server.faults.extend(["500", "429", "timeout", "malformed", "drop"])``
makes the next requests fail that way, one fault per request, in order (also ``"slow"``: a late but good
answer, and ``"echo"``: a 400 whose message repeats the request's Authorization header).  ``server.requests`` counts the
requests that reached a POST endpoint (faulty ones included), so a test can assert "zero HTTP calls".

Overload, for the adaptive-concurrency tests and ``benchmarks/slow_server.py``: ``server.service_seconds``
(settable while serving) is the time each request works while it holds the model, so requests queue and
the latency grows with the number in flight, as on a saturated real server.  A request whose client hung
up (the client's timeout closes the connection) is abandoned as soon as the server sees it, before or
during its work, like vLLM's abort on disconnect (``abort_on_disconnect=False`` finishes every request,
like a server that never looks).  Counts: ``abandoned``, ``answered`` (model answers sent), and
``answering_at_arrival``: for each request that will be answered (no fault, or ``"slow"``), how many such
requests were in flight when it arrived, which is the client's concurrency as the server sees it.


Run: ``python -m curate.llm.serve --path default --port 8000`` (spec keys as for ``load_llm``).
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from curate.llm.base import LLM, Generation, Sampling


class OpenAICompatServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` answering the OpenAI completions and chat APIs with ``llm``."""

    daemon_threads = True

    def __init__(self, llm: LLM, host: str = "127.0.0.1", port: int = 0, *, model_name: str = "curate-local",
                 api_key: str | None = None, hang_seconds: float = 5.0, slow_seconds: float = 0.2,
                 service_seconds: float = 0.0, abort_on_disconnect: bool = True) -> None:
        super().__init__((host, port), _Handler)
        self.llm = llm
        self.model_name = model_name
        self.api_key = api_key
        self.hang_seconds = hang_seconds
        self.slow_seconds = slow_seconds
        self.service_seconds = service_seconds
        self.abort_on_disconnect = abort_on_disconnect
        self.faults: deque[str] = deque()
        self.requests = 0
        #: Requests being handled now, and the most at once (tests check the client's concurrency bound).
        self.in_flight = 0
        self.max_in_flight = 0
        self.answering = 0
        self.answering_at_arrival: list[int] = []
        self.abandoned = 0
        self.answered = 0
        self.auth_headers: list[str | None] = []
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()  # one request at a time reaches the model
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> OpenAICompatServer:
        """Serve in a daemon thread (tests); returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="curate-openai-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet for clients that hung up (a client timeout is what the ``timeout`` fault provokes)."""
        import sys

        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)

    def next_fault(self) -> str | None:
        with self._lock:
            self.requests += 1
            return self.faults.popleft() if self.faults else None

    def run_model(self, handler: _Handler, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` after ``service_seconds`` of work, holding the model; raises ``_Abandoned`` when the
        client of ``handler`` hung up before the answer was ready (the work stops there)."""
        with self._model_lock:
            if not handler.work(self.service_seconds):
                raise _Abandoned
            return fn(*args)


class _Abandoned(Exception):
    """The client hung up before its answer was ready."""


def _sampling(body: dict[str, Any], logprobs: int | None) -> Sampling:
    stop = body.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    temperature = body.get("temperature")
    return Sampling(
        temperature=1.0 if temperature is None else float(temperature),
        top_p=float(body.get("top_p") or 1.0),
        max_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or 16),
        stop=tuple(stop),
        seed=body.get("seed"),
        n=int(body.get("n") or 1),
        logprobs=logprobs,
    )


def _usage(gens: list[Generation]) -> dict[str, int]:
    prompt = gens[0].prompt_tokens if gens else 0
    completion = sum(g.tokens for g in gens)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _Handler(BaseHTTPRequestHandler):
    server: OpenAICompatServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read their own logs
        return

    def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        # A request stops counting as in flight before its answer goes out: once the client has the
        # answer it may send its next request, which must not find this one still counted.
        self._leave_in_flight()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode())

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._json(200, {"object": "list", "data": [{"id": self.server.model_name, "object": "model"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def _leave_in_flight(self) -> None:
        if getattr(self, "_counted", False):
            self._counted = False
            with self.server._lock:
                self.server.in_flight -= 1
                if self._answering:
                    self.server.answering -= 1
                    self._answering = False

    def do_POST(self) -> None:
        srv = self.server
        with srv._lock:
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        self._counted = True
        self._answering = False
        try:
            self._post()
        except _Abandoned:
            with srv._lock:
                srv.abandoned += 1
            self.close_connection = True
        finally:
            self._leave_in_flight()

    def client_gone(self) -> bool:
        """Whether the client closed its connection (readable with nothing to read is end of stream)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def work(self, seconds: float) -> bool:
        """Spend ``seconds`` on this request; ``False`` as soon as its client hangs up (with
        ``abort_on_disconnect``), so an abandoned request costs the server no more work."""
        end = time.monotonic() + seconds
        if not self.server.abort_on_disconnect:
            time.sleep(max(0.0, seconds))
            return True
        if self.client_gone():
            return False
        while (left := end - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], left)
            if readable:
                if self.client_gone():
                    return False
                time.sleep(max(0.0, end - time.monotonic()))  # bytes of a next request: nothing to watch
                break
        return True

    def _post(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.server.auth_headers.append(self.headers.get("Authorization"))
        fault = self.server.next_fault()
        if fault in (None, "slow"):
            with self.server._lock:
                self.server.answering += 1
                self.server.answering_at_arrival.append(self.server.answering)
            self._answering = True
        if fault == "timeout":
            if not self.work(self.server.hang_seconds):
                raise _Abandoned
            return self._json(200, {"error": "too late"})
        if fault == "slow":  # answers normally, late (overlapping requests for concurrency tests)
            if not self.work(self.server.slow_seconds):
                raise _Abandoned
            fault = None
        if fault == "drop":
            self.close_connection = True
            return None
        if fault and fault.isdigit():
            return self._json(int(fault), {"error": {"message": f"injected {fault}"}})
        if fault == "echo":  # a server that echoes the request's credentials in its error (tests scrubbing)
            return self._json(400, {"error": {"message": f"bad auth {self.headers.get('Authorization')}"}})
        if fault == "malformed":
            return self._send(200, b'{"choices": [ this is not json')
        if self.server.api_key and self.headers.get("Authorization") != f"Bearer {self.server.api_key}":
            return self._json(401, {"error": {"message": "invalid api key"}})
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return self._json(400, {"error": {"message": "request body is not JSON"}})
        path = self.path.rstrip("/")
        try:
            if path.endswith("/chat/completions"):
                return self._answer(self._chat(body))
            if path.endswith("/completions"):
                return self._answer(self._completions(body))
        except (KeyError, TypeError, ValueError) as e:
            return self._json(400, {"error": {"message": f"bad request: {e}"}})
        return self._json(404, {"error": {"message": f"no route {self.path}"}})

    def _answer(self, payload: dict[str, Any]) -> None:
        with self.server._lock:
            self.server.answered += 1
        self._json(200, payload)

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        k = int(body.get("top_logprobs") or 1) if body.get("logprobs") else None
        sampling = _sampling(body, k)
        gens = self.server.run_model(self, self.server.llm.chat, [body["messages"]], sampling)[0]
        choices = []
        for i, g in enumerate(gens):
            choice: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": g.text},
                "finish_reason": g.finish_reason,
            }
            if g.logprobs is not None:
                choice["logprobs"] = {
                    "content": [
                        {
                            "token": max(d, key=d.get) if d else "",
                            "logprob": max(d.values()) if d else 0.0,
                            "top_logprobs": [{"token": t, "logprob": lp} for t, lp in d.items()],
                        }
                        for d in g.logprobs
                    ]
                }
            choices.append(choice)
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": self.server.model_name, "choices": choices, "usage": _usage(gens)}

    def _completions(self, body: dict[str, Any]) -> dict[str, Any]:
        prompts = body["prompt"]
        if isinstance(prompts, str):
            prompts = [prompts]
        k = body.get("logprobs")
        sampling = _sampling(body, int(k) if k else None)
        results = self.server.run_model(self, self.server.llm.generate, list(prompts), sampling)
        choices = []
        all_gens: list[Generation] = []
        for gens in results:
            for g in gens:
                choice: dict[str, Any] = {"index": len(choices), "text": g.text, "finish_reason": g.finish_reason}
                if g.logprobs is not None:
                    choice["logprobs"] = {
                        "tokens": [max(d, key=d.get) if d else "" for d in g.logprobs],
                        "token_logprobs": [max(d.values()) if d else 0.0 for d in g.logprobs],
                        "top_logprobs": g.logprobs,
                    }
                choices.append(choice)
                all_gens.append(g)
        return {"id": f"cmpl-{uuid.uuid4().hex[:12]}", "object": "text_completion", "created": int(time.time()),
                "model": self.server.model_name, "choices": choices, "usage": _usage(all_gens)}


def main(argv: list[str] | None = None) -> None:
    """``python -m curate.llm.serve --path default --port 8000``: serve a local model over the OpenAI API."""
    import argparse
    from pathlib import Path

    from curate.llm import load_llm

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--backend", default="transformers")
    parser.add_argument("--path", default="default")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model-name", default="curate-local")
    args = parser.parse_args(argv)
    llm = load_llm({"backend": args.backend, "path": args.path}, base_dir=Path("."))
    server = OpenAICompatServer(llm, args.host, args.port, model_name=args.model_name)
    print(f"serving {llm.name} at {server.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


if __name__ == "__main__":
    main()
