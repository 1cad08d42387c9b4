"""Run a recipe's stages on Ray with the local runner's bookkeeping (docs/architecture.md, execution shapes).

:class:`RayExecutor` connects to Ray and decides where each stage runs from the stage's declared shape
(:mod:`curate.execution`), never from its name:

- ``row`` and ``shuffle`` stages with a distributed form run on the data plane (:mod:`curate.distributed.plane`,
  :mod:`curate.distributed.minhash_plane`): tasks read blocks of the previous stage's Parquet in the run
  directory and write their parts there; the driver holds paths, counts and notes.  :meth:`RayExecutor.run_tasks`
  is the plane's ``run`` (Ray tasks with the stage's resources, retried when a worker or node dies).
- ``batch`` and ``driver`` stages run on the driver (:meth:`RayExecutor.apply`) with a :class:`RayContext`:
  a context whose compute is a :class:`RayCompute`.  Batch work (``ctx.map_batches`` / ``ctx.map_rows``) goes
  to an actor pool as Ray Data ``map_batches`` over Arrow blocks, one batch per block, the model loaded once
  per actor (:mod:`curate.distributed.models`; ``num_gpus=1`` per actor when the model's spec asks for CUDA);
  the batches are the local run's (same seeds) and the driver writes each result as the same content-keyed
  shard, so resume and refresh work as locally.  Shared work (``ctx.compute_shared``: a FAISS index searched
  over query chunks) puts the shared value in the object store once; each worker process unpacks it once.

Counts and notes a batch or chunk function records through its context (``ctx.count`` inside respond's model
call, the model usage :func:`curate.progress.metered` notes) are recorded on the worker by a
:class:`_WorkerRecorder`, travel back beside each result and are added to the driver's stats in order, so the
manifest's notes match a local run's.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import socket
import sys
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from curate.compute import LocalCompute
from curate.distributed.models import ProxyRegistry
from curate.distributed.plane import BLOCK_ROWS, Plane
from curate.errors import ExecutorUnavailableError
from curate.execution import Resources
from curate.pipeline import Context, Stage
from curate.recorder import Recorder

log = logging.getLogger("curate")

#: Rows per Ray Data call of a batch stage: bounds what the driver holds at once; each call starts its
#: actor pool (one model load per actor per call), so it is large next to a model batch.
WINDOW_ROWS = 50_000
#: Attempts Ray makes again at a plane task whose worker or node died.
TASK_RETRIES = 3


#: Seconds to wait for a TCP connection to ``--address`` before giving up (``CURATE_RAY_CONNECT_TIMEOUT``):
#: without the check, ``ray.init`` retries an unreachable GCS for over a minute before it fails.
CONNECT_TIMEOUT_S = 5.0
#: Ray's default ports: the client server of ``ray://HOST`` and the GCS of a bare ``HOST``.
CLIENT_PORT, GCS_PORT = 10001, 6379


class RayUnavailableError(ExecutorUnavailableError):
    """``--executor ray`` without Ray installed, or a cluster that cannot be reached."""


def cluster_endpoint(address: str) -> tuple[str, int] | None:
    """The (host, port) that ``ray.init(address)`` will connect to, or None for addresses Ray resolves itself
    (``auto``, ``local``, other schemes).  ``ray://HOST[:PORT]`` is the Ray client (port 10001 by default),
    ``HOST[:PORT]`` the cluster's GCS (port 6379); IPv6 hosts in brackets."""
    if address in ("auto", "local"):
        return None
    client = address.startswith("ray://")
    rest = address.removeprefix("ray://").rstrip("/")
    if "://" in rest or not rest:
        return None
    host, sep, port = rest.rpartition(":")
    if not sep or "]" in port:  # no port (an IPv6 literal ends in ']')
        host, port = rest, str(CLIENT_PORT if client else GCS_PORT)
    if not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float | None = None) -> None:
    """Fail in seconds, with one line saying what to do, when nothing listens at ``address``."""
    endpoint = cluster_endpoint(address)
    if endpoint is None:
        return
    wait = timeout if timeout is not None else float(os.environ.get("CURATE_RAY_CONNECT_TIMEOUT", CONNECT_TIMEOUT_S))
    try:
        socket.create_connection(endpoint, timeout=wait).close()
    except OSError as exc:
        reason = f"no answer within {wait:g}s" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        kind = "Ray client server (ray://, port 10001 by default)" if address.startswith("ray://") else (
            "Ray GCS (host:port, port 6379 by default)")
        raise RayUnavailableError(
            f"cannot reach the Ray cluster at {address} ({endpoint[0]}:{endpoint[1]}: {reason}); start the "
            f"cluster (`ray start --head` on the head node), check that this machine can reach its {kind}, "
            "or fix --address / RAY_ADDRESS (leave both unset for a local Ray)"
        ) from exc


