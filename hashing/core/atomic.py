"""Atomic writes, output-path checks, and the crash points the kill tests stop at.

A file is written as a temp file in the destination folder, then renamed over the
destination (os.replace): a reader, or a run interrupted half-way, sees the old file or the
new one, never a torn one. Folders that hold several files (run folders, FAISS indexes) go
further: their data files get new names for every version and one small manifest file,
replaced atomically, is the commit point (`commit_manifest`).

Output paths: a symlink is written through (its target gets the new file, the link stays);
a FIFO, a device node or a folder where a file is expected is refused, never replaced.

numpy/stdlib only, so that indexes/ can use it without torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
from pathlib import Path
from typing import Any, Iterator

from hashing.core.errors import HashingError

_steps = 0


def crashpoint(what: str) -> None:
    """Mark a file-system change that is part of a commit.

    For the crash tests only: HASHING_CRASH_LOG=FILE lists the points a run passes, and
    HASHING_CRASH_AT=N kills the process with SIGKILL right after the N-th one, as a power
    cut or `kill -9` would. Without those variables this only counts.
    """
    global _steps
    _steps += 1
    log = os.environ.get("HASHING_CRASH_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{_steps} {what}\n")
    if os.environ.get("HASHING_CRASH_AT") == str(_steps):
        os.kill(os.getpid(), signal.SIGKILL)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def writable_target(path: str | os.PathLike) -> Path:
    """Where a file at `path` is really written: through a symlink to its target; a path that
    exists as anything but a regular file is refused."""
    path = Path(path)
    if str(path) in ("", "."):
        raise HashingError("an output path is empty; give a file name")
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a FIFO, socket or device)"
        raise HashingError(f"{path} is {kind}; give the path of a file to write")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it over `path`, else remove it."""
    path = writable_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        # After the writer is done: some writers (safetensors) recreate the file with mode 0600.
        os.chmod(tmp, _default_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        crashpoint(f"wrote {path.name} (temp)")
        os.replace(tmp, path)
        crashpoint(f"renamed {path.name}")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def remove(path: Path) -> None:
    """Delete a file that no committed version refers to any more."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        crashpoint(f"removed {path.name}")


def check_writable_location(path: str | os.PathLike, what: str) -> Path:
    """Before any work: `path` can be created, i.e. its nearest existing ancestor is a folder we may write.
    `what`: the setting that gave the path ("out", "json_out"), as the messages name it (HashingError.settings);
    the same in check_output_file and check_output_folder."""
    path = Path(path)
    if str(path).strip() in ("", "."):
        raise HashingError(f"{what} is empty; give a path", settings=(what,))
    parent = path.parent
    while not parent.exists():
        if parent.is_symlink():
            raise HashingError(f"{parent} is a broken symlink; {what} {path} cannot be created", settings=(what,))
        parent = parent.parent
    if not parent.is_dir():
        raise HashingError(f"{what} {path} cannot be created: {parent} is a file, not a folder", settings=(what,))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HashingError(f"{what} {path} cannot be created: no permission to write in {parent}",
                           settings=(what,))
    try:                    # /proc, /sys, read-only mounts: os.access says yes, only a real file says no
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".hashing-probe-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise HashingError(f"{what} {path} cannot be created: {parent} does not take new files "
                           f"({e.strerror})", settings=(what,)) from None
    return path


def check_output_file(path: str | os.PathLike | None, what: str) -> None:
    """Before any work: a file can be written at `path` (None: nothing to check)."""
    if path is None:
        return
    target = writable_target(path)
    if target.exists():
        if not os.access(target, os.W_OK) or not os.access(target.parent, os.W_OK | os.X_OK):
            raise HashingError(f"{what} {path}: no permission to replace it", settings=(what,))
    else:
        check_writable_location(target, what)


def leftover(name: str, ours: tuple[str, ...] = ()) -> bool:
    """A file an interrupted write of ours leaves: a temp file (.NAME.XXXX.tmp), a writer lock file,
    or a data file of a version that was never committed (`ours`: glob patterns of those names)."""
    from fnmatch import fnmatch

    return (name.startswith(".") and name.endswith((".tmp", ".lock"))) or any(fnmatch(name, p) for p in ours)


def check_output_folder(path: str | os.PathLike | None, what: str, marker: str | None = None,
                        ours: tuple[str, ...] = ()) -> None:
    """Before any work: `path` is a folder we may create or write into. With `marker`, an existing
    folder must already hold that file (a run folder's config.json, an index's meta.json) or hold
    nothing but leftovers of our own interrupted first write (`leftover`; the next commit removes
    them): we replace our own artefacts, never a folder of the user's other files."""
    if path is None:
        return
    path = Path(path)
    check_writable_location(path, what)
    if path.exists():
        if not path.is_dir():
            raise HashingError(f"{what} {path} exists and is not a folder", settings=(what,))
        if not os.access(path, os.W_OK | os.X_OK):
            raise HashingError(f"{what} {path}: no permission to write in it", settings=(what,))
        if marker and not (path / marker).is_file() and any(not leftover(p.name, ours) for p in path.iterdir()):
            raise HashingError(f"{what} {path} is a folder of other files (no {marker}); choose a new or empty "
                               f"folder", settings=(what,))


def commit_manifest(folder: Path, manifest: str, content: dict, ours: tuple[str, ...]) -> None:
    """Replace `folder/manifest` (the one commit point), then delete our data files it no longer names.

    `content["files"]` maps roles to the file names of the version being committed; `ours` are
    glob patterns of every name this kind of folder writes (older versions, interrupted writes),
    so nothing else in the folder is ever touched.
    """
    write_json(folder / manifest, content)
    keep = set(content["files"].values())
    for p in folder.iterdir():
        stale_temp = p.name.startswith(".") and p.name.endswith(".tmp")
        if p.name not in keep and (stale_temp or any(p.match(pattern) for pattern in ours)):
            remove(p)


def discard_uncommitted(folder: Path, manifest: str, names: dict) -> None:
    """After a failed save (a full disk, say): remove the data files it wrote, unless the manifest
    names them (the commit happened and a later step failed). Nothing committed is touched."""
    try:
        committed = set(json.loads((folder / manifest).read_text()).get("files", {}).values())
    except (OSError, ValueError, AttributeError, RecursionError):
        committed = set()
    for name in set(names.values()) - committed:
        with contextlib.suppress(OSError):
            (folder / name).unlink()


def file_name(value: Any, what: str) -> str:
    """A data-file name read from a manifest: a plain name inside the folder, nothing else."""
    if not isinstance(value, str) or not value or "/" in value or "\\" in value or value in (".", ".."):
        raise HashingError(f"{what} is not a file name: {value!r}")
    return value
