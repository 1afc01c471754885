"""Groups of copies from packed codes: every pair within a Hamming threshold, then groups that never chain.

Pairs. `pairs_within` finds every pair of codes at Hamming distance <= T, exactly (faiss range
search over the codes themselves, in chunks of queries, with a progress bar): nothing is all-pairs
in Python, and the result is the same set of pairs a brute-force scan gives.

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

from hashing.errors import HashingError


def check_threshold(threshold: int, bits: int) -> int:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or not 0 <= threshold <= bits:
        raise HashingError(f"--threshold must be an integer from 0 to {bits} (the code length), got {threshold!r}")
    return int(threshold)


def pairs_within(codes: np.ndarray, threshold: int, progress: bool = False, chunk: int = 8192,
                 desc: str = "grouping") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, d): every pair i < j of rows of `codes` (N, bits/8) uint8 with Hamming distance d <= threshold."""
    import faiss
    from tqdm import tqdm

    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    n, width = codes.shape
    threshold = check_threshold(threshold, 8 * width)
    if n < 2:
        return (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.int32),)
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
    return np.bitwise_count(codes[rows] ^ codes[to]).sum(axis=1).astype(np.int64)
