r"""Nearest-neighbour positives for the contrastive term (Objective.neighbours).

Instance discrimination (two views of one image) spreads every image away from every
other, including the images of its own kind: with few bits that uniformity pressure splits
a class over many codes. Taking the positive of an image from its nearest neighbours
instead (NNCLR, Dwibedi et al. ICCV 2021; in hashing, the neighbourhood structure of
Yang et al.'s SSDH and CIMON) pulls whole neighbourhoods onto one code.

Here the neighbours come from the model itself: before each epoch after the first, every
training image is encoded (pre-activations z, eval mode) and its k nearest training images by
cosine of z are kept, a (N, k) table (past MAX_CANDIDATES images, the nearest within a fresh
random sample of that many). During the epoch the second view of image i is a view
of a draw from {i, its k neighbours}, uniform: the image itself stays a positive of itself.
"""

from __future__ import annotations

from typing import Callable

import torch


MAX_CANDIDATES = 65_536     # past this many training images, neighbours are sought in a fresh random sample


@torch.inference_mode()
def neighbour_table(model, inputs: Callable[[torch.Tensor], torch.Tensor], n: int, k: int, device: torch.device,
                    batch: int = 1024, candidates: int = MAX_CANDIDATES) -> torch.Tensor:
    """(N, k) int64: for each of the n training images, its k nearest others by cosine of the
    model's pre-activations. `inputs(idx)` gives the model's input for the positions idx (a
    tensor), as the training steps get it.

    Up to `candidates` images every image is compared with every other; past that, with a
    random sample of `candidates` of them, drawn anew each call, so the cost stays linear in n
    (one encoding pass, n x candidates products) and the memory bounded."""
    was_training = model.training
    model.eval()

    def encode(idx: torch.Tensor) -> torch.Tensor:                         # (b,) -> (b, bits) unit rows
        return torch.nn.functional.normalize(model.encoder(inputs(idx)).float(), dim=1)

    everyone = n <= candidates
    pool = torch.arange(n, device=device) if everyone else \
        torch.randperm(n, device=device)[:candidates].sort().values       # (P,) sorted: sequential reads
    zc = torch.cat([encode(pool[i:i + batch]) for i in range(0, len(pool), batch)])   # (P, bits)
    where = torch.full((n,), -1, dtype=torch.int64, device=device)
    where[pool] = torch.arange(len(pool), device=device)                   # image -> its row in the pool
    table = torch.empty(n, k, dtype=torch.int64, device=device)
    for start in range(0, n, batch):
        idx = torch.arange(start, min(n, start + batch), device=device)
        zq = zc[start:start + len(idx)] if everyone else encode(idx)
        sim = zq @ zc.t()                                                  # (b, P)
        mine = where[idx]
        inside = mine >= 0
        sim[inside.nonzero().squeeze(1), mine[inside]] = float("-inf")     # not its own neighbour
        table[start:start + len(idx)] = pool[sim.topk(k, dim=1).indices]
    model.train(was_training)
    return table


def partners(table: torch.Tensor, idx: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) positions -> (B,) positions: each one itself or one of its k table neighbours, uniform."""
    k = table.shape[1]
    pick = torch.randint(0, k + 1, (len(idx),), device=idx.device, generator=generator)   # k = itself
    return torch.where(pick == k, idx, table[idx, pick.clamp_max(k - 1)])
