"""Progress inside model batches, and what the model calls used: requests, tokens, cost.

Why it exists: a model stage's unit of work and of resume is a batch (a cached shard; docs/architecture.md).
One batch of judge calls on a CPU takes minutes, so a bar that moves once per batch looks stuck, and a
scheduler reading ``curate run --log-json`` cannot tell a slow run from a hung one.  The LLM backends
(``curate.llm.hf``, ``openai``, ``vllm``) therefore report each request, or each micro-batch of rows, they
finish through :func:`model_call`; this module turns those reports into:

* a second bar line under the stage's row bar (a terminal run): ``judge: smollm (SmolLM2-135M)  11/64
  requests``, a short label (the stage, the model's handle and name; never a path);
* ``progress`` events (``curate run --log-json``) from a timer thread every ``CURATE_PROGRESS_SECONDS``
  seconds (default 30) while a batch is computed, so even one slow request shows the run is alive;
* usage per model (requests answered, answers from a backend's own request cache, tokens in and out), which
  :func:`metered` notes per stage around each batch's work (``curate.compute.LocalCompute.batches``):
  ``model_requests``, ``requests_cached``, ``tokens_in``, ``tokens_out``, and ``cost`` where the model's
  recipe entry gives a price:
  ``price_per_million: {input: 0.15, output: 0.6}`` (per million tokens, in your currency; tokens served
  from the request cache cost nothing and are not counted).

Nothing here is persisted: a batch stays the unit of resume, and the counts live in the stage's notes.
Under ``--executor ray`` the model calls run on the workers: the progress events here move per batch, and
each batch's usage is noted on its worker and travels back with it (``curate.distributed``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import RecipeError

log = logging.getLogger("curate")

#: Seconds between ``progress`` events while a batch is being computed (an env var, so a test can set 0.5).
INTERVAL_ENV = "CURATE_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0

_lock = threading.RLock()


# -- prices and usage ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Price:
    """Price per million tokens read (``input``: the prompt) and written (``output``: the completion)."""

    input: float = 0.0
    output: float = 0.0

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input + tokens_out * self.output) / 1_000_000


PRICE_KEY = "price_per_million"


def parse_price(handle: str, spec: Mapping[str, Any]) -> Price | None:
    """The ``price_per_million`` of a ``models:`` entry, or ``None``; a malformed one is a ``RecipeError``
    naming the entry (``models.HANDLE.price_per_million``) and the form it takes."""
    raw = spec.get(PRICE_KEY)
    if raw is None:
        return None
    where = f"models.{handle}.{PRICE_KEY}"
    form = "a mapping {input: X, output: Y} of prices per million tokens, e.g. {input: 0.15, output: 0.6}"
    if not isinstance(raw, Mapping) or not raw:
        raise RecipeError(f"{where}: expected {form}, got {raw!r}")
    unknown = sorted(str(k) for k in raw if k not in ("input", "output"))
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {form}")
    values = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise RecipeError(f"{where}.{key}: expected a number >= 0, got {value!r}")
        values[str(key)] = float(value)
    return Price(**values)


def without_price(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec a backend loads from and a cache key hashes: the price is bookkeeping, not the model."""
    return {k: v for k, v in spec.items() if k != PRICE_KEY}


@dataclass
class Usage:
    """What one model did: requests answered (``cached`` of them from a backend's request cache) and the
    tokens of the answered-by-the-model ones (cached answers cost nothing and are not counted)."""

    requests: int = 0
    cached: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    #: what those tokens cost at the model's ``price_per_million``; ``None``: the model has no price
    cost: float | None = None


@dataclass
class _Model:
    label: str
    price: Price | None = None


#: What :func:`name_model` learnt about each loaded model (weak: a model freed with its registry goes).
_models: weakref.WeakKeyDictionary[Any, _Model] = weakref.WeakKeyDictionary()
#: The usage of the batch being computed in this context, per model label (set by :func:`metered`).  A context
#: variable, not a global: asyncio tasks inherit it (the openai backend's requests count), threads that are
#: not the run's do not (an in-process server's own model calls are not the run's usage).
_meter: ContextVar[dict[str, Usage] | None] = ContextVar("curate_meter", default=None)
#: The batches a stage is going through in this context (set by :func:`iter_batches`).
_current: ContextVar[_Task | None] = ContextVar("curate_task", default=None)


