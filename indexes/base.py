"""The interface every backend implements, and the metadata that travels with the codes.

faiss names throughout: xb (database codes), xq (query codes), k, D (distances), I (ids).
Codes are (n, bits/8) uint8 packed by hashing.bits.pack. Item ids are assigned in add
order, 0, 1, 2, ... and never reused.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

from hashing.errors import HashingError


@dataclass
class IndexInfo:
    """What an index knows about itself: the model that made its codes, and its datasets."""

    bits: int
    model: dict                                    # {"run_dir", "fingerprint", "bits", "estimator", ...}
    index_type: str = "flat"
    datasets: dict = field(default_factory=dict)   # "mnist/train" -> data_dir, to find source images

    def check_model(self, model: dict) -> None:
        """Refuse codes from another model: the same bits can mean different things."""
        if int(model.get("bits", -1)) != self.bits:
            raise HashingError(f"bit length mismatch: the index holds {self.bits}-bit codes but the model makes "
                               f"{model.get('bits')}-bit codes; use the model the index was built with")
        fp, mine = model.get("fingerprint"), self.model.get("fingerprint")
        if fp and mine and fp != mine:
            raise HashingError(f"model mismatch: the index was built by model {mine} "
                               f"({self.model.get('run_dir')}), not {fp}; rebuild the index or use that model")


@dataclass
class Hit:
    id: int
    distance: int
    label: int | None
    source: str

    def to_dict(self) -> dict:
        return {"id": self.id, "distance": self.distance, "label": self.label, "source": self.source}


class BinaryIndex(abc.ABC):
    info: IndexInfo

    @property
    def bits(self) -> int:
        return self.info.bits

    @property
    @abc.abstractmethod
    def count(self) -> int: ...

    @abc.abstractmethod
    def add(self, xb: np.ndarray, labels: np.ndarray | None, sources: list[str]) -> np.ndarray:
        """Append codes with their labels (-1 = unknown) and sources; return their ids."""

    @abc.abstractmethod
    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k nearest by Hamming distance: D (nq, k) int32 ascending, I (nq, k) int64 ids."""

    @abc.abstractmethod
    def range_search(self, xq: np.ndarray, radius: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every item within Hamming distance <= radius, per query as (D, I), D ascending."""

    @abc.abstractmethod
    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Labels (-1 = unknown) and sources of the given ids."""

    @abc.abstractmethod
    def save(self) -> None:
        """Persist everything; a reader never sees a half-written index."""

    def close(self) -> None:
        """Release connections and file locks (Milvus Lite lets one process open a .db at a time)."""

    # ---- shared checks and result shaping --------------------------------------------------

    def check_queries(self, xq: np.ndarray, k: int | None = None) -> np.ndarray:
        xq = np.ascontiguousarray(xq, dtype=np.uint8)
        if xq.ndim != 2 or xq.shape[1] * 8 != self.bits:
            raise HashingError(f"bit length mismatch: queries have {xq.shape[-1] * 8} bits, the index {self.bits}")
        if self.count == 0:
            raise HashingError("the index is empty: add items with `hashing index` first")
        if k is not None:
            if k < 1:
                raise HashingError(f"-k must be at least 1, got {k}")
            if k > self.count:
                raise HashingError(f"-k {k} is larger than the index ({self.count} items); ask for at most {self.count}")
        return xq

    def check_codes(self, xb: np.ndarray) -> np.ndarray:
        xb = np.ascontiguousarray(xb, dtype=np.uint8)
        if xb.ndim != 2 or xb.shape[1] * 8 != self.bits:
            raise HashingError(f"bit length mismatch: codes have {xb.shape[-1] * 8} bits, the index {self.bits}")
        return xb

    def hits(self, D: np.ndarray, I: np.ndarray) -> list[Hit]:
        """One query's (D, I) -> Hits with labels and sources; drops the -1 padding of short lists."""
        keep = I >= 0
        D, I = D[keep], I[keep]
        labels, sources = self.lookup(I)
        return [Hit(int(i), int(d), None if lab < 0 else int(lab), s) for i, d, lab, s in zip(I, D, labels, sources)]

    def query(self, xq: np.ndarray, k: int | None = None, radius: int | None = None) -> list[list[Hit]]:
        """k nearest (or all within radius) for each query, as Hits."""
        if radius is not None:
            if radius < 0:
                raise HashingError(f"--radius must be >= 0, got {radius}")
            xq = self.check_queries(xq)
            return [self.hits(D, I) for D, I in self.range_search(xq, radius)]
        D, I = self.search(xq, k)
        return [self.hits(d, i) for d, i in zip(D, I)]


def backend_for(location: str) -> str:
    loc = str(location)
    return "milvus" if loc.endswith(".db") or loc.startswith(("http://", "https://", "tcp://")) else "faiss"


def create(location: str, info: IndexInfo, backend: str | None = None, collection: str | None = None,
           overwrite: bool = True) -> BinaryIndex:
    """A new, empty index at `location` for codes described by `info`."""
    backend = backend or backend_for(location)
    if backend == "faiss":
        from indexes.faiss_index import FaissIndex
        return FaissIndex.create(location, info)
    if backend == "milvus":
        from indexes.milvus_index import MilvusIndex
        return MilvusIndex.create(location, info, collection, overwrite=overwrite)
    raise HashingError(f"unknown backend {backend!r}: choose faiss or milvus")


def open_index(location: str, collection: str | None = None, backend: str | None = None) -> BinaryIndex:
    """Open an existing index (FAISS folder, Milvus Lite .db file or Milvus server URI)."""
    backend = backend or backend_for(location)
    if backend == "milvus":
        from indexes.milvus_index import MilvusIndex
        return MilvusIndex.open(location, collection)
    from indexes.faiss_index import FaissIndex
    return FaissIndex.open(location)
