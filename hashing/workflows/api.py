"""The Python API under the CLI: load a model, encode images, open an index, search.

    import hashing
    model = hashing.load("runs/mnist")                 # a run folder from `hashing train`
    codes = model.encode(["seven.png", "two.png"])     # paths, PIL images or uint8 arrays -> (N, bits/8) uint8
    index = hashing.open_index("idx/mnist")            # a FAISS folder, a Milvus Lite .db or a Milvus URI
    D, I = index.search(codes, k=5)                    # Hamming distances and item ids, nearest first
    hits = index.query(codes, k=5)                     # the same, with labels and sources

The codes are packed by hashing.codes.bits.pack, so they go straight into any index, or to FAISS
or Milvus directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Union

import numpy as np

from hashing.core.errors import HashingError

ImageLike = Union[str, os.PathLike, np.ndarray, "PIL.Image.Image"]  # noqa: F821


class Model:
    """A trained model that turns images into packed binary codes, deterministically."""

    def __init__(self, checkpoint):
        self.checkpoint = checkpoint          # hashing.model.checkpoint.Checkpoint: model, config, fingerprint

    @property
    def bits(self) -> int:
        return self.checkpoint.config.bits

    @property
    def spec(self):
        """hashing.images.reader.ImageSpec: the size, channels and resize rule images are brought to."""
        return self.checkpoint.config.spec

    def arrays(self, images: ImageLike | Iterable[ImageLike], invert: bool = False) -> np.ndarray:
        """Images as the model's input: (N, *spec.shape) uint8, each prepared as the CLI prepares files
        (hashing.images.reader.fit_image: mode, then the model's size by its resize rule)."""
        from hashing.images.reader import fit_image, read_image

        spec = self.checkpoint.config.spec
        if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.shape[1:] == spec.shape \
                and images.ndim == len(spec.shape) + 1:
            return 255 - images if invert else images          # a batch already at the model's size
        items = [images] if isinstance(images, (str, os.PathLike, np.ndarray)) or hasattr(images, "mode") \
            else list(images)
        out = []
        for item in items:
            if isinstance(item, (str, os.PathLike)):
                out.append(read_image(Path(item), spec, invert))
            elif isinstance(item, np.ndarray):
                if item.dtype != np.uint8 or item.ndim not in (2, 3):
                    raise HashingError(f"an image array must be uint8 (H, W) or (H, W, C), got {item.dtype} "
                                       f"{item.shape}")
                from PIL import Image
                if item.ndim == 3 and item.shape[2] not in (1, 3, 4):
                    raise HashingError(f"an (H, W, C) image array needs 1, 3 or 4 channels, got {item.shape}")
                out.append(fit_image(Image.fromarray(item[..., 0] if item.ndim == 3 and item.shape[2] == 1 else item),
                                     spec, invert))
            elif hasattr(item, "mode"):
                out.append(fit_image(item, spec, invert))
            else:
                raise HashingError(f"cannot encode a {type(item).__name__}: give paths, PIL images or uint8 arrays")
        if not out:
            raise HashingError("no images to encode")
        return np.stack(out)

    def encode(self, images: ImageLike | Iterable[ImageLike], invert: bool = False,
               batch_size: int = 1024) -> np.ndarray:
        """Images -> packed codes (N, bits/8) uint8."""
        from hashing.model.encode import encode_array

        return encode_array(self.checkpoint.model, self.arrays(images, invert), batch_size, progress=False).codes


def load(run_dir: str | os.PathLike, device: str = "auto") -> Model:
    """The model of a run folder, checked against its fingerprint, on `device` (auto: GPU if any)."""
    from hashing.model import checkpoint
    from hashing.model.device import resolve_device

    return Model(checkpoint.load(run_dir, resolve_device(device)))
