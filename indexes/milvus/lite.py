"""Milvus Lite, the local .db file: what may be opened as one, its server in this process, room on its disk.

A Milvus Lite .db is an SQLite file that Milvus Lite's own server (a child process, one per file and
one process per file at a time) reads and writes. Here: the checks before it is opened (a real
Milvus Lite file; a hot journal of a killed writer rolled back), whether another process holds it,
starting and stopping its server with a scratch $HOME of its own, and refusing a write where the
disk is (almost) full, since Milvus Lite can acknowledge an insert on a full disk and lose it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import warnings
from pathlib import Path

from hashing.core.errors import HashingError
from hashing.indexes.milvus.address import is_lite_file

LITE_LOGGING = {"GLOG_logtostderr": "1", "GLOG_minloglevel": "3"}


LITE_MIN_FREE = 16 << 20    # bytes: below this, Milvus Lite is not asked to write (see check_room)


def check_room(uri: str, need: int = 0) -> None:
    """Milvus Lite can accept an insert on a full disk and lose it when the file is closed (seen here:
    an append reported, then gone on reopen). So before it writes, there must be room: 16 MB plus
    eight times the data's estimated size."""
    import shutil

    if not is_lite_file(uri):
        return
    try:
        free = shutil.disk_usage(Path(uri).absolute().parent).free
    except OSError:
        return
    if free < LITE_MIN_FREE + 8 * need:
        raise HashingError(f"no space left on device for {uri}: {free / 1e6:.1f} MB free, Milvus Lite needs at "
                           f"least {(LITE_MIN_FREE + 8 * need) / 1e6:.0f} MB to write safely; free some space and "
                           f"run again (the last committed version is unchanged)")


def disk_full(uri: str) -> bool:
    """Whether a Milvus Lite file's disk has (almost) no space left: the likely cause of its failure."""
    import shutil

    if not is_lite_file(uri):
        return False
    try:
        return shutil.disk_usage(Path(uri).absolute().parent).free < 1 << 20
    except OSError:
        return False


def check_lite_file(uri: str, creating: bool) -> None:
    """A Milvus Lite location is a .db file that Milvus Lite made. Only `creating` may name a new one."""
    path = Path(uri)
    if not path.exists():
        if creating:
            return
        raise HashingError(f"no Milvus Lite database at {uri}; build one with `hashing index --out {uri}`")
    if not path.is_file():
        raise HashingError(f"{uri} is not a file; a Milvus Lite database is a .db file")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
        tables = _lite_tables(path) if head == b"SQLite format 3\x00" else set()
    except (OSError, sqlite3.Error) as e:
        raise HashingError(f"{uri} cannot be read ({type(e).__name__}); is it a Milvus Lite database?") from None
    if "collection_meta" not in tables:
        raise HashingError(f"{uri} is not a Milvus Lite database (an empty or other kind of file); "
                           f"choose another path, or remove it if it is yours to replace")


def _lite_tables(path: Path) -> set[str]:
    """The tables of a Milvus Lite file (an SQLite database), read without changing it if possible.

    A writer killed halfway through a transaction leaves a hot journal (`NAME.db-journal`): the file
    is not consistent until the journal is rolled back, and a read-only connection may not do that
    (SQLite: "attempt to write a readonly database"). Milvus Lite opens the file read-write and rolls
    it back itself, so any process that may open the index may roll it back first: SQLite's own
    locks make that safe beside a live writer (a journal is hot only while no process holds a lock
    on the database). Without write access to the file and its folder, one line says who can."""
    try:
        return _read_tables(f"file:{path}?mode=ro")
    except sqlite3.Error:
        journal = path.with_name(path.name + "-journal")
        if not journal.exists():
            raise
    if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        raise HashingError(f"{path} was left mid-write by a process that was killed ({journal.name} beside it "
                           f"holds the rollback), and rolling it back needs write access to {path} and its folder: "
                           f"run `hashing info {path}` once as a user who can write there")
    return _read_tables(f"file:{path}?mode=rw")       # reading through a read-write connection rolls it back


def _read_tables(location: str) -> set[str]:
    con = sqlite3.connect(location, uri=True, timeout=10)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()


def in_use(uri: str, grace: float = 3.0) -> bool:
    """Whether another process holds Milvus Lite's lock on the file (one process per .db).

    A lock still held after `grace` seconds counts: the server of a process that was just killed
    holds it for some tens of milliseconds while it exits (seen after kill -9 of `hashing index`).

    Asked before connecting: a failed start of Milvus Lite deletes the lock file. Never asked
    when this process runs the file's server itself, since closing our probe would release
    that server's POSIX lock."""
    import fcntl

    path = Path(uri).absolute().resolve()
    lock = path.parent / f".{path.name}.lock"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                     # milvus-lite's pkg_resources deprecation
            from milvus_lite.server_manager import server_manager_instance
        if str(path) in server_manager_instance._servers:
            return False
    except (ImportError, AttributeError):
        pass
    deadline = time.monotonic() + grace
    while True:
        if not lock.exists():
            return False
        with open(lock, "a") as f:
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if time.monotonic() >= deadline:
                    return True
            else:
                fcntl.lockf(f, fcntl.LOCK_UN)
                return False
        time.sleep(0.05)


SCRATCH_PREFIX = "hashing-milvus-lite-"


_scratch: dict[str, str] = {}        # a running Milvus Lite server's file -> its scratch $HOME


_environ_lock = threading.Lock()


def start_server(uri: str) -> None:
    """Start the Milvus Lite server of `uri` in this process, with a scratch $HOME of its own.

    Milvus Lite's server keeps its mmap scratch folder in $HOME/.cache/milvus, creates it when it
    starts and deletes it, with all it holds, when it exits. Servers of other processes share that
    folder: started together, one fails with "create dir:~/.cache/milvus failed ... Mmap manager
    has not been init" (seen in CI with four at once), as does every start where ~/.cache is not
    writable. So each server gets a fresh folder under the temporary directory, named after this
    process so that folders left by a killed process are swept at the next start. The server reads
    its environment when it is spawned; $HOME is changed for that moment only, under a lock."""
    path = str(Path(uri).absolute().resolve())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                         # milvus-lite's pkg_resources deprecation
        from milvus_lite.server_manager import server_manager_instance
    if path in server_manager_instance._servers:
        return
    sweep_scratch()
    home = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
    with _environ_lock:
        before = os.environ.get("HOME")
        os.environ["HOME"] = home
        try:
            started = server_manager_instance.start_and_get_uri(path)
        finally:
            if before is None:
                del os.environ["HOME"]
            else:
                os.environ["HOME"] = before
    if started is None:
        shutil.rmtree(home, ignore_errors=True)
        raise HashingError(f"Milvus Lite could not start a server for {uri}")
    _scratch[path] = home


def stop_server(uri: str) -> None:
    """Stop the Milvus Lite server of `uri` (so that another process may open the file) and remove
    its scratch folder."""
    path = str(Path(uri).absolute().resolve())
    try:
        from milvus_lite.server_manager import server_manager_instance
        server_manager_instance.release_server(path)
    except (ImportError, AttributeError):
        pass
    home = _scratch.pop(path, None)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


@atexit.register
def _stop_all() -> None:
    """At exit, the servers an error path left running: stopped, their scratch folders removed."""
    for path in list(_scratch):
        stop_server(path)


def sweep_scratch() -> None:
    """Remove the scratch folders of processes that are gone (killed before they could)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        pid = folder.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass                                                # alive, another user's
