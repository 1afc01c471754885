"""The model and one open index behind `hashing serve`, safe to use from many threads at once.

One worker thread owns the model and the index; every other thread hands it jobs (search,
add, look up) and waits on a Future. Why one owner: FAISS must not be read while it is
written, MilvusIndex keeps per-search state, and a second writer could interleave an
addition's files with its commit. Why it is not slower: the worker takes every job that is
waiting when it wakes, so concurrent searches with the same k or radius are encoded as one
batch and searched as one faiss call (one forward pass for 8 images costs little more than
one), and concurrent additions are written with one commit. A lone request waits for
nothing: there is no batching window.

Writers and readers. An engine that takes additions (`writer=True`, a service with a token)
holds the index's writer lock (hashing.indexes.lock) for its whole life, so no other process
writes the index meanwhile and no id is handed out twice. An engine that only reads asks the
index, before each round of jobs, whether another process committed a new version
(`BinaryIndex.changed`: a stat of the manifest for FAISS) and then opens it, with its model
if that changed too; the swap happens between jobs, so a query sees the old or the new
version, never a mix.

Uploaded files. Additions store each upload in the uploads folder before the commit that names it,
and a removal deletes the file after the commit that drops its item (and only once no item names
it: the same picture uploaded twice is one file). A crash between the two leaves a file that no item
names; a writer sweeps those when it starts. It deletes only in a folder it has marked as this
index's (UPLOADS_OWNER, see _claim_uploads), so a folder shared with another index, or one copied or
moved with its index, is never emptied by mistake.

A Milvus server that goes away. pymilvus retries a lost server for minutes, and the worker would
wait with it, every request queued behind. So a watcher thread probes the server's port when the
worker has been busy a while: when nothing answers, the engine is "down" (`down` says why), new
jobs fail at once (Unavailable: a service answers 503) and the index's client is closed, which ends
the stuck call. The watcher keeps probing and, when the port answers again, has the worker open the
index anew (a fresh connection); the engine is up again once that works.

Decoding uploads is not done here: callers decode in their own threads (hashing.images.reader).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import socket
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashing.core import validation as V
from hashing.core.atomic import atomic_path
from hashing.core.errors import HashingError
from hashing.indexes.backends import backend_for, open_index, writer_lock
from hashing.indexes.milvus.address import is_lite_file, is_server_uri
from hashing.indexes.base import Hit

# Images per forward pass when many requests wait at once; HASHING_MAX_BATCH=1 turns batching off
# (benchmarks/serve.py --batching measures both).
MAX_BATCH = max(1, int(os.environ.get("HASHING_MAX_BATCH", "256") or 256))
UPLOADS_OWNER = ".hashing-uploads"   # in an uploads folder: JSON naming the index whose uploads it holds
_UPLOAD_FILE = re.compile(r"[0-9a-f]{16}-[A-Za-z0-9._-]+")        # the names _add gives uploads
_UPLOAD_TEMP = re.compile(r"\.[0-9a-f]{16}-[A-Za-z0-9._-]+\..*\.tmp")   # atomic_path's temp of one
BUSY_PROBE = 1.0       # seconds a round may run on a Milvus server before the watcher checks the server
PROBE_EVERY = 0.25     # seconds between the watcher's looks
PROBE_TIMEOUT = 1.0    # seconds a TCP connection to the server may take to open
RECONNECT_EVERY = 1.0  # seconds between attempts to open the index again once the port answers


class UnknownItem(HashingError):
    """An id that names no item of the index (a service answers 404)."""


class Unavailable(HashingError):
    """The index's server does not answer (a service answers 503); the engine reconnects by itself."""


@dataclass
class Timings:
    """Milliseconds one request spent in each stage (shared stages: the batch's time)."""

    decode: float = 0.0
    queue: float = 0.0
    encode: float = 0.0
    search: float = 0.0
    batch: int = 1                    # queries in the batch this request's search was part of

    def header(self) -> str:
        """A Server-Timing header value (shown by browsers' developer tools)."""
        return ", ".join(f"{k};dur={getattr(self, k):.3f}" for k in ("decode", "queue", "encode", "search")) + \
            f", batch;desc={self.batch}"


