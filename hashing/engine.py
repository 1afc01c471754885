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

Decoding uploads is not done here: callers decode in their own threads (hashing.images).
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashing.atomic import atomic_path
from hashing.errors import HashingError
from hashing.indexes.backends import backend_for, open_index, writer_lock
from hashing.indexes.base import Hit

# Images per forward pass when many requests wait at once; HASHING_MAX_BATCH=1 turns batching off
# (benchmarks/serve.py --batching measures both).
MAX_BATCH = max(1, int(os.environ.get("HASHING_MAX_BATCH", "256") or 256))


class UnknownItem(HashingError):
    """An id that names no item of the index (a service answers 404)."""


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
    if location.endswith(".db"):
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
        from hashing.retrieval import load_model_for

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
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="hashing-engine", daemon=True)
        self._worker.start()

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

    def check_search(self, k: int | None, radius: int | None) -> None:
        """Refuse a k or radius this index cannot answer (HashingError), before any work."""
        if k is None and radius is None:
            raise HashingError("give k, radius, or both (at most k within radius)")
        if radius is not None and k is not None and k < 1:
            raise HashingError(f"-k must be at least 1, got {k}")
        self.index.check_searchable(k if radius is None else None, radius)

    def search(self, arrays: np.ndarray | None = None, codes: np.ndarray | None = None, k: int | None = None,
               radius: int | None = None) -> Future:
        """Images (n, *spec.shape) uint8, or packed codes (n, bits/8) -> Future of (list of Hit lists, Timings)."""
        return self._submit("search", arrays=arrays, codes=codes, k=k, radius=radius)

    def add(self, arrays: np.ndarray, blobs: list[bytes], names: list[str], labels: list[int]) -> Future:
        """Uploaded images (decoded arrays and the files' bytes) -> Future of their new ids, once the
        files and the index's new version are on disk."""
        if not self.writer:
            raise HashingError("this service only reads the index: additions need a writer (start it with --token)")
        if self.uploads is None:
            raise HashingError("additions need a folder for the uploaded files: start the service with --uploads DIR")
        return self._submit("add", arrays=arrays, blobs=blobs, names=names, labels=labels)

    def remove(self, ids: list[int]) -> Future:
        """Future of the number removed, once the index's new version is on disk; HashingError (and
        nothing removed) if any id names no item."""
        if not self.writer:
            raise HashingError("this service only reads the index: removals need a writer (start it with --token)")
        return self._submit("remove", ids=ids)

    def status(self) -> Future:
        """Future of the item count, after picking up any version another process committed."""
        return self._submit("status")

    def items(self, ids: list[int]) -> Future:
        """Future of Hits (distance 0) for existing ids; HashingError for an unknown one."""
        return self._submit("items", ids=ids)

    def close(self) -> None:
        """Finish the queued jobs, stop the worker and close the index."""
        if self._worker.is_alive():
            self._jobs.put(None)
            self._worker.join()
            self.index.close()
            if self.lock is not None:
                self.lock.release()

    # ---- the worker --------------------------------------------------------------------------------

    def _submit(self, kind: str, **payload) -> Future:
        if not self._worker.is_alive():
            raise HashingError("the service is stopping")
        job = _Job(kind, payload)
        self._jobs.put(job)
        return job.future

    def _run(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
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
            if not self.writer:
                self._follow()
            for group in _runs(jobs):
                self._do(group)

    def _do(self, group: list[_Job]) -> None:
        live = [j for j in group if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = getattr(self, f"_{live[0].kind}")(live)
        except Exception as e:            # noqa: BLE001 - reported to each caller, the worker goes on
            for j in live:
                j.future.set_exception(e)
        else:
            for j, r in zip(live, results):
                j.future.set_result(r)

    def _encode(self, arrays: np.ndarray) -> np.ndarray:
        from hashing.codes import encode_array

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
        sources = []
        for blob, name in zip(blobs, names):
            # Named by content: the same file uploaded twice is stored once, and a name can never
            # point outside the folder.
            path = self.uploads / f"{hashlib.sha256(blob).hexdigest()[:16]}-{_safe_name(name)}"
            if not path.exists():
                with atomic_path(path) as tmp:
                    tmp.write_bytes(blob)
            sources.append(str(path.resolve()))
        try:
            ids = self.index.add(codes, labels, sources)
            self.index.save()
        except BaseException:
            self._reopen()
            raise
        out, start = [], 0
        for j in jobs:
            n = len(j.payload["blobs"])
            out.append([int(i) for i in ids[start:start + n]])
            start += n
        return out

    def _remove(self, jobs: list[_Job]) -> list:
        (job,) = jobs                                   # never batched (see _runs): one commit each
        bad = self.index.missing(np.asarray(job.payload["ids"], np.int64))
        if bad:
            raise UnknownItem(f"no item {bad[0]} in the index ({self.index.count} items); nothing was removed")
        try:
            removed = self.index.remove(np.asarray(job.payload["ids"], np.int64))
            self.index.save()
        except BaseException:
            self._reopen()
            raise
        return [removed]

    def _reopen(self) -> None:
        """Back to the committed version on disk after a failed addition."""
        self.index.close()
        self.index = open_index(self.location, self.collection)

    def _follow(self) -> None:
        """A reader: open the newest committed version if another process committed one (with its
        model, when that changed). Anything that fails keeps the version already open."""
        from hashing.retrieval import load_model_for

        try:
            if not self.index.changed():
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

