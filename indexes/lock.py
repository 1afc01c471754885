"""One writer per index: an OS lock on a file that belongs to the index.

Every command that changes an index (`hashing index`, `--append`, and a `hashing serve` that takes
additions, for its whole life) holds `WriterLock` (`hashing.core.locks`) while it works. The lock is `fcntl.flock` on the
lock file: the kernel releases it when the holder exits, however it exits (kill -9 included), so a
lock is never left stale and the next writer gets it at once. The file itself stays; it only says
who holds the lock now (pid, command, since), so that a refused writer can name the holder.

Readers never take it: `hashing query` and a read-only service read committed versions only
(the manifest rename is the commit), whatever a writer is doing.

Where the lock lives (`lock_path`): inside a FAISS index folder (`.writer.lock`), beside a Milvus
Lite file (`.NAME.db.writer.lock`), and for a Milvus server in this machine's cache folder, keyed
by the server, database and collection the URI reaches (`hashing.indexes.milvus.address`, `ServerAddress.key`): there it
keeps out writers on this machine, and the writer also takes a lease on the server itself
(`hashing.indexes.milvus.lease`), which keeps out writers on other machines.

stdlib only (no torch, no faiss).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from hashing.core.paths import cache_dir
from hashing.indexes.milvus.address import DEFAULT_COLLECTION, is_lite_file, parse_server_uri

FOLDER_LOCK = ".writer.lock"


def lock_path(location: str, backend: str, collection: str | None = None) -> Path:
    """The lock file of the index at `location` (see the module's docstring)."""
    if backend == "faiss":
        return Path(location) / FOLDER_LOCK
    if is_lite_file(location):
        path = Path(location).absolute().resolve()       # a link to the file is the same index
        return path.parent / f".{path.name}.writer.lock"

    # keyed by what the URI reaches, not how it is spelled (localhost = 127.0.0.1, no path = /default)
    identity = f"{parse_server_uri(location).key}\n{collection or DEFAULT_COLLECTION}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:20]
    return cache_dir("locks") / f"milvus-server-{key}.lock"
