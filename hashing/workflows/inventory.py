"""What an index holds, and taking items out: `hashing info IDX` and `hashing remove`.

Both work on every backend through the BinaryIndex interface. A removal holds the writer lock
(hashing.indexes.lock) and is one commit: all the named items go, or (an unknown id or source,
another writer) none. Torch is never imported: neither needs the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashing.core.errors import HashingError
from hashing.indexes.backends import backend_for, open_index, writer_lock


@dataclass
class RemoveResult:
    location: str
    removed: int
    total: int


def remove_items(location: str, ids: list[int] = (), *, sources: list[str] = (), collection: str | None = None,
                 wait: float = 0.0) -> RemoveResult:
    """Remove items by id and/or by source (the stored source, or a path that resolves to it)."""
    from hashing.core.locks import holding

    if not ids and not sources:
        raise HashingError("name the items to remove: ids, or sources PATH", settings=("sources",))
    with holding(writer_lock(location, collection), wait):
        with open_index(location, collection) as index:
            chosen = [int(i) for i in ids]
            if sources:
                chosen += ids_of_sources(index, sources)
            index.check_ids(chosen)
            n = index.remove(np.unique(np.asarray(chosen, np.int64)))
            index.save()
            return RemoveResult(str(location), n, index.count)


def ids_of_sources(index, sources: list[str]) -> list[int]:
    """The ids of the items whose source is one of `sources` (as stored, or a path resolving to it);
    a source no item has is a one-line error."""
    all_ids, _, stored, _ = index.items()
    by_source: dict[str, list[int]] = {}
    for i, s in zip(all_ids.tolist(), stored):
        by_source.setdefault(s, []).append(i)
    out = []
    for s in sources:
        found = by_source.get(s) or by_source.get(str(Path(s).resolve()))
        if not found:
            raise HashingError(f"no item has the source {s}; nothing was removed (`hashing info INDEX --items` "
                               f"lists them)")
        out += found
    return out


def index_summary(location: str, *, collection: str | None = None, items: bool = False) -> dict:
    """What `hashing info` prints: {"count", "bits", "backend", "index_type", "model": {...}, "created",
    "updated", "disk_bytes", ..., "items": [{"id", "source", "label", "class"}, ...] (with items=True)}.
    An item's class is the name of its label among the index's classes (a folder's subfolder), None
    where the label is unknown or has no name (a built-in dataset's digits)."""
    backend = backend_for(location)
    with open_index(location, collection) as index:
        rec = index.info.model
        out = {"location": str(location), "backend": backend, "count": index.count, "bits": index.bits,
               "index_type": index.info.index_type, "next_id": index.next_id,
               "model": {"run_dir": rec.run_dir, "fingerprint": rec.fingerprint},
               "created": index.created, "updated": index.updated, "disk_bytes": index.disk_bytes(),
               "classes": list(index.info.classes), "datasets": dict(index.info.datasets)}
        if backend == "milvus":
            out["collection"] = index.name
        if items:
            ids, labels, sources, _ = index.items()
            classes = index.info.classes
            out["items"] = [{"id": int(i), "source": s, "label": None if lab < 0 else int(lab),
                             "class": classes[lab] if 0 <= lab < len(classes) else None}
                            for i, lab, s in zip(ids.tolist(), labels.tolist(), sources)]
        return out
