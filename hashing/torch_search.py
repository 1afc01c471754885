"""Hamming k-NN in torch: XOR + popcount on packed 64-bit words, for when the query side
already lives on a GPU (no trip through the host and FAISS).

torch has no popcount, so each int64 word is counted with the SWAR bit trick
(Hacker's Delight 5-1). The shifts are arithmetic on int64, but every mask clears the
bits they smear, so the count is exact. Codes are (n, bits/8) uint8 as packed by
hashing.bits.pack; popcount does not depend on the bit order.
"""

from __future__ import annotations

import torch

_M1, _M2, _M4, _H01 = 0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F, 0x0101010101010101


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


def hamming(xq: torch.Tensor, xb: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """(nq, bits/8), (nb, bits/8) uint8 -> (nq, nb) int32 Hamming distances."""
    q, b = as_words(xq), as_words(xb)
    out = torch.empty((q.shape[0], b.shape[0]), dtype=torch.int32, device=q.device)
    for s in range(0, b.shape[0], chunk):
        x = q[:, None, :] ^ b[None, s:s + chunk, :]                       # (nq, c, words)
        out[:, s:s + chunk] = popcount64(x).sum(-1).to(torch.int32)
    return out


def search(xq: torch.Tensor, xb: torch.Tensor, k: int, query_chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest by Hamming distance: D (nq, k) int32 ascending, I (nq, k) int64; ties by lower id."""
    Ds, Is = [], []
    n = xb.shape[0]
    ids = torch.arange(n, device=xb.device)
    for s in range(0, xq.shape[0], query_chunk):
        d = hamming(xq[s:s + query_chunk], xb)
        # distance * n + id is a unique key, so topk's order is the deterministic (distance, id) order
        key = d.to(torch.int64) * n + ids
        top = torch.topk(key, k, dim=1, largest=False, sorted=True).values
        Ds.append((top // n).to(torch.int32))
        Is.append(top % n)
    return torch.cat(Ds), torch.cat(Is)
