"""Streaming benchmark: N preference rows through filter + exact_dedup + minhash_dedup + output, via the CLI.

Generates N canonical preference rows (default 1,000,000) in chunks, with 1% exact and 1% near duplicates
planted, as Parquet and/or JSON Lines (``--format``; the same rows), runs ``curate run`` on each in a
subprocess and prints one JSON line per input format: ``format``, ``rows``, ``input_mb``, ``seconds``,
``rows_per_s``, ``peak_rss_mb`` (that child's maximum resident set, from wait4), ``output_rows`` and
per-stage seconds.  Target: peak RSS < 3 GB at 1M.  JSON Lines is the common export
format of SFT/DPO data; large files of it are read in blocks (curate.io.readers.BLOCK_BYTES).

    python benchmarks/streaming.py --rows 1000000 --format both
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

RECIPE = """\
name: streaming
on_error: quarantine
batch_size: 8192
input:
  - path: {input}
    adapter: preference
stages:
  - filter:
      min_prompt_chars: 10
      max_response_chars: 8000
      refusals: true
  - exact_dedup:
      on: prompt
  - minhash_dedup:
      on: prompt
      threshold: 0.8
"""


def sentence_pool(rng: np.random.Generator, n: int = 60_000) -> list[str]:
    syllables = ["ka", "lo", "mi", "ra", "te", "su", "no", "vi", "da", "pe", "zu", "ho", "ni", "gar", "bel", "tor"]
    words = sorted({"".join(rng.choice(syllables, size=int(rng.integers(1, 4)))) for _ in range(20_000)})
    vocab = np.array(words)
    lengths = rng.integers(6, 18, size=n)
    picks = rng.integers(0, len(vocab), size=int(lengths.sum()))
    out, start = [], 0
    for length in lengths:
        out.append(" ".join(vocab[picks[start:start + length]]).capitalize() + ".")
        start += length
    return out


def message(role: str, text: pl.Expr) -> pl.Expr:
    return pl.concat_list(pl.struct(pl.lit(role).alias("role"), text.alias("content")))


def make_chunk(pool: pl.Series, rng: np.random.Generator, rows: int, offset: int) -> pl.DataFrame:
    def text(k: int) -> pl.Expr:
        idx = [pl.lit(pool.gather(rng.integers(0, pool.len(), size=rows))) for _ in range(k)]
        return pl.concat_str(idx, separator=" ")

    df = pl.select(
        message("user", text(3)).alias("prompt"),
        message("assistant", text(6)).alias("chosen"),
        message("assistant", text(4)).alias("rejected"),
        pl.lit(rng.random(rows)).alias("score_chosen"),
        pl.lit(rng.random(rows) * 0.5).alias("score_rejected"),
    ).with_columns(pl.lit("synthetic").alias("source"))
    # Plant duplicates: 1% exact copies of an earlier row's prompt, 1% with one sentence appended.
    n_dup = rows // 100
    src = rng.integers(0, rows - 2 * n_dup, size=2 * n_dup)
    prompts = df.get_column("prompt").to_list()
    for j, s in enumerate(src[:n_dup]):
        prompts[rows - 1 - j] = prompts[s]
    for j, s in enumerate(src[n_dup:]):
        content = prompts[s][0]["content"]
        prompts[rows - 1 - n_dup - j] = [{"role": "user", "content": content.replace(".", ",", 1)}]
    return df.with_columns(pl.Series("prompt", prompts, dtype=df.schema["prompt"]))


def generate(parquet: Path | None, jsonl: Path | None, rows: int, seed: int) -> None:
    """Write the same rows to whichever of ``parquet`` / ``jsonl`` is given, chunk by chunk."""
    rng = np.random.default_rng(seed)
    pool = pl.Series(sentence_pool(rng))
    writer = None
    chunk = 100_000
    lines = jsonl.open("wb") if jsonl is not None else None
    for offset in range(0, rows, chunk):
        df = make_chunk(pool, rng, min(chunk, rows - offset), offset)
        if parquet is not None:
            table = df.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(parquet, table.schema, compression="zstd")
            writer.write_table(table)
        if lines is not None:
            df.write_ndjson(lines)
    if writer is not None:
        writer.close()
    if lines is not None:
        lines.close()


def run_child(cmd: list[str]) -> tuple[int, str, int, float]:
    """Run ``cmd``; return its exit code, stderr, peak RSS (KiB, this child alone) and seconds."""
    t0 = time.perf_counter()
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        stderr = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, stderr, usage.ru_maxrss, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--format", choices=["parquet", "jsonl", "both"], default="parquet",
                        help="input file format(s) to run on (default: parquet)")
    args = parser.parse_args()
    formats = ["parquet", "jsonl"] if args.format == "both" else [args.format]

    with tempfile.TemporaryDirectory(prefix="curate-stream-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        inputs = {"parquet": work / "preference.parquet", "jsonl": work / "preference.jsonl"}
        t0 = time.perf_counter()
        generate(inputs["parquet"] if "parquet" in formats else None,
                 inputs["jsonl"] if "jsonl" in formats else None, args.rows, args.seed)
        gen_s = time.perf_counter() - t0
        for fmt in formats:
            data = inputs[fmt]
            recipe = work / f"streaming-{fmt}.yaml"
            recipe.write_text(RECIPE.format(input=data))
            out = work / f"run-{fmt}"
            code, stderr, peak_kb, seconds = run_child(
                [sys.executable, "-m", "curate.cli", "run", str(recipe), "--out", str(out), "--fresh", "--quiet"]
            )
            if code != 0:
                print(stderr, file=sys.stderr)
                raise SystemExit(code)
            manifest = json.loads((out / "manifest.json").read_text())
            print(json.dumps({
                "benchmark": "streaming",
                "format": fmt,
                "rows": args.rows,
                "input_mb": round(data.stat().st_size / 2**20, 1),
                "generate_s": round(gen_s, 2),
                "seconds": round(seconds, 2),
                "rows_per_s": round(args.rows / seconds),
                "peak_rss_mb": round(peak_kb / 1024),
                "output_rows": manifest["output"]["rows"],
                "quarantined": manifest["quarantined"],
                "stage_seconds": {s["label"]: s["seconds"] for s in manifest["stages"]},
            }), flush=True)


if __name__ == "__main__":
    main()
