"""Keep model libraries off the network: curate loads weights from local paths only (docs/architecture.md)."""

from __future__ import annotations

import os
import sys


def offline_hub() -> None:
    """Make sure nothing under transformers/huggingface_hub tries the network (docs/architecture.md: nothing is
    downloaded at run time)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if not sys.stderr.isatty():
        # Loading bars (GGUF de-quantising, weights) are noise in logs and scheduled runs.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover - transformers is the llm extra
            pass
