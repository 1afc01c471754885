"""Groups of copies from packed codes: every pair within a Hamming threshold, then groups that never chain.

Pairs. `pairs_within` finds every pair of codes at Hamming distance <= T, exactly: the same set of
pairs a brute-force scan gives, and nothing all-pairs in Python. Two methods, the cheaper by a cost
model (`plan`):

- "flat": faiss's brute-force range search (IndexBinaryFlat) of the codes against themselves, in
  chunks of queries: N^2 popcounts in C on every core. Best up to some tens of thousands of codes.
- "mih": multi-index hashing (Norouzi et al., 2012), vectorised. m disjoint substrings of b bits;
  if two codes are within T, one substring differs in at most r = floor(T / m) bits (pigeonhole:
  m (r + 1) > T). For each substring, the codes are bucketed by its value (a dense table of 2^b
  entries) and every bucket is joined with the buckets whose value differs in <= r bits (one
  vectorised pass over the distinct values per such bit pattern); the candidate pairs are then
  checked on the whole code. Exact, like the scan; its cost grows with the patterns C(b, <= r), so
  it wins for many codes and small T (1,000,000 64-bit codes at the copies model's thresholds:
  benchmarks/duplicates_speed.py) and the cost model falls back to the scan elsewhere.

Groups (the rule, and why). A group is a *star*: one centre and every file within T of it. The
centres are chosen greedily: files in decreasing order of how many others lie within T of them
(ties by `priority`, then position); a file not yet in a group becomes a centre and takes every file
within T of it that is not yet in a group. So A~B and B~C with A far from C never makes a chain of
three: C joins only a centre it is itself within T of. Following neighbours (single linkage, what a
union-find over the pairs gives) would merge whole crowds of look-alikes through their copies; a
star keeps each group to the copies of one picture, whose distances to the original are what the
threshold was calibrated on, at the cost of pairs of members being up to 2T apart (complete
linkage, every pair within T, would split a picture's copies that each moved a different way).

numpy and faiss only (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hashing.codes import hamming
from hashing.codes.bits import unpack
from hashing.core.errors import HashingError


def check_threshold(threshold: int, bits: int) -> int:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or not 0 <= threshold <= bits:
        raise HashingError(f"threshold must be an integer from 0 to {bits} (the code length), got {threshold!r}",
                           settings=("threshold",))
    return int(threshold)


# Relative costs of the two methods, per operation, from benchmarks/duplicates_speed.py on a 2-core machine
# (1,000,000 codes: the scan 1.5 ns a pair under that run's load; multi-index hashing about 0.12 s a bit
# pattern with 21-bit substrings, 2.7 s with 16-bit ones, a few seconds per substring to bucket the codes):
# one popcount of a pair in faiss's scan (per 64 bits); one code bucketed per substring; one bucket value
# looked up for one bit pattern; one candidate pair checked.
SCAN_COST, SETUP_COST, LOOKUP_COST, CANDIDATE_COST = 1.5e-9, 2e-6, 100e-9, 350e-9
MAX_KEY_BITS = 24                          # a dense bucket table of 2^24 int32 (64 MB) at most


def patterns(b: int, r: int) -> int:
    from math import comb

    return sum(comb(b, k) for k in range(r + 1))


def plan(n: int, bits: int, threshold: int, method: str = "auto") -> tuple[str, int, int, float]:
    """(method, m, b, estimated seconds): the cheaper exact method for n codes of `bits` at `threshold`
    (method "mih": the cheapest multi-index hashing)."""
    best = ("mih", 0, 0, float("inf"))
    for m in range(1, bits // 8 + 1):
        b = min(MAX_KEY_BITS, bits // m)
        r = threshold // m
        distinct = min(n, 2 ** b)
        seconds = m * (n * SETUP_COST + patterns(b, r) * (distinct * LOOKUP_COST + n * n / 2 ** (b + 1) * CANDIDATE_COST))
        if seconds < best[3]:
            best = ("mih", m, b, seconds)
    flat = ("flat", 0, 0, n * n * SCAN_COST * bits / 64)
    if method == "mih" or (method == "auto" and best[3] < flat[3]):
        return best
    return flat


def pairs_within(codes: np.ndarray, threshold: int, progress: bool = False, chunk: int = 8192,
                 desc: str = "grouping", method: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, d): every pair i < j of rows of `codes` (N, bits/8) uint8 with Hamming distance d <= threshold.
    method: auto (the cheaper by `plan`), flat or mih."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    n, width = codes.shape
    threshold = check_threshold(threshold, 8 * width)
    if n < 2:
        return (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.int32),)
    if method not in ("auto", "flat", "mih"):
        raise ValueError(f"unknown method {method!r}")
    chosen, m, b, _ = plan(n, 8 * width, threshold, method)
    if chosen == "mih":
        return _mih(codes, threshold, m, b, progress, desc)
    return _flat(codes, threshold, progress, chunk, desc)


def _flat(codes: np.ndarray, threshold: int, progress: bool, chunk: int, desc: str):
    import faiss
    from tqdm import tqdm

    n, width = codes.shape
    index = faiss.IndexBinaryFlat(8 * width)
    index.add(codes)
    found_i, found_j, found_d = [], [], []
    with tqdm(total=n, desc=desc, unit="file", disable=not progress, dynamic_ncols=True, leave=False) as bar:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            lims, D, I = index.range_search(codes[start:stop], threshold + 1)      # faiss: distance < radius
            q = np.repeat(np.arange(start, stop, dtype=np.int64), np.diff(lims).astype(np.int64))
            later = I > q                                                            # each pair once, no self
            found_i.append(q[later])
            found_j.append(I[later].astype(np.int64))
            found_d.append(D[later].astype(np.int32))
            bar.update(stop - start)
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)


def neighbours_within(codes: np.ndarray, radius: int, k: int, progress: bool = False, chunk: int = 8192,
                      desc: str = "candidates") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, d): each row's k nearest other rows at Hamming distance d <= radius, as pairs i < j (each
    once, though it is among the k nearest of one or of both): the candidates `hashing duplicates`
    checks (hashing.dedup.verify). faiss's brute-force k-NN search of the codes against themselves."""
    import faiss
    from tqdm import tqdm

    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    n, width = codes.shape
    radius = check_threshold(radius, 8 * width)
    if n < 2 or k < 1:
        return (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.int32),)
    index = faiss.IndexBinaryFlat(8 * width)
    index.add(codes)
    kk = min(n, k + 1)                                                              # itself among them
    found_i, found_j, found_d = [], [], []
    with tqdm(total=n, desc=desc, unit="file", disable=not progress, dynamic_ncols=True, leave=False) as bar:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            D, I = index.search(codes[start:stop], kk)                              # (q, kk) each
            q = np.repeat(np.arange(start, stop, dtype=np.int64), kk).reshape(-1, kk)
            ok = (I >= 0) & (I != q) & (D <= radius)
            found_i.append(np.minimum(q, I)[ok])
            found_j.append(np.maximum(q, I)[ok].astype(np.int64))
            found_d.append(D[ok].astype(np.int32))
            bar.update(stop - start)
    i, j, d = np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)
    _, first = np.unique(i * n + j, return_index=True)
    return i[first], j[first], d[first]


