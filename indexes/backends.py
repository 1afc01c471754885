"""The backend registry: which class stores an index at a location.

A folder -> FAISS; a path ending in .db or an http(s)/tcp URI -> Milvus. Backends are
imported when used, so opening a FAISS folder never imports pymilvus.
"""

from __future__ import annotations

import importlib

from hashing.core import validation as V
from hashing.core.errors import HashingError
from hashing.indexes.base import BinaryIndex, IndexInfo
from hashing.core.locks import WriterLock
from hashing.indexes.lock import lock_path
from hashing.indexes.milvus.address import is_lite_file, is_server_uri

BACKENDS = {"faiss": "hashing.indexes.faiss:FaissIndex", "milvus": "hashing.indexes.milvus.index:MilvusIndex"}


def backend_for(location: str, backend: str | None = None) -> str:
    """The backend a location names; an explicit `backend` must agree with it, so every location
    means one thing both ways (a FAISS folder called x.db could never be opened again)."""
    loc = str(location)
    if not loc.strip():
        raise HashingError("the index location is empty: give a folder (FAISS), a .db file or an http(s) URI (Milvus)")
    implied = "milvus" if is_lite_file(loc) or is_server_uri(loc) else "faiss"
    if backend is None or V.choice("backend", backend, BACKENDS) == implied:
        return implied
    if backend == "faiss":
        raise HashingError(f"{loc} names a Milvus location (.db file or URI); a FAISS index is a folder: "
                           f"choose a folder name without .db, or drop backend faiss", settings=("backend",))
    raise HashingError(f"{loc} names a folder, and a Milvus index lives in a .db file or at an http(s):// URI")


def backend_class(name: str) -> type[BinaryIndex]:
    """The class of a backend by name, imported now (pymilvus only when Milvus is asked for)."""
    module, cls = BACKENDS[V.choice("backend", name, BACKENDS)].split(":")
    return getattr(importlib.import_module(module), cls)


def create(location: str, info: IndexInfo, backend: str | None = None, collection: str | None = None) -> BinaryIndex:
    """A new, empty index at `location` for codes described by `info`."""
    return backend_class(backend_for(location, backend)).create(location, info, collection)


def writer_lock(location: str, collection: str | None = None, backend: str | None = None) -> WriterLock:
    """The lock that one writer of the index at `location` holds (not yet taken: call acquire)."""
    name = backend_for(location, backend)
    what = f"the index {location}" + (f" (collection {collection})" if collection and name == "milvus" else "")
    path = lock_path(str(location), name, collection)
    if is_server_uri(location):
        from hashing.indexes.milvus.server import ServerWriterLock

        return ServerWriterLock(path, what, str(location), collection)
    return WriterLock(path, what)


def open_index(location: str, collection: str | None = None, backend: str | None = None) -> BinaryIndex:
    """Open an existing index (FAISS folder, Milvus Lite .db file or Milvus server URI)."""
    return backend_class(backend_for(location, backend)).open(location, collection)