@dataclass
class _Job:
    kind: str                         # "search" | "add" | "remove" | "items" | "status"
    payload: dict
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.perf_counter)

    def key(self) -> tuple:
        """Jobs with equal keys run as one batch."""
        p = self.payload
        if self.kind == "search":
            return ("search", "codes" if p.get("codes") is not None else "arrays", p.get("k"), p.get("radius"))
        return (self.kind,)


def uploads_folder(location: str) -> Path | None:
    """Where images added through the service are kept: inside a FAISS index folder, beside a Milvus
    Lite file; None for a Milvus server (give a folder)."""
    if backend_for(location) == "faiss":
        return Path(location) / "uploads"
    if is_lite_file(location):
        return Path(location + ".uploads")
    return None


def _safe_name(name: str) -> str:
    """A file name's harmless part: letters, digits, '.', '_' and '-', at most 60 characters."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name or "image").name).strip("._") or "image"
    return stem[-60:]


class Engine:
    """A model and its index, served to many threads by one worker thread."""

    def __init__(self, location: str, collection: str | None = None, device: str = "auto",
                 uploads: str | os.PathLike | None = None, writer: bool = False, wait: float = 0.0):
        from hashing.model.checkpoint import load_model_for

        self.location, self.collection, self.device = str(location), collection, device
        self.backend = backend_for(self.location)
        self.lock = writer_lock(self.location, collection) if writer else None
        if self.lock is not None:
            self.lock.acquire(wait)
        try:
            self.index = open_index(self.location, collection)
            try:
                self.model = load_model_for(self.index, device)
            except BaseException:
                self.index.close()
                raise
        except BaseException:
            if self.lock is not None:
                self.lock.release()
            raise
        self.spec = self.model.cfg.spec
        self.reloads = 0                       # new versions picked up from other writers
        self.uploads = Path(uploads) if uploads is not None else uploads_folder(self.location)
        self.uploads_note: str | None = None   # why removed items' files stay in the uploads folder, if they do
        self._owns_uploads = False             # whether this engine deletes files there
        self._refs: Counter | None = None      # upload file -> items that name it (counted when first needed)
        self.server = is_server_uri(self.location)
        self._down: str | None = None          # why the server is taken to be away (None: up)
        self._busy_since: float | None = None  # when the worker's current round began
        self._reconnecting = False
        self._next_reconnect = 0.0
        self._status_future: Future | None = None
        self._status_lock = threading.Lock()
        self._stopping = threading.Event()
        if self.lock is not None and self.uploads is not None:
            self._claim_uploads()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="hashing-engine", daemon=True)
        self._worker.start()
        self._watcher = None
        if self.server:
            self._watcher = threading.Thread(target=self._watch, name="hashing-engine-watch", daemon=True)
            self._watcher.start()

    # ---- what callers see ------------------------------------------------------------------------

    @property
    def writer(self) -> bool:
        return self.lock is not None

    @property
    def count(self) -> int:
        return self.index.count

    @property
    def bits(self) -> int:
        return self.index.bits

    @property
    def classes(self) -> list[str]:
        return list(self.index.info.classes)

    @property
    def datasets(self) -> dict:
        return dict(self.index.info.datasets)

    @property
    def down(self) -> str | None:
        """Why the index's server is taken to be away, in one line; None while it answers."""
        if self._down is None:
            return None
        return f"{self._down}; the service reconnects by itself when it answers again"

    def check_search(self, k: int | None, radius: int | None) -> None:
        """Refuse a k or radius this index cannot answer (HashingError), before any work."""
        if k is None and radius is None:
            raise HashingError("give k, radius, or both (at most k within radius)", settings=("k", "radius"))
        if radius is not None and k is not None and k < 1:
            raise HashingError(f"k must be at least 1, got {k}", settings=("k",))
        self.index.check_searchable(k if radius is None else None, radius)

    def search(self, arrays: np.ndarray | None = None, codes: np.ndarray | None = None, k: int | None = None,
               radius: int | None = None) -> Future:
        """Images (n, *spec.shape) uint8, or packed codes (n, bits/8) -> Future of (list of Hit lists, Timings)."""
        return self._submit("search", arrays=arrays, codes=codes, k=k, radius=radius)

    def add(self, arrays: np.ndarray, blobs: list[bytes], names: list[str], labels: list[int]) -> Future:
        """Uploaded images (decoded arrays and the files' bytes) -> Future of their new ids, once the
        files and the index's new version are on disk."""
        if not self.writer:
            raise HashingError("this service only reads the index: additions need a writer (start it with token)",
                              settings=("token",))
        if self.uploads is None:
            raise HashingError("additions need a folder for the uploaded files: start the service with uploads DIR",
                              settings=("uploads",))
        return self._submit("add", arrays=arrays, blobs=blobs, names=names, labels=labels)

    def remove(self, ids: list[int]) -> Future:
        """Future of the number removed, once the index's new version is on disk (and the removed items'
        uploaded files are gone); UnknownItem (and nothing removed) if any id names no item."""
        if not self.writer:
            raise HashingError("this service only reads the index: removals need a writer (start it with token)",
                              settings=("token",))
        self._check_ids(ids, "; nothing was removed")
        return self._submit("remove", ids=ids)

    def status(self) -> Future:
        """Future of the item count, after picking up any version another process committed. Callers
        that ask while one is pending share it, so a stuck worker never piles them up."""
        with self._status_lock:
            if self._status_future is None or self._status_future.done():
                self._status_future = self._submit("status")
            return self._status_future

    def items(self, ids: list[int]) -> Future:
        """Future of Hits (distance 0) for existing ids; UnknownItem for an unknown one."""
        self._check_ids(ids)
        return self._submit("items", ids=ids)

    def close(self) -> None:
        """Finish the queued jobs, stop the worker and close the index."""
        if self._worker.is_alive():
            self._jobs.put(None)
            self._worker.join()              # a call stuck on a lost server is ended by the watcher
            self._stopping.set()
            if self._watcher is not None:
                self._watcher.join()
            with contextlib.suppress(Exception):
                self.index.close()
            if self.lock is not None:
                self.lock.release()

    def _check_ids(self, ids: list[int], suffix: str = "") -> None:
        """An id outside int64 (negative, or 2^63 and up) names no item: UnknownItem now, before numpy
        would raise OverflowError on it."""
        bad = next((int(i) for i in ids if not 0 <= int(i) <= V.INT64_MAX), None)
        if bad is not None:
            raise UnknownItem(f"no item {bad} in the index ({self.count} items){suffix}")

    # ---- the worker --------------------------------------------------------------------------------

    def _submit(self, kind: str, **payload) -> Future:
        if not self._worker.is_alive():
            raise HashingError("the service is stopping")
        if self._down is not None:
            raise Unavailable(self.down)
        job = _Job(kind, payload)
        self._jobs.put(job)
        return job.future

    def _run(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            self._busy_since = time.monotonic()
            jobs = [first]
            while True:                     # everything already waiting, in arrival order
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._jobs.put(None)    # stop after this round
                    break
                jobs.append(nxt)
            if not self.writer and self._down is None:
                self._follow()
            for group in _runs(jobs):
                self._do(group)
            self._busy_since = None

    def _do(self, group: list[_Job]) -> None:
        live = [j for j in group if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        if self._down is not None and live[0].kind != "reconnect":     # queued before the server went away
            for j in live:
                j.future.set_exception(Unavailable(self.down))
            return
        try:
            results = getattr(self, f"_{live[0].kind}")(live)
        except Exception as e:            # noqa: BLE001 - reported to each caller, the worker goes on
            if self._lost(e):
                self._mark_down(str(e))
                e = Unavailable(self.down)
            for j in live:
                j.future.set_exception(e)
        else:
            for j, r in zip(live, results):
                j.future.set_result(r)

    def _encode(self, arrays: np.ndarray) -> np.ndarray:
        from hashing.model.encode import encode_array

        return encode_array(self.model, arrays, MAX_BATCH, progress=False).codes

    def _search(self, jobs: list[_Job]) -> list:
        t0 = time.perf_counter()
        by_codes = jobs[0].payload.get("codes") is not None
        parts = [j.payload["codes" if by_codes else "arrays"] for j in jobs]
        xq = np.concatenate(parts)                       # (n, ...) one batch, a writable copy
        t1 = time.perf_counter()
        if not by_codes:
            if xq.shape[1:] != self.spec.shape:
                raise HashingError("the index was rebuilt with another model while this request was decoded; "
                                   "send it again")
            xq = self._encode(xq)
        t2 = time.perf_counter()
        p = jobs[0].payload
        hits = self.index.query(xq, k=p["k"], radius=p["radius"])
        t3 = time.perf_counter()
        out, start = [], 0
        for j, part in zip(jobs, parts):
            timing = Timings(queue=(t0 - j.queued) * 1e3, encode=(t2 - t1) * 1e3, search=(t3 - t2) * 1e3,
                             batch=len(xq))
            out.append((hits[start:start + len(part)], timing))
            start += len(part)
        return out

    def _status(self, jobs: list[_Job]) -> list:
        return [self.index.count for _ in jobs]

    def _items(self, jobs: list[_Job]) -> list:
        (job,) = jobs                                   # never batched (see _runs)
        ids = [int(i) for i in job.payload["ids"]]
        bad = self.index.missing(np.asarray(ids, np.int64))
        if bad:
            raise UnknownItem(f"no item {bad[0]} in the index ({self.index.count} items)")
        labels, sources = self.index.lookup(np.asarray(ids, np.int64))
        return [[Hit(i, 0, None if lab < 0 else int(lab), s) for i, lab, s in zip(ids, labels, sources)]]

    def _add(self, jobs: list[_Job]) -> list:
        """One commit for every addition waiting: files first (each fsynced under its final name), then
        the index's new version. A failure rolls the in-memory index back to what is on disk."""
        arrays = np.concatenate([j.payload["arrays"] for j in jobs])
        labels = np.concatenate([np.asarray(j.payload["labels"], np.int64) for j in jobs])
        blobs = [b for j in jobs for b in j.payload["blobs"]]
        names = [n for j in jobs for n in j.payload["names"]]
        codes = self._encode(arrays)
        self.uploads.mkdir(parents=True, exist_ok=True)
        if self._owns_uploads and not (self.uploads / UPLOADS_OWNER).exists():
            self._mark_uploads()
        sources, made = [], []
        for blob, name in zip(blobs, names):
            # Named by content: the same file uploaded twice is stored once, and a name can never
            # point outside the folder.
            path = self.uploads / f"{hashlib.sha256(blob).hexdigest()[:16]}-{_safe_name(name)}"
            if not path.exists():
                with atomic_path(path) as tmp:
                    tmp.write_bytes(blob)
                made.append(str(path.resolve()))
            sources.append(str(path.resolve()))
        try:
            ids = self.index.add(codes, labels, sources)
            self.index.save()
        except BaseException:
            self._reopen()
            self._drop_unnamed(made)
            raise
        if self._refs is not None:
            self._refs.update(sources)
        out, start = [], 0
        for j in jobs:
            n = len(j.payload["blobs"])
            out.append([int(i) for i in ids[start:start + n]])
            start += n
        return out

    def _remove(self, jobs: list[_Job]) -> list:
        (job,) = jobs                                   # never batched (see _runs): one commit each
        ids = np.asarray(job.payload["ids"], np.int64)
        bad = self.index.missing(ids)
        if bad:
            raise UnknownItem(f"no item {bad[0]} in the index ({self.index.count} items); nothing was removed")
        _, sources = self.index.lookup(ids)
        try:
            removed = self.index.remove(ids)
            self.index.save()
        except BaseException:
            self._reopen()
            raise
        self._forget_uploads(sources)
        return [removed]

    def _reopen(self) -> None:
        """Back to the committed version after a failed write. A server that cannot be reached now
        leaves the engine down, to be reopened by the reconnection."""
        self._refs = None                               # recounted from the committed version when needed
        with contextlib.suppress(Exception):
            self.index.close()
        try:
            self.index = open_index(self.location, self.collection)
        except HashingError as e:
            if not self._lost(e):
                raise
            self._mark_down(str(e))

    # ---- uploaded files ------------------------------------------------------------------------------

    def _identity(self) -> dict:
        """What an uploads folder's owner mark names: this index (its folder or file, resolved; a
        server's URI) and collection."""
        where = self.location if self.server else str(Path(self.location).resolve())
        return {"index": where, "collection": self.collection}

    def _mark_uploads(self) -> None:
        with atomic_path(self.uploads / UPLOADS_OWNER) as tmp:
            tmp.write_text(json.dumps(self._identity()) + "\n")

    def _claim_uploads(self) -> None:
        """At start (the writer lock held, so no addition is half-way): decide whether this engine may
        delete files in the uploads folder, and if so delete those no item names (orphans of a crash
        between an upload and its commit, or between a removal's commit and its file's deletion).

        Marked for this index: ours. Marked for another (shared, or copied or moved with its index):
        never touched. Unmarked (made before the mark existed): ours if nothing there would be
        deleted, or, for the index's own folder (INDEX/uploads, FILE.db.uploads), if some item
        names a file in it; else left alone, and `uploads_note` says why."""
        folder = self.uploads
        try:
            if not folder.is_dir():
                self._owns_uploads = True               # made and marked by the first addition
                return
            try:
                owner = json.loads((folder / UPLOADS_OWNER).read_text())
            except FileNotFoundError:
                owner = None
            files = [p for p in folder.iterdir() if _UPLOAD_FILE.fullmatch(p.name) or _UPLOAD_TEMP.fullmatch(p.name)]
            if owner is not None and owner != self._identity():
                self.uploads_note = (f"{folder} is marked as the uploads folder of another index "
                                     f"({owner.get('index') if isinstance(owner, dict) else owner}): files of "
                                     f"removed items are kept there")
                return
            if files:
                self._refs = self._count_uploads()
            orphans = [p for p in files if self._refs.get(self._key(p), 0) == 0] if files else []
            default = uploads_folder(self.location)
            own_folder = default is not None and folder.resolve() == default.resolve()
            if owner is None and orphans and not (own_folder and len(orphans) < len(files)):
                self.uploads_note = (f"{folder} holds {len(orphans)} files that no item of this index names "
                                     f"(another index's uploads?): it is left alone, and files of removed "
                                     f"items are kept; give this index a folder of its own with --uploads")
                self._refs = None
                return
            if owner is None:
                self._mark_uploads()
            self._owns_uploads = True
            for p in orphans:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        except (OSError, ValueError, HashingError) as e:
            self._owns_uploads, self._refs = False, None
            self.uploads_note = f"{folder} cannot be checked ({getattr(e, 'strerror', None) or e}): files of " \
                                f"removed items are kept there"

    def _key(self, path: Path) -> str:
        """An upload as items' sources name it (the resolved path _add stores)."""
        return str(self.uploads.resolve() / path.name)

    def _is_upload(self, source: str) -> bool:
        prefix = str(self.uploads.resolve()) + os.sep
        return source.startswith(prefix) and os.sep not in source[len(prefix):]

    def _count_uploads(self) -> Counter:
        """How many items of the open version name each file of the uploads folder (one pass over the
        items' sources)."""
        _, _, sources, _ = self.index.items()
        return Counter(s for s in sources if self._is_upload(s))

    def _forget_uploads(self, sources: list[str]) -> None:
        """After a removal's commit: delete the uploads that no item names any more. A failure here
        leaves a file for the next start's sweep, never an error: the removal is committed."""
        mine = [s for s in sources if self._owns_uploads and self._is_upload(s)]
        if not mine:
            return
        try:
            if self._refs is None:
                self._refs = self._count_uploads()      # the committed version: the removed items are gone
            else:
                self._refs.subtract(mine)
            for s in set(mine):
                if self._refs[s] <= 0:
                    del self._refs[s]
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(s)
        except Exception:                   # noqa: BLE001 - swept at the next start
            self._refs = None

    def _drop_unnamed(self, made: list[str]) -> None:
        """After a failed addition: delete the files it stored that the committed version does not name
        (where that cannot be told now, the next start's sweep does it)."""
        if not made or not self._owns_uploads or self._down is not None:
            return
        try:
            self._refs = self._count_uploads()
            for s in made:
                if self._refs[s] <= 0:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(s)
        except Exception:                   # noqa: BLE001
            self._refs = None

    # ---- a server that goes away --------------------------------------------------------------------

    def _lost(self, e: BaseException) -> bool:
        """Whether a failure is the index's server being away (or its connection lost): the one-line
        errors of hashing.indexes.milvus.client (guarded) for a call that failed or a connection refused."""
        if not self.server or not isinstance(e, HashingError):
            return False
        text = str(e)
        return text.startswith("cannot reach Milvus") or (text.startswith("Milvus at ") and " failed" in text)

    def _mark_down(self, reason: str) -> None:
        if self._down is None:
            self._down = (reason.splitlines() or ["the server does not answer"])[0]

    def _watch(self) -> None:
        """The watcher of a Milvus server: see the module's docstring."""
        address = _host_port(self.location)
        while not self._stopping.wait(PROBE_EVERY):
            busy = self._busy_since
            stuck = busy is not None and time.monotonic() - busy > BUSY_PROBE
            if self._down is None and not stuck:
                continue
            why = _unreachable(*address)
            if why is not None:
                if self._down is None:
                    self._mark_down(f"Milvus at {self.location} does not answer ({why})")
                    with contextlib.suppress(Exception):
                        self.index.close()          # ends the worker's call, which pymilvus would retry for minutes
            elif self._down is not None and busy is None and not self._reconnecting and \
                    time.monotonic() >= self._next_reconnect:
                self._reconnecting = True
                self._jobs.put(_Job("reconnect", {}))

    def _reconnect(self, jobs: list[_Job]) -> list:
        """Open the index anew, on a fresh connection; up again when that works, else still down (the
        watcher tries again)."""
        try:
            self._replace()
        except Exception as e:              # noqa: BLE001
            self._down = (str(e).splitlines() or [self._down])[0]
            self._next_reconnect = time.monotonic() + RECONNECT_EVERY
        else:
            self._down = None
        finally:
            self._reconnecting = False
        return [None for _ in jobs]

    def _replace(self) -> None:
        """The open index (and model, where the new version's differs) replaced by the newest committed
        version. The old index is closed first: pymilvus gives the clients of one server, database and
        token one connection, and closing the old one later would close the new one's too."""
        from hashing.model.checkpoint import load_model_for

        self._refs = None
        with contextlib.suppress(Exception):
            self.index.close()
        new = open_index(self.location, self.collection)
        try:
            model = self.model
            if new.info.model.fingerprint != self.index.info.model.fingerprint or new.bits != self.bits:
                model = load_model_for(new, self.device)
        except BaseException:
            new.close()
            raise
        self.index, self.model, self.spec = new, model, model.cfg.spec

    def _follow(self) -> None:
        """A reader: open the newest committed version if another process committed one (with its
        model, when that changed). Anything that fails keeps the version already open; on a Milvus
        server, where the old one is closed first (_replace), the engine is down until it reopens."""
        from hashing.model.checkpoint import load_model_for

        try:
            if not self.index.changed():
                return
            if self.server:
                try:
                    self._replace()
                except Exception as e:      # noqa: BLE001 - the reconnection tries again
                    self._mark_down(str(e))
                else:
                    self.reloads += 1
                return
            new = open_index(self.location, self.collection)
        except Exception:                   # noqa: BLE001 - mid-rebuild or damaged: keep serving what we have
            return
        try:
            model = self.model
            if new.info.model.fingerprint != self.index.info.model.fingerprint or new.bits != self.bits:
                model = load_model_for(new, self.device)
        except Exception:                   # noqa: BLE001
            new.close()
            return
        old, self.index, self.model, self.spec = self.index, new, model, model.cfg.spec
        self.reloads += 1
        old.close()


def _host_port(uri: str) -> tuple[str, int]:
    """The host and port a Milvus server URI connects to (Milvus's 19530 when it names none)."""
    from hashing.indexes.milvus.address import parse_server_uri

    address = parse_server_uri(uri)
    return address.host, address.port


def _unreachable(host: str, port: int) -> str | None:
    """None when a TCP connection to host:port opens within PROBE_TIMEOUT; else why not, in a few words."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return None
    except OSError as e:
        return (e.strerror or str(e) or type(e).__name__).lower()


def _runs(jobs: list[_Job]) -> list[list[_Job]]:
    """Consecutive jobs of one key, at most MAX_BATCH images each: the order of a search and an
    addition is kept."""
    runs: list[list[_Job]] = []
    size = 0
    for j in jobs:
        n = _size(j)
        if runs and runs[-1][0].key() == j.key() and j.kind not in ("items", "remove") and size + n <= MAX_BATCH:
            runs[-1].append(j)
            size += n
        else:
            runs.append([j])
            size = n
    return runs


def _size(job: _Job) -> int:
    p = job.payload
    for name in ("arrays", "codes", "ids"):
        if p.get(name) is not None:
            return len(p[name])
    return 1

