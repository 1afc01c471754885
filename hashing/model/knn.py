"""Hamming k-NN in torch, for when the query side already lives on a GPU (no trip through
the host and FAISS).

Two ways to get distances, same results:

- "popcount": XOR + popcount on packed 64-bit words. torch has no popcount, so each int64
  word is counted with the SWAR bit trick (Hacker's Delight 5-1). The shifts are arithmetic
  on int64, but every mask clears the bits they smear, so the count is exact. Memory: the
  packed codes only.
- "matmul": the codes expanded to +-1 and multiplied on the matrix units:
  d_H(q, b) = (bits - <q, b>) / 2. fp16 holds every integer up to 2048 exactly and the
  products are accumulated in fp32, so for bits <= 2048 the distances are exact. Memory:
  16x the packed codes (2 bytes per bit), in exchange for tensor-core speed.

The database is scanned in chunks and a running top-k is kept, so memory is bounded by
the chunk, not by nq x nb. Codes are (n, bits/8) uint8 as packed by hashing.codes.bits.pack.
"""

from __future__ import annotations

import torch

_M1, _M2, _M4, _H01 = 0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F, 0x0101010101010101
METHODS = ("popcount", "matmul")


def popcount64(x: torch.Tensor) -> torch.Tensor:
    """Bits set in each int64 element -> int64 in 0..64."""
    x = x - ((x >> 1) & _M1)
    x = (x & _M2) + ((x >> 2) & _M2)
    x = (x + (x >> 4)) & _M4
    return (x * _H01) >> 56          # the top byte holds the sum; it is <= 64, so never negative


def as_words(codes: torch.Tensor) -> torch.Tensor:
    """(n, bits/8) uint8 -> (n, ceil(bits/64)) int64, zero-padded to whole words."""
    pad = (-codes.shape[1]) % 8
    if pad:
        codes = torch.nn.functional.pad(codes, (0, pad))
    return codes.contiguous().view(torch.int64)


def as_pm1(codes: torch.Tensor, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """(n, bits/8) uint8 -> (n, bits) +-1. Only inner products are taken of it, so the order
    of bits within a byte is irrelevant as long as queries and database expand alike."""
    shifts = torch.arange(8, device=codes.device, dtype=torch.uint8)
    bits = (codes[:, :, None] >> shifts) & 1                                # (n, bytes, 8)
    return (bits.flatten(1).to(dtype) * 2 - 1)


def _chunk_popcount(qw: torch.Tensor, bw: torch.Tensor) -> torch.Tensor:
    """(nq, words), (c, words) int64 -> (nq, c) int32."""
    return popcount64(qw[:, None, :] ^ bw[None, :, :]).sum(-1).to(torch.int32)   # via (nq, c, words)


def _chunk_matmul(q_pm1: torch.Tensor, b_pm1: torch.Tensor) -> torch.Tensor:
    """(nq, bits), (c, bits) +-1 -> (nq, c) int32. CPUs multiply fp16 slowly: fp32 there."""
    bits = q_pm1.shape[1]
    if q_pm1.device.type != "cuda":
        q_pm1, b_pm1 = q_pm1.float(), b_pm1.float()
    dot = q_pm1 @ b_pm1.t()
    return ((bits - dot.float()) / 2).round().to(torch.int32)


class TorchFlat:
    """Exact Hamming k-NN over a database of packed codes held as torch tensors.

    The database is prepared once (int64 words, or +-1 fp16 for "matmul"), so repeated
    searches, single queries included, pay only for the scan.
    """

    def __init__(self, xb: torch.Tensor, method: str = "popcount", compile: bool = False):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method, self.ntotal = method, xb.shape[0]
        self.b = as_pm1(xb) if method == "matmul" else as_words(xb)       # (nb, bits) or (nb, words)
        # Eager popcount writes each SWAR step's (nq, c, words) int64 tensor to memory;
        # compiled, XOR + popcount + sum fuse into one kernel that writes only (nq, c).
        self._popcount = torch.compile(_chunk_popcount, dynamic=True) if compile else _chunk_popcount

    def _prepare(self, xq: torch.Tensor) -> torch.Tensor:
        return as_pm1(xq) if self.method == "matmul" else as_words(xq)

    def _distances(self, q: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _chunk_matmul(q, b) if self.method == "matmul" else self._popcount(q, b)

    def search(self, xq: torch.Tensor, k: int, query_chunk: int = 1024,
               db_chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """D (nq, k) int32 ascending, I (nq, k) int64; ties by lower id; k capped at nb.

        db_chunk bounds the working memory: by default each step scores about 2^25 pairs
        (popcount, eager: 64 bytes a pair in flight) or 2^28 (matmul), so a single query
        scans up to 33M codes in one step and a batch of 1,024 in steps of 32,768.
        """
        n = self.ntotal
        k = min(k, n)
        pairs = 1 << (28 if self.method == "matmul" else 25)
        chunk = db_chunk or max(1024, pairs // max(1, min(query_chunk, xq.shape[0])))
        Ds, Is = [], []
        for qs in range(0, xq.shape[0], query_chunk):
            q = self._prepare(xq[qs:qs + query_chunk])
            best = None                                                     # (nq_chunk, <=k) int64 keys
            for s in range(0, n, chunk):
                d = self._distances(q, self.b[s:s + chunk])                 # (nq_chunk, c) int32
                # distance * n + id is a unique key, so topk's order is the deterministic (distance, id) order
                key = d.to(torch.int64) * n + torch.arange(s, s + d.shape[1], device=d.device)
                top = torch.topk(key, min(k, d.shape[1]), dim=1, largest=False, sorted=True).values
                if best is not None:
                    top = torch.topk(torch.cat([best, top], 1), k, dim=1, largest=False, sorted=True).values
                best = top
            Ds.append((best // n).to(torch.int32))
            Is.append(best % n)
        return torch.cat(Ds), torch.cat(Is)


def knn(xq: torch.Tensor, xb: torch.Tensor, k: int, query_chunk: int = 1024, method: str = "popcount",
           db_chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One-off k-NN: TorchFlat(xb, method).search(xq, k, ...)."""
    return TorchFlat(xb, method).search(xq, k, query_chunk, db_chunk)
