"""From images to packed binary codes, in bounded-memory batches under inference mode."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from hashing.codes.bits import pack
from hashing.model.network import HashAutoencoder


@dataclass
class Encoded:
    codes: np.ndarray          # (N, bits/8) uint8, packed by hashing.codes.bits.pack
    seconds: float

    @property
    def images_per_second(self) -> float:
        return len(self.codes) / self.seconds if self.seconds > 0 else float("inf")


def batches(images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(images), batch_size):
        yield images[start:start + batch_size]


@torch.inference_mode()
def encode_batches(model: HashAutoencoder, image_batches: Iterable[np.ndarray], total: int | None = None,
                   progress: bool = True, desc: str = "encoding") -> Encoded:
    """uint8 (B, H, W) batches -> packed codes; the model stays in eval (deterministic) mode."""
    from tqdm import tqdm

    model.eval()
    device = next(model.parameters()).device
    out: list[np.ndarray] = []
    t0 = time.perf_counter()
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for batch in image_batches:
            # Contiguous and writable (a copy only for a read-only memory map): what torch.from_numpy needs.
            x = model.preprocess(torch.from_numpy(np.require(batch, requirements=["C", "W"])).to(device))
            out.append(pack(model.binarize(x).cpu().numpy()))            # (B, bits/8)
            bar.update(len(batch))
    codes = np.concatenate(out) if out else np.zeros((0, model.cfg.bits // 8), np.uint8)
    return Encoded(codes, time.perf_counter() - t0)


def encode_array(model: HashAutoencoder, images: np.ndarray, batch_size: int = 1024, progress: bool = True,
                 desc: str = "encoding") -> Encoded:
    return encode_batches(model, batches(images, batch_size), len(images), progress, desc)
