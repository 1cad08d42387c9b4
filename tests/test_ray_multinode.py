"""--executor ray on a local multi-node cluster (benchmarks/ray_scale.py): a head with no CPUs and two one-CPU
worker nodes on 127.0.0.1 give the local executor's output, and a worker node whose raylet is killed while
minhash_dedup runs leaves an output (after the same command again) equal to an uninterrupted run's.

Marked ``multinode`` (and slow): each test starts and stops its own three-node cluster and takes a minute or
two, so ``make test`` (and CI) deselect them; run them with
``.venv/bin/python -m pytest -q -m multinode tests/test_ray_multinode.py``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.multinode]

if importlib.util.find_spec("ray") is None:
    pytest.skip("ray not installed (pip install 'curate[dist]')", allow_module_level=True)

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "ray_scale.py"


def run_bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(BENCH), "--workdir", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_multinode_cluster_gives_the_local_output(tmp_path: Path) -> None:
    """filter + exact_dedup + minhash_dedup over the streaming benchmark's rows (1% exact, 1% near duplicates)."""
    out = run_bench(tmp_path, "--quick", "--rows", "3000,6000")
    assert out["rows"] == [3000, 6000] and out["identical_to_local"] is True
    assert out["cluster"]["cpus"] == {"head": 0, "worker1": 1, "worker2": 1}
    # The head has no CPUs, so every task ran on a worker node: their processes grew past their idle size.
    for node in ("worker1", "worker2"):
        assert max(out["node_peak_rss_mb"][node]) > out["node_idle_rss_mb"][node]
    assert len(out["driver_peak_rss_mb"]) == 2 and out["driver_rss_ratio"] >= 1.0
    assert all(r > 0 for r in out["rows_per_s_ray"] + out["rows_per_s_local"])


def test_worker_raylet_killed_during_minhash_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    out = run_bench(tmp_path, "--fault", "--rows", "20000")
    assert out["reference_identical_to_local"] is True
    assert out["kill"] and out["kill"].get("running_on_node"), out["kill"]  # a task ran there when it died
    assert out["rerun"]["exit_code"] == 0, out["rerun"]
    assert out["identical_to_uninterrupted"] is True and out["identical_to_local"] is True
    if out["first_run"]["completed"]:  # Ray retried the lost work on the surviving worker node
        assert out["first_run"]["identical_to_uninterrupted"] is True
    else:
        assert out["first_run"]["exit_code"] != 0 and out["first_run"]["error"]
