"""The ``openai`` backend: any OpenAI-compatible server (vLLM, SGLang, llama.cpp, a hosted API).

Why it looks like this:

* One request per prompt, all in flight together under a bound (``concurrency``): servers batch
  concurrent requests themselves, and per-prompt requests make the cache and retries per prompt.
* Requests go out from a thread pool driven by asyncio (stdlib ``urllib``: no extra dependency); each has
  a timeout, and 429 / 5xx / timeouts / dropped connections / malformed bodies are retried with
  exponential backoff and jitter (``Retry-After`` honoured).  Other 4xx fail at once: retrying a bad
  request only costs money.
* Adaptive concurrency (AIMD, as TCP's congestion window, Jacobson 1988; ``adaptive: false`` turns it
  off): ``concurrency`` is the ceiling, and the backend's window of requests in flight halves on a timeout,
  a 429 or a 5xx (once per congestion event: a failure of a request sent before the last halving does not
  halve again) and grows back by one after each window's worth of successes.  A try holds a slot only while
  it is in flight, never through its backoff.  Against a server slower than the timeout, a fixed
  concurrency keeps every slot timing out and retrying until the tries run out; the window shrinks until
  the server answers in time, then grows back (``benchmarks/slow_server.py`` measures both).
* A request that times out is abandoned by closing its connection (urllib closes the socket on a
  timeout), the one cancellation HTTP/1.1 has: a server that watches its connections (vLLM aborts a
  request whose client disconnected; so does ``curate.llm.serve``) stops the work instead of finishing an
  answer nobody reads.
* Every successful response is stored on disk under the SHA-256 of the request's content (URL path +
  JSON body, never the key), so a resumed or repeated run never pays for the same request twice.
* The API key is read from the environment variable the recipe names (``api_key_env``), held privately,
  and scrubbed from every error message; reprs and the manifest show the variable's name only.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import os
import random
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from curate.errors import ModelError
from curate.llm._common import check_options
from curate.llm.base import Conversation, Generation, Sampling
from curate.progress import model_call

log = logging.getLogger(__name__)

_KEYS = ("base_url", "model", "api_key_env", "endpoint", "concurrency", "timeout", "max_retries", "backoff",
         "max_backoff", "cache_dir", "cache", "tokenizer", "chat_template", "name", "adaptive")


class _Retryable(Exception):
    """A failure worth another try (429, 5xx, timeout, dropped connection, malformed body); ``congestion``:
    the server says it is overloaded (timeout, 429, 5xx), which shrinks the adaptive window."""

    def __init__(self, message: str, retry_after: float | None = None, congestion: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.congestion = congestion


class AIMDWindow:
    """How many requests may be in flight to one server: additive increase, multiplicative decrease.

    Thread-safe and independent of any event loop, so it outlives a call: a stage's batches are successive
    calls, and a server that was overloaded in one batch starts the next at the window it had reached.
    """

    def __init__(self, ceiling: int) -> None:
        self.ceiling = max(1, int(ceiling))
        self.limit = float(self.ceiling)
        #: Halvings so far; a try remembers the epoch it was sent in (one halving per congestion event).
        self.epoch = 0
        self.lowest = self.ceiling
        self._successes = 0
        self._lock = threading.Lock()

    def size(self) -> int:
        return max(1, int(self.limit))

    def congestion(self, sent_epoch: int) -> None:
        """A try sent in ``sent_epoch`` met a timeout / 429 / 5xx: halve, unless a halving already followed
        its sending (the requests in flight together fail together; one event, one halving)."""
        with self._lock:
            if sent_epoch != self.epoch:
                return
            self.limit = max(1.0, self.limit / 2)
            self.epoch += 1
            self._successes = 0
            self.lowest = min(self.lowest, self.size())

    def success(self) -> None:
        """One answer: after a window's worth of them (one round trip), the window grows by one."""
        with self._lock:
            if self.limit >= self.ceiling:
                return
            self._successes += 1
            if self._successes >= self.size():
                self.limit = min(float(self.ceiling), float(self.size() + 1))
                self._successes = 0


