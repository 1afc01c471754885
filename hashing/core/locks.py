"""One process at a time: an exclusive OS lock on a file, naming its holder.

`WriterLock` is `fcntl.flock` on a lock file: the kernel releases it when the holder exits, however
it exits (kill -9 included), so a lock is never left stale and the next one gets it at once. The
file itself stays; it only says who holds the lock now (pid, command, since), so that a refused
process can name the holder. Used for one writer per index (`hashing.indexes.lock` says where an
index's lock file lives) and one mover per `--move-to` folder (`hashing.dedup.moves`).

stdlib only (no torch, no faiss).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

from hashing.core.errors import HashingError

SECRET_OPTIONS = ("--token",)


def command_line(argv: list[str] | None = None) -> str:
    """This process's command line as a person would recognise it, secrets masked."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).name in ("hashing", "__main__.py"):
        argv[0] = "hashing"
    out, hide = [], False
    for a in argv:
        if hide:
            out.append("***")
            hide = False
        elif a in SECRET_OPTIONS:
            out.append(a)
            hide = True
        elif a.startswith(tuple(o + "=" for o in SECRET_OPTIONS)):
            out.append(a.split("=", 1)[0] + "=***")
        else:
            out.append(a)
    text = " ".join(out)
    return text if len(text) <= 200 else text[:197] + "..."


class WriterLock:
    """An exclusive, non-blocking (or bounded-wait) lock on `path`, naming its holder in the file."""

    def __init__(self, path: str | os.PathLike, what: str, busy: str | None = None, settings: tuple[str, ...] = ()):
        """`busy`: the one-line refusal when another process holds it ({holder} names it); `settings`: those
        that `what` and `busy` name (HashingError.settings)."""
        self.path, self.what, self.busy, self.settings = Path(path), what, busy, tuple(settings)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: float = 0.0) -> "WriterLock":
        """Take the lock, waiting up to `wait` seconds for its holder; else a one-line error naming it."""
        import fcntl

        if wait < 0 or wait != wait:
            raise HashingError(f"wait must be 0 or more seconds, got {wait}", settings=("wait",))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            raise HashingError(f"{self.what}: cannot open its lock file {self.path} ({e.strerror})",
                              settings=self.settings) from None
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self.holder()
                    os.close(fd)
                    waited = f" (waited {wait:g} s)" if wait else ""
                    if self.busy:
                        raise HashingError(self.busy.format(holder=holder), settings=self.settings) from None
                    raise HashingError(f"{self.what} is being written by {holder}{waited}; only one writer at a "
                                       f"time: let it finish, stop it, or add wait SECONDS",
                                       settings=(*self.settings, "wait")) from None
                time.sleep(0.05)
            except OSError as e:
                os.close(fd)
                raise HashingError(f"{self.what}: cannot lock {self.path} ({e.strerror})",
                                   settings=self.settings) from None
        self._fd = fd
        record = {"pid": os.getpid(), "command": command_line(),
                  "since": datetime.now().astimezone().isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError:
            pass                    # the holder's name is a courtesy; the lock is what counts
        return self

    def holder(self) -> str:
        """Who holds the lock, as the holder wrote it."""
        try:
            rec = json.loads(self.path.read_text())
            return f"pid {int(rec['pid'])} (`{rec['command']}`, since {rec['since']})"
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return "another process"

    def release(self) -> None:
        import fcntl

        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> "WriterLock":
        return self if self.held else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def holding(lock: WriterLock, wait: float = 0.0):
    """Hold a writer lock for a block. If the block fails and taking the lock created the lock file
    (and its folder), they go again: a failed first build leaves nothing behind."""
    folder_existed, file_existed = lock.path.parent.exists(), lock.path.exists()
    lock.acquire(wait)
    ok = False
    try:
        yield lock
        ok = True
    finally:
        lock.release()
        if not ok and not file_existed:
            with contextlib.suppress(OSError):
                lock.path.unlink()
                if not folder_existed:
                    lock.path.parent.rmdir()       # only if empty