def short_model_name(spec: Mapping[str, Any] | None, model: Any = None) -> str:
    """A model's name without its folder: the spec's ``name``, the served ``model`` of an HTTP backend, the
    folder or file name of ``path`` (``default``: the embedded SmolLM2 file's name), else the backend's own."""
    spec = spec or {}
    for raw in (spec.get("name"), spec.get("model") if spec.get("backend") == "openai" else None):
        if raw:
            return _base(str(raw))
    path = spec.get("path")
    if path is not None and str(path) == "default" and spec.get("backend") in (None, "transformers", "vllm"):
        try:
            from curate.llm._common import default_model_file

            return _base(str(default_model_file()))
        except Exception:  # the name is only a label
            return "SmolLM2-135M-Instruct"
    if path is not None and str(path) != "default":
        return _base(str(path))
    name = str(getattr(model, "name", "") or type(model).__name__)
    return _base(name.split(":", 1)[1] if re.match(r"^[a-z-]+:", name) else name)


def _base(text: str) -> str:
    name = Path(text.rstrip("/")).name or text
    return name[: -len(".gguf")] if name.endswith(".gguf") else name


def name_model(model: Any, handle: str, spec: Mapping[str, Any] | None = None) -> None:
    """Remember a loaded model's label (``handle (short name)``) and price; the registry calls this."""
    short = short_model_name(spec, model)
    label = handle if short == handle else f"{handle} ({short})"
    price = parse_price(handle, spec or {})
    with contextlib.suppress(TypeError):  # an object without weak references: default label, no price
        _models[model] = _Model(label, price)


def _known(model: Any) -> _Model:
    try:
        known = _models.get(model)
    except TypeError:
        known = None
    return known if known is not None else _Model(short_model_name(None, model))


def model_label(model: Any) -> str:
    return _known(model).label


def note_usage(ctx: Any, used: Mapping[str, Usage]) -> None:
    """Add ``used`` to the current stage's notes (``ctx.count``): requests, cached, tokens; cost when priced."""
    if not used:
        return
    ctx.count("model_requests", sum(u.requests for u in used.values()))
    ctx.count("requests_cached", sum(u.cached for u in used.values()))
    ctx.count("tokens_in", sum(u.tokens_in for u in used.values()))
    ctx.count("tokens_out", sum(u.tokens_out for u in used.values()))
    costs = [u.cost for u in used.values() if u.cost is not None]
    if costs:
        previous = ctx.stats.get(ctx.stage_label, {}).get("cost", 0.0)
        ctx.note("cost", round(previous + sum(costs), 9))


@contextmanager
def metered(ctx: Any) -> Iterator[None]:
    """Around one batch's work (``LocalCompute.batches``; Ray's workers too): name the batch's stage for the
    progress line, and note the model usage of the work in the stage's notes (:func:`note_usage`)."""
    task = _current.get()
    if task is not None:
        task.stage = str(getattr(ctx, "stage_label", task.stage))
    used: dict[str, Usage] = {}
    token = _meter.set(used)
    try:
        yield
    finally:
        _reset(_meter, token)
        note_usage(ctx, used)


def _reset(var: ContextVar[Any], token: Token[Any]) -> None:
    try:
        var.reset(token)
    except ValueError:  # a generator finalised in another context (garbage collection): just clear it here
        var.set(None)


# -- progress ---------------------------------------------------------------------------------------------
@dataclass
class _Task:
    """One stage's batches (what :func:`iter_batches` yields), and the model call in flight inside a batch."""

    stage: str
    rows_total: int | None
    rows_done: int = 0
    batches_done: int = 0
    requests_done: int = 0
    call_label: str = ""
    call_done: int = 0
    call_total: int = 0
    #: requests of the backend's micro-batch in flight that have finished (rows that ended; not yet counted)
    call_partial: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    started: float = field(default_factory=time.monotonic)
    bar: Any = None
    bar_rows: Any = None
    bar_call: Any = None

    def label(self) -> str:
        stage = re.sub(r"^\d+-", "", self.stage)
        return f"{stage}: {self.call_label}" if self.call_label else stage

    def event(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": "progress", "stage": self.stage, "label": self.label(),
            "rows_done": self.rows_done, "rows_total": self.rows_total, "batches_done": self.batches_done,
            "requests_done": self.requests_done,
        }
        if self.call_total:
            out.update(batch_requests_done=self.call_done + self.call_partial, batch_requests_total=self.call_total)
        if self.tokens_in or self.tokens_out:
            out.update(tokens_in=self.tokens_in, tokens_out=self.tokens_out)
        out["seconds"] = round(time.monotonic() - self.started, 3)
        return out


_tasks: list[_Task] = []
#: The stage the runner is in (:func:`stage_event`) and since when: what a progress event names between batches.
_stage: tuple[str, float] | None = None


