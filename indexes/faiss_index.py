"""A FAISS binary index in a folder.

INDEX_DIR/meta.json           the manifest: format, count, IndexInfo, and the data files of
                              this version with their SHA-256
INDEX_DIR/index-<TAG>.faiss   faiss.write_index_binary of the index
INDEX_DIR/items-<TAG>.npz     ids (int64), labels (int64, -1 = unknown), sources (str)

Every save writes the data files under a new TAG and then replaces meta.json atomically:
that rename is the commit. A crash at any moment leaves the previous meta.json, whose files
are still there, or the new one; files no manifest names are removed after the commit. Open
checks every field and both checksums, so a torn, mixed or edited folder is refused by name.
Folders written before versioned names (index.faiss, items.npz, no "files") still open.

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

from hashing import validation as V
from hashing.atomic import atomic_path, check_output_folder, commit_manifest, discard_uncommitted, file_name
from hashing.errors import HashingError
from hashing.indexes.base import BinaryIndex, IndexInfo

FORMAT = "hashing-index/2"           # /2: the items file names the model (see _open); /1 still opens
FORMATS = ("hashing-index/1", FORMAT)
KEYS = {"format", "backend", "count", "info", "files", "sha256"}
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
    def __init__(self, path: Path, info: IndexInfo, index, ids: np.ndarray, labels: np.ndarray, sources: list[str]):
        self.path, self.info, self.index = path, info, index
        self._ids, self._labels, self._sources = ids, labels, sources

    # ---- life cycle ---------------------------------------------------------------------------

    @classmethod
    def create(cls, location: str, info: IndexInfo, collection: str | None = None) -> "FaissIndex":
        cls.check_location(location, creating=True, collection=collection)
        path = Path(location)
        if path.exists() and not path.is_dir():
            raise HashingError(f"{path} exists and is not a folder; choose another --out")
        cls.check_type(info.index_type, info.bits)
        return cls(path, info, None, np.zeros(0, np.int64), np.zeros(0, np.int64), [])

    @classmethod
    def check_location(cls, location: str, creating: bool, collection: str | None = None) -> None:
        if collection is not None:
            raise HashingError("--collection is for Milvus; a FAISS index is a folder")
        if creating:
            check_output_folder(location, "--out", marker=MANIFEST, ours=OURS)
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
            raise HashingError(f"--index-type {index_type!r} is neither one of {', '.join(INDEX_TYPES)} nor a faiss "
                               f"binary factory string") from None
        if n is not None and isinstance(index, faiss.IndexBinaryIVF) and index.nlist > n:
            raise HashingError(f"--index-type {index_type!r} has {index.nlist} inverted lists, more than the {n} items "
                               f"it would be trained on; use fewer lists (e.g. ivf) or flat")

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
            meta = json.loads(where.read_text())
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
            count = V.integer("count", meta.get("count"), 0)
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
                made_by = str(z["model"]) if "model" in z.files else None
        except Exception as e:   # faiss raises RuntimeError, numpy BadZipFile/KeyError/ValueError on damaged files
            raise HashingError(f"{path} is a damaged index ({type(e).__name__}); rebuild it with `hashing index`") from None
        problem = None
        if index.d != info.bits:
            problem = f"{names['index']} holds {index.d}-bit codes, {MANIFEST} says {info.bits}"
        elif not (index.ntotal == count == len(ids) == len(labels) == len(sources)):
            problem = (f"item counts disagree ({MANIFEST}: {count}, {names['index']}: {index.ntotal}, "
                       f"{names['items']}: {len(ids)} ids, {len(labels)} labels, {len(sources)} sources)")
        elif ids.ndim != 1 or labels.ndim != 1 or sources.ndim != 1 or ids.dtype.kind != "i" \
                or labels.dtype.kind != "i" or sources.dtype.kind != "U":
            problem = f"{names['items']} has arrays of the wrong shape or type"
        elif not np.array_equal(ids, np.arange(count)):
            problem = f"{names['items']} ids are not 0..{count - 1}"
        elif meta["format"] != "hashing-index/1" and made_by != _model_key(info):
            problem = (f"its codes were made by model {made_by or '(not recorded)'} but {MANIFEST} names model "
                       f"{_model_key(info)} (the model record was edited or swapped)")
        if problem:
            raise HashingError(f"{path} is an inconsistent index: {problem}; rebuild it with `hashing index`")
        tune(index)
        return cls(path, info, index, ids.astype(np.int64), labels.astype(np.int64), sources.tolist())

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
        names = {"index": f"index-{tag}.faiss", "items": f"items-{tag}.npz"}
        try:
            with atomic_path(self.path / names["index"]) as tmp:
                # Serialized here, written by Python: a full disk is an OSError (ENOSPC), not faiss's RuntimeError.
                tmp.write_bytes(faiss.serialize_index_binary(self.index).tobytes())
                index_sum = _sha256(tmp)
            with atomic_path(self.path / names["items"]) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, ids=self._ids, labels=self._labels, sources=np.asarray(self._sources, dtype=str),
                             model=np.asarray(_model_key(self.info)))
                items_sum = _sha256(tmp)
            commit_manifest(self.path, MANIFEST, {"format": FORMAT, "backend": "faiss", "count": self.count,
                                                  "info": self.info.to_dict(), "files": names,
                                                  "sha256": {"index": index_sum, "items": items_sum}}, OURS)
        except BaseException:
            discard_uncommitted(self.path, MANIFEST, names)
            raise
        self._stamp = _stamp(self.path / MANIFEST)

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
            self.check_type(self.info.index_type, self.bits, n)
            self.index = faiss.index_binary_factory(self.bits, factory_string(self.info.index_type, n))
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
