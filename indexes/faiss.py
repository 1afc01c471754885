"""A FAISS binary index in a folder.

INDEX_DIR/meta.json           the manifest: format, count, IndexInfo, and the data files of
                              this version with their SHA-256
INDEX_DIR/index-<TAG>.faiss   faiss.write_index_binary of the index
INDEX_DIR/items-<TAG>.npz     ids (int64, ascending), labels (int64, -1 = unknown), sources (str),
                              stamps (str: "size:mtime_ns:sha256" of a folder's file, "" unknown)

Every save writes the data files under a new TAG and then replaces meta.json atomically:
that rename is the commit. A crash at any moment leaves the previous meta.json, whose files
are still there, or the new one; files no manifest names are removed after the commit. Open
checks every field and both checksums, so a torn, mixed or edited folder is refused by name.
Folders written before versioned names (index.faiss, items.npz, no "files") still open.

Ids and removal. Item ids come from the manifest's next_id (never reused, so a removed item's id
never names another). For IVF the inverted lists hold the item ids themselves (add_with_ids;
remove_ids works in place); every other type stores codes by position, and `_ids[position]` is
the item id: flat removes in place (faiss shifts the positions as we delete the rows), HNSW
cannot remove from its graph, so a removal rebuilds the graph from the kept codes (timed in
benchmarks/living.py). Either way the change is committed by the next save like any other.

Index types: readable names for the configurations we benchmark, or any faiss binary
factory string (e.g. "BHNSW32", "BIVF256").
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import uuid
from pathlib import Path

import numpy as np

from hashing.core import validation as V
from hashing.core.atomic import (atomic_path, check_output_folder, commit_manifest, discard_uncommitted, file_name)
from hashing.core.errors import HashingError
from hashing.indexes.base import BinaryIndex, IndexInfo

FORMAT = "hashing-index/3"           # /3: next_id, created, updated, stamps; /2: the items file names the model
FORMATS = ("hashing-index/1", "hashing-index/2", FORMAT)
KEYS = {"format", "backend", "count", "info", "files", "sha256", "next_id", "created", "updated"}
MANIFEST = "meta.json"
LEGACY_FILES = {"index": "index.faiss", "items": "items.npz"}
OURS = ("index*.faiss", "items*.npz")      # every data-file name a save has ever written

INDEX_TYPES = {
    "flat": "BFlat",          # exact
    "hnsw": "BHNSW32",        # graph, approximate; no training
    "ivf": "BIVF{nlist}",     # inverted lists, approximate; trained on the first batch
}


# Search-time knobs, chosen with benchmarks/search.py (which imports these, so it measures
# exactly what an index uses; recall and speed in docs/benchmarks.md, "Search").
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
    def __init__(self, path: Path, info: IndexInfo, index, ids: np.ndarray, labels: np.ndarray, sources: list[str],
                 stamps: list[str] | None = None, next_id: int | None = None, created: str | None = None,
                 updated: str | None = None):
        self.path, self.info, self.index = path, info, index
        self._ids, self._labels, self._sources = ids, labels, sources
        self._stamps = [""] * len(ids) if stamps is None else stamps
        self.next_id = len(ids) if next_id is None else next_id
        self.created, self.updated = created, updated

    # ---- life cycle ---------------------------------------------------------------------------

    @classmethod
    def create(cls, location: str, info: IndexInfo, collection: str | None = None) -> "FaissIndex":
        cls.check_location(location, creating=True, collection=collection)
        path = Path(location)
        if path.exists() and not path.is_dir():
            raise HashingError(f"{path} exists and is not a folder; choose another out", settings=("out",))
        cls.check_type(info.index_type, info.bits)
        return cls(path, info, None, np.zeros(0, np.int64), np.zeros(0, np.int64), [], created=now())

    @classmethod
    def check_location(cls, location: str, creating: bool, collection: str | None = None) -> None:
        if collection is not None:
            raise HashingError("collection is for Milvus; a FAISS index is a folder", settings=("collection",))
        if creating:
            check_output_folder(location, "out", marker=MANIFEST, ours=OURS)
        elif (Path(location) / MANIFEST).is_symlink() and not (Path(location) / MANIFEST).exists():
            raise HashingError(f"{Path(location) / MANIFEST} is a broken symlink (or a loop), not a manifest; "
                               f"rebuild the index with `hashing index`")
        elif (Path(location) / MANIFEST).is_dir():
            raise HashingError(f"{Path(location) / MANIFEST} is a folder, not a manifest; rebuild the index with "
                               f"`hashing index`")
        elif not (Path(location) / MANIFEST).is_file():
            raise HashingError(f"{location} is not an index (no {MANIFEST}); build one with "
                               f"`hashing index --out {location}`")

    @classmethod
    def check_type(cls, index_type: str, bits: int, n: int | None = None) -> None:
        """Refuse an index type faiss cannot build (for n items, when known), before anything is encoded."""
        import faiss

        try:
            index = faiss.index_binary_factory(bits, factory_string(index_type, n or 1))
        except (RuntimeError, KeyError, ValueError, IndexError):
            raise HashingError(f"index_type {index_type!r} is neither one of {', '.join(INDEX_TYPES)} nor a faiss "
                               f"binary factory string", settings=("index_type",)) from None
        if n is not None and isinstance(index, faiss.IndexBinaryIVF) and index.nlist > n:
            raise HashingError(f"index_type {index_type!r} has {index.nlist} inverted lists, more than the {n} items "
                               f"it would be trained on; use fewer lists (e.g. ivf) or flat", settings=("index_type",))

    @classmethod
    def open(cls, location: str, collection: str | None = None) -> "FaissIndex":
        cls.check_location(location, creating=False, collection=collection)
        path = Path(location)
        missing = "?"
        for _ in range(2):                          # again if a writer committed a new version between our reads
            stamp = _stamp(path / MANIFEST)         # before the read: a commit after it shows as a change
            try:
                index = cls._open(path)
            except FileNotFoundError as e:
                missing = Path(e.filename or "?").name
                continue
            index._stamp = stamp
            return index
        raise HashingError(f"{path}: {missing}, named in {MANIFEST}, is missing; rebuild the index with "
                           f"`hashing index`")

    @classmethod
    def _open(cls, path: Path) -> "FaissIndex":
        import faiss

        where = path / MANIFEST
        try:
            meta = V.json_loads(where.read_text())
            V.mapping(MANIFEST, meta)
            if meta.get("format") not in FORMATS:
                raise HashingError(f"format is not one of {', '.join(FORMATS)}")
            unknown = sorted(set(meta) - KEYS)
            if unknown:
                raise HashingError(f"unknown field {unknown[0]!r}")
            if meta.get("backend", "faiss") != "faiss":
                raise HashingError(f"backend is {meta.get('backend')!r}, and this folder is a FAISS index")
            fields = V.mapping("info", meta.get("info"))
            unknown = sorted(set(fields) - set(IndexInfo.__dataclass_fields__))
            if unknown:
                raise HashingError(f"unknown field 'info.{unknown[0]}'")
            info = IndexInfo(**fields)
            count = V.integer("count", meta.get("count"), 0, V.INT64_MAX)
            next_id = V.integer("next_id", meta.get("next_id", count), count, V.INT64_MAX)   # ids are int64
            created, updated = (meta.get(k) for k in ("created", "updated"))
            for k in ("created", "updated"):
                if meta.get(k) is not None:
                    V.string(k, meta[k])
            legacy = "files" not in meta               # written before versioned names: no checksums then
            files = meta.get("files", LEGACY_FILES)
            V.mapping("files", files)
            names = {role: file_name(files.get(role), f"files.{role}") for role in ("index", "items")}
            if not legacy and "sha256" not in meta:
                raise HashingError("sha256 is missing: a manifest without its checksums is not trusted")
            sums = {} if legacy else V.mapping("sha256", meta.get("sha256"))
            for role in () if legacy else names:
                if not isinstance(sums.get(role), str) or len(sums[role]) != 64:
                    raise HashingError(f"sha256.{role} is missing or not a SHA-256: a manifest without its "
                                       f"checksums is not trusted")
        except V.NestedTooDeep:
            raise HashingError(f"{where} is damaged (JSON nested too deeply to be a manifest); rebuild the index "
                               f"with `hashing index`") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HashingError(f"{where} is corrupt (not JSON); rebuild the index with `hashing index`") from None
        except IsADirectoryError:
            raise HashingError(f"{where} is a folder, not a manifest; rebuild the index with `hashing index`") from None
        except (HashingError, TypeError) as e:
            raise HashingError(f"{where}: {e}; rebuild the index with `hashing index`") from None
        try:
            cls.check_type(info.index_type, info.bits)
        except HashingError:
            raise HashingError(f"{where}: info.index_type {info.index_type!r} is not an index type; rebuild the "
                               f"index with `hashing index`") from None
        blobs = {role: (path / name).read_bytes() for role, name in names.items()}
        for role, blob in blobs.items():
            if role in sums and hashlib.sha256(blob).hexdigest() != sums[role]:
                raise HashingError(f"{path / names[role]} does not match its checksum in {MANIFEST} (damaged or from "
                                   f"another version); rebuild the index with `hashing index`")
        try:
            index = faiss.deserialize_index_binary(np.frombuffer(blobs["index"], dtype=np.uint8))
            with np.load(io.BytesIO(blobs["items"]), allow_pickle=False) as z:   # the bytes just checked
                ids, labels, sources = z["ids"], z["labels"], z["sources"]
                stamps = z["stamps"] if "stamps" in z.files else np.full(len(ids), "")
                made_by = str(z["model"]) if "model" in z.files else None
        except Exception as e:   # faiss raises RuntimeError, numpy BadZipFile/KeyError/ValueError on damaged files
            raise HashingError(f"{path} is a damaged index ({type(e).__name__}); rebuild it with `hashing index`") from None
        problem = None
        if index.d != info.bits:
            problem = f"{names['index']} holds {index.d}-bit codes, {MANIFEST} says {info.bits}"
        elif not (index.ntotal == count == len(ids) == len(labels) == len(sources) == len(stamps)):
            problem = (f"item counts disagree ({MANIFEST}: {count}, {names['index']}: {index.ntotal}, "
                       f"{names['items']}: {len(ids)} ids, {len(labels)} labels, {len(sources)} sources, "
                       f"{len(stamps)} stamps)")
        elif ids.ndim != 1 or labels.ndim != 1 or sources.ndim != 1 or stamps.ndim != 1 or ids.dtype.kind != "i" \
                or labels.dtype.kind != "i" or sources.dtype.kind != "U" or stamps.dtype.kind != "U":
            problem = f"{names['items']} has arrays of the wrong shape or type"
        elif count and (ids[0] < 0 or ids[-1] >= next_id or np.any(np.diff(ids) <= 0)):
            problem = f"{names['items']} ids are not ascending ids below next_id {next_id}"
        elif meta["format"] != "hashing-index/1" and made_by != _model_key(info):
            problem = (f"its codes were made by model {made_by or '(not recorded)'} but {MANIFEST} names model "
                       f"{_model_key(info)} (the model record was edited or swapped)")
        if problem:
            raise HashingError(f"{path} is an inconsistent index: {problem}; rebuild it with `hashing index`")
        tune(index)
        return cls(path, info, index, ids.astype(np.int64), labels.astype(np.int64), sources.tolist(), stamps.tolist(),
                   next_id, created, updated)

    _stamp: tuple | None = None

    def changed(self) -> bool:
        return _stamp(self.path / MANIFEST) != self._stamp

    def save(self) -> None:
        """Write this version's data files under new names, then commit by replacing meta.json."""
        import faiss

        if self.index is None:
            raise HashingError("nothing to save: the index is empty")
        self.path.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:12]
        updated = now()
        names = {"index": f"index-{tag}.faiss", "items": f"items-{tag}.npz"}
        try:
            with atomic_path(self.path / names["index"]) as tmp:
                # Serialized here, written by Python: a full disk is an OSError (ENOSPC), not faiss's RuntimeError.
                tmp.write_bytes(faiss.serialize_index_binary(self.index).tobytes())
                index_sum = _sha256(tmp)
            with atomic_path(self.path / names["items"]) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, ids=self._ids, labels=self._labels, sources=np.asarray(self._sources, dtype=str),
                             stamps=np.asarray(self._stamps, dtype=str), model=np.asarray(_model_key(self.info)))
                items_sum = _sha256(tmp)
            commit_manifest(self.path, MANIFEST, {"format": FORMAT, "backend": "faiss", "count": self.count,
                                                  "next_id": self.next_id, "created": self.created or updated,
                                                  "updated": updated, "info": self.info.to_dict(), "files": names,
                                                  "sha256": {"index": index_sum, "items": items_sum}}, OURS)
        except BaseException:
            discard_uncommitted(self.path, MANIFEST, names)
            raise
        self.created, self.updated = self.created or updated, updated
        self._stamp = _stamp(self.path / MANIFEST)

    def disk_bytes(self) -> int | None:
        """The bytes of the committed version: the manifest and the files it names."""
        try:
            meta = V.json_loads((self.path / MANIFEST).read_text())
            names = [MANIFEST, *meta.get("files", LEGACY_FILES).values()]
            return sum((self.path / n).stat().st_size for n in names)
        except (OSError, ValueError, AttributeError):
            return None

    # ---- data -----------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def add(self, xb, labels, sources, stamps=None):
        import faiss

        xb = self.check_codes(xb)
        n = len(xb)
        if labels is None:
            labels = np.full(n, -1, np.int64)
        stamps = [""] * n if stamps is None else [str(t) for t in stamps]
        if len(labels) != n or len(sources) != n or len(stamps) != n:
            raise ValueError("codes, labels, sources and stamps must have the same length")
        ids = self.new_ids(n)                # before anything changes
        if self.index is None:
            self.check_type(self.info.index_type, self.bits, n)
            self.index = faiss.index_binary_factory(self.bits, factory_string(self.info.index_type, n))
            if not self.index.is_trained:
                self.index.train(xb)
            tune(self.index)
        if self._positional:
            self.index.add(xb)
        else:
            self.index.add_with_ids(xb, ids)
        self.next_id += n
        self._ids = np.concatenate([self._ids, ids])
        self._labels = np.concatenate([self._labels, np.asarray(labels, np.int64)])
        self._sources = self._sources + [str(s) for s in sources]
        self._stamps = self._stamps + stamps
        return ids

    @property
    def _positional(self) -> bool:
        """Whether faiss answers positions (mapped to ids by _ids) rather than the item ids (IVF)."""
        import faiss

        return not isinstance(self.index, faiss.IndexBinaryIVF)

    def _to_ids(self, I: np.ndarray) -> np.ndarray:
        if not self._positional or not len(self._ids):
            return I
        return np.where(I >= 0, self._ids[np.clip(I, 0, None)], -1)

    def _rows(self, ids) -> np.ndarray:
        """Rows of the metadata arrays (and faiss positions) of existing ids."""
        return np.searchsorted(self._ids, np.asarray(ids, np.int64))

    def missing(self, ids) -> list[int]:
        fits, never = V.item_ids(ids.tolist() if isinstance(ids, np.ndarray) else ids)   # never: beyond int64
        ids = np.asarray(fits, np.int64)
        rows = np.minimum(self._rows(ids), max(0, len(self._ids) - 1))
        found = (self._ids[rows] == ids) if len(self._ids) else np.zeros(len(ids), bool)
        return [int(i) for i in ids[~found]] + never

    def remove(self, ids) -> int:
        import faiss

        self.check_ids(ids)                  # first: an id beyond int64 is one line, not numpy's OverflowError
        ids = np.unique(np.asarray(ids, np.int64))
        if not len(ids):
            return 0
        rows = self._rows(ids)
        if not self._positional:
            self.index.remove_ids(faiss.IDSelectorBatch(ids))
        elif isinstance(self.index, faiss.IndexBinaryFlat):
            self.index.remove_ids(faiss.IDSelectorBatch(rows))         # later positions shift down, as our rows do
        else:                                                          # HNSW & co: a new graph of the kept codes
            keep = np.ones(self.count, bool)
            keep[rows] = False
            xb = self.reconstruct_all()[keep]
            self.index = faiss.index_binary_factory(self.bits, factory_string(self.info.index_type, len(xb)))
            if not self.index.is_trained:
                self.index.train(xb)
            tune(self.index)
            self.index.add(xb)
        self._ids = np.delete(self._ids, rows)
        self._labels = np.delete(self._labels, rows)
        drop = set(rows.tolist())
        self._sources = [s for r, s in enumerate(self._sources) if r not in drop]
        self._stamps = [s for r, s in enumerate(self._stamps) if r not in drop]
        return len(ids)

    def items(self):
        return self._ids.copy(), self._labels.copy(), list(self._sources), list(self._stamps)

    def search(self, xq, k):
        xq = self.check_queries(xq, k)
        D, I = self.index.search(xq, k)
        D, I = D.astype(np.int32), self._to_ids(I.astype(np.int64))
        order = np.lexsort((np.where(I < 0, np.iinfo(np.int64).max, I), D))   # equal distances by id, as Milvus
        return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)

    def range_search(self, xq, radius):
        import faiss

        xq = self.check_queries(xq, radius=radius)
        index = self.index
        if isinstance(index, faiss.IndexBinaryHNSW):
            index = index.storage  # HNSW has no range search; its flat storage answers exactly
        # faiss keeps d < radius; we mean d <= radius.
        lims, D, I = index.range_search(xq, int(radius) + 1)
        I = self._to_ids(I.astype(np.int64))
        out = []
        for q in range(len(xq)):
            d, i = D[lims[q]:lims[q + 1]], I[lims[q]:lims[q + 1]]
            order = np.lexsort((i, d))
            out.append((d[order].astype(np.int32), i[order].astype(np.int64)))
        return out

    def lookup(self, ids):
        rows = self._rows(ids)
        return self._labels[rows], [self._sources[r] for r in rows]

    def reconstruct_all(self) -> np.ndarray:
        """Every stored code (count, bits/8) in id order, for checks, removals from a graph and migrations."""
        import faiss

        if not self.count:
            return np.zeros((0, self.bits // 8), np.uint8)
        if not self._positional:
            if self.index.direct_map.type != faiss.DirectMap.Hashtable:
                self.index.set_direct_map_type(faiss.DirectMap.Hashtable)
            return np.stack([self.index.reconstruct(int(i)) for i in self._ids])
        index = self.index.storage if isinstance(self.index, faiss.IndexBinaryHNSW) else self.index
        return index.reconstruct_n(0, self.count)


def now() -> str:
    """The time of a commit as the manifest records it (ISO 8601, seconds, with the UTC offset)."""
    from datetime import datetime

    return datetime.now().astimezone().isoformat(timespec="seconds")


def _model_key(info: IndexInfo) -> str:
    """What binds the codes to the model that made them, stored inside the items file: the weights'
    fingerprint (and the bit length), so a manifest whose model record was swapped is refused."""
    return f"{info.model.fingerprint}/{info.bits}"


def _stamp(path: Path) -> tuple | None:
    """What changes whenever a manifest is replaced (a rename gives a new inode)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
