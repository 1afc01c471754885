r"""Retrieval metrics as pure functions of ranked relevance, with ties handled on purpose.

A ranking is described by its *tie blocks*: consecutive items at the same distance. For
Q queries, n (Q, B) holds the block sizes in rank order and r (Q, B) how many items of
each block are relevant (zero-size blocks are padding and count for nothing).

Tie rule. Hamming distances tie all the time, and a ranking that breaks ties by the
index's internal order (insertion order, say) gives numbers that depend on that order.
Every metric here is the *expectation over a uniformly random order within each tied
block* (McSherry & Najork, ECIR 2008). For a block of n items, r relevant, preceded by
c items of which R_c are relevant, position c + i (1 <= i <= n) is relevant with
probability r/n, and two positions with probability r(r-1)/(n(n-1)). Hence

  E[#relevant in top k] = sum_b r_b * clip((k - c_b)/n_b, 0, 1)
  E[sum_{k<=K} rel_k P@k] = sum_b sum_{i=1}^{m_b} 1/(c_b+i) [ (r_b/n_b)(R_c+1) + (i-1) r_b(r_b-1)/(n_b(n_b-1)) ]

with m_b = clip(K - c_b, 0, n_b), summed in closed form with harmonic numbers.

Definitions (per query, then averaged over queries):
  precision@k = E[#relevant in top k] / k
  AP@K        = E[sum_{k<=K} rel_k P@k] / min(R, K)   (R = #relevant in the database;
                AP@all uses K = N, i.e. divides by R; a query with R = 0 scores 0)
  precision / recall within Hamming radius rho: of the items at distance <= rho (no ties
  to break), the fraction relevant (0 when none is retrieved), and the fraction of R found.
  recall@k    = E[#relevant in top k] / R; with one relevant item (copy detection) AP is the
                expected reciprocal rank of that item, (H(c+n) - H(c)) / n for its block.

Operating point (deduplication): accept a pair when its distance is <= T. Distances are
integers, so the false-positive rate jumps; the threshold that gives a target rate exactly
accepts the pairs at T + 1 with a probability (`operating_point`), the same expectation over
a random tie-break as above, and the true-positive rate is taken at that same point.
"""

from __future__ import annotations

import numpy as np


def blocks_from_sorted(D: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distances D (Q, N) and relevance rel (Q, N) -> tie blocks n, r (Q, N), padded with 0."""
    D = np.atleast_2d(D)
    rel = np.atleast_2d(rel)
    q, n_items = D.shape
    new = np.ones_like(D, dtype=bool)
    new[:, 1:] = D[:, 1:] != D[:, :-1]
    block = np.cumsum(new, axis=1) - 1                              # (Q, N) block index of each item
    flat = (np.arange(q)[:, None] * n_items + block).ravel()
    n = np.bincount(flat, minlength=q * n_items).reshape(q, n_items)
    r = np.bincount(flat, weights=rel.ravel().astype(np.float64), minlength=q * n_items).reshape(q, n_items)
    return n.astype(np.float64), r


def hamming_blocks(D: np.ndarray, rel: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Hamming distances D (Q, N) in any order -> blocks by distance 0..bits: n, r (Q, bits+1)."""
    D = np.atleast_2d(D).astype(np.int64)
    q = D.shape[0]
    flat = (np.arange(q)[:, None] * (bits + 1) + D).ravel()
    n = np.bincount(flat, minlength=q * (bits + 1)).reshape(q, bits + 1)
    r = np.bincount(flat, weights=np.atleast_2d(rel).ravel().astype(np.float64),
                    minlength=q * (bits + 1)).reshape(q, bits + 1)
    return n.astype(np.float64), r


def _before(x: np.ndarray) -> np.ndarray:
    """Exclusive cumulative sum along the blocks: what precedes each block."""
    return np.cumsum(x, axis=1) - x


def expected_relevant_at(n: np.ndarray, r: np.ndarray, k: int) -> np.ndarray:
    """E[#relevant among the first k] per query, (Q,)."""
    c = _before(n)
    frac = np.clip((k - c) / np.where(n > 0, n, 1), 0.0, 1.0)
    return (r * np.where(n > 0, frac, 0.0)).sum(axis=1)


def precision_at_k(n: np.ndarray, r: np.ndarray, k: int) -> np.ndarray:
    """Tie-aware precision@k per query, (Q,)."""
    return expected_relevant_at(n, r, k) / k


def recall_at_k(n: np.ndarray, r: np.ndarray, k: int) -> np.ndarray:
    """Tie-aware recall@k per query: E[#relevant in top k] / R (0 when R = 0), (Q,)."""
    R = r.sum(axis=1)
    return np.where(R > 0, expected_relevant_at(n, r, k) / np.where(R > 0, R, 1), 0.0)


def _harmonic(upto: int) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, upto + 1))])