def _to_ipc(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_ipc(buf)
    return buf.getvalue()


def _from_ipc(blob: bytes) -> pl.DataFrame:
    return pl.read_ipc(io.BytesIO(blob))


class _BatchActor:
    """One worker of an actor pool: unpickles ``fn`` once (its model loads on first use), then runs batches."""

    def __init__(self, fn_ref: list[Any]) -> None:
        import cloudpickle
        import ray

        self.fn = cloudpickle.loads(ray.get(fn_ref[0]))

    def __call__(self, block: Any) -> Any:
        return _apply_block(self.fn, block)


def _apply_block(fn: Callable[[pl.DataFrame], pl.DataFrame], block: Any) -> Any:
    """``fn`` of each frame of ``block``; beside each result, the counts and notes ``fn`` recorded (pickled)."""
    import pyarrow as pa

    out, recorded = [], []
    for blob in block.column("payload").to_pylist():
        _RECORDED.clear()
        out.append(_to_ipc(fn(_from_ipc(blob))))
        recorded.append(pickle.dumps(list(_RECORDED.items())))
    return pa.table({"i": block.column("i"), "payload": pa.array(out, type=pa.large_binary()),
                     "recorded": pa.array(recorded, type=pa.large_binary())})


def _sees_file(path: str) -> str:
    """On one node: empty when ``path`` (written by the driver) is readable there and its folder writable."""
    target = Path(path)
    try:
        if target.read_text() != "curate":
            return "the probe file has other content"
        check = target.with_name(target.name + f".{os.getpid()}")
        check.write_text("ok")
        check.unlink()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return ""


def _run_tasks(block: Any, fn_blob: bytes) -> Any:
    import cloudpickle

    return _apply_block(cloudpickle.loads(fn_blob), block)


def _run_task(fn_ref: list[Any], item: Any) -> Any:
    """One plane task: ``fn`` (fetched from the object store, unpacked once per worker process) of ``item``."""
    key = fn_ref[0].hex()
    if key not in _TASK_FNS:
        import cloudpickle
        import ray

        _TASK_FNS.clear()
        _TASK_FNS[key] = cloudpickle.loads(ray.get(fn_ref[0]))
    return _TASK_FNS[key](item)


_TASK_FNS: dict[str, Callable[[Any], Any]] = {}


#: This worker process's unpacked shared value and function, by token (the latest call's only: a worker holds
#: one index or signature set at a time, not one per stage it ever ran).
_SHARED: dict[str, tuple[Callable[[Any, Any], Any], Any]] = {}


def _run_shared(token: str, shared_ref: list[Any], fn_ref: list[Any], chunk: Any) -> tuple[Any, list[Any]]:
    """One chunk of :meth:`RayExecutor.map_shared`, with the counts and notes ``fn`` recorded; the shared
    value and ``fn`` are fetched and unpacked once per worker process (the references travel in lists, so
    Ray hands them over unresolved)."""
    if token not in _SHARED:
        import cloudpickle
        import ray

        fn, unpack = cloudpickle.loads(ray.get(fn_ref[0]))
        value = unpack(ray.get(shared_ref[0]))
        _SHARED.clear()
        _SHARED[token] = (fn, value)
    fn, value = _SHARED[token]
    _RECORDED.clear()
    result = fn(value, chunk)
    return result, list(_RECORDED.items())


#: Counts and notes that worker-side contexts recorded in this process while the current batch or chunk ran,
#: as ``{(stage label, key): ("count" | "note", value)}``: cleared before each one and sent back with its result.
_RECORDED: dict[tuple[str, str], tuple[str, Any]] = {}


class _WorkerRecorder(Recorder):
    """The recorder of a context that a batch function carried to a worker (``ctx.count(...)`` inside ``fn``):
    its counts and notes are also kept in :data:`_RECORDED`, so they travel back beside the result and the
    driver adds them to its stats (:meth:`RayCompute.replay`), in batch order, exactly as the local run's ``fn``
    would have added them."""

    def note(self, key: str, value: Any) -> None:
        super().note(key, value)
        _RECORDED[(self.stage_label, key)] = ("note", value)

    def count(self, key: str, n: int) -> None:
        super().count(key, n)
        op, before = _RECORDED.get((self.stage_label, key), ("count", 0))
        _RECORDED[(self.stage_label, key)] = (op, before + n)  # a note then counts: still a note, of the sum


@dataclass(frozen=True)
class _Metered:
    """A batch function whose model usage (requests, cached answers, tokens: :func:`curate.progress.metered`) is
    recorded on the worker and travels back with the batch, as a local run's ``compute_batches`` notes it."""

    fn: Callable[[pl.DataFrame], pl.DataFrame]
    label: str
    #: The driver's torch thread count: a worker computes with as many, since a matrix product's float sums
    #: depend on how it is split over threads (a reward score differed by 2e-7 between 1 and 2 threads).
    threads: int | None = None

    def __call__(self, batch: pl.DataFrame) -> pl.DataFrame:
        from curate.progress import metered

        if self.threads:
            try:
                import torch
            except ImportError:  # no torch, no torch threads to set
                pass
            else:
                if torch.get_num_threads() != self.threads:
                    torch.set_num_threads(self.threads)
        with metered(_WorkerRecorder(stage_label=self.label)):
            return self.fn(batch)


def _torch_threads() -> int | None:
    """The driver's torch thread count (torch's own default where it is not imported yet: the CPU count)."""
    if "torch" in sys.modules:
        return int(sys.modules["torch"].get_num_threads())
    return os.cpu_count()


def _worker_context(fields: dict[str, Any]) -> Context:
    return Context(**fields, recorder=_WorkerRecorder(stage_label=fields.pop("stage_label")))


@dataclass
class _Resources:
    actors: int
    num_gpus: float
    model: bool = False


class RayCompute(LocalCompute):
    """Batch and shared work on Ray: the same calls, results and order as :class:`curate.compute.LocalCompute`."""

    def __init__(self, executor: RayExecutor, models: Any) -> None:
        self.executor = executor
        self.models = models
        #: The stage whose work this is (its models decide the actors' resources); set by the executor.
        self.current_stage: Stage | None = None

    @staticmethod
    def replay(recorder: Recorder, recorded: list[tuple[tuple[str, str], tuple[str, Any]]]) -> None:
        """Apply the counts and notes a worker recorded while it ran one batch or chunk."""
        for (label, key), (op, value) in recorded:
            notes = recorder.stats.setdefault(label, {})
            notes[key] = notes.get(key, 0) + value if op == "count" else value

    def batches(
        self, batches: Iterable[pl.DataFrame], fn: Callable[[pl.DataFrame], pl.DataFrame], recorder: Recorder
    ) -> Iterator[pl.DataFrame]:
        resources = self.executor.resources_for(self.current_stage, self.models)
        fn = _Metered(fn, recorder.stage_label, _torch_threads())
        window: list[pl.DataFrame] = []
        rows = 0
        counted = 0
        for batch in batches:
            counted += 1
            window.append(batch)
            rows += batch.height
            if rows >= WINDOW_ROWS:
                yield from self._replayed(recorder, self.executor.map_frames(window, fn, resources))
                window, rows = [], 0
        if window:
            yield from self._replayed(recorder, self.executor.map_frames(window, fn, resources))
        recorder.count("ray_batches", counted)

    def _replayed(self, recorder: Recorder, results: Iterator[tuple[Any, list[Any]]]) -> Iterator[Any]:
        for result, recorded in results:
            self.replay(recorder, recorded)
            yield result

    def shared(
        self, shared: Any, chunks: Iterable[Any], fn: Callable[[Any, Any], Any], recorder: Recorder, *,
        pack: Callable[[Any], Any], unpack: Callable[[Any], Any], name: str,
    ) -> Iterator[Any]:
        counted = 0
        for result in self._replayed(recorder, self.executor.map_shared(shared, chunks, fn, pack=pack, unpack=unpack)):
            counted += 1
            yield result
        recorder.count(f"ray_{name}", counted)


class RayContext(Context):
    """A :class:`Context` whose compute is a :class:`RayCompute` (its cache and recorder are the local ones)."""

    compute: RayCompute

    def __reduce__(self) -> tuple[Any, ...]:
        """A function shipped to Ray that closes over the context gets a plain context there, with a
        :class:`_WorkerRecorder`: the stage label, seed, batch size and model specs, none of the driver's
        executor, quarantine or stats."""
        models = ProxyRegistry(self.models.specs, self.models.base_dir, self.models.cache_dir)
        return (_worker_context, ({"cache_dir": self.cache_dir, "seed": self.seed, "batch_size": self.batch_size,
                                   "stage_label": self.stage_label, "models": models},))


class RayExecutor:
    """Connects to Ray (a cluster at ``address``/``RAY_ADDRESS``, else a local one) and runs stages there."""

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise RayUnavailableError(
                "--executor ray needs Ray: pip install 'curate[dist]' (ray[data])"
            ) from exc
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "ignore_reinit_error": True, "logging_level": logging.WARNING}
            if self.address:
                check_reachable(self.address)
                kwargs["address"] = self.address
            else:
                cpus = num_cpus or int(os.environ.get("CURATE_RAY_NUM_CPUS", "0")) or os.cpu_count() or 1
                kwargs["num_cpus"] = cpus
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:  # ValueError: ray:// without ray[client]
                raise RayUnavailableError(f"cannot start or reach Ray at {self.address or 'local'}: {exc}") from exc
            self._started = True
        import ray.data

        for name in ("ray", "ray.data"):  # Ray Data logs every dataset's start and end at INFO
            logging.getLogger(name).setLevel(logging.WARNING)
        data_ctx = ray.data.DataContext.get_current()
        data_ctx.execution_options.preserve_order = True
        data_ctx.enable_progress_bars = False
        data_ctx.print_on_execution_start = False
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.gpus = int(ray.cluster_resources().get("GPU", 0))
        self._shared_task: Any = None
        self._storage_checked = False
        rows_per_block = int(os.environ.get("CURATE_RAY_BLOCK_ROWS", "0")) or BLOCK_ROWS
        self.plane = Plane(self.run_tasks, cpus=self.cpus, rows_per_block=rows_per_block)
        log.info("ray executor: %s (%d CPUs, %d GPUs)", self.address or "local", self.cpus, self.gpus)

    # -- contexts and resources --------------------------------------------------------------------------
    def context(self, **kwargs: Any) -> RayContext:
        models = kwargs.pop("models")
        proxies = ProxyRegistry(models.specs, models.base_dir, models.cache_dir)
        return RayContext(models=proxies, compute=RayCompute(self, proxies), **kwargs)

    def resources_for(self, stage: Stage | None, models: Any) -> _Resources:
        """The actor pool of a stage's batch work: its size, and a GPU per actor where the stage's own
        :meth:`~curate.pipeline.Stage.worker_resources` asks for one."""
        handles = stage.models_used() if stage is not None else []
        gpu = stage is not None and stage.worker_resources(models).gpus > 0
        # One actor (one model copy) per GPU, or per CPU for CPU models; CURATE_RAY_MODEL_ACTORS caps it (each
        # CPU actor holds its own copy of the weights in memory).
        cap = int(os.environ.get("CURATE_RAY_MODEL_ACTORS", "0")) or None
        if gpu:
            return _Resources(actors=min(max(1, self.gpus), cap or self.gpus or 1), num_gpus=1.0, model=True)
        if handles:
            return _Resources(actors=min(self.cpus, cap or self.cpus), num_gpus=0.0, model=True)
        return _Resources(actors=self.cpus, num_gpus=0.0)

    # -- the work ------------------------------------------------------------------------------------------
    def map_frames(
        self, frames: list[pl.DataFrame], fn: Callable[[pl.DataFrame], pl.DataFrame], resources: _Resources
    ) -> Iterator[tuple[pl.DataFrame, list[Any]]]:
        """``fn`` of each frame on an actor pool, results in order (one frame per Arrow block), each with the
        counts and notes ``fn`` recorded through its context (for :meth:`RayCompute.replay`)."""
        import cloudpickle
        import pyarrow as pa
        import ray
        import ray.data

        if not frames:
            return
        tables = [pa.table({"i": [i], "payload": pa.array([_to_ipc(f)], type=pa.large_binary())})
                  for i, f in enumerate(frames)]
        ds = ray.data.from_arrow(tables)  # one block per frame
        blob = cloudpickle.dumps(fn)
        blob_ref = ray.put(blob)  # held here for the whole call; actors fetch it by reference (in a list, so
        # Ray does not inline it into every actor's constructor arguments)
        size = min(resources.actors, len(frames))
        if resources.model:  # an actor pool: each actor unpickles fn (and loads its model) once
            ds = ds.map_batches(
                _BatchActor, fn_constructor_args=([blob_ref],), batch_size=1, batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=size), num_cpus=1, num_gpus=resources.num_gpus or None,
            )
        else:  # stateless per-row work (signatures, row-local filters): plain tasks
            ds = ds.map_batches(
                _run_tasks, fn_kwargs={"fn_blob": blob}, batch_size=1, batch_format="pyarrow",
                compute=ray.data.TaskPoolStrategy(size=size), num_cpus=1,
            )
        for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for blob, recorded in zip(block.column("payload").to_pylist(), block.column("recorded").to_pylist(),
                                      strict=True):
                yield _from_ipc(blob), pickle.loads(recorded)

    def map_shared(
        self, shared: Any, chunks: Iterable[Any], fn: Callable[[Any, Any], Any], *,
        pack: Callable[[Any], Any], unpack: Callable[[Any], Any],
    ) -> Iterator[tuple[Any, list[Any]]]:
        """``fn(shared, chunk)`` of each chunk as Ray tasks (1 CPU each), results in chunk order (each with the
        counts and notes ``fn`` recorded, for :meth:`RayCompute.replay`).

        ``pack(shared)`` goes into the object store once (numpy arrays there are read without a copy) and
        each worker process unpacks it once; at most two tasks per CPU are in flight, so the driver does not
        hold every chunk's arguments and results at once."""
        import cloudpickle
        import ray

        if self._shared_task is None:
            self._shared_task = ray.remote(num_cpus=1)(_run_shared)
        token = uuid.uuid4().hex
        shared_ref = ray.put(pack(shared))  # held by this generator until the last chunk is back
        fn_ref = ray.put(cloudpickle.dumps((fn, unpack)))
        pending: deque[Any] = deque()
        for chunk in chunks:
            pending.append(self._shared_task.remote(token, [shared_ref], [fn_ref], chunk))
            if len(pending) >= 2 * self.cpus:
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())

    def run_tasks(self, fn: Callable[[Any], Any], items: Sequence[Any], resources: Resources) -> list[Any]:
        """``fn(item)`` of each item as Ray tasks with ``resources`` each, results in order; at most two tasks
        per CPU in flight.  A task whose worker or node dies is retried (``max_retries``), so a lost raylet
        costs its tasks' time, not the run.  The plane's ``run`` (:mod:`curate.distributed.plane`)."""
        import cloudpickle
        import ray

        if not items:
            return []
        options = {**resources.as_ray_options(), "max_retries": TASK_RETRIES, "retry_exceptions": False}
        task = ray.remote(**options)(_run_task)
        fn_ref = ray.put(cloudpickle.dumps(fn))
        results: list[Any] = []
        pending: deque[Any] = deque()
        try:
            for item in items:
                pending.append(task.remote([fn_ref], item))
                if len(pending) >= 2 * self.cpus:
                    results.append(ray.get(pending.popleft()))
            while pending:
                results.append(ray.get(pending.popleft()))
        except ray.exceptions.RayTaskError as exc:  # the task's own error (a bad input row), not Ray's wrapper
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise
        return results

    def where(self, stage: Stage) -> str:
        """Where each part of ``stage`` runs, from its declared shape (:mod:`curate.execution`)."""
        shape = stage.execution_shape()
        if self.plane.handles(stage):
            if shape == "row":
                return "ray: every block on a worker (row stage)"
            steps = getattr(stage, "plane_steps", "keys per block, decisions per hash partition, the rest per block")
            return f"ray: {steps} (shuffle stage)"
        if shape == "batch":
            return "ray: model/row batches on an actor pool; driver: bookkeeping (batch stage)"
        if shape == "shuffle":
            return "driver, with its shared work on ray (shuffle stage without a keyed form)"
        return f"driver: {stage.driver_reason} (driver stage)"

    def run_stage(self, stage: Stage, source: Path, stage_dir: Path, ctx: Context, table: str) -> bool:
        """Run ``stage`` on the data plane when its shape allows (it then writes ``stage_dir``'s data and
        quarantine itself and returns True); otherwise the caller applies it on the driver (:meth:`apply`)."""
        where = self.where(stage)
        log.info("%s runs on %s", ctx.stage_label, where)
        ctx.note("ran_on", where)
        if not self.plane.handles(stage):
            return False
        self.check_shared_storage(ctx.cache_dir)
        self.plane.run_stage(stage, source, stage_dir, ctx, table)
        return True

    def check_shared_storage(self, folder: Path) -> None:
        """Fail in one line when a node's workers cannot read and write ``folder`` (the run directory's cache):
        plane tasks read their blocks from it and write their parts into it, so every node must see it (one
        machine, or a shared mount at the same path).  Checked once per run, with a task pinned to each node."""
        if self._storage_checked:
            return
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".ray-probe-{uuid.uuid4().hex}"
        probe.write_text("curate")
        try:
            nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
            task = ray.remote(num_cpus=0)(_sees_file)
            answers = ray.get([
                task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                    str(probe)) for n in nodes])
        finally:
            probe.unlink(missing_ok=True)
        blind = [f"{n.get('NodeManagerAddress', '?')} ({why})" for n, why in zip(nodes, answers, strict=True) if why]
        if blind:
            raise RayUnavailableError(
                f"Ray workers cannot use the run directory {folder.parent}: {'; '.join(blind)}; the data plane reads "
                "and writes it on every node: put --out on a filesystem every node mounts at the same path"
            )
        self._storage_checked = True

    def apply(self, stage: Stage, source: pl.LazyFrame, ctx: Context) -> pl.LazyFrame:
        """A stage the plane does not take, on the driver: its batch and shared work go to the cluster through
        the context (:class:`RayCompute`)."""
        assert isinstance(ctx.compute, RayCompute)
        ctx.compute.current_stage = stage
        try:
            return stage(source, ctx)
        finally:
            ctx.compute.current_stage = None

    def close(self) -> None:
        """Remove the per-stage scratch files (the runner has written the stage outputs by now)."""
        parents = {path.parent for path in self.plane.scratch}
        self.plane.close()
        for parent in parents:
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
