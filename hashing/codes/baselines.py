"""Classic hashing baselines on raw pixels, and the float L2 reference.

Each hasher is fit on the database vectors and returns packed codes (hashing.codes.bits order)
for any vectors. Inputs are (N, D) float32 pixel vectors in [0, 1].

- LSH: random hyperplanes through the database mean (Charikar 2002), via faiss.IndexLSH
  with a random rotation and zero thresholds.
- PCAH: the top `bits` principal components, thresholded at 0 (scikit-learn's PCA).
- ITQ: PCA, then the rotation R that minimises the quantisation loss ||B - V R||_F^2 by
  alternating B = sign(V R) and orthogonal Procrustes (Gong & Lazebnik, CVPR 2011).
  Written here because the loss per iteration is part of what we test; PCA is sklearn's.
PCAH and ITQ need bits <= min(N, D). ITQ also turns a trained model's features into its codes
(HashConfig.codes = "itq", hashing.model.rotation).
"""

from __future__ import annotations

import numpy as np

from hashing.codes.bits import from_lsb_first, pack
from hashing.core.errors import HashingError

HASHERS = ("lsh", "pcah", "itq")     # binary codes at the model's bit length
BASELINES = (*HASHERS, "l2")          # l2: exact float kNN on the pixels (hashing.evaluate.classes ranks it)


def check_names(names) -> tuple[str, ...]:
    """The one check of baseline names, before any work."""
    for name in names:
        if name not in BASELINES:
            raise HashingError(f"unknown baseline {name!r}: choose from {', '.join(BASELINES)}")
    return tuple(names)


class LSH:
    def __init__(self, bits: int, seed: int = 0):
        self.bits, self.seed = bits, seed

    def fit(self, x: np.ndarray) -> "LSH":
        import faiss

        x = np.ascontiguousarray(x, dtype=np.float32)
        self.mean = x.mean(0, keepdims=True)
        self.index = faiss.IndexLSH(x.shape[1], self.bits, True, False)
        faiss.downcast_VectorTransform(self.index.rrot).init(self.seed)
        self.index.train(x - self.mean)
        return self

    def codes(self, x: np.ndarray) -> np.ndarray:
        packed = self.index.sa_encode(np.ascontiguousarray(x - self.mean, dtype=np.float32))
        return from_lsb_first(packed, self.bits)


class PCAH:
    def __init__(self, bits: int, seed: int = 0):
        self.bits, self.seed = bits, seed

    def fit(self, x: np.ndarray) -> "PCAH":
        from sklearn.decomposition import PCA

        if self.bits > min(x.shape):
            raise HashingError(f"{type(self).__name__.lower()} needs bits <= {min(x.shape)} (input size); got {self.bits}")
        self.pca = PCA(n_components=self.bits, random_state=self.seed).fit(x)
        return self

    def project(self, x: np.ndarray) -> np.ndarray:
        return self.pca.transform(x)

    def codes(self, x: np.ndarray) -> np.ndarray:
        return pack(self.project(x) > 0)


class ITQ(PCAH):
    def __init__(self, bits: int, seed: int = 0, iterations: int = 50):
        super().__init__(bits, seed)
        self.iterations = iterations
        self.losses: list[float] = []   # quantisation loss before each update, and after the last

    def fit(self, x: np.ndarray) -> "ITQ":
        super().fit(x)
        v = super().project(x)                                          # (N, bits)
        rng = np.random.default_rng(self.seed)
        r, _ = np.linalg.qr(rng.standard_normal((self.bits, self.bits)))
        self.losses = []
        for _ in range(self.iterations):
            b = np.where(v @ r > 0, 1.0, -1.0)                          # fix R, best B
            self.losses.append(float(((b - v @ r) ** 2).sum()))
            u, _, wt = np.linalg.svd(b.T @ v)                           # fix B, best R (Procrustes)
            r = (u @ wt).T
        self.losses.append(float(((np.where(v @ r > 0, 1.0, -1.0) - v @ r) ** 2).sum()))
        self.rotation = r
        return self

    def project(self, x: np.ndarray) -> np.ndarray:
        return super().project(x) @ self.rotation


def make(name: str, bits: int, seed: int = 0):
    """An unfitted hasher by name (one of HASHERS)."""
    check_names([name])
    return {"lsh": LSH, "pcah": PCAH, "itq": ITQ}[name](bits, seed)
