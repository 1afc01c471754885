"""The interface every backend implements, and the metadata that travels with the codes.

faiss names throughout: xb (database codes), xq (query codes), k, D (distances), I (ids).
Codes are (n, bits/8) uint8 packed by hashing.codes.bits.pack. Item ids are assigned in add
order, 0, 1, 2, ... and never reused: after a removal the next id is still one past the
highest ever given (`next_id`, kept by every backend), so a removed item's id never names
another item. This module imports no backend: the registry that
picks one from a location is indexes/backends.py.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field

import numpy as np

from hashing.core import validation as V
from hashing.core.errors import HashingError

DEFAULT_K = 10            # the neighbours a search returns when it asks for neither k nor a radius


def search_terms(k: int | None, radius: int | None) -> tuple[int | None, int | None]:
    """(k, radius) of a search as asked: the DEFAULT_K nearest when neither is given (the CLI, the
    Python API and the service all ask through this)."""
    return (DEFAULT_K, None) if k is None and radius is None else (k, radius)


@dataclass
class ModelRecord:
    """The model whose codes an index holds: where it was, and its weights' fingerprint."""

    run_dir: str
    fingerprint: str | None
    bits: int
    estimator: str | None = None
    dataset: str | None = None

    def __post_init__(self):
        V.string("model.run_dir", self.run_dir)
        V.code_bits(self.bits, "model.bits")
        for name in ("fingerprint", "estimator", "dataset"):
            if getattr(self, name) is not None:
                V.string(f"model.{name}", getattr(self, name))

    @classmethod
    def from_dict(cls, d: dict) -> "ModelRecord":
        V.mapping("model", d)
        return cls(**{k: d.get(k) for k in ("run_dir", "fingerprint", "bits", "estimator", "dataset")})


