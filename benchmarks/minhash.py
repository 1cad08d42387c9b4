"""MinHash near-dedup: curate's ``MinHashDedup`` against datasketch, on real texts with planted duplicates.

Corpus: distinct real documents read in place from ``/work/shared/data`` (GSM8K train+test questions and
answers as separate documents, Code Alpaca, HH-RLHF harmless chosen transcripts, OASST messages and prompts,
Self-Instruct seeds / user-oriented tasks / text-davinci-003 responses, XQuAD English paragraphs, MT-Bench,
HumanEval prompts).  The pool is cleaned first: exact duplicates after normalisation are dropped, and so is
one document of every natural pair with *exact* shingle Jaccard >= 0.6 (candidates from a 0.5-threshold LSH
over curate's signatures, each checked with Python sets), so the only near duplicates are the planted ones.

Planted copies (``--dup-rate`` of the ``--docs`` documents): 1-3 copies each of a seeded sample of sources.
A copy of a source with >= 50 words gets k word edits (substitute, delete, insert, swap adjacent; k uniform
in 1..(words-4)//45, so its 5-shingle Jaccard is mostly >= 0.8); a shorter source gets a surface copy (case
and punctuation only: Jaccard 1 after normalisation).  ``--hard-share`` of the copies are hard negatives:
heavier edits (k in (words-4)//30..(words-4)//12, Jaccard mostly 0.5-0.8), related texts a method should
*not* join.

Truth: documents are duplicates when their exact shingle Jaccard is >= 0.8 (computed with Python sets for
every pair inside a planted group; the cleaned pool has no pair >= 0.6 elsewhere); true clusters are the
connected components of that graph.  Metric, pair counting over clusters: each method yields a partition
(datasketch: connected components of the query-then-insert candidate edges; curate: each quarantined row
with the kept row its reason names).  precision = |predicted pairs & true pairs| / |predicted pairs|,
recall = |predicted pairs & true pairs| / |true pairs|, a pair being two documents in one cluster.

Methods, same shingles (curate's normalisation, word 5-grams), num_perm 128, threshold 0.8, in one run:
 (a) naive: per document ``MinHash()`` + ``update(shingle.encode())`` per shingle, then ``MinHashLSH``
     query-then-insert;
 (b) bulk: ``MinHash.bulk`` over all shingle lists, then the same LSH loop;
 (c) curate: ``MinHashDedup()`` on a canonical conversation frame through the Python API with a fresh Context
     (nothing cached), output and quarantine collected; then a second run on the same cache directory
     (``cached_rerun_s``: no signature is recomputed).  ``noverify_*`` is curate with ``verify=False``
     (datasketch's 9 x 13 bands, every band collision a duplicate), on the cached signatures.
Baseline times include shingling (Python split/join per document); all methods get normalised text from the
same vectorised normaliser, not timed for the baselines (it is a small share: see ``normalise_s``).

    .venv/bin/python benchmarks/minhash.py              # 20,000 documents
    .venv/bin/python benchmarks/minhash.py --quick      # 3,000 documents, a smoke run
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import string
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.dedup import minhash as mh
from curate.pipeline import Context
from curate.schema import conform
from curate.stages import MinHashDedup

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
THRESHOLD = 0.8
NUM_PERM = 128
NGRAM = 5


# -- corpus -------------------------------------------------------------------------------------------------


def _jsonl(path: Path) -> list:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _oasst_texts(node: dict) -> list[str]:
    out = [node["text"]]
    for reply in node.get("replies") or []:
        out.extend(_oasst_texts(reply))
    return out


def read_pool(data: Path) -> list[str]:
    texts: list[str] = []
    for split in ("train", "test"):
        for row in _jsonl(data / "gsm8k" / f"{split}.jsonl"):
            texts += [row["question"], row["answer"]]
    for row in json.loads((data / "code_alpaca" / "code_alpaca_2k.json").read_text()):
        texts.append("\n".join(part for part in (row["instruction"], row["input"], row["output"]) if part))
    texts += [row["chosen"] for row in _jsonl(data / "hh_rlhf_harmless_base_test" / "test.jsonl.gz")]
    for tree in _jsonl(data / "oasst_en_100_trees" / "en_100_tree.jsonl"):
        texts += _oasst_texts(tree["prompt"])
    texts += [str(row) for row in _jsonl(data / "oasst_en_100_trees" / "prompt_lottery_en_250_text.jsonl")]
    for name in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl"):
        for row in _jsonl(data / "self_instruct" / name):
            inst = row["instances"][0] if row["instances"] else {}
            texts.append("\n".join(p for p in (row["instruction"], inst.get("input"), inst.get("output")) if p))
    texts += [row["response"] for row in _jsonl(data / "self_instruct" / "predictions_text-davinci-003.jsonl")]
    for article in json.loads((data / "xquad" / "xquad.en.json").read_text())["data"]:
        texts += [paragraph["context"] for paragraph in article["paragraphs"]]
    texts += ["\n".join(row["turns"]) for row in _jsonl(data / "mt_bench" / "question.jsonl")]
    texts += [row["prompt"] for row in _jsonl(data / "humaneval" / "HumanEval.jsonl.gz")]
    return texts


def _lsh_pairs(sig: np.ndarray, threshold: float, cap: int = 64) -> np.ndarray:
    """All pairs sharing a band bucket (buckets capped at ``cap`` members), for cleaning the pool."""
    bands, rows = mh.optimal_bands(threshold, sig.shape[1])
    hashes = mh.band_hashes(sig, bands, rows)
    pairs = []
    for k in range(bands):
        order = np.argsort(hashes[:, k], kind="stable")
        ordered = hashes[order, k]
        for d in range(1, cap):
            same = ordered[d:] == ordered[:-d]
            if not same.any():
                break
            pairs.append(np.stack([order[:-d][same], order[d:][same]], axis=1))
    if not pairs:
        return np.empty((0, 2), np.int64)
    pairs = np.sort(np.concatenate(pairs), axis=1)
    return np.unique(pairs, axis=0)


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def clean_pool(texts: list[str], max_jaccard: float = 0.6) -> list[str]:
    """Drop exact duplicates (after normalisation), empty texts, and one text of every natural near pair."""
    norm = mh.normalise(texts).to_list()
    seen: set[str] = set()
    keep: list[int] = []
    for i, text in enumerate(norm):
        key = " ".join(text.split())
        if key and key not in seen:
            seen.add(key)
            keep.append(i)
    texts = [texts[i] for i in keep]
    norm = [norm[i] for i in keep]
    sig = mh.text_signatures(texts, ngram=NGRAM, num_perm=NUM_PERM)
    sets = [mh.shingle_set(t, NGRAM) for t in norm]
    dropped: set[int] = set()
    for i, j in _lsh_pairs(sig, 0.5):
        if i not in dropped and j not in dropped and jaccard(sets[i], sets[j]) >= max_jaccard:
            dropped.add(int(j))
    return [t for i, t in enumerate(texts) if i not in dropped]


def _edit(words: list[str], k: int, vocab: list[str], rng: np.random.Generator) -> list[str]:
    out = list(words)
    for _ in range(k):
        op = rng.integers(4)
        pos = int(rng.integers(len(out)))
        if op == 0:
            out[pos] = vocab[rng.integers(len(vocab))]
        elif op == 1 and len(out) > 1:
            del out[pos]
        elif op == 2:
            out.insert(pos, vocab[rng.integers(len(vocab))])
        elif pos + 1 < len(out):
            out[pos], out[pos + 1] = out[pos + 1], out[pos]
        else:
            out[pos] = vocab[rng.integers(len(vocab))]
    return out


def _surface(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    for _ in range(max(1, len(words) // 10)):
        pos = int(rng.integers(len(words)))
        word = words[pos]
        words[pos] = word.upper() if rng.random() < 0.5 else word + string.punctuation[rng.integers(32)]
    return " ".join(words)


def build_corpus(
    pool: list[str], docs: int, dup_rate: float, hard_share: float, seed: int
) -> tuple[list[str], np.ndarray, dict]:
    """Documents and their true cluster label (components of the exact-Jaccard >= threshold graph)."""
    rng = np.random.default_rng(seed)
    n_copies = round(docs * dup_rate)
    n_base = docs - n_copies
    if n_base > len(pool):
        raise SystemExit(
            f"--docs {docs} with --dup-rate {dup_rate} needs {n_base} distinct texts; the pool has {len(pool)}"
        )
    base = [pool[i] for i in rng.permutation(len(pool))[:n_base]]
    norm = mh.normalise(base).to_list()
    vocab = sorted({w for text in norm[:2000] for w in text.split()})
    groups: dict[int, list[str]] = {}
    seen: set[str] = set(base)
    near_j, hard_j, copies = [], [], 0
    while copies < n_copies:
        src = int(rng.integers(n_base))
        words, n_words = base[src].split(), len(norm[src].split())
        for _ in range(min(int(rng.geometric(0.6)), 3, n_copies - copies)):
            hard = n_words >= 50 and rng.random() < hard_share
            if hard:  # a related text below the threshold: a true negative
                k = int(rng.integers(max(1, (n_words - 4) // 30), (n_words - 4) // 12 + 1))
                copy = " ".join(_edit(words, k, vocab, rng))
            elif n_words >= 50:
                copy = " ".join(_edit(words, int(rng.integers(1, (n_words - 4) // 45 + 1)), vocab, rng))
            else:
                copy = _surface(base[src], rng)
            if copy in seen:
                continue
            seen.add(copy)
            groups.setdefault(src, []).append(copy)
            copies += 1
            sim = jaccard(mh.shingle_set(norm[src], NGRAM), mh.shingle_set(mh.normalise([copy])[0], NGRAM))
            (hard_j if hard else near_j).append(sim)
    texts = list(base)
    edges: list[tuple[int, int]] = []
    for src, group in groups.items():  # exact Jaccard of every pair inside a planted group
        members = [src, *range(len(texts), len(texts) + len(group))]
        texts += group
        sets = [mh.shingle_set(t, NGRAM) for t in mh.normalise([texts[m] for m in members]).to_list()]
        edges += [
            (members[i], members[j])
            for i in range(len(members))
            for j in range(i)
            if jaccard(sets[i], sets[j]) >= THRESHOLD
        ]
    labels = _components(len(texts), np.asarray(edges, dtype=np.int64))
    order = rng.permutation(len(texts))  # copies are not all at the end
    near, hard = np.asarray(near_j), np.asarray(hard_j)
    info = {
        "planted_copies": n_copies,
        "near_copies": len(near),
        "near_jaccard_mean": round(float(near.mean()), 4) if len(near) else None,
        "near_share_above_threshold": round(float((near >= THRESHOLD).mean()), 4) if len(near) else None,
        "hard_copies": len(hard),
        "hard_jaccard_mean": round(float(hard.mean()), 4) if len(hard) else None,
        "true_pairs": int(sum(c * (c - 1) // 2 for c in np.unique(labels, return_counts=True)[1])),
    }
    return [texts[i] for i in order], labels[order], info


# -- metrics ------------------------------------------------------------------------------------------------


def _components(n: int, edges: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = edges.reshape(-1, 2)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def pair_scores(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    def pairs(frame: pl.DataFrame, by: list[str]) -> int:
        counts = frame.group_by(by).len().get_column("len").to_numpy().astype(np.int64)
        return int((counts * (counts - 1) // 2).sum())

    frame = pl.DataFrame({"p": predicted, "t": truth})
    both, pred, true = pairs(frame, ["p", "t"]), pairs(frame, ["p"]), pairs(frame, ["t"])
    return (both / pred if pred else 1.0), (both / true if true else 1.0)


# -- methods ------------------------------------------------------------------------------------------------


def run_naive(norm: list[str]) -> tuple[float, np.ndarray]:
    from datasketch import MinHash, MinHashLSH

    start = time.perf_counter()
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    edges = []
    for i, text in enumerate(norm):
        m = MinHash(num_perm=NUM_PERM)
        for shingle in mh.shingle_set(text, NGRAM):
            m.update(shingle.encode("utf-8"))
        edges += [(i, j) for j in lsh.query(m)]
        lsh.insert(i, m)
    seconds = time.perf_counter() - start
    return seconds, _components(len(norm), np.asarray(edges, dtype=np.int64))


def run_bulk(norm: list[str]) -> tuple[float, np.ndarray]:
    from datasketch import MinHash, MinHashLSH

    start = time.perf_counter()
    shingles = [[s.encode("utf-8") for s in mh.shingle_set(text, NGRAM)] for text in norm]
    minhashes = MinHash.bulk(shingles, num_perm=NUM_PERM)
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    edges = []
    for i, m in enumerate(minhashes):
        edges += [(i, j) for j in lsh.query(m)]
        lsh.insert(i, m)
    seconds = time.perf_counter() - start
    return seconds, _components(len(norm), np.asarray(edges, dtype=np.int64))


def run_curate(
    frame: pl.DataFrame, cache: Path | None = None, verify: bool = True
) -> tuple[float, pl.DataFrame, Context]:
    ctx = Context(cache_dir=cache) if cache is not None else Context.ephemeral()
    stage = MinHashDedup(threshold=THRESHOLD, num_perm=NUM_PERM, ngram=NGRAM, verify=verify)
    start = time.perf_counter()
    out = stage(frame.lazy(), ctx).collect()
    quarantine = ctx.quarantine_frame()
    seconds = time.perf_counter() - start
    assert out.height + quarantine.height == frame.height
    return seconds, quarantine, ctx


def curate_labels(frame: pl.DataFrame, quarantine: pl.DataFrame) -> np.ndarray:
    index = {doc_id: i for i, doc_id in enumerate(frame.get_column("id").to_list())}
    kept = quarantine.get_column("reason").str.extract(r" of ([0-9a-f]+)$").to_list()
    edges = [(index[a], index[b]) for a, b in zip(quarantine.get_column("id").to_list(), kept, strict=True)]
    return _components(frame.height, np.asarray(edges, dtype=np.int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--dup-rate", type=float, default=0.2, help="share of documents that are planted copies")
    parser.add_argument(
        "--hard-share", type=float, default=0.2, help="share of copies edited below the threshold (negatives)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="3,000 documents")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    docs = 3000 if args.quick else args.docs

    pool = clean_pool(read_pool(args.data))
    texts, truth, info = build_corpus(pool, docs, args.dup_rate, args.hard_share, args.seed)
    frame = conform(
        pl.DataFrame(
            {"messages": [[{"role": "user", "content": t}] for t in texts], "doc": np.arange(len(texts))}
        ).lazy(),
        "conversation",
    ).collect()
    assert frame.get_column("id").n_unique() == frame.height

    start = time.perf_counter()
    norm = mh.normalise(texts).to_list()
    normalise_s = time.perf_counter() - start

    seconds, quarantine, ctx = run_curate(frame)
    labels = curate_labels(frame, quarantine)
    precision, recall = pair_scores(labels, truth)
    rerun_s, _, ctx2 = run_curate(frame, cache=ctx.cache_dir)
    stats = next(iter(ctx.stats.values()))
    assert next(iter(ctx2.stats.values()))["batches_computed"] == 0
    # datasketch's own setting (9 x 13 bands, every band collision a duplicate), on the cached signatures
    _, plain_quarantine, ctx3 = run_curate(frame, cache=ctx.cache_dir, verify=False)
    plain_p, plain_r = pair_scores(curate_labels(frame, plain_quarantine), truth)

    bulk_s, bulk_labels = run_bulk(norm)
    bulk_p, bulk_r = pair_scores(bulk_labels, truth)
    naive_s, naive_labels = run_naive(norm)
    naive_p, naive_r = pair_scores(naive_labels, truth)
    ctx.close()

    result = {
        "benchmark": "minhash_dedup",
        "docs": len(texts),
        "pool": len(pool),
        **info,
        "threshold": THRESHOLD,
        "num_perm": NUM_PERM,
        "ngram": NGRAM,
        "bands": stats["bands"],
        "rows": stats["rows"],
        "seconds": round(seconds, 3),
        "docs_per_s": round(len(texts) / seconds, 1),
        "naive_docs_per_s": round(len(texts) / naive_s, 1),
        "bulk_docs_per_s": round(len(texts) / bulk_s, 1),
        "speedup_vs_naive": round(naive_s / seconds, 2),
        "speedup_vs_bulk": round(bulk_s / seconds, 2),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "naive_precision": round(naive_p, 4),
        "naive_recall": round(naive_r, 4),
        "bulk_precision": round(bulk_p, 4),
        "bulk_recall": round(bulk_r, 4),
        "noverify_bands": f"{ctx3.stats['minhash_dedup']['bands']}x{ctx3.stats['minhash_dedup']['rows']}",
        "noverify_precision": round(plain_p, 4),
        "noverify_recall": round(plain_r, 4),
        "duplicates_removed": stats["duplicates"],
        "cached_rerun_s": round(rerun_s, 3),
        "normalise_s": round(normalise_s, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