def stage_event(event: str, label: str | None) -> None:
    """The runner's events, as far as progress needs them: which stage runs now (``00-read`` from ``run_start``)."""
    global _stage
    if event in ("run_start", "stage_start"):
        _stage = ("00-read" if event == "run_start" else str(label), time.monotonic())
    elif event == "stage_done":
        _stage = (f"after {label}", time.monotonic())  # the next stage's start, or the publish
    elif event in ("run_done", "run_failed"):
        _stage = None


def _idle_event() -> dict[str, Any] | None:
    """Between a stage's batches (loading its model, a global step, writing its output): stage, label, seconds."""
    current = _stage
    if current is None:
        return None
    label, since = current
    return {"event": "progress", "stage": label, "label": re.sub(r"^\d+-", "", label),
            "seconds": round(time.monotonic() - since, 3)}


def _top() -> _Task | None:
    with _lock:
        return _tasks[-1] if _tasks else None


class _Reporter:
    """Emits the current task's ``progress`` event every ``interval`` seconds from a daemon thread."""

    def __init__(self, emit: Callable[[dict[str, Any]], None], interval: float) -> None:
        self.emit, self.interval = emit, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="curate-progress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            task = _top()
            if task is None:
                event = _idle_event()
                if event is None:
                    continue
            else:
                with _lock:
                    event = task.event()
            try:
                self.emit(event)
            except Exception as exc:  # a broken listener must not kill the run; say it once and stop
                log.warning("progress events stopped: %s: %s", type(exc).__name__, exc)
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


_reporter: _Reporter | None = None


def interval_seconds() -> float:
    raw = os.environ.get(INTERVAL_ENV)
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        raise RecipeError(f"{INTERVAL_ENV}={raw!r}: expected seconds between progress events, e.g. 30") from None
    if value <= 0:
        raise RecipeError(f"{INTERVAL_ENV}={raw!r}: expected a number of seconds above 0")
    return value


@contextmanager
def reporting(emit: Callable[[dict[str, Any]], None] | None, interval: float | None = None) -> Iterator[None]:
    """While inside: ``progress`` events go to ``emit`` every ``interval`` seconds (default
    :func:`interval_seconds`) while a stage computes batches.  The runner wraps each run in this; a library
    caller with its own loop can too.  Leaving it drops any batch bookkeeping a failed stage left behind.
    A listener that ignores progress (``curate run`` without ``--log-json``) carries ``progress_events = False``."""
    global _reporter, _stage
    if emit is None or getattr(emit, "progress_events", True) is False:
        yield  # nobody listens: no timer thread, no row counts
        return
    reporter = _Reporter(emit, interval if interval is not None else interval_seconds())
    previous, _reporter = _reporter, reporter
    try:
        yield
    finally:
        reporter.close()
        _reporter = previous
        if previous is None:
            _stage = None
            with _lock:
                _tasks.clear()


def iter_batches(
    lf: pl.LazyFrame, size: int, *, bar: bool, desc: str,
    cut: Callable[[pl.LazyFrame, int], Iterator[pl.DataFrame]],
) -> Iterator[pl.DataFrame]:
    """``cut(lf, size)``'s batches, tracked: rows and batches done (counted once the consumer asks for the
    next batch, i.e. once the previous one is computed), a bar on a terminal (``bar``), and the task the
    model calls inside a batch report to.  The rows are counted only when someone watches (a bar or a
    :func:`reporting` listener)."""
    total = int(lf.select(pl.len()).collect().item()) if bar or _reporter is not None else None
    task = _Task(stage=_no_paths(desc), rows_total=total)
    with _lock:
        _tasks.append(task)
    token = _current.set(task)
    try:
        with _bar(task, bar, desc):
            for batch in cut(lf, size):
                yield batch
                with _lock:
                    task.rows_done += batch.height
                    task.batches_done += 1
                if task.bar is not None:
                    task.bar.update(task.bar_rows, completed=task.rows_done)
    finally:
        _reset(_current, token)
        with _lock:
            if task in _tasks:
                _tasks.remove(task)


def _no_paths(text: str) -> str:
    """A stage's bar description without folders (``03-respond (transformers:/models/x/y)`` -> ``... (y)``)."""
    return re.sub(r"(?:[\w.+-]+:)?(?:[^\s()/]*/)+([^\s()/]+)", r"\1", text)


@contextmanager
def _bar(task: _Task, show: bool, desc: str) -> Iterator[None]:
    if not show:
        yield
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
               TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task.bar = bar
        task.bar_rows = bar.add_task(_no_paths(desc), total=task.rows_total, unit="rows")
        try:
            yield
        finally:
            task.bar = None