def average_precision(n: np.ndarray, r: np.ndarray, cutoff: int | None = None) -> np.ndarray:
    """Tie-aware AP@cutoff per query (cutoff None = the whole ranking), (Q,)."""
    total = int(n.sum(axis=1).max()) if n.size else 0
    K = total if cutoff is None else int(cutoff)
    H = _harmonic(total)
    c = _before(n)
    Rc = _before(r)
    m = np.clip(K - c, 0, n)                                          # positions of the block within the top K
    hsum = H[(c + m).astype(np.int64)] - H[c.astype(np.int64)]        # sum_{i=1}^{m} 1/(c+i)
    safe_n = np.where(n > 0, n, 1)
    pair = np.where(n > 1, r * (r - 1) / (safe_n * np.where(n > 1, n - 1, 1)), 0.0)
    terms = (r / safe_n) * (Rc + 1) * hsum + pair * (m - (c + 1) * hsum)
    R = r.sum(axis=1)
    denom = np.minimum(R, K)
    return np.where(denom > 0, terms.sum(axis=1) / np.where(denom > 0, denom, 1), 0.0)


def radius_precision_recall(n: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hamming blocks by distance (Q, bits+1) -> precision and recall within radius 0..bits, each (Q, bits+1)."""
    ret = np.cumsum(n, axis=1)
    hit = np.cumsum(r, axis=1)
    R = r.sum(axis=1, keepdims=True)
    precision = np.where(ret > 0, hit / np.where(ret > 0, ret, 1), 0.0)
    recall = np.where(R > 0, hit / np.where(R > 0, R, 1), 0.0)
    return precision, recall


def operating_point(negatives: np.ndarray, fpr: float) -> tuple[int, float]:
    """The Hamming threshold with false-positive rate `fpr`, from the non-copy pairs' distance
    histogram `negatives` (bits+1,): (T, share) = accept every pair at distance <= T and the
    fraction `share` of pairs at T + 1, so that E[false positives] / #pairs = fpr exactly
    (T = -1: not even distance 0 fits; share 1 at T = bits: everything is accepted)."""
    total = float(negatives.sum())
    if total == 0:
        return len(negatives) - 1, 1.0
    cdf = np.concatenate([[0.0], np.cumsum(negatives) / total])       # cdf[t + 1] = FPR of "d <= t"
    t = int(np.searchsorted(cdf, fpr, side="right")) - 2              # largest t with cdf[t + 1] <= fpr
    if t + 1 >= len(negatives):
        return len(negatives) - 1, 1.0
    step = cdf[t + 2] - cdf[t + 1]
    return t, float((fpr - cdf[t + 1]) / step) if step > 0 else 0.0


def true_positive_rate(distances: np.ndarray, threshold: int, share: float) -> float:
    """The share of positive pairs (their distances (P,)) accepted at the operating point (threshold, share)."""
    d = np.asarray(distances)
    if not d.size:
        return 0.0
    return float(((d <= threshold).sum() + share * (d == threshold + 1).sum()) / d.size)
