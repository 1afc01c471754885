"""Exact Hamming distances by brute force: the reference every index and search is checked against."""

from __future__ import annotations

import numpy as np


def hamming_distances(xq: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """popcount(xq ^ xb): (nq, B/8), (nb, B/8) uint8 -> (nq, nb) int32.

    Works on 64-bit words when the code length allows, which is 8x fewer popcounts than bytes.
    """
    xq = np.ascontiguousarray(xq, dtype=np.uint8)
    xb = np.ascontiguousarray(xb, dtype=np.uint8)
    if xq.shape[1] != xb.shape[1]:
        raise ValueError(f"code widths differ: {xq.shape[1]} vs {xb.shape[1]} bytes")
    if xq.shape[1] % 8 == 0:
        xq, xb = xq.view(np.uint64), xb.view(np.uint64)
    out = np.empty((xq.shape[0], xb.shape[0]), dtype=np.int32)
    step = max(1, (1 << 24) // max(1, xb.size))  # bound the (chunk, nb, words) temporary
    for start in range(0, xq.shape[0], step):
        chunk = xq[start:start + step]
        out[start:start + step] = np.bitwise_count(chunk[:, None, :] ^ xb[None, :, :]).sum(axis=2)
    return out