class ModelCall:
    """One backend call (a list of prompts): :meth:`done` after each request or micro-batch of rows."""

    def __init__(self, model: Any, total: int) -> None:
        self.model, self.total = model, total
        known = _known(model)
        self.label, self.price = known.label, known.price
        self.task = _current.get()
        self.meter = _meter.get()

    def done(self, requests: int = 1, *, tokens_in: int = 0, tokens_out: int = 0, cached: bool = False) -> None:
        """``requests`` answered; ``cached``: from the backend's own request cache (their tokens are not counted)."""
        with _lock:
            if self.meter is not None:
                usage = self.meter.setdefault(self.label, Usage())
                usage.requests += requests
                if cached:
                    usage.cached += requests
                else:
                    usage.tokens_in += tokens_in
                    usage.tokens_out += tokens_out
                if self.price is not None:
                    spent = 0.0 if cached else self.price.cost(tokens_in, tokens_out)
                    usage.cost = (usage.cost or 0.0) + spent
            task = self.task
            if task is not None:
                task.requests_done += requests
                task.call_done += requests
                task.call_partial = 0
                if not cached:
                    task.tokens_in += tokens_in
                    task.tokens_out += tokens_out
        if task is not None and task.bar is not None and task.bar_call is not None:
            task.bar.update(task.bar_call, completed=task.call_done)

    @property
    def watched(self) -> bool:
        """Whether anyone shows this call's progress (a bar or progress events): a backend skips the per-step
        bookkeeping of :meth:`ended` otherwise."""
        return self.task is not None and (self.task.bar is not None or _reporter is not None)

    def ended(self, requests: int) -> None:
        """Inside a micro-batch still generating: ``requests`` of it have ended (shown, not yet counted)."""
        task = self.task
        if task is None:
            return
        with _lock:
            task.call_partial = requests
        if task.bar is not None and task.bar_call is not None:
            task.bar.update(task.bar_call, completed=task.call_done + requests)


@contextmanager
def model_call(model: Any, total: int) -> Iterator[ModelCall]:
    """What a backend wraps one call in: ``with model_call(self, len(prompts)) as call: ... call.done(n)``."""
    call = ModelCall(model, total)
    task = call.task
    if task is not None:
        with _lock:
            task.call_label, task.call_done, task.call_total, task.call_partial = call.label, 0, total, 0
        if task.bar is not None:
            if task.bar_call is None:
                task.bar_call = task.bar.add_task(task.label(), total=total, unit="requests")
            else:
                task.bar.reset(task.bar_call, total=total, description=task.label())
    try:
        yield call
    finally:
        if task is not None:
            with _lock:
                task.call_total = 0


def usage_summary(stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The manifest's ``model_usage``: per stage that called a model (its notes), and the totals of this run
    (stages reused from an earlier run's cache spent nothing now and are left out of the totals).  ``cost``
    is present where a model of the stage has a ``price_per_million``; ``None`` when no stage called a model."""
    keys = ("model_requests", "requests_cached", "tokens_in", "tokens_out")
    per_stage: dict[str, dict[str, Any]] = {}
    totals: dict[str, Any] = dict.fromkeys(keys, 0)
    cost: float | None = None
    for stage in stages:
        notes = stage.get("notes") or {}
        if "model_requests" not in notes:
            continue
        entry = {k: int(notes.get(k, 0)) for k in keys}
        if "cost" in notes:
            entry["cost"] = notes["cost"]
        entry["cached"] = bool(stage.get("cached"))
        per_stage[str(stage.get("label"))] = entry
        if not entry["cached"]:
            for k in keys:
                totals[k] += entry[k]
            if "cost" in entry:
                cost = round((cost or 0.0) + float(entry["cost"]), 9)
    if not per_stage:
        return None
    return {**totals, "cost": cost, "stages": per_stage}


def usage_line(usage: Mapping[str, Any]) -> str:
    """One line of a manifest's ``model_usage`` for ``curate run``'s summary."""
    def plural(n: int, word: str) -> str:
        return f"{n:,} {word}" + ("" if n == 1 else "s")

    cached = int(usage.get("requests_cached", 0))
    text = (plural(int(usage.get("model_requests", 0)), "request")
            + (f" ({cached:,} from the request cache)" if cached else "")
            + f", {plural(int(usage.get('tokens_in', 0)), 'token')} in, {int(usage.get('tokens_out', 0)):,} out")
    if usage.get("cost") is not None:
        text += f", cost {format_cost(float(usage['cost']))}"
    return text


def format_cost(cost: float) -> str:
    """Enough digits for a small test run (0.000123) and a plain figure for a large one (12.35)."""
    return f"{cost:,.2f}" if cost >= 1 else f"{cost:.6f}".rstrip("0").rstrip(".") if cost else "0"
