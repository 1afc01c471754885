"""One writer per index: an OS lock on a file that belongs to the index.

Every command that changes an index (`hashing index`, `--append`, and a `hashing serve` that takes
additions, for its whole life) holds `WriterLock` (`hashing.locks`) while it works. The lock is `fcntl.flock` on the
lock file: the kernel releases it when the holder exits, however it exits (kill -9 included), so a
lock is never left stale and the next writer gets it at once. The file itself stays; it only says
who holds the lock now (pid, command, since), so that a refused writer can name the holder.

Readers never take it: `hashing query` and a read-only service read committed versions only
(the manifest rename is the commit), whatever a writer is doing.

Where the lock lives (`lock_path`): inside a FAISS index folder (`.writer.lock`), beside a Milvus
Lite file (`.NAME.db.writer.lock`), and for a Milvus server in this machine's cache folder, keyed
by URI and collection: there it keeps out writers on this machine only (the server has no lock
of its own that we could take).

stdlib only (no torch, no faiss).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hashing.locks import WriterLock, command_line  # noqa: F401  (the lock itself; re-exported)

FOLDER_LOCK = ".writer.lock"


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hashing" / "locks"


def lock_path(location: str, backend: str, collection: str | None = None) -> Path:
    """The lock file of the index at `location` (see the module's docstring)."""
    if backend == "faiss":
        return Path(location) / FOLDER_LOCK
    if location.endswith(".db") and "://" not in location:
        path = Path(location)
        return path.parent / f".{path.name}.writer.lock"
    key = hashlib.sha256(f"{location}\n{collection or ''}".encode()).hexdigest()[:20]
    return cache_folder() / f"milvus-{key}.lock"
