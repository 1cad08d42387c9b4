"""curate: build clean, deduplicated, scored and auditable SFT and DPO data.

Notebook use::

    import curate
    lf = curate.read("data.jsonl")                     # any supported format -> canonical LazyFrame
    out = lf.pipe(curate.stages.Filter(min_response_chars=10)).pipe(curate.stages.ExactDedup())
    df = out.collect()
"""

from __future__ import annotations

__version__ = "0.1.0"

from curate import stages
from curate.io import load, read
from curate.pipeline import Context, Pipeline, Stage
from curate.runner import RunResult, run_recipe

__all__ = ["Context", "Pipeline", "RunResult", "Stage", "__version__", "load", "read", "run_recipe", "stages"]
