"""The bit order of packed codes, owned by exactly one pair of functions.

Bit j of an item is stored in byte j // 8 at position 7 - (j % 8): numpy.packbits'
default ("big") order, which is also how FAISS binary indexes and Milvus BINARY_VECTOR
read bytes. Nothing else in the project packs or unpacks bits. numpy only: no torch.
"""

from __future__ import annotations

import numpy as np

from hashing.errors import HashingError


def check_bits(bits: int) -> int:
    """Validate a code length: a multiple of 8 from 8 to 1024."""
    if not isinstance(bits, (int, np.integer)) or bits < 8 or bits > 1024 or bits % 8:
        raise HashingError(f"--bits must be a multiple of 8 from 8 to 1024, got {bits}")
    return int(bits)


def pack(bits: np.ndarray) -> np.ndarray:
    """(N, B) array of 0/1 (any integer or bool dtype) -> (N, B/8) uint8."""
    bits = np.asarray(bits)
    if bits.ndim != 2 or bits.shape[1] % 8:
        raise ValueError(f"pack expects (N, B) with B a multiple of 8, got {bits.shape}")
    return np.packbits(bits.astype(bool), axis=1)


def unpack(codes: np.ndarray, bits: int | None = None) -> np.ndarray:
    """(N, B/8) uint8 -> (N, B) uint8 of 0/1; inverse of pack."""
    codes = np.asarray(codes, dtype=np.uint8)
    out = np.unpackbits(codes, axis=1)
    return out if bits is None else out[:, :bits]


def hamming(xq: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """Exact Hamming distances popcount(xq ^ xb): (nq, B/8), (nb, B/8) uint8 -> (nq, nb) int32.

    The brute-force reference every index is checked against. Works on 64-bit words when
    the code length allows, which is 8x fewer popcounts than bytes.
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
