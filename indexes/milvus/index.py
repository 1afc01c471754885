"""Binary codes in Milvus: Milvus Lite (a local .db file) or a Milvus server/cluster (http URI).

Data: collection NAME__vN holds id INT64 (primary, our item id), code BINARY_VECTOR(bits),
label INT64 (-1 = unknown), source VARCHAR and stamp VARCHAR (the file's "size:mtime_ns:sha256",
for `hashing index --sync`; collections made before it have no stamp field and cannot be
synced until rebuilt), under a BIN_FLAT (or BIN_IVF_FLAT) index with metric HAMMING.

Versions and the commit point. Collection NAME_meta is the manifest: one row per committed
version, id = the version number N, info = JSON of the IndexInfo plus "collection" (the data
collection of that version) and "count" (its items). The row with the highest id is the index;
inserting that one row is the commit, and a single-row insert is all or nothing. (Milvus Lite
has no aliases, so no alias switch.)
- A rebuild fills a new data collection NAME__v(N+1), flushes it, commits row N+1, then drops
  the old data collection and manifest rows. A crash before the commit leaves version N whole;
  the next writer drops the orphan.
- An append inserts ids next_id, next_id+1, ... into the current data collection, flushes, then
  commits row N+1 with the new next_id and count. Every search filters id < next_id, so the rows
  of an interrupted append are never seen, and the next writer deletes them before it adds.
- A removal (`hashing remove`, the removals of a sync) commits row N+1 whose "removing" lists
  the removed ids (zlib-packed); every search also filters those out, so the commit alone makes
  them invisible. Then the rows are deleted and row N+2, without the list, is committed; a
  writer that finds a committed list first deletes those rows again. A list too long for one
  manifest row (about 20,000 ids) is removed in several commits, one per part.
Indexes written before versions (data in NAME, one manifest row 0 without "collection") open
as version 0.

A reader never writes: opening a .db file that does not exist or is not a Milvus Lite database
is an error, and only `hashing index` creates one.

Needs the optional group `pip install .[milvus]`: pymilvus 2.5 with milvus-lite 2.5
(3.x dropped binary vectors); milvus-lite 2.5 imports pkg_resources, so setuptools<81.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from hashing.core import validation as V
from hashing.core.atomic import crashpoint
from hashing.core.errors import HashingError
from hashing.indexes.base import BinaryIndex, IndexInfo
from hashing.indexes.milvus.address import DEFAULT_COLLECTION, parse_server_uri
from hashing.indexes.milvus.lease import Lease, check_no_other
from hashing.core.locks import WriterLock

# gRPC's C core logs to stderr by itself (three "Handshake failed" lines for https:// against a plain
# server); our own one-line error says what failed. Read when grpc starts, so set before pymilvus loads.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
TOKEN_ENV = "HASHING_MILVUS_TOKEN"   # a server's token: USER:PASSWORD or an API key (never on the command line)
INSERT_BATCH = 5000
MAX_LIMIT = 16384          # Milvus's cap on results per query (topk)
MAX_SOURCE = 4096          # VARCHAR length of a source
MAX_STAMP = 256            # VARCHAR length of a file stamp
MAX_INFO = 65535           # VARCHAR length of a manifest row
MAX_REMOVING = 48000       # characters of a packed removal list in one manifest row
PAGE = 16384               # rows per query when listing every item (Milvus's cap on offset + limit)
INDEX_TYPES = {"flat": ("BIN_FLAT", {}), "ivf": ("BIN_IVF_FLAT", {"nlist": 1024})}
LITE_LOGGING = {"GLOG_logtostderr": "1", "GLOG_minloglevel": "3"}
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")


@contextlib.contextmanager
def _milvus(what: str, uri: str):
    """Around every call into pymilvus: its log lines (and milvus-lite's, on the root logger)
    silenced, and its exceptions turned into one line that says what failed."""
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                     # milvus-lite's pkg_resources deprecation
            yield
    except HashingError:
        raise
    except ImportError:
        raise HashingError("the Milvus backend needs its extras: pip install '.[milvus]' "
                           "(pymilvus 2.5, milvus-lite 2.5, setuptools<81)") from None
    except Exception as e:
        if _disk_full(uri):
            raise HashingError(f"no space left on device for {uri}: {what} failed; free some space and run "
                               f"again (the last committed version is unchanged)") from None
        details = getattr(e, "details", None)                # a grpc error: its status and details, not its repr
        if callable(details) and callable(getattr(e, "code", None)):
            text = f"{getattr(e.code(), 'name', e.code())}: {details()}"
        else:
            text = str(getattr(e, "message", None) or e).strip()
        message = text.splitlines()[0][:160] if text else "no details"
        raise HashingError(f"Milvus at {uri}: {what} failed ({type(e).__name__}: {message})") from None
    finally:
        logging.disable(logging.NOTSET)


LITE_MIN_FREE = 16 << 20    # bytes: below this, Milvus Lite is not asked to write (see _check_room)


def _check_room(uri: str, need: int = 0) -> None:
    """Milvus Lite can accept an insert on a full disk and lose it when the file is closed (seen here:
    an append reported, then gone on reopen). So before it writes, there must be room: 16 MB plus
    eight times the data's estimated size."""
    import shutil

    if not is_lite(uri):
        return
    try:
        free = shutil.disk_usage(Path(uri).absolute().parent).free
    except OSError:
        return
    if free < LITE_MIN_FREE + 8 * need:
        raise HashingError(f"no space left on device for {uri}: {free / 1e6:.1f} MB free, Milvus Lite needs at "
                           f"least {(LITE_MIN_FREE + 8 * need) / 1e6:.0f} MB to write safely; free some space and "
                           f"run again (the last committed version is unchanged)")


def _disk_full(uri: str) -> bool:
    """Whether a Milvus Lite file's disk has (almost) no space left: the likely cause of its failure."""
    import shutil

    if not is_lite(uri):
        return False
    try:
        return shutil.disk_usage(Path(uri).absolute().parent).free < 1 << 20
    except OSError:
        return False


# Milvus Lite 2.5 can take a collection before its server has set up memory mapping, and then
# fails it with this segcore assertion (milvus-io/pymilvus#2981, fixed in milvus-lite#277); seen
# once in this project's tests on a busy 2-core machine. It passes when asked again.
_NOT_READY = "Mmap manager has not been init"


def _create_collection(client, name: str, schema, index_params, wait: float = 30.0) -> None:
    """client.create_collection, asked again while the server says it is not ready (above)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            client.create_collection(name, schema=schema, index_params=index_params)
            return
        except Exception as e:
            if _NOT_READY not in str(e) or time.monotonic() >= deadline:
                raise
            if client.has_collection(name):      # created, then failed when loaded
                client.drop_collection(name)
            time.sleep(0.5)


def is_lite(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "tcp://"))


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


def _in_use(uri: str, grace: float = 3.0) -> bool:
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


def _start_lite(uri: str) -> None:
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
    _sweep_scratch()
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


def _stop_lite(uri: str) -> None:
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
def _stop_all_lite() -> None:
    """At exit, the servers an error path left running: stopped, their scratch folders removed."""
    for path in list(_scratch):
        _stop_lite(path)


def _sweep_scratch() -> None:
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


def connect(uri: str, creating: bool = False, timeout: float | None = None, alias: str | None = None):
    """A MilvusClient for `uri`; `timeout` bounds the wait for its channel (None: 5 s for a
    server, 60 s for a Milvus Lite file, whose server this process starts first: on a busy
    2-core machine that start has taken more than 5 s). A server URI's path is the database
    (`hashing.indexes.milvus.address`). pymilvus shares one connection between clients of the
    same server, database and token, and closing any client closes it: `alias` gives this client
    a connection of its own."""
    MilvusIndex.check_location(uri, creating)
    if timeout is None:
        timeout = 60.0 if is_lite(uri) else 5.0
    if is_lite(uri):
        # Milvus Lite's server logs through glog, which writes files into /tmp on every start and never
        # removes them: log to stderr instead, fatal errors only (our own error says what failed).
        for name, value in LITE_LOGGING.items():
            os.environ.setdefault(name, value)
    if is_lite(uri) and _in_use(uri):
        raise HashingError(f"{uri} is open in another process (Milvus Lite allows one at a time); "
                           f"stop it, or use a Milvus server")
    try:
        with _milvus("connecting", uri):
            if is_lite(uri):
                _start_lite(uri)
            from pymilvus import MilvusClient
            extra = {} if alias is None else {"alias": alias}
            if is_lite(uri):
                client = MilvusClient(uri=uri, timeout=timeout, **extra)
            else:
                address = parse_server_uri(uri)
                client = _Timed(MilvusClient(uri=address.client_uri, db_name=address.database, timeout=timeout,
                                             token=os.environ.get(TOKEN_ENV, ""), **extra))
                client.list_collections()        # a wrong token or database fails here, not halfway through a write
            return client
    except HashingError as e:
        if is_lite(uri):
            raise
        text = str(e).lower()
        if any(w in text for w in ("auth", "token", "password", "credential", "permission", "privilege")):
            if not os.environ.get(TOKEN_ENV):
                raise HashingError(f"Milvus at {uri} requires a user: set {TOKEN_ENV} to USER:PASSWORD or an API "
                                   f"key") from None
            raise HashingError(f"Milvus at {uri} refused the token in {TOKEN_ENV} (USER:PASSWORD or an API "
                               f"key): {e}") from None
        if "database" in text:
            raise HashingError(f"Milvus at {uri} has no database {parse_server_uri(uri).database!r} (the URI's path "
                               f"names it): create it on the server first, or fix the path") from None
        raise HashingError(f"cannot reach Milvus at {uri}; start the server or check the URI") from None


def _ensure_manifest(client, name: str, uri: str) -> None:
    """The manifest collection NAME_meta: version rows (id >= 0) and the writer lease (id -1)."""
    from pymilvus import DataType

    with _milvus("creating the manifest collection", uri):
        if client.has_collection(name + "_meta"):
            return
        meta = client.create_schema(auto_id=False, enable_dynamic_field=False)
        meta.add_field("id", DataType.INT64, is_primary=True)
        meta.add_field("v", DataType.BINARY_VECTOR, dim=8)     # every collection needs a vector field
        meta.add_field("info", DataType.VARCHAR, max_length=65535)
        mip = client.prepare_index_params()
        mip.add_index(field_name="v", index_type="BIN_FLAT", metric_type="HAMMING")
        try:
            _create_collection(client, name + "_meta", meta, mip)
        except Exception:
            if not client.has_collection(name + "_meta"):      # else: another writer made it just now
                raise
        crashpoint("created the manifest collection")


_leases: dict[tuple[str, str], Lease] = {}      # (server key, collection) -> the lease this process holds


@functools.lru_cache(maxsize=64)
def _lease_key(uri: str, name: str) -> tuple[str, str]:
    """(server key, collection): looked up before every write, so the host is resolved once per URI."""
    return parse_server_uri(uri).key, name


def _check_writer(client, uri: str, name: str) -> None:
    """Before a write on a server: the lease this process holds is still valid (taken again if it
    lapsed), or, where this process holds none, nobody else holds one."""
    if is_lite(uri):
        return
    lease = _leases.get(_lease_key(uri, name))
    if lease is not None:
        lease.check()
    else:
        check_no_other(client, name, f"the index {uri} (collection {name})", lambda what: _milvus(what, uri))


class ServerWriterLock(WriterLock):
    """The writer lock of a collection on a Milvus server: the lock file keeps out writers on this
    machine, and the lease on the server (`hashing.indexes.milvus.lease`) writers on every machine."""

    def __init__(self, path, what: str, uri: str, collection: str | None):
        super().__init__(path, what)
        self.uri = uri
        self.name = check_collection_name(DEFAULT_COLLECTION if collection is None else collection)
        self.lease: Lease | None = None
        self._client = None

    def acquire(self, wait: float = 0.0) -> "ServerWriterLock":
        start = time.monotonic()
        super().acquire(wait)
        try:
            self._client = connect(self.uri, creating=True, alias=f"hashing-lease-{os.getpid()}-{id(self)}")
            lease = Lease(self._client, self.name, self.what, lambda what: _milvus(what, self.uri),
                          lambda: _ensure_manifest(self._client, self.name, self.uri))
            lease.acquire(max(0.0, wait - (time.monotonic() - start)))
        except BaseException:
            self._close_client()
            super().release()
            raise
        self.lease = _leases[_lease_key(self.uri, self.name)] = lease
        return self

    def release(self) -> None:
        if self.lease is not None:
            _leases.pop(_lease_key(self.uri, self.name), None)
            self.lease.release()
            self.lease = None
        self._close_client()
        super().release()

    def _close_client(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


# Seconds each call into a server may take, retries included. pymilvus bounds its retries only by
# an int timeout given to the call; without one a call to a server that went away retries 75 times,
# about 220 s, before it fails. A flush waits for the server to seal what was inserted: longer.
CALL_TIMEOUTS = {"flush": 600, "create_collection": 120, "drop_collection": 120}
CALL_TIMEOUT = 60
_TIMED = {"has_collection", "query", "insert", "upsert", "delete", "flush", "search", "list_collections",
          "describe_collection", "create_collection", "drop_collection", "list_databases"}


class _Timed:
    """A server's MilvusClient whose calls each carry an int timeout (CALL_TIMEOUTS)."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if name not in _TIMED:
            return attr
        timeout = CALL_TIMEOUTS.get(name, CALL_TIMEOUT)

        def call(*args, **kwargs):
            kwargs.setdefault("timeout", timeout)
            return attr(*args, **kwargs)
        return call


def _own_alias() -> str | None:
    """A connection of its own for each index on a server (see connect)."""
    import uuid

    return f"hashing-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def check_collection_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or "__v" in name or name.endswith("_meta"):
        raise HashingError(f"--collection {name!r}: use letters, digits and underscores, starting with a letter "
                           f"or underscore, at most 200 characters (and not ending in _meta or holding __v)")
    return name


class MilvusIndex(BinaryIndex):
    MAX_K = MAX_LIMIT

    def __init__(self, client, uri: str, name: str, info: IndexInfo, version: int | None, data: str, count: int,
                 next_id: int | None = None, removing: list[int] | None = None, created: str | None = None,
                 updated: str | None = None, stamped: bool = True):
        self.client, self.uri, self.name, self.info = client, uri, name, info
        self.version, self.data, self._count = version, data, count   # committed version (None: new)
        self._count_committed = count
        self.next_id = self._next_committed = count if next_id is None else next_id
        self._removing = list(removing or [])    # the committed version's removed ids whose rows may remain
        self._pending: list[int] = []             # removed since the last commit
        self.created, self.updated, self.stamped = created, updated, stamped
        self._entities: dict[int, tuple[int, str]] = {}

    # ---- versions ----------------------------------------------------------------------------

    @staticmethod
    def _manifest(client, name: str, uri: str) -> tuple[int, dict] | None:
        """(version, row info) of the highest committed version, or None."""
        meta = name + "_meta"
        with _milvus("reading the manifest", uri):
            if not client.has_collection(meta):
                return None
            rows = client.query(meta, filter="id >= 0", output_fields=["id", "info"], consistency_level="Strong")
        if not rows:
            return None
        row = max(rows, key=lambda r: int(r["id"]))
        try:
            info = json.loads(row["info"])
            if not isinstance(info, dict):
                raise ValueError("not an object")
        except RecursionError:
            raise HashingError(f"collection {name!r} at {uri} has a damaged manifest (nested too deeply); "
                               f"rebuild it") from None
        except (ValueError, TypeError) as e:
            raise HashingError(f"collection {name!r} at {uri} has a damaged manifest ({e}); rebuild it") from None
        return int(row["id"]), info

    def _commit(self) -> None:
        """Commit what add() and remove() did: removals part by part (see the module's docstring), the
        last part with the additions."""
        from datetime import datetime

        self._forget_removed()                          # a committed list's rows are deleted before it goes
        pending, self._pending = self._pending, []
        parts = _split_removals(pending)
        self.updated = datetime.now().astimezone().isoformat(timespec="seconds")
        self.created = self.created or self.updated
        for i, part in enumerate(parts):
            last = i == len(parts) - 1                  # the additions become visible with the last part
            self._count_committed -= len(part)
            count, next_id = (self._count, self.next_id) if last else (self._count_committed, self._next_committed)
            self._insert_manifest_row(part, count, next_id)
            if part:
                self._forget_removed()
                self._insert_manifest_row([], count, next_id)
        self._count_committed, self._next_committed = self._count, self.next_id
        self._housekeeping()

    def _insert_manifest_row(self, removing: list[int], count: int, next_id: int) -> None:
        """Insert the manifest row of the next version: the one atomic step."""
        version = 0 if self.version is None else self.version + 1
        row = {**self.info.to_dict(), "collection": self.data, "count": count, "next_id": next_id,
               "created": self.created, "updated": self.updated}
        if removing:
            row["removing"] = pack_ids(removing)
        _check_room(self.uri, 4096)
        self._check_version()
        with _milvus("committing", self.uri):
            self.client.insert(self.name + "_meta", [{"id": version, "v": b"\0", "info": json.dumps(row)}])
            self.client.flush(self.name + "_meta")
        crashpoint("committed manifest row")
        self.version, self._removing = version, list(removing)

    def _forget_removed(self) -> None:
        """Delete the rows that the committed version lists as removed (they are already invisible)."""
        if not self._removing:
            return
        self._check_version()
        with _milvus("deleting removed items", self.uri):
            for s in range(0, len(self._removing), INSERT_BATCH):
                self.client.delete(self.data, filter=f"id in {self._removing[s:s + INSERT_BATCH]}")
            self.client.flush(self.data)
        crashpoint("deleted removed rows")

    def _housekeeping(self) -> None:
        version = self.version
        try:        # committed: clearing the old version is housekeeping, which the next writer redoes
            with _milvus("removing the old version", self.uri):
                self.client.delete(self.name + "_meta", filter=f"id >= 0 and id < {version}")   # not the lease
                crashpoint("deleted old manifest rows")
                for c in self.client.list_collections():
                    if c != self.data and self._is_data_of(c):
                        self.client.drop_collection(c)
                        crashpoint(f"dropped {c}")
        except HashingError:
            pass

    def _check_version(self) -> None:
        """Before a write on a server: this writer holds the collection's lease (or nobody does), and the
        committed version is still the one it read; else it stops before it changes anything. (A Milvus
        Lite file is open in one process at a time: nothing else can write it.)"""
        if is_lite(self.uri):
            return
        _check_writer(self.client, self.uri, self.name)
        current = self._manifest(self.client, self.name, self.uri)
        found = None if current is None else current[0]
        if found != self.version:
            raise HashingError(f"collection {self.name!r} at {self.uri} was changed by another writer meanwhile "
                               f"(version {found} committed; this writer read version {self.version}); nothing of "
                               f"this write was committed: run it again")

    def _is_data_of(self, collection: str) -> bool:
        return collection == self.name or re.fullmatch(re.escape(self.name) + r"__v\d+", collection) is not None

    # ---- life cycle ---------------------------------------------------------------------------

    @classmethod
    def check_location(cls, location: str, creating: bool, collection: str | None = None) -> None:
        if collection is not None:
            check_collection_name(collection)
        if not is_lite(location):
            parse_server_uri(location)
        else:
            if not location.endswith(".db"):
                raise HashingError(f"{location}: a Milvus Lite location is a file ending in .db "
                                   f"(or give an http(s):// URI)")
            check_lite_file(location, creating)
            if creating and not Path(location).exists():
                from hashing.core.atomic import check_writable_location
                check_writable_location(location, "--out")

    @classmethod
    def check_type(cls, index_type: str, bits: int, n: int | None = None) -> None:
        if index_type not in INDEX_TYPES:
            raise HashingError(f"--index-type {index_type!r} is not offered on Milvus; choose {', '.join(INDEX_TYPES)}")

    @classmethod
    def create(cls, uri: str, info: IndexInfo, collection: str | None = None) -> "MilvusIndex":
        """A new version under `collection`, empty until add() and committed by save(); the
        committed version, if any, stays what readers see until then."""
        from pymilvus import DataType

        name = check_collection_name(DEFAULT_COLLECTION if collection is None else collection)
        cls.check_type(info.index_type, info.bits)
        _check_room(uri)
        client = connect(uri, creating=True, alias=None if is_lite(uri) else _own_alias())
        _check_writer(client, uri, name)
        current = cls._manifest(client, name, uri)
        version = None if current is None else current[0]
        data = f"{name}__v{0 if version is None else version + 1}"
        with _milvus("creating the collection", uri):
            if client.has_collection(data):        # an orphan of an interrupted rebuild
                client.drop_collection(data)
            if current is None and client.has_collection(name):   # a plain collection of that name, not ours
                raise HashingError(f"collection {name!r} at {uri} exists but is not a hashing index; "
                                   f"choose another --collection")
            index_type, params = INDEX_TYPES[info.index_type]
            ip = client.prepare_index_params()
            ip.add_index(field_name="code", index_type=index_type, metric_type="HAMMING", params=params)
            s = client.create_schema(auto_id=False, enable_dynamic_field=False)
            s.add_field("id", DataType.INT64, is_primary=True)
            s.add_field("code", DataType.BINARY_VECTOR, dim=info.bits)
            s.add_field("label", DataType.INT64)
            s.add_field("source", DataType.VARCHAR, max_length=MAX_SOURCE)
            s.add_field("stamp", DataType.VARCHAR, max_length=MAX_STAMP)
            _create_collection(client, data, s, ip)
            crashpoint(f"created {data}")
        _ensure_manifest(client, name, uri)
        return cls(client, uri, name, info, version, data, 0, created=None if current is None else
                   current[1].get("created"))

    @classmethod
    def open(cls, uri: str, collection: str | None = None) -> "MilvusIndex":
        name = check_collection_name(DEFAULT_COLLECTION if collection is None else collection)
        client = connect(uri, alias=None if is_lite(uri) else _own_alias())
        try:
            return cls._open(client, uri, name)
        except BaseException:
            with contextlib.suppress(Exception):
                client.close()               # a connection of its own: not left open by a failed open
            raise

    @classmethod
    def _open(cls, client, uri: str, name: str) -> "MilvusIndex":
        current = cls._manifest(client, name, uri)
        if current is None:
            with _milvus("listing collections", uri):
                have = sorted(c[:-len("_meta")] for c in client.list_collections() if c.endswith("_meta"))
            raise HashingError(f"no collection {name!r} at {uri} (hashing indexes there: {', '.join(have) or 'none'}); "
                               f"check --collection")
        version, row = current
        data = row.pop("collection", name)       # version 0 of the first layout kept its data in NAME
        count = row.pop("count", None)
        next_id, created, updated = row.pop("next_id", None), row.pop("created", None), row.pop("updated", None)
        try:
            removing = unpack_ids(row.pop("removing", ""))
        except ValueError:
            raise HashingError(f"collection {name!r} at {uri} has a damaged manifest (removing); rebuild it") from None
        try:
            info = IndexInfo(**row)
        except (HashingError, TypeError) as e:
            raise HashingError(f"collection {name!r} at {uri} has damaged hashing metadata ({e}); rebuild it") from None
        with _milvus("opening the collection", uri):
            if not client.has_collection(data):
                raise HashingError(f"collection {name!r} at {uri}: its data collection {data!r} is missing; rebuild it")
            if count is None:
                count = int(client.query(data, filter="", output_fields=["count(*)"])[0]["count(*)"])
            stamped = any(f.get("name") == "stamp" for f in client.describe_collection(data).get("fields", []))
        next_id = count if next_id is None else next_id
        for what, value, least in (("count", count, 0), ("next_id", next_id, count)):
            if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= V.INT64_MAX:
                raise HashingError(f"collection {name!r} at {uri} has a damaged manifest ({what} {value!r}); "
                                   f"rebuild it")
        return cls(client, uri, name, info, version, data, count, next_id, removing, created, updated, stamped)

    def save(self) -> None:
        self._commit()

    CHECK_EVERY = 1.0          # seconds between a reader's looks at a server's manifest
    _checked = 0.0

    def changed(self) -> bool:
        """A Milvus server can have other writers: a look at its newest manifest row, at most once a
        second. A Milvus Lite file is open in one process only, so nothing else can change it."""
        if is_lite(self.uri) or time.monotonic() - self._checked < self.CHECK_EVERY:
            return False
        self._checked = time.monotonic()
        try:
            current = self._manifest(self.client, self.name, self.uri)
        except HashingError:
            return False
        return current is not None and current[0] != self.version

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if is_lite(self.uri):
            _stop_lite(self.uri)

    # ---- data ---------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return self._count

    def add(self, xb, labels, sources, stamps=None):
        xb = self.check_codes(xb)
        n = len(xb)
        labels = np.full(n, -1, np.int64) if labels is None else np.asarray(labels, np.int64)
        stamps = [""] * n if stamps is None else [str(t)[:MAX_STAMP] for t in stamps]
        # Milvus stores UTF-8 text: an undecodable byte of a file name is kept as \xNN.
        sources = [str(s).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") for s in sources]
        too_long = next((s for s in sources if len(s.encode()) > MAX_SOURCE), None)
        if too_long is not None:
            raise HashingError(f"a source is longer than Milvus's {MAX_SOURCE} bytes: {too_long[:80]}...")
        start = self.next_id
        ids = self.new_ids(n)
        _check_room(self.uri, n * (xb.shape[1] + 64) + sum(len(s) for s in sources))
        self._check_version()            # the delete below must never reach another writer's committed rows
        with _milvus("adding items", self.uri):
            self.client.delete(self.data, filter=f"id >= {start}")   # rows of an interrupted append, never committed
            for s in range(0, n, INSERT_BATCH):   # batches: one round trip per 5,000 rows, not per row
                rows = [{"id": int(ids[i]), "code": xb[i].tobytes(), "label": int(labels[i]), "source": sources[i],
                         **({"stamp": stamps[i]} if self.stamped else {})}
                        for i in range(s, min(n, s + INSERT_BATCH))]
                self.client.insert(self.data, rows)
                crashpoint("inserted a batch")
            self.client.flush(self.data)
        self._count += n
        self.next_id = start + n
        self._seen = False
        return ids

    _seen = False               # whether a search of this version has already waited for all of its data

    def _consistency(self) -> str:
        """Strong for the first search of a version (on a server it waits for the data of every insert before
        its manifest row, some hundreds of milliseconds); Bounded after that, which answers at once: a
        version's visible rows never change (later rows are hidden by the filter until their commit). With
        several query replicas in a cluster, a replica may then lag by up to Milvus's bound (5 s)."""
        return "Bounded" if self._seen and not is_lite(self.uri) else "Strong"

    def _filter(self) -> str:
        """The rows of this version: below next_id, and not listed as removed."""
        gone = self._removing + self._pending
        return f"id < {self.next_id}" + (f" and id not in {gone}" if gone else "")

    def missing(self, ids) -> list[int]:
        ids = [int(i) for i in np.asarray(ids, np.int64)]
        found = set()
        with _milvus("looking up items", self.uri):
            for s in range(0, len(ids), INSERT_BATCH):
                rows = self.client.query(self.data, filter=f"({self._filter()}) and id in {ids[s:s + INSERT_BATCH]}",
                                         output_fields=["id"], consistency_level="Strong")
                found.update(int(r["id"]) for r in rows)
        return [i for i in ids if i not in found]

    def remove(self, ids) -> int:
        ids = [int(i) for i in np.asarray(ids, object).ravel()]      # no int64 cast before the check: 2**70 is "no item"
        self.check_ids(ids)
        ids = sorted(set(ids))
        self._pending += ids
        self._count -= len(ids)
        self._seen = False
        self._entities = {}
        return len(ids)

    def items(self):
        fields = ["id", "label", "source"] + (["stamp"] if self.stamped else [])
        rows = []
        with _milvus("listing items", self.uri):
            for s in range(0, self.next_id, PAGE):
                rows += self.client.query(self.data, filter=f"({self._filter()}) and id >= {s} and id < {s + PAGE}",
                                          output_fields=fields, consistency_level="Strong", limit=PAGE)
        rows.sort(key=lambda r: int(r["id"]))
        return (np.array([int(r["id"]) for r in rows], np.int64), np.array([int(r["label"]) for r in rows], np.int64),
                [r["source"] for r in rows], [r.get("stamp", "") for r in rows])

    def disk_bytes(self) -> int | None:
        if not is_lite(self.uri):
            return None
        with contextlib.suppress(OSError):
            return Path(self.uri).stat().st_size
        return None

    def _search(self, xq: np.ndarray, limit: int, params: dict):
        with _milvus("searching", self.uri):
            res = self.client.search(self.data, data=[q.tobytes() for q in xq], anns_field="code", limit=limit,
                                     filter=self._filter(),
                                     search_params={"metric_type": "HAMMING", "params": params},
                                     output_fields=["label", "source"], consistency_level=self._consistency())
        self._seen = True
        self._entities = {}
        out = []
        for hits in res:
            D = np.array([int(round(h["distance"])) for h in hits], np.int32)
            I = np.array([int(h["id"]) for h in hits], np.int64)
            for h in hits:
                self._entities[int(h["id"])] = (int(h["entity"]["label"]), h["entity"]["source"])
            order = np.lexsort((I, D))
            out.append((D[order], I[order]))
        return out

    def search(self, xq, k):
        xq = self.check_queries(xq, k)
        pairs = self._search(xq, k, {})
        D = np.full((len(xq), k), -1, np.int32)
        I = np.full((len(xq), k), -1, np.int64)
        for q, (d, i) in enumerate(pairs):
            D[q, :len(d)], I[q, :len(i)] = d, i
        return D, I

    def range_search(self, xq, radius):
        xq = self.check_queries(xq, radius=radius)
        limit = min(MAX_LIMIT, self.count)
        # Milvus keeps range_filter <= d < radius for HAMMING; we mean d <= radius.
        pairs = self._search(xq, limit, {"radius": int(radius) + 1, "range_filter": 0})
        if any(len(d) == MAX_LIMIT for d, _ in pairs):
            raise HashingError(f"more than {MAX_LIMIT} items within radius {radius}: Milvus caps results; "
                               f"use a smaller --radius")
        return [(d[d <= radius], i[d <= radius]) for d, i in pairs]

    def lookup(self, ids):
        ids = [int(i) for i in np.asarray(ids)]
        missing = [i for i in ids if i not in self._entities]
        if missing:
            with _milvus("looking up items", self.uri):
                rows = self.client.query(self.data, filter=f"id in {missing}", output_fields=["label", "source"],
                                         consistency_level="Strong")
            self._entities.update({int(r["id"]): (int(r["label"]), r["source"]) for r in rows})
        labels = np.array([self._entities[i][0] for i in ids], np.int64)
        return labels, [self._entities[i][1] for i in ids]


def pack_ids(ids: list[int]) -> str:
    """Sorted ids as one short string (zlib-packed differences, base64): a manifest row holds ~20,000."""
    import base64
    import zlib

    deltas = np.diff(np.asarray(sorted(ids), np.int64), prepend=0)
    return base64.b64encode(zlib.compress(deltas.astype("<i8").tobytes(), 9)).decode()


def unpack_ids(text: str) -> list[int]:
    import base64
    import binascii
    import zlib

    if not text:
        return []
    if not isinstance(text, str):
        raise ValueError("not a string")
    try:
        raw = zlib.decompress(base64.b64decode(text, validate=True))
    except (binascii.Error, zlib.error) as e:
        raise ValueError(str(e)) from None
    return np.cumsum(np.frombuffer(raw, "<i8")).astype(np.int64).tolist()


def _split_removals(ids: list[int]) -> list[list[int]]:
    """The removals in parts whose packed list fits one manifest row; [[]] when there are none."""
    if not ids:
        return [[]]
    parts, todo = [], sorted(ids)
    while todo:
        n = len(todo)
        while len(pack_ids(todo[:n])) > MAX_REMOVING:
            n //= 2
        parts.append(todo[:n])
        todo = todo[n:]
    return parts
