"""The backend registry: which class stores an index at a location.

A folder -> FAISS; a path ending in .db or an http(s)/tcp URI -> Milvus. Backends are
imported when used, so opening a FAISS folder never imports pymilvus.
"""

from __future__ import annotations

import importlib

from hashing import validation as V
from hashing.indexes.base import BinaryIndex, IndexInfo

BACKENDS = {"faiss": "hashing.indexes.faiss_index:FaissIndex", "milvus": "hashing.indexes.milvus_index:MilvusIndex"}
MILVUS_PREFIXES = ("http://", "https://", "tcp://")


def backend_for(location: str) -> str:
    loc = str(location)
    return "milvus" if loc.endswith(".db") or loc.startswith(MILVUS_PREFIXES) else "faiss"


def backend_class(name: str) -> type[BinaryIndex]:
    module, cls = BACKENDS[V.choice("backend", name, BACKENDS)].split(":")
    return getattr(importlib.import_module(module), cls)


def create(location: str, info: IndexInfo, backend: str | None = None, collection: str | None = None) -> BinaryIndex:
    """A new, empty index at `location` for codes described by `info`."""
    return backend_class(backend or backend_for(location)).create(location, info, collection)


def open_index(location: str, collection: str | None = None, backend: str | None = None) -> BinaryIndex:
    """Open an existing index (FAISS folder, Milvus Lite .db file or Milvus server URI)."""
    return backend_class(backend or backend_for(location)).open(location, collection)
