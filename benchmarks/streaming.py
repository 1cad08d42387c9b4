"""Streaming benchmark: N preference rows through filter + exact_dedup + minhash_dedup + output, via the CLI.

Generates N canonical preference rows (default 1,000,000) to Parquet in chunks, with 1% exact and 1%
near duplicates planted, runs ``curate run`` on them in a subprocess and prints one JSON line:
``rows``, ``seconds``, ``rows_per_s``, ``peak_rss_mb`` (the child's maximum resident set, from
getrusage), ``output_rows`` and per-stage seconds.  Target (DESIGN.md section 8): peak RSS < 3 GB at 1M.

    python benchmarks/streaming.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
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


def generate(path: Path, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pool = pl.Series(sentence_pool(rng))
    writer = None
    chunk = 100_000
    for offset in range(0, rows, chunk):
        table = make_chunk(pool, rng, min(chunk, rows - offset), offset).to_arrow()
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table)
    assert writer is not None
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="curate-stream-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "preference.parquet"
        t0 = time.perf_counter()
        generate(data, args.rows, args.seed)
        gen_s = time.perf_counter() - t0
        recipe = work / "streaming.yaml"
        recipe.write_text(RECIPE.format(input=data))
        out = work / "run"
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "curate.cli", "run", str(recipe), "--out", str(out), "--fresh", "--quiet"],
            capture_output=True, text=True,
        )
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(proc.returncode)
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        manifest = json.loads((out / "manifest.json").read_text())
        print(json.dumps({
            "benchmark": "streaming",
            "rows": args.rows,
            "input_mb": round(data.stat().st_size / 2**20, 1),
            "generate_s": round(gen_s, 2),
            "seconds": round(seconds, 2),
            "rows_per_s": round(args.rows / seconds),
            "peak_rss_mb": round(peak_kb / 1024),
            "output_rows": manifest["output"]["rows"],
            "quarantined": manifest["quarantined"],
            "stage_seconds": {s["label"]: s["seconds"] for s in manifest["stages"]},
        }))


if __name__ == "__main__":
    main()
