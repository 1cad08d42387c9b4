"""deita's greedy diversity rule (Liu et al. 2024, "Repr Filter"), shared by ``deita_select`` and
``subsample method: deita``.

Rows arrive in score order; a row is kept when its cosine similarity to every kept row is ``<= tau``, until
``budget`` rows are kept.  The kept set lives in a FAISS index (no n x n matrix): each block of 512
candidates is searched against it once, and the candidates of the block are compared with each other with
one small matrix product, which gives exactly the result of the one-row-at-a-time loop.
"""

from __future__ import annotations

import numpy as np

from curate.embed.index import VectorIndex, new_index

BLOCK = 512

KEPT, OVER_BUDGET, TOO_SIMILAR = 1, 0, 2


def greedy_diverse(
    vectors: np.ndarray, budget: int, tau: float, *, exact_max: int = 100_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray, VectorIndex | None]:
    """Per row: status (0 over budget, 1 kept, 2 too similar), the position of the most similar kept row
    (-1 if none) and that similarity; plus the index of kept vectors (``None`` for empty input)."""
    n = len(vectors)
    status = np.zeros(n, np.int8)
    blocker = np.full(n, -1, np.int64)
    blocker_sim = np.zeros(n, np.float32)
    if n == 0 or budget <= 0:
        return status, blocker, blocker_sim, None
    index = new_index(vectors.shape[1], budget, exact_max=exact_max)
    t32 = np.float32(tau)
    kept: list[int] = []  # positions of kept rows; the index's ids follow this order
    for start in range(0, n, BLOCK):
        if len(kept) >= budget:
            break
        block = vectors[start : start + BLOCK]
        sims, ids = index.search(block, 1)
        within = block @ block.T
        accepted: list[int] = []
        for i in range(len(block)):
            if len(kept) + len(accepted) >= budget:
                break
            best, who = float(sims[i, 0]), int(ids[i, 0])
            who = kept[who] if who >= 0 else -1
            if accepted:
                local = within[i, accepted]
                j = int(np.argmax(local))
                if local[j] > best:
                    best, who = float(local[j]), start + accepted[j]
            if who >= 0 and np.float32(best) > t32:
                status[start + i], blocker[start + i], blocker_sim[start + i] = TOO_SIMILAR, who, best
            else:
                status[start + i] = KEPT
                accepted.append(i)
        index.add(block[accepted])
        kept.extend(start + a for a in accepted)
    return status, blocker, blocker_sim, index
