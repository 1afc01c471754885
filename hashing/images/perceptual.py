"""Perceptual hashes: what people use today to find copies by Hamming distance, as baselines.

Each is computed on a decoded image file exactly as its package's users call it (its own
grayscale conversion and resize), not on the model's preprocessed array:

- phash, dhash, ahash, whash: the `imagehash` package, hash_size 8 -> 64 bits each
  (DCT of a 32x32 thumbnail; horizontal gradient of 9x8; mean of 8x8; Haar wavelet).
- pdq: Meta's PDQ (256 bits) from the `pdqhash` package (the reference C++ under Python).

Both packages are the `copies` extra. Codes are packed with hashing.codes.bits.pack, row-major
over the hash's bit matrix, so Hamming distances equal the packages' own differences.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from hashing.core.errors import HashingError

PERCEPTUAL = {"phash": 64, "dhash": 64, "ahash": 64, "whash": 64, "pdq": 256}     # name -> bits


@functools.lru_cache(maxsize=None)
def hasher(name: str) -> Callable[[object], np.ndarray]:
    """name -> f(PIL image) -> (bits,) uint8 of 0/1, built once per process (it is called per image).
    Raises HashingError when the package is missing."""
    if name == "pdq":
        try:
            import pdqhash
        except ImportError:
            raise HashingError("pdq needs the pdqhash package: pip install 'hashing[copies]'") from None

        def pdq(im) -> np.ndarray:
            rgb = np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
            vector, _quality = pdqhash.compute(rgb)
            return np.asarray(vector, dtype=np.uint8)
        return pdq
    try:
        import imagehash
    except ImportError:
        raise HashingError(f"{name} needs the imagehash package: pip install 'hashing[copies]'") from None
    if name not in ("phash", "dhash", "ahash", "whash"):
        raise HashingError(f"unknown perceptual hash {name!r}: choose from {', '.join(PERCEPTUAL)}")
    fn = {"phash": imagehash.phash, "dhash": imagehash.dhash, "ahash": imagehash.average_hash,
          "whash": imagehash.whash}[name]
    return lambda im: np.asarray(fn(im).hash, dtype=np.uint8).ravel()
