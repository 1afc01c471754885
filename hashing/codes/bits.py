"""The bit order of packed codes, owned by exactly one pair of functions.

Bit j of an item is stored in byte j // 8 at position 7 - (j % 8): numpy.packbits'
default ("big") order, which is also how FAISS binary indexes and Milvus BINARY_VECTOR
read bytes. Every piece of code that turns 0/1 values into bytes or back calls `pack` or
`unpack`; codes made in another order (faiss.IndexLSH packs least significant bit first)
come in through `from_lsb_first`. hashing.codes.hamming (NumPy) and hashing.model.knn (torch)
reinterpret packed bytes as 64-bit words (knn also as +-1 vectors) for distances only: Hamming distance and inner products do
not depend on where a bit sits, as long as both sides are read alike. numpy only: no torch.
"""

from __future__ import annotations

import numpy as np


def pack(binary: np.ndarray) -> np.ndarray:
    """(N, B) array of 0/1 (any integer or bool dtype) -> (N, B/8) uint8."""
    binary = np.asarray(binary)
    if binary.ndim != 2 or binary.shape[1] % 8:
        raise ValueError(f"pack expects (N, B) with B a multiple of 8, got {binary.shape}")
    return np.packbits(binary.astype(bool), axis=1)


def unpack(codes: np.ndarray, bits: int | None = None) -> np.ndarray:
    """(N, B/8) uint8 -> (N, B) uint8 of 0/1, or the first `bits` columns; inverse of pack."""
    codes = np.asarray(codes, dtype=np.uint8)
    out = np.unpackbits(codes, axis=1)
    return out if bits is None else out[:, :bits]


def from_lsb_first(codes: np.ndarray, bits: int) -> np.ndarray:
    """(N, ceil(bits/8)) uint8 packed least significant bit first -> our order, (N, bits/8)."""
    return pack(np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=1, bitorder="little")[:, :bits])