def _masks(b: int, r: int) -> np.ndarray:
    """Every b-bit pattern with at most r ones, as int64, 0 first."""
    from itertools import combinations

    out = [0]
    for k in range(1, r + 1):
        out += [sum(1 << p for p in c) for c in combinations(range(b), k)]
    return np.asarray(out, dtype=np.int64)


def _mih(codes: np.ndarray, threshold: int, m: int, b: int, progress: bool, desc: str):
    """Multi-index hashing over m disjoint b-bit substrings (the module's docstring)."""
    from tqdm import tqdm

    n, width = codes.shape
    r = threshold // m
    words = hamming.words(codes)
    masks = _masks(b, r)
    weights = (1 << np.arange(b, dtype=np.int64))
    found_i, found_j, found_d = [], [], []
    with tqdm(total=m * len(masks), desc=desc, unit="pattern", disable=not progress, dynamic_ncols=True,
              leave=False) as bar:
        for t in range(m):
            lo, hi = t * b // 8, ((t + 1) * b + 7) // 8                            # the bytes holding the substring
            sub = unpack(codes[:, lo:hi])[:, t * b - 8 * lo:(t + 1) * b - 8 * lo]
            keys = sub.astype(np.int64) @ weights                                  # (N,) this substring's value
            del sub
            order = np.argsort(keys, kind="stable")
            values, first, counts = np.unique(keys[order], return_index=True, return_counts=True)
            table = np.full(1 << b, -1, dtype=np.int32)
            table[values] = np.arange(len(values), dtype=np.int32)
            for mask in masks:
                if mask == 0:
                    a = np.flatnonzero(counts > 1)
                    pa, pb = a, a
                else:
                    other = table[values ^ mask]
                    a = np.flatnonzero((other >= 0) & (values < (values ^ mask)))   # each pair of buckets once
                    pa, pb = a, other[a].astype(np.int64)
                if len(pa):
                    i, j = _cross(order, first, counts, pa, pb, same=mask == 0)
                    d = hamming.paired(words[i], words[j])
                    ok = d <= threshold
                    found_i.append(np.minimum(i, j)[ok])
                    found_j.append(np.maximum(i, j)[ok])
                    found_d.append(d[ok].astype(np.int32))
                bar.update()
    if not found_i:
        return (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.int32),)
    i, j, d = np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)
    _, first_seen = np.unique(i * n + j, return_index=True)                      # a pair close in several substrings
    return i[first_seen], j[first_seen], d[first_seen]