class _Gate:
    """Admission of one call's tries under the window: a try waits until fewer than ``window.size()`` of this
    call's tries are in flight."""

    def __init__(self, window: AIMDWindow) -> None:
        self.window = window
        self.in_flight = 0
        self._cond = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < self.window.size())
            self.in_flight += 1

    async def release(self) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()


class OpenAIBackend:
    """LLM protocol over an OpenAI-compatible HTTP API.

    ``endpoint``: ``chat`` (default) sends ``chat()`` to ``/chat/completions``; ``completions`` renders
    conversations locally (needs ``tokenizer``) and sends them to ``/completions``.  ``generate()`` always
    uses ``/completions`` (raw prompts).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        endpoint: str = "chat",
        concurrency: int = 16,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        cache_dir: Path | None = None,
        tokenizer: Path | None = None,
        chat_template: str | None = None,
        name: str | None = None,
        adaptive: bool = True,
    ) -> None:
        if endpoint not in ("chat", "completions"):
            raise ModelError(f"openai backend: endpoint must be 'chat' or 'completions', not {endpoint!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self._api_key: str | None = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ModelError(f"openai backend: environment variable {api_key_env} (api_key_env) is not set")
            self._api_key = key
        self.endpoint = endpoint
        self.concurrency = max(1, int(concurrency))
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._tokenizer_path = tokenizer
        self._chat_template = chat_template
        self._tokenizer: Any = None
        self.name = name or f"openai:{self.base_url}/{model}"
        #: ``False``: a fixed ``concurrency`` whose slots are held through retries and backoff (the behaviour
        #: before the adaptive window; kept for comparison and for servers that never overload).
        self.adaptive = bool(adaptive)
        self.window = AIMDWindow(self.concurrency)
        #: Requests sent over the network / answered from the cache, tries that timed out (for the manifest,
        #: tests and benchmarks/slow_server.py).
        self.http_requests = 0
        self.cache_hits = 0
        self.timeouts = 0
        self._count_lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: dict[str, Any], base_dir: Path, cache_dir: Path | None = None) -> OpenAIBackend:
        check_options("openai", spec, _KEYS)
        if not spec.get("base_url") or not spec.get("model"):
            raise ModelError("openai backend needs base_url: and model: in its spec")
        cache: Path | None = None
        if spec.get("cache", True):
            if spec.get("cache_dir"):
                cache = _rel(spec["cache_dir"], base_dir)
            elif cache_dir is not None:
                cache = Path(cache_dir) / "openai"
            else:
                xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
                cache = Path(xdg) / "curate" / "openai"
        tok = spec.get("tokenizer")
        return cls(
            str(spec["base_url"]),
            str(spec["model"]),
            api_key_env=spec.get("api_key_env"),
            endpoint=str(spec.get("endpoint", "chat")),
            concurrency=int(spec.get("concurrency", 16)),
            timeout=float(spec.get("timeout", 60.0)),
            max_retries=int(spec.get("max_retries", 5)),
            backoff=float(spec.get("backoff", 0.5)),
            max_backoff=float(spec.get("max_backoff", 30.0)),
            cache_dir=cache,
            tokenizer=_rel(tok, base_dir) if tok else None,
            chat_template=spec.get("chat_template"),
            name=spec.get("name"),
            adaptive=bool(spec.get("adaptive", True)),
        )

    def __repr__(self) -> str:
        key = f", api_key_env={self.api_key_env!r}" if self.api_key_env else ""
        return f"OpenAIBackend({self.base_url!r}, model={self.model!r}{key})"

    # -- protocol -------------------------------------------------------------------------------------
    def render(self, conversation: Conversation, add_generation_prompt: bool = True) -> str:
        if self._tokenizer is None:
            if self._tokenizer_path is None:
                raise ModelError(
                    f"{self.name}: rendering a chat template needs a local tokenizer; set tokenizer: <folder> "
                    "(the served model's tokenizer files) in the model's spec"
                )
            from curate.llm._common import offline_hub

            offline_hub()
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self._tokenizer_path), local_files_only=True)
            if self._chat_template:
                self._tokenizer.chat_template = self._chat_template
        return self._tokenizer.apply_chat_template(
            [dict(m) for m in conversation], tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[Generation]]:
        seeds = sampling.seeds(len(prompts))
        bodies = [{**self._common(sampling, seed, chat=False), "prompt": p}
                  for p, seed in zip(prompts, seeds, strict=True)]
        return self._run("/completions", bodies, sampling, chat=False)

    def chat(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[list[Generation]]:
        if self.endpoint == "completions":
            return self.generate([self.render(c) for c in conversations], sampling)
        seeds = sampling.seeds(len(conversations))
        bodies = [{**self._common(sampling, seed, chat=True), "messages": [dict(m) for m in c]}
                  for c, seed in zip(conversations, seeds, strict=True)]
        return self._run("/chat/completions", bodies, sampling, chat=True)

    # -- requests -------------------------------------------------------------------------------------
    def _common(self, sampling: Sampling, seed: int | None, chat: bool) -> dict[str, Any]:
        """The request body without its prompt; ``seed``: this request's own (its row's) seed."""
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "n": sampling.n,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if seed is not None:
            body["seed"] = seed
        if sampling.logprobs:
            if chat:
                body["logprobs"] = True
                body["top_logprobs"] = sampling.logprobs
            else:
                body["logprobs"] = sampling.logprobs
        return body

    def _run(self, path: str, bodies: list[dict[str, Any]], sampling: Sampling, chat: bool) -> list[list[Generation]]:
        if not bodies:
            return []
        responses = _run_coroutine(self._gather(path, bodies))
        return [self._parse(r, sampling, chat) for r in responses]

    async def _gather(self, path: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        sem = asyncio.Semaphore(self.concurrency)
        gate = _Gate(self.window) if self.adaptive else None
        loop = asyncio.get_running_loop()
        workers = min(self.concurrency, len(bodies))
        with (ThreadPoolExecutor(max_workers=workers, thread_name_prefix="curate-http") as ex,
              model_call(self, len(bodies)) as call):  # progress per request; tokens of the requests paid for

            async def one(body: dict[str, Any]) -> dict[str, Any]:
                key = _request_key(path, body)
                cached = self._cache_get(key)
                if cached is not None:
                    with self._count_lock:
                        self.cache_hits += 1
                    call.done(1, cached=True)
                    return cached
                if gate is not None:
                    resp = await self._with_retries(loop, ex, path, body, gate)
                else:
                    async with sem:  # fixed concurrency: the slot is held through every try and backoff
                        resp = await self._with_retries(loop, ex, path, body, None)
                self._cache_put(key, resp)
                usage = resp.get("usage") or {}
                call.done(1, tokens_in=int(usage.get("prompt_tokens") or 0),
                          tokens_out=int(usage.get("completion_tokens") or 0))
                return resp

            return list(await asyncio.gather(*(one(b) for b in bodies)))

    async def _with_retries(self, loop: Any, ex: ThreadPoolExecutor, path: str, body: dict[str, Any],
                            gate: _Gate | None) -> dict:
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                if gate is None:
                    return await loop.run_in_executor(ex, self._post, path, body)
                await gate.acquire()
                sent_in = self.window.epoch
                try:
                    resp = await loop.run_in_executor(ex, self._post, path, body)
                except _Retryable as e:
                    if e.congestion:
                        self.window.congestion(sent_in)
                    raise
                finally:
                    await gate.release()  # before the backoff: a waiting try holds no slot
                self.window.success()
                return resp
            except _Retryable as e:
                last = str(e)
                if attempt == self.max_retries:
                    break
                delay = min(self.max_backoff, self.backoff * (2**attempt)) * (0.5 + random.random() / 2)
                if e.retry_after is not None:
                    delay = max(delay, min(self.max_backoff, e.retry_after))
                log.warning("%s: %s; retry %d/%d in %.2fs", self.name, self._scrub(last), attempt + 1,
                            self.max_retries, delay)
                await asyncio.sleep(delay)
        raise ModelError(self._scrub(f"{self.name}: {path} failed after {self.max_retries + 1} tries: {last}"))

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One HTTP POST; returns the parsed JSON or raises ``_Retryable`` / ``ModelError``."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers, method="POST")
        with self._count_lock:
            self.http_requests += 1
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = _error_detail(e)
            if e.code == 429 or e.code >= 500:
                raise _Retryable(f"HTTP {e.code}: {detail}", _retry_after(e), congestion=True) from None
            raise ModelError(self._scrub(f"{self.name}: {path} answered HTTP {e.code}: {detail}")) from None
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            # urllib closed the connection before raising: the abandoned request's server may stop its work.
            reason = getattr(e, "reason", e)
            if isinstance(e, TimeoutError) or isinstance(reason, (TimeoutError, socket.timeout)):
                with self._count_lock:
                    self.timeouts += 1
                raise _Retryable(f"timed out after {self.timeout:g}s", congestion=True) from None
            raise _Retryable(f"connection failed: {reason}") from None
        try:
            parsed = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Retryable(f"malformed response body ({len(raw)} bytes, not JSON)") from None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("choices"), list) or not parsed["choices"]:
            raise _Retryable("malformed response body (no choices)")
        return parsed

    def _parse(self, resp: dict[str, Any], sampling: Sampling, chat: bool) -> list[Generation]:
        choices = sorted(resp["choices"], key=lambda c: c.get("index", 0))
        usage = resp.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        out: list[Generation] = []
        for c in choices:
            if chat:
                text = ((c.get("message") or {}).get("content")) or ""
                lp_obj = c.get("logprobs") or {}
                content = lp_obj.get("content") if isinstance(lp_obj, dict) else None
                lps = (
                    [{t["token"]: float(t["logprob"]) for t in (item.get("top_logprobs") or [])} for item in content]
                    if content is not None and sampling.logprobs
                    else None
                )
            else:
                text = c.get("text") or ""
                lp_obj = c.get("logprobs") or {}
                top = lp_obj.get("top_logprobs") if isinstance(lp_obj, dict) else None
                lps = [{k: float(v) for k, v in (d or {}).items()} for d in top] if top is not None else None
                if not sampling.logprobs:
                    lps = None
            # usage counts all n choices together; logprobs give exact per-choice counts when present.
            tokens = len(lps) if lps is not None else round(completion / max(1, len(choices)))
            finish = "length" if c.get("finish_reason") == "length" else "stop"
            out.append(Generation(text=text, tokens=tokens, finish_reason=finish, logprobs=lps,
                                  prompt_tokens=prompt_tokens))
        return out

    # -- cache ----------------------------------------------------------------------------------------
    def _cache_path(self, key: str) -> Path | None:
        return self.cache_dir / key[:2] / f"{key}.json" if self.cache_dir is not None else None

    def _cache_get(self, key: str) -> dict[str, Any] | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # a torn or corrupt entry is simply re-requested

    def _cache_put(self, key: str, resp: dict[str, Any]) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(resp))
        os.replace(tmp, path)  # atomic: a killed run never leaves a half-written entry

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


def _request_key(path: str, body: dict[str, Any]) -> str:
    """Content hash of a request: what is asked (endpoint path + body), not where or with which key."""
    return hashlib.sha256((path + "\n" + json.dumps(body, sort_keys=True, ensure_ascii=False)).encode()).hexdigest()


def _error_detail(e: urllib.error.HTTPError) -> str:
    try:
        raw = e.read()[:500].decode("utf-8", "replace")
    except Exception:  # the body is only for the message
        return str(e.reason)
    try:
        obj = json.loads(raw)
        msg = obj.get("error", obj) if isinstance(obj, dict) else obj
        if isinstance(msg, dict):
            msg = msg.get("message", msg)
        return str(msg)[:300]
    except json.JSONDecodeError:
        return raw[:300]


def _retry_after(e: urllib.error.HTTPError) -> float | None:
    value = e.headers.get("Retry-After") if e.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _run_coroutine(coro: Any) -> Any:
    """Run ``coro`` to completion from sync code, also when the caller already runs an event loop
    (a notebook): then it runs on a fresh loop in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    # In the caller's context: the progress of the batch it computes (curate.progress) follows the requests.
    t = threading.Thread(target=contextvars.copy_context().run, args=(target,), name="curate-http-loop")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _rel(path: str | Path, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (Path(base_dir) / p).resolve()

