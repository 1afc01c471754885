"""Where the package keeps what it can rebuild: one cache root, a folder per job under it.

    root    $HASHING_CACHE, else $XDG_CACHE_HOME/hashing, else ~/.cache/hashing
    images  ROOT/images   decoded image folders (hashing.images.folders) and scikit-learn's digits
    locks   ROOT/locks    this machine's writer locks for Milvus server collections (hashing.indexes.lock)
    data    $HASHING_DATA, else ROOT/data   torchvision's datasets when no --data-dir is given

And what makes two paths the same file (`file_key`, `distinct_files`): the (device, inode) they lead to.
That sees through symlinks, `..` and a folder given twice, as comparing realpaths does, and also through
hard links and bind mounts, which realpaths do not: an image folder's split and `hashing duplicates`
read each file once by this one rule.

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


def file_key(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of the file a path leads to (through symlinks): two paths are the same file when
    their keys are equal. None when the path leads nowhere (gone, a broken link, unreadable)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def distinct_files(paths: list[str]) -> tuple[list[int], list[tuple[int, str]]]:
    """Each file of `paths` once, by file_key: (the positions of the paths kept, in order: of the paths to
    one file, the first that is not a symlink, else the first; (position, why) of each path that leads
    nowhere, with the operating system's reason)."""
    chosen: dict[tuple[int, int], int] = {}
    failed = []
    for i, path in enumerate(paths):
        try:
            st = os.stat(path)
        except (OSError, ValueError) as e:
            failed.append((i, getattr(e, "strerror", None) or str(e)))
            continue
        key = (st.st_dev, st.st_ino)
        if key not in chosen or os.path.islink(paths[chosen[key]]) and not os.path.islink(path):
            chosen[key] = i
    return sorted(chosen.values()), failed
