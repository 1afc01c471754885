"""What `hashing index --sync` remembers of a file: its size, modification time and content hash.

A stamp is the string "SIZE:MTIME_NS:SHA256". Sync compares in two steps: a file whose size and
mtime equal its stamp's is unchanged without being read; otherwise its SHA-256 decides (a file
that was only touched, or copied back with a new time, is still unchanged). stdlib only.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_stamp(path: str | os.PathLike) -> str:
    """The stamp of a file now; "" when it cannot be read (its decode will say why)."""
    try:
        st = os.stat(path)
        return f"{st.st_size}:{st.st_mtime_ns}:{content_hash(path)}"
    except OSError:
        return ""


def content_hash(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def same_file(path: Path, stamp: str) -> tuple[bool, str]:
    """(whether the file still has the content its stamp records, its stamp now). Reads the file
    only when its size or mtime differ from the stamp's; an empty or damaged stamp never matches."""
    parts = stamp.split(":")
    if len(parts) != 3 or len(parts[2]) != 64:
        return False, file_stamp(path)
    try:
        st = os.stat(path)
    except OSError:
        return False, ""
    if f"{st.st_size}:{st.st_mtime_ns}" == f"{parts[0]}:{parts[1]}":
        return True, stamp
    now = file_stamp(path)
    return now.rsplit(":", 1)[-1] == parts[2], now
