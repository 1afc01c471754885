"""A FAISS binary index in a folder.

INDEX_DIR/index.faiss   faiss.write_index_binary of the index
INDEX_DIR/items.npz     ids (int64), labels (int64, -1 = unknown), sources (str)
INDEX_DIR/meta.json     format, count, IndexInfo; written last, and checked on open

Index types: readable names for the configurations we benchmark, or any faiss binary
factory string (e.g. "BHNSW32", "BIVF256").
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from hashing.atomic import atomic_path, write_json
from hashing.errors import HashingError
from hashing.indexes.base import BinaryIndex, IndexInfo

FORMAT = "hashing-index/1"

INDEX_TYPES = {
    "flat": "BFlat",          # exact
    "hnsw": "BHNSW32",        # graph, approximate; no training
    "ivf": "BIVF{nlist}",     # inverted lists, approximate; trained on the first batch
}


# Search-time knobs, chosen with benchmarks/search.py (which imports these, so it measures
# exactly what an index uses; recall and speed in the README's search table).
SEARCH_PARAMS = {"nprobe": 16, "efSearch": 64}


def tune(index) -> None:
    """Search-time knobs that faiss does not keep in the file; set on create and on open."""
    import faiss

    if isinstance(index, faiss.IndexBinaryIVF):
        index.nprobe = SEARCH_PARAMS["nprobe"]
    elif isinstance(index, faiss.IndexBinaryHNSW):
        index.hnsw.efSearch = SEARCH_PARAMS["efSearch"]


def factory_string(index_type: str, n: int) -> str:
    s = INDEX_TYPES.get(index_type, index_type)
    return s.format(nlist=max(1, min(4096, int(4 * math.sqrt(max(n, 1))))))


class FaissIndex(BinaryIndex):
    def __init__(self, path: Path, info: IndexInfo, index, ids: np.ndarray, labels: np.ndarray, sources: list[str]):
        self.path, self.info, self.index = path, info, index
        self._ids, self._labels, self._sources = ids, labels, sources

    # ---- life cycle ---------------------------------------------------------------------------

    @classmethod
    def create(cls, location: str, info: IndexInfo, collection: str | None = None) -> "FaissIndex":
        if collection is not None:
            raise HashingError("--collection is for Milvus; a FAISS index is a folder")
        path = Path(location)
        if path.exists() and not path.is_dir():
            raise HashingError(f"{path} exists and is not a folder; choose another --out")
        return cls(path, info, None, np.zeros(0, np.int64), np.zeros(0, np.int64), [])

    @classmethod
    def open(cls, location: str, collection: str | None = None) -> "FaissIndex":
        import faiss

        if collection is not None:
            raise HashingError("--collection is for Milvus; a FAISS index is a folder")
        path = Path(location)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise HashingError(f"{path} is not an index (no meta.json); build one with `hashing index --out {path}`")
        try:
            meta = json.loads(meta_path.read_text())
            info = IndexInfo(**meta["info"])
            index = faiss.read_index_binary(str(path / "index.faiss"))
            tune(index)
            with np.load(path / "items.npz", allow_pickle=False) as z:
                ids, labels, sources = z["ids"], z["labels"], z["sources"].tolist()
        except HashingError as e:
            raise HashingError(f"{meta_path}: {e}; rebuild the index with `hashing index`") from None
        except (OSError, KeyError, TypeError, ValueError, RuntimeError) as e:
            raise HashingError(f"{path} is a damaged index ({type(e).__name__}); rebuild it with `hashing index`") from None
        if meta.get("format") != FORMAT or not (index.ntotal == len(ids) == meta.get("count")):
            raise HashingError(f"{path} is an incomplete or foreign index; rebuild it with `hashing index`")
        return cls(path, info, index, ids, labels, sources)

    def save(self) -> None:
        import faiss

        if self.index is None:
            raise HashingError("nothing to save: the index is empty")
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path / "index.faiss") as tmp:
            faiss.write_index_binary(self.index, str(tmp))
        with atomic_path(self.path / "items.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, ids=self._ids, labels=self._labels, sources=np.asarray(self._sources, dtype=str))
        write_json(self.path / "meta.json", {"format": FORMAT, "backend": "faiss", "count": self.count,
                                             "info": self.info.to_dict()})

    # ---- data -----------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def add(self, xb, labels, sources):
        import faiss

        xb = self.check_codes(xb)
        n = len(xb)
        if labels is None:
            labels = np.full(n, -1, np.int64)
        if len(labels) != n or len(sources) != n:
            raise ValueError("codes, labels and sources must have the same length")
        if self.index is None:
            try:
                self.index = faiss.index_binary_factory(self.bits, factory_string(self.info.index_type, n))
            except RuntimeError:
                raise HashingError(f"--index-type {self.info.index_type!r} is neither one of "
                                   f"{', '.join(INDEX_TYPES)} nor a faiss binary factory string") from None
            if not self.index.is_trained:
                self.index.train(xb)
            tune(self.index)
        start = self.count
        self.index.add(xb)
        ids = np.arange(start, start + n, dtype=np.int64)
        self._ids = np.concatenate([self._ids, ids])
        self._labels = np.concatenate([self._labels, np.asarray(labels, np.int64)])
        self._sources = self._sources + [str(s) for s in sources]
        return ids

    def search(self, xq, k):
        xq = self.check_queries(xq, k)
        D, I = self.index.search(xq, k)
        return D.astype(np.int32), I.astype(np.int64)

    def range_search(self, xq, radius):
        import faiss

        xq = self.check_queries(xq, radius=radius)
        index = self.index
        if isinstance(index, faiss.IndexBinaryHNSW):
            index = index.storage  # HNSW has no range search; its flat storage answers exactly
        # faiss keeps d < radius; we mean d <= radius.
        lims, D, I = index.range_search(xq, int(radius) + 1)
        out = []
        for q in range(len(xq)):
            d, i = D[lims[q]:lims[q + 1]], I[lims[q]:lims[q + 1]]
            order = np.lexsort((i, d))
            out.append((d[order].astype(np.int32), i[order].astype(np.int64)))
        return out

    def lookup(self, ids):
        ids = np.asarray(ids, np.int64)
        return self._labels[ids], [self._sources[i] for i in ids]

    def reconstruct_all(self) -> np.ndarray:
        """Every stored code (count, bits/8), for checks and migrations."""
        import faiss

        index = self.index.storage if isinstance(self.index, faiss.IndexBinaryHNSW) else self.index
        return np.stack([index.reconstruct(i) for i in range(self.count)]) if self.count else \
            np.zeros((0, self.bits // 8), np.uint8)