def _cross(order, first, counts, pa, pb, same: bool):
    """Rows of every pair (one member from bucket pa[k], one from pb[k]); within one bucket each pair once."""
    ca, cb = counts[pa], counts[pb]
    if not same:
        single = (ca == 1) & (cb == 1)                 # most buckets of a wide substring hold one code
        if single.any():
            i1, j1 = order[first[pa[single]]], order[first[pb[single]]]
            if single.all():
                return i1, j1
            i2, j2 = _cross(order, first, counts, pa[~single], pb[~single], same)
            return np.concatenate([i1, i2]), np.concatenate([j1, j2])
    sizes = ca * cb
    total = int(sizes.sum())
    which = np.repeat(np.arange(len(pa)), sizes)
    offset = np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    ia, ib = offset // cb[which], offset % cb[which]
    if same:
        keep = ia < ib
        which, ia, ib = which[keep], ia[keep], ib[keep]
    return order[first[pa[which]] + ia], order[first[pb[which]] + ib]


@dataclass
class Groups:
    """Star groups over N items: `centres` (G,) and `members` (list of (size,) arrays, centre first)."""

    centres: np.ndarray
    members: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.members)


def star_groups(n: int, i: np.ndarray, j: np.ndarray, priority: np.ndarray | None = None) -> Groups:
    """The greedy star groups (the module's rule) of N items given their pairs within the threshold.
    `priority` (N,): lower first among centres with as many neighbours (default: position)."""
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    if not len(i):
        return Groups(np.zeros(0, np.int64), [])
    src, dst = np.concatenate([i, j]), np.concatenate([j, i])         # both directions
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    start = np.searchsorted(src, np.arange(n + 1))                    # CSR rows
    degree = np.diff(start)
    prio = np.arange(n) if priority is None else np.asarray(priority)
    candidates = np.flatnonzero(degree)
    candidates = candidates[np.lexsort((candidates, prio[candidates], -degree[candidates]))]
    taken = np.zeros(n, dtype=bool)
    centres, members = [], []
    for c in candidates:
        if taken[c]:
            continue
        nb = dst[start[c]:start[c + 1]]
        nb = nb[~taken[nb]]
        if not len(nb):
            continue
        group = np.concatenate([[c], np.sort(nb)])
        taken[group] = True
        centres.append(c)
        members.append(group)
    return Groups(np.asarray(centres, np.int64), members)


def distances_to(codes: np.ndarray, rows: np.ndarray, to: int) -> np.ndarray:
    """Hamming distances (len(rows),) int from codes[to] to codes[rows]."""
    return hamming.paired(codes[rows], codes[to])
