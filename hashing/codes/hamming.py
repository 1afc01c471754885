"""Hamming distances between packed codes, by NumPy's popcount: the one place they are computed on the CPU.

Codes are (n, bits/8) uint8 as hashing.codes.bits.pack writes them. The distance of two codes is the
number of set bits in their XOR, which does not depend on where a bit sits, so the bytes are read as
64-bit words where the width allows (8x fewer popcounts than bytes) without touching the bit order.
Every index and search is checked against `distances` (tests); hashing.model.knn is the torch one.
numpy only: no torch.
"""

from __future__ import annotations

import numpy as np


def words(codes: np.ndarray) -> np.ndarray:
    """(N, W) uint64 views of packed codes (N, B/8), zero-padded to whole words (padding adds no distance)."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    pad = (-codes.shape[1]) % 8
    if pad:
        codes = np.concatenate([codes, np.zeros((codes.shape[0], pad), np.uint8)], axis=1)
    return codes.view(np.uint64)


def distances(xq: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """Every query against every database code: (nq, B/8), (nb, B/8) uint8 -> (nq, nb) int32."""
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


def paired(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row i of `a` against row i of `b` (or one code against every row), packed bytes or `words`:
    (n, W), (n, W) -> (n,) int64."""
    return np.bitwise_count(a ^ b).sum(axis=-1).astype(np.int64)
