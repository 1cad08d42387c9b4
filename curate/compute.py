"""Where batch and shared work runs: in this process, or (:mod:`curate.distributed`) on a cluster.

One of the three parts of a :class:`curate.pipeline.Context` (with the shard cache, :mod:`curate.shards`, and
the recorder, :mod:`curate.recorder`).  Stages never call it directly: ``ctx.map_batches`` / ``ctx.map_rows``
send their uncached batches through :meth:`LocalCompute.batches`, and global stages send chunks of work that
read one large value (a FAISS index) through :meth:`LocalCompute.shared`.  The Ray implementation
(:class:`curate.distributed.executor.RayCompute`) runs the same calls on workers and gives the same results in
the same order, so shards, seeds and outputs are those of a local run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import polars as pl

from curate.recorder import Recorder


class LocalCompute:
    """Everything in this process, in order."""

    def batches(
        self, batches: Iterable[pl.DataFrame], fn: Callable[[pl.DataFrame], pl.DataFrame], recorder: Recorder
    ) -> Iterator[pl.DataFrame]:
        """``fn`` of each batch, in order; the model usage of ``fn``'s calls goes to the stage's notes."""
        from curate.progress import metered

        for batch in batches:
            with metered(recorder):
                result = fn(batch)
            yield result

    def shared(
        self, shared: Any, chunks: Iterable[Any], fn: Callable[[Any, Any], Any], recorder: Recorder, *,
        pack: Callable[[Any], Any], unpack: Callable[[Any], Any], name: str,
    ) -> Iterator[Any]:
        """``fn(shared, chunk)`` of each chunk, in order: work over chunks that all read one large read-only
        value (a FAISS index).  The Ray compute puts ``pack(shared)`` in the object store once and each worker
        process ``unpack``s it once, so the value is neither shipped nor rebuilt per chunk."""
        for chunk in chunks:
            yield fn(shared, chunk)
