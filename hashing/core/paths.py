"""Where the package keeps what it can rebuild: one cache root, a folder per job under it.

    root    $HASHING_CACHE, else $XDG_CACHE_HOME/hashing, else ~/.cache/hashing
    images  ROOT/images   decoded image folders (hashing.images.folders) and scikit-learn's digits
    locks   ROOT/locks    this machine's writer locks for Milvus server collections (hashing.indexes.lock)
    data    $HASHING_DATA, else ROOT/data   torchvision's datasets when no --data-dir is given

stdlib only.
"""

from __future__ import annotations

import os
from pathlib import Path

JOBS = ("images", "locks", "data")


def cache_root() -> Path:
    if os.environ.get("HASHING_CACHE"):
        return Path(os.environ["HASHING_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hashing"


def cache_dir(job: str) -> Path:
    """The cache folder of one job (JOBS); not created here."""
    if job not in JOBS:
        raise ValueError(f"unknown cache job {job!r}")
    if job == "data" and os.environ.get("HASHING_DATA"):
        return Path(os.environ["HASHING_DATA"])
    return cache_root() / job
