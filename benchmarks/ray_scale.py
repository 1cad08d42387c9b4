"""Ray on a local multi-node cluster: driver and per-node memory, throughput and agreement with local, and a fault.

Issue 16 asks whether ``--executor ray`` keeps rows off the driver: its peak RSS should not grow with the number
of rows.  This script measures that on one machine made to look like a cluster: it starts a head node
(``--head-cpus``, 0 by default, so no task runs beside the driver) and ``--workers`` worker nodes on 127.0.0.1
with ``--worker-cpus`` CPUs each and a bounded object store (``--object-store-mb``), each node with its own
ports and ``--temp-dir`` (Ray 2.60 allows one per node), and stops them itself by process id when it is done
(``ray stop`` would also stop every other Ray on the machine).

Per size in ``--rows`` (default 1M and 4M; ``--quick``: 20k and 80k) it writes the streaming benchmark's
synthetic preference rows (benchmarks/streaming.py's generator and recipe: filter + exact_dedup + minhash_dedup,
1% exact and 1% near duplicates planted) to Parquet once, then runs ``curate run RECIPE --executor ray
--address 127.0.0.1:PORT`` and ``curate run RECIPE --executor local`` on it as subprocesses, sampling every
0.2 s from /proc the resident memory of the driver (the ``curate`` process and its children) and of each Ray
node (its raylet and every process under it: workers, agents; the head also counts its GCS, dashboard, monitor
and log monitor).  A node's figure is a sum of RSS, so object-store pages a raylet and a worker both map count
twice: an upper bound.  ``identical_to_local``: the Ray run's RUN/data/*.parquet equals the local run's (rows
sorted by id) and its RUN/quarantine/*.parquet holds the same (stage, id, code) rows.

Prints one JSON line per size, then a summary as the last line: ``rows``, ``driver_peak_rss_mb``,
``driver_rss_ratio`` (largest over smallest), ``node_peak_rss_mb`` (per node, per size), ``local_peak_rss_mb``,
``rows_per_s_ray``, ``rows_per_s_local`` (input rows over the run's manifest seconds, Ray connection included),
``identical_to_local``.

``--fault`` instead runs the fault check: one uninterrupted Ray run and one local run for reference, then the
same command with ``--log-json``; when its ``stage_start`` event for minhash_dedup arrives (and, within
``--kill-wait`` seconds, a task is running on it), worker node 1's raylet is killed with SIGKILL.  The run either
completes (Ray retried the lost tasks on the surviving node) or fails; once the GCS lists the node as dead, the
very same command runs again on the cluster that is left (resuming from the run directory).  The last line is one
JSON object: ``kill`` (what ran on the node when its raylet died), ``first_run`` (exit code, completed, the error
line), ``rerun`` (exit code, the stages it found cached), ``identical_to_uninterrupted`` and
``identical_to_local`` for the final output.

    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/ray_scale.py --quick
    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/ray_scale.py --rows 1000000,4000000
    flock /tmp/curate-bench.lock .venv/bin/python benchmarks/ray_scale.py --fault --rows 40000
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 2**20
SAMPLE_S = 0.2


def _streaming() -> Any:
    """benchmarks/streaming.py as a module (benchmarks/ is not a package): its generator and recipe."""
    spec = importlib.util.spec_from_file_location("curate_bench_streaming", HERE / "streaming.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- /proc ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    rss: int  # bytes
    start: int  # clock ticks after boot: (pid, start) names a process even when pids are reused


def processes() -> dict[int, Proc]:
    """Every process's parent, resident set and start time, from /proc/PID/stat."""
    out: dict[int, Proc] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                raw = f.read()
        except OSError:  # gone meanwhile
            continue
        fields = raw[raw.rindex(b")") + 2:].split()  # after "(comm) ": state is fields[0]
        out[int(entry.name)] = Proc(int(entry.name), int(fields[1]), int(fields[21]) * PAGE, int(fields[19]))
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(roots: set[int], procs: dict[int, Proc]) -> set[int]:
    """``roots`` (those alive) and every process below them."""
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    seen, todo = set(), [r for r in roots if r in procs]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, ()))
    return seen


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 a moment ago (held together while chosen, so never the same)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# -- the cluster ------------------------------------------------------------------------------------------
class Cluster:
    """A head and ``workers`` worker nodes started with ``ray start`` on 127.0.0.1, each with its own ports and
    temp dir under ``root``; :meth:`stop` ends exactly the processes they started (by pid), never another Ray."""

    def __init__(self, root: Path, *, workers: int = 2, worker_cpus: int = 1, head_cpus: int = 0,
                 object_store_mb: int = 500) -> None:
        self.root = root
        self.names = ["head"] + [f"worker{i}" for i in range(1, workers + 1)]
        self.cpus = {"head": head_cpus, **{n: worker_cpus for n in self.names[1:]}}
        self.object_store = object_store_mb * MB
        self.port = 0
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        # Ray >= 2.5x turns token authentication on for a new cluster when ~/.ray holds a token, and a node
        # started by `ray start --address` does not send it: on a loopback test cluster it is off.
        self.env.setdefault("RAY_AUTH_MODE", "disabled")
        self.env["RAY_USAGE_STATS_ENABLED"] = "0"
        self.roots: dict[str, set[tuple[int, int]]] = {}  # node -> (pid, start) of its own processes
        self.seen: set[tuple[int, int]] = set()  # (pid, start) of every process seen in the cluster

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def node_dir(self, name: str) -> Path:
        return self.root / name

    def _ray_start(self, name: str, ports: list[int]) -> None:
        node, agent_http, agent_grpc, env_agent, metrics, dash = ports
        args = [str(VENV_BIN / "ray"), "start", "--node-ip-address", "127.0.0.1",
                "--num-cpus", str(self.cpus[name]), "--object-store-memory", str(self.object_store),
                "--temp-dir", str(self.node_dir(name)), "--disable-usage-stats",
                "--node-manager-port", str(node), "--object-manager-port", str(free_ports(1)[0]),
                "--dashboard-agent-listen-port", str(agent_http), "--dashboard-agent-grpc-port", str(agent_grpc),
                "--runtime-env-agent-port", str(env_agent), "--metrics-export-port", str(metrics)]
        if name == "head":
            args += ["--head", "--port", str(self.port), "--include-dashboard", "false", "--dashboard-port", str(dash)]
        else:
            args += ["--address", self.address]
        done = subprocess.run(args, capture_output=True, text=True, env=self.env, timeout=180)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
            raise RuntimeError(f"ray start ({name}) failed with exit code {done.returncode}:\n{tail}")

    def start(self, timeout: float = 180.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(1 + 6 * len(self.names))
        self.port = ports[0]
        try:
            for i, name in enumerate(self.names):
                self._ray_start(name, ports[1 + 6 * i: 7 + 6 * i])
            self.wait_ready(timeout)
        finally:
            self.find_roots()  # also when a node failed to start: stop() ends what did

    def wait_ready(self, timeout: float) -> None:
        """Until ``ray status`` counts every node's CPUs (a worker registers a moment after `ray start`)."""
        want = sum(self.cpus.values())
        deadline = time.monotonic() + timeout
        status = ""
        while time.monotonic() < deadline:
            done = subprocess.run([str(VENV_BIN / "ray"), "status", "--address", self.address],
                                  capture_output=True, text=True, env=self.env, timeout=120)
            status = done.stdout
            if done.returncode == 0 and f"/{float(want)} CPU" in status and status.count(" node_") >= len(self.names):
                return
            time.sleep(1.0)
        raise RuntimeError(f"the cluster at {self.address} did not show {want} CPUs in {timeout:.0f}s:\n{status}")

    def active_nodes(self) -> int:
        """How many nodes ``ray status`` lists as active (a killed node drops out once the GCS notices)."""
        done = subprocess.run([str(VENV_BIN / "ray"), "status", "--address", self.address],
                              capture_output=True, text=True, env=self.env, timeout=120)
        active = done.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return sum(1 for line in active.splitlines() if " node_" in line)

    def find_roots(self) -> None:
        """Each node's own processes: those whose command line names its temp dir's session (raylet, log monitor;
        on the head also the GCS, dashboard and autoscaler monitor).  Workers and agents are the raylet's children."""
        marks = {name: f"{self.node_dir(name)}/session_" for name in self.names}
        self.roots = {name: set() for name in self.names}
        for pid, proc in processes().items():
            line = cmdline(pid)
            for name, mark in marks.items():
                if mark in line:
                    self.roots[name].add((pid, proc.start))

    def _alive_roots(self, name: str, procs: dict[int, Proc]) -> set[int]:
        """The node's own processes still running (same pid and start time: a reused pid is someone else's)."""
        return {pid for pid, start in self.roots[name] if pid in procs and procs[pid].start == start}

    def raylet(self, name: str) -> int:
        pids = [pid for pid in self._alive_roots(name, processes())
                if cmdline(pid).split(" ", 1)[0].endswith("/raylet")]
        if len(pids) != 1:
            raise RuntimeError(f"{name}: expected one raylet, found {pids}")
        return pids[0]

    def members(self, procs: dict[int, Proc]) -> dict[str, set[int]]:
        groups = {name: descendants(self._alive_roots(name, procs), procs) for name in self.roots}
        for pids in groups.values():
            self.seen.update((pid, procs[pid].start) for pid in pids)
        return groups

    def busy_workers(self, name: str) -> list[str]:
        """The ``ray::NAME`` titles of the node's worker processes that are running a task or actor now."""
        idle = {"ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent"}
        out = []
        procs = processes()
        for pid in descendants(self._alive_roots(name, procs), procs):
            title = cmdline(pid)
            if title.startswith("ray::") and title.split(" ", 1)[0] not in idle:
                out.append(title[:80])
        return out

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM every process this cluster started (still the same process: pid and start time), then SIGKILL
        what is left after ``grace`` seconds."""
        procs = processes()
        self.members(procs)
        alive = lambda: {pid for pid, start in self.seen  # noqa: E731
                         if (p := processes().get(pid)) is not None and p.start == start}
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            pids = alive()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while pids and time.monotonic() < deadline:
                time.sleep(0.2)
                pids = alive()
            if not pids:
                return
        print(f"ray_scale: processes still alive after SIGKILL: {sorted(alive())}", file=sys.stderr)


@contextlib.contextmanager
def cluster(root: Path, **kwargs: Any) -> Iterator[Cluster]:
    c = Cluster(root, **kwargs)
    try:
        c.start()
        yield c
    finally:
        c.stop()


# -- memory sampling --------------------------------------------------------------------------------------
@dataclass
class Sampler:
    """Every 0.2 s: the summed RSS of the driver (``pid`` and its children) and of each cluster node; keeps peaks."""

    cluster: Cluster | None
    pid: int = 0
    driver_peak: int = 0
    node_peak: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        procs = processes()
        if self.pid:
            driver = sum(procs[p].rss for p in descendants({self.pid}, procs))
            self.driver_peak = max(self.driver_peak, driver)
        if self.cluster is not None:
            for name, pids in self.cluster.members(procs).items():
                self.node_peak[name] = max(self.node_peak.get(name, 0), sum(procs[p].rss for p in pids))
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_S)

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def mb(n: int) -> float:
    return round(n / MB, 1)


# -- runs -------------------------------------------------------------------------------------------------
@dataclass
class Run:
    code: int
    wall_s: float
    stdout: str
    stderr: str
    driver_peak: int
    node_peak: dict[str, int]
    manifest: dict[str, Any] | None

    @property
    def error(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.startswith("error:")]
        return lines[-1] if lines else "\n".join(self.stderr.strip().splitlines()[-3:])


def curate_cmd(recipe: Path, out: Path, executor: str, address: str | None, *extra: str) -> list[str]:
    cmd = [str(VENV_BIN / "curate"), "run", str(recipe), "--out", str(out), "--executor", executor, *extra]
    return cmd + (["--address", address] if address else [])


def run_curate(cmd: list[str], env: dict[str, str], c: Cluster | None, out: Path, *,
               on_line: Any = None, timeout: float = 7200.0) -> Run:
    """Run ``cmd`` while sampling memory; ``on_line(line)`` sees each stdout line as it comes."""
    sampler = Sampler(c)
    t0 = time.perf_counter()
    lines: list[str] = []
    with sampler, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        sampler.pid = proc.pid
        err: list[str] = []
        reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        assert proc.stdout is not None
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:
                lines.append(line)
                if on_line is not None:
                    on_line(line)
            code = proc.wait()
        finally:
            timer.cancel()
        reader.join()
        sampler.sample()
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if code == 0 and manifest_path.is_file() else None
    return Run(code, time.perf_counter() - t0, "".join(lines), "".join(err), sampler.driver_peak,
               dict(sampler.node_peak), manifest)


def outputs(run: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A run's output rows sorted by id, and its quarantine's (stage, id, code, reason) sorted likewise."""
    parts = sorted((run / "data").glob("*.parquet"))
    if not parts:
        raise SystemExit(f"{run}/data holds no Parquet file")
    data = pl.concat([pl.read_parquet(p) for p in parts], how="vertical")
    files = sorted((run / "quarantine").glob("*.parquet"))
    cols = ["stage", "id", "code", "reason"]
    quarantine = (pl.concat([pl.read_parquet(p, columns=cols) for p in files]) if files
                  else pl.DataFrame(schema=dict.fromkeys(cols, pl.String)))
    return data.sort("id"), quarantine.sort("stage", "id", "code")


def same_output(a: Path, b: Path) -> dict[str, bool]:
    (data_a, q_a), (data_b, q_b) = outputs(a), outputs(b)
    keys = ["stage", "id", "code"]
    return {"identical": data_a.equals(data_b) and q_a.select(keys).equals(q_b.select(keys)),
            "quarantine_reasons_identical": q_a.equals(q_b)}


def rows_per_s(rows: int, r: Run) -> float | None:
    return round(rows / r.manifest["seconds"], 1) if r.manifest else None


def write_input(work: Path, rows: int, seed: int) -> tuple[Path, Path, float]:
    """The streaming benchmark's rows as Parquet and its recipe, written once per size into ``work``."""
    streaming = _streaming()
    data = work / f"preference-{rows}.parquet"
    t0 = time.perf_counter()
    if not data.is_file():
        streaming.generate(data, None, rows, seed)
    recipe = work / f"scale-{rows}.yaml"
    recipe.write_text(streaming.RECIPE.format(input=data))
    return data, recipe, time.perf_counter() - t0


# -- modes ------------------------------------------------------------------------------------------------
def scale(args: argparse.Namespace, sizes: list[int], work: Path, c: Cluster) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "bench": "ray_scale", "rows": [], "driver_peak_rss_mb": [], "node_peak_rss_mb": {n: [] for n in c.names},
        "local_peak_rss_mb": [], "rows_per_s_ray": [], "rows_per_s_local": [], "wall_s_ray": [], "wall_s_local": [],
        "identical_to_local": True,
        "cluster": {"nodes": len(c.names), "cpus": c.cpus, "object_store_mb": c.object_store // MB},
    }
    idle = Sampler(c)
    idle.sample()
    summary["node_idle_rss_mb"] = {n: mb(v) for n, v in idle.node_peak.items()}
    for rows in sizes:
        data, recipe, gen_s = write_input(work, rows, args.seed)
        ray = run_curate(curate_cmd(recipe, work / f"ray-{rows}", "ray", c.address, "--fresh", "--quiet"), c.env, c,
                         work / f"ray-{rows}")
        if ray.code != 0:
            raise SystemExit(f"ray run ({rows} rows) failed with exit code {ray.code}: {ray.error}")
        local = run_curate(curate_cmd(recipe, work / f"local-{rows}", "local", None, "--fresh", "--quiet"), c.env,
                           None, work / f"local-{rows}")
        if local.code != 0:
            raise SystemExit(f"local run ({rows} rows) failed with exit code {local.code}: {local.error}")
        same = same_output(work / f"local-{rows}", work / f"ray-{rows}")
        assert ray.manifest is not None
        line = {
            "bench": "ray_scale", "rows": rows, "input_mb": round(data.stat().st_size / MB, 1),
            "generate_s": round(gen_s, 1), "driver_peak_rss_mb": mb(ray.driver_peak),
            "node_peak_rss_mb": {n: mb(v) for n, v in ray.node_peak.items()},
            "local_peak_rss_mb": mb(local.driver_peak),
            "rows_per_s_ray": rows_per_s(rows, ray), "rows_per_s_local": rows_per_s(rows, local),
            "wall_s_ray": round(ray.wall_s, 1), "wall_s_local": round(local.wall_s, 1),
            "output_rows": ray.manifest["output"]["rows"], "quarantined": ray.manifest["quarantined"],
            "identical_to_local": same["identical"],
            "quarantine_reasons_identical": same["quarantine_reasons_identical"],
            "stage_s_ray": {s["label"]: s["seconds"] for s in ray.manifest["stages"]},
            "stage_s_local": {s["label"]: s["seconds"] for s in (local.manifest or {}).get("stages", [])},
        }
        print(json.dumps(line), flush=True)
        summary["rows"].append(rows)
        for key in ("driver_peak_rss_mb", "local_peak_rss_mb", "rows_per_s_ray", "rows_per_s_local", "wall_s_ray",
                    "wall_s_local"):
            summary[key].append(line[key])
        for name in c.names:
            summary["node_peak_rss_mb"][name].append(line["node_peak_rss_mb"].get(name))
        summary["identical_to_local"] = summary["identical_to_local"] and same["identical"]
        if not args.keep:  # the next size's runs need the disk more than these
            for run in (f"ray-{rows}", f"local-{rows}"):
                subprocess.run(["rm", "-rf", str(work / run)], check=False)
    peaks = summary["driver_peak_rss_mb"]
    summary["driver_rss_ratio"] = round(max(peaks) / min(peaks), 3) if peaks and min(peaks) else None
    return summary


def fault(args: argparse.Namespace, rows: int, work: Path, c: Cluster) -> dict[str, Any]:
    """Kill worker node 1's raylet while minhash_dedup runs; the same command again; compare with references."""
    _, recipe, _ = write_input(work, rows, args.seed)
    target = c.names[1]
    result: dict[str, Any] = {"bench": "ray_scale_fault", "rows": rows, "killed_node": target,
                              "cluster": {"nodes": len(c.names), "cpus": c.cpus}}
    reference = run_curate(curate_cmd(recipe, work / "uninterrupted", "ray", c.address, "--quiet"), c.env, c,
                           work / "uninterrupted")
    local = run_curate(curate_cmd(recipe, work / "local", "local", None, "--quiet"), c.env, None, work / "local")
    if reference.code != 0 or local.code != 0:
        raise SystemExit(f"reference runs failed: ray {reference.code} {reference.error}; "
                         f"local {local.code} {local.error}")
    result["reference_identical_to_local"] = same_output(work / "local", work / "uninterrupted")["identical"]

    raylet = c.raylet(target)
    killed: dict[str, Any] = {}
    events: list[str] = []
    first_done = threading.Event()
    killer: list[threading.Thread] = []

    def kill_when_busy(stage_started: float) -> None:
        """SIGKILL the node's raylet once a task runs there (or after --kill-wait s), never after the run ended."""
        deadline = stage_started + args.kill_wait
        busy: list[str] = []
        while not first_done.is_set() and time.monotonic() < deadline:
            busy = c.busy_workers(target)
            if busy:
                break
            time.sleep(0.05)
        if first_done.is_set():
            killed.update(skipped="the run ended before the raylet was killed")
            return
        os.kill(raylet, signal.SIGKILL)
        killed.update(raylet_pid=raylet, after_stage_start_s=round(time.monotonic() - stage_started, 2),
                      running_on_node=busy)

    def on_line(line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        events.append(str(event.get("event")))
        if event.get("event") == "stage_start" and event.get("name") == "minhash_dedup" and not killed:
            killed["pending"] = True
            killer.append(threading.Thread(target=kill_when_busy, args=(time.monotonic(),), daemon=True))
            killer[0].start()

    out = work / "faulted"
    cmd = curate_cmd(recipe, out, "ray", c.address, "--log-json")
    first = run_curate(cmd, c.env, c, out, on_line=on_line, timeout=args.fault_timeout)
    first_done.set()
    for thread in killer:
        thread.join()
    killed.pop("pending", None)
    result["kill"] = killed or None
    result["first_run"] = {"exit_code": first.code, "completed": first.code == 0 and "run_done" in events,
                           "seconds": round(first.wall_s, 1), "events": events,
                           "error": None if first.code == 0 else first.error}
    result["uninterrupted_seconds"] = round(reference.wall_s, 1)
    if first.code == 0:
        result["first_run"]["identical_to_uninterrupted"] = same_output(work / "uninterrupted", out)["identical"]
    if killed.get("raylet_pid"):  # the GCS marks the node dead after its health checks fail: wait for that
        t0 = time.monotonic()
        while c.active_nodes() >= len(c.names) and time.monotonic() - t0 < 90:
            time.sleep(2.0)
        result["node_marked_dead_after_run_s"] = round(time.monotonic() - t0, 1)
    result["active_nodes_before_rerun"] = c.active_nodes()
    rerun = run_curate(cmd, c.env, c, out, timeout=args.fault_timeout)
    result["rerun"] = {"exit_code": rerun.code, "seconds": round(rerun.wall_s, 1),
                       "error": None if rerun.code == 0 else rerun.error}
    if rerun.code == 0:
        result["identical_to_uninterrupted"] = same_output(work / "uninterrupted", out)["identical"]
        result["identical_to_local"] = same_output(work / "local", out)["identical"]
        result["rerun_stages_cached"] = [s["label"] for s in (rerun.manifest or {}).get("stages", [])
                                         if s.get("cached")]
    else:
        result["identical_to_uninterrupted"] = result["identical_to_local"] = False
    return result


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # timeout(1) or a CI runner: still stop the cluster
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=None, help="comma-separated sizes (default 1000000,4000000)")
    parser.add_argument("--quick", action="store_true", help="20000,80000 rows: a smoke check (--rows wins)")
    parser.add_argument("--fault", action="store_true", help="the fault check (first size of --rows; 40000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-cpus", type=int, default=1)
    parser.add_argument("--head-cpus", type=int, default=0)
    parser.add_argument("--object-store-mb", type=int, default=500, help="per node")
    parser.add_argument("--kill-wait", type=float, default=20.0,
                        help="--fault: seconds after minhash_dedup starts to wait for a task on the node")
    parser.add_argument("--fault-timeout", type=float, default=1800.0, help="--fault: seconds a run may take")
    parser.add_argument("--workdir", type=Path, default=None, help="keep inputs and runs here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep each size's run directories")
    args = parser.parse_args()
    if args.rows:
        sizes = [int(s) for s in args.rows.split(",")]
    else:
        sizes = [40_000] if args.fault else [20_000, 80_000] if args.quick else [1_000_000, 4_000_000]

    with contextlib.ExitStack() as stack:
        work = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="curate-scale-")))
        work.mkdir(parents=True, exist_ok=True)
        # Short: Ray's unix sockets live under each node's temp dir, and a socket path has at most 107 bytes.
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crs-", dir="/tmp")))
        c = stack.enter_context(cluster(root, workers=args.workers, worker_cpus=args.worker_cpus,
                                        head_cpus=args.head_cpus, object_store_mb=args.object_store_mb))
        summary = fault(args, sizes[0], work, c) if args.fault else scale(args, sizes, work, c)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
