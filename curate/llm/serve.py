"""A small OpenAI-compatible HTTP server over any curate :class:`~curate.llm.base.LLM` (stdlib only).

Why it exists: the ``openai`` backend must be tested against a real server on 127.0.0.1 (retries, timeouts,
malformed bodies, the request cache), and a local model behind the OpenAI API is handy for trying a
recipe's HTTP path without a GPU server.  It serves ``POST /v1/completions``, ``POST /v1/chat/completions``
and ``GET /v1/models``; one request at a time reaches the model (models are not thread-safe).

Faults can be injected for tests: ``server.faults.extend(["500", "429", "timeout", "malformed", "drop"])``
makes the next requests fail that way, one fault per request, in order (also ``"slow"``: a late but good
answer, and ``"echo"``: a 400 whose message repeats the request's Authorization header).  ``server.requests`` counts the
requests that reached a POST endpoint (faulty ones included), so a test can assert "zero HTTP calls".

Run: ``python -m curate.llm.serve --path default --port 8000`` (spec keys as for ``load_llm``).
"""

from __future__ import annotations

import json
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
                 api_key: str | None = None, hang_seconds: float = 5.0, slow_seconds: float = 0.2) -> None:
        super().__init__((host, port), _Handler)
        self.llm = llm
        self.model_name = model_name
        self.api_key = api_key
        self.hang_seconds = hang_seconds
        self.slow_seconds = slow_seconds
        self.faults: deque[str] = deque()
        self.requests = 0
        #: Requests being handled now, and the most at once (tests check the client's concurrency bound).
        self.in_flight = 0
        self.max_in_flight = 0
        self.auth_headers: list[str | None] = []
        self._lock = threading.Lock()
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

    def run_model(self, fn: Any, *args: Any) -> Any:
        with self._lock:
            return fn(*args)


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

    def do_POST(self) -> None:
        srv = self.server
        with srv._lock:
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        self._counted = True
        try:
            self._post()
        finally:
            self._leave_in_flight()

    def _post(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.server.auth_headers.append(self.headers.get("Authorization"))
        fault = self.server.next_fault()
        if fault == "timeout":
            time.sleep(self.server.hang_seconds)
            return self._json(200, {"error": "too late"})
        if fault == "slow":  # answers normally, late (overlapping requests for concurrency tests)
            time.sleep(self.server.slow_seconds)
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
                return self._json(200, self._chat(body))
            if path.endswith("/completions"):
                return self._json(200, self._completions(body))
        except (KeyError, TypeError, ValueError) as e:
            return self._json(400, {"error": {"message": f"bad request: {e}"}})
        return self._json(404, {"error": {"message": f"no route {self.path}"}})

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        k = int(body.get("top_logprobs") or 1) if body.get("logprobs") else None
        sampling = _sampling(body, k)
        gens = self.server.run_model(self.server.llm.chat, [body["messages"]], sampling)[0]
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
        results = self.server.run_model(self.server.llm.generate, list(prompts), sampling)
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
