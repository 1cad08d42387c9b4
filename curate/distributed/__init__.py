"""The Ray Data executor: the same stage objects, the same run directory, many machines (docs/architecture.md).

``curate run RECIPE --executor ray [--address ray://HOST:10001]`` (or ``RAY_ADDRESS``) runs a recipe with
:class:`RayExecutor`: the runner, cache, quarantine, publish and manifest are the local ones; what moves to
the cluster is the per-row work.  See :mod:`curate.distributed.executor` for what runs where.
"""

from curate.distributed.executor import RayContext, RayExecutor

__all__ = ["RayContext", "RayExecutor"]