@dataclass
class IndexInfo:
    """What an index knows about itself: the model that made its codes, and its datasets."""

    bits: int
    model: ModelRecord
    index_type: str = "flat"
    datasets: dict = field(default_factory=dict)   # "mnist/train" -> data_dir, to find source images
    classes: list = field(default_factory=list)    # label i of a folder's items is the class classes[i]

    def __post_init__(self):
        V.code_bits(self.bits)
        if not isinstance(self.model, ModelRecord):
            self.model = ModelRecord.from_dict(self.model)
        V.string("index_type", self.index_type)
        V.mapping("datasets", self.datasets)
        for key, data_dir in self.datasets.items():         # "name/split" -> its data_dir, or None (the default)
            if data_dir is not None:
                V.string(f"datasets.{key}", data_dir)
        if not isinstance(self.classes, list) or not all(isinstance(c, str) for c in self.classes):
            raise HashingError(f"classes must be a list of names, got {self.classes!r}")

    def merge_classes(self, classes: list[str], labels: np.ndarray) -> np.ndarray:
        """Record a folder's class names; return its labels renumbered into this index's classes
        (new names are appended, so the labels already stored keep their meaning)."""
        for name in classes:
            if name not in self.classes:
                self.classes.append(name)
        ids = np.array([self.classes.index(c) for c in classes] + [-1], dtype=np.int64)
        return ids[np.where(labels < 0, len(classes), labels)]     # -1 (unlabelled) stays -1

    def to_dict(self) -> dict:
        return asdict(self)

    def check_model(self, model: ModelRecord) -> None:
        """Refuse codes from another model: the same bits can mean different things."""
        if model.bits != self.bits:
            raise HashingError(f"bit length mismatch: the index holds {self.bits}-bit codes but the model makes "
                               f"{model.bits}-bit codes; use the model the index was built with")
        fp, mine = model.fingerprint, self.model.fingerprint
        if fp and mine and fp != mine:
            raise HashingError(f"model mismatch: the index was built by model {mine} "
                               f"({self.model.run_dir}), not {fp}; rebuild the index or use that model")


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
    MAX_K: int | None = None          # the most results one query may ask for (None: the item count)
    next_id: int = 0                  # the id the next added item gets
    created: str | None = None        # when the index was first committed (ISO 8601), None if not recorded
    updated: str | None = None        # when its current version was committed

    @property
    def bits(self) -> int:
        """The code length in bits (an int), as IndexInfo.bits."""
        return self.info.bits

    @property
    @abc.abstractmethod
    def count(self) -> int: ...

    @classmethod
    @abc.abstractmethod
    def create(cls, location: str, info: IndexInfo, collection: str | None = None) -> "BinaryIndex":
        """A new, empty index at `location` (written by save)."""

    @classmethod
    @abc.abstractmethod
    def open(cls, location: str, collection: str | None = None) -> "BinaryIndex":
        """An existing index; never creates or changes anything."""

    @classmethod
    @abc.abstractmethod
    def check_type(cls, index_type: str, bits: int, n: int | None = None) -> None:
        """Refuse an index type this backend cannot build (for n items), before anything is encoded."""

    @classmethod
    @abc.abstractmethod
    def check_location(cls, location: str, creating: bool, collection: str | None = None) -> None:
        """Refuse a location (and collection) this backend must not write (creating) or cannot open,
        before any work."""

    @abc.abstractmethod
    def add(self, xb: np.ndarray, labels: np.ndarray | None, sources: list[str],
            stamps: list[str] | None = None) -> np.ndarray:
        """Append codes with their labels (-1 = unknown), sources and the stamps of their files
        ("size:mtime_ns:sha256", "" unknown: what `hashing index --sync` compares); return their ids."""

    @abc.abstractmethod
    def remove(self, ids: np.ndarray) -> int:
        """Remove items by id (all of them, or none: an unknown id is a HashingError); committed by save."""

    @abc.abstractmethod
    def missing(self, ids: np.ndarray) -> list[int]:
        """The ids among `ids` that name no item of this version."""

    @abc.abstractmethod
    def items(self) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        """Every item, in id order: (ids, labels, sources, stamps)."""

    def disk_bytes(self) -> int | None:
        """Bytes on disk of the committed version, None where this process cannot tell (a server)."""
        return None

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

    def changed(self) -> bool:
        """Whether another process has committed a newer version than the one open (a reader asks
        this before a search, and opens the index again when it has)."""
        return False

    def close(self) -> None:
        """Release connections and file locks (Milvus Lite lets one process open a .db at a time)."""

    def __enter__(self) -> "BinaryIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- shared checks and result shaping: the only place these rules are written -------------

    def check_searchable(self, k: int | None = None, radius: int | None = None) -> None:
        """An index with items, and a k or radius it can answer."""
        if self.count == 0:
            raise HashingError("the index is empty: add items with `hashing index` first")
        if k is not None:
            if k < 1:
                raise HashingError(f"k must be at least 1, got {k}", settings=("k",))
            if k > self.count:
                raise HashingError(f"k {k} is larger than the index ({self.count} items); ask for at most {self.count}",
                                  settings=("k",))
            if self.MAX_K is not None and k > self.MAX_K:
                raise HashingError(f"k {k}: this backend returns at most {self.MAX_K} results per query",
                                   settings=("k",))
        if radius is not None and not 0 <= radius <= self.bits:
            raise HashingError(f"radius must be from 0 to {self.bits} (the code length), got {radius}",
                              settings=("radius",))

    def check_queries(self, xq: np.ndarray, k: int | None = None, radius: int | None = None) -> np.ndarray:
        xq = self.check_codes(xq, "queries")
        self.check_searchable(k, radius)
        return xq

    def check_ids(self, ids) -> None:
        """Every id names an item, else one line naming the first that does not (nothing is changed).
        An id beyond int64 (a typo of many digits) names no item: it is reported like any other, not
        handed to numpy, which would raise OverflowError on it."""
        ids = [int(i) for i in (ids.tolist() if isinstance(ids, np.ndarray) else ids)]
        fits, never = V.item_ids(ids)
        absent = set(never) | set(self.missing(np.asarray(fits, np.int64)))
        missing = [i for i in ids if i in absent]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise HashingError(f"no item {missing[0]}{more} in the index ({self.count} items); nothing was removed")

    def new_ids(self, n: int) -> np.ndarray:
        """The ids of n items about to be added: next_id, next_id + 1, ...; one line, before anything
        changes, when the last would not fit the int64 that ids are stored as."""
        if self.next_id + n > V.INT64_MAX:
            raise HashingError(f"cannot add {n} item{'s' if n != 1 else ''}: the index's next id is {self.next_id}, "
                               f"and ids stop at {V.INT64_MAX}; rebuild the index with `hashing index`")
        return np.int64(self.next_id) + np.arange(n, dtype=np.int64)

    def check_codes(self, xb: np.ndarray, what: str = "codes") -> np.ndarray:
        xb = np.ascontiguousarray(xb, dtype=np.uint8)
        if xb.ndim != 2 or xb.shape[1] * 8 != self.bits:
            raise HashingError(f"bit length mismatch: {what} have {xb.shape[-1] * 8} bits, the index {self.bits}")
        return xb

    def hits(self, D: np.ndarray, I: np.ndarray) -> list[Hit]:
        """One query's (D, I) -> Hits with labels and sources; drops the -1 padding of short lists."""
        keep = I >= 0
        D, I = D[keep], I[keep]
        labels, sources = self.lookup(I)
        return [Hit(int(i), int(d), None if lab < 0 else int(lab), s) for i, d, lab, s in zip(I, D, labels, sources)]

    def query(self, xq: np.ndarray, k: int | None = None, radius: int | None = None) -> list[list[Hit]]:
        """k nearest, or every item within radius, or with both the k nearest of those within radius
        (at most k), for each query, as Hits."""
        if radius is not None:
            if k is not None and k < 1:
                raise HashingError(f"k must be at least 1, got {k}", settings=("k",))
            return [self.hits(D[:k], I[:k]) for D, I in self.range_search(xq, radius)]
        D, I = self.search(xq, k)
        return [self.hits(d, i) for d, i in zip(D, I)]
