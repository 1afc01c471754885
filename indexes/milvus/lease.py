"""One writer per Milvus server collection, on every machine: a lease kept on the server.

The writer lock file (`hashing.core.locks`) keeps out a second writer on this machine only; other machines
reach the same server. So a writer of a server collection also holds a lease: row LEASE_ID (-1) of
the collection's manifest `NAME_meta`, info = {"owner": a random id, "host", "pid", "command",
"since", "expires": wall-clock seconds}. Version rows have ids >= 0, so readers never see it.

Taking it: Fischer's timed mutual exclusion (L. Lamport, "A fast mutual exclusion algorithm", ACM
TOCS 5(1), 1987, section 2). Milvus has no compare-and-swap, but an upsert of one primary key is
last-writer-wins and a Strong read sees every write acknowledged before it. So:

    read the row;  if another owner's lease is live: wait or refuse
    upsert our row;  if read -> upsert took >= SETTLE: start again
    wait SETTLE;  read the row:  ours -> held;  another's -> lost, start again

Two writers that both found the lease free both wrote less than SETTLE after their reads; the later
write wins, and the earlier writer, reading SETTLE after its own write, sees it. A writer measures
its own read -> upsert time on its monotonic clock, so the bound is checked, not assumed.

Holding it: a thread renews the row every RENEW seconds (expires = now + TTL). The writer adds,
deletes and commits only while the lease is valid by its own clock (renewed less than TTL - MARGIN
ago), so the machines' clocks must agree within MARGIN. A lease that lapsed (the server was away)
is taken again as above before the next write, or the write is refused before it changes anything.

A holder killed with kill -9 leaves its row: on another machine the next writer waits until it
expires (at most TTL); on the holder's own machine a dead pid proves it gone and the lease is taken
at once. Released: the row is deleted while it is still ours.

Every commit also checks the version it replaces (`MilvusIndex._check_version`), so even a writer
that holds no lease (the library used directly, or an older release) cannot commit over another's.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime

from hashing.core.errors import HashingError
from hashing.core.locks import command_line

LEASE_ID = -1
TTL = 30.0          # seconds a lease lasts unless renewed
RENEW = 5.0         # seconds between renewals
MARGIN = 10.0       # seconds before expiry at which the holder stops writing (clock skew allowed)
SETTLE = 1.5        # seconds between the upsert and the read that decides


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def holder_line(record: dict) -> str:
    """Who holds a lease, as its holder wrote it."""
    try:
        return (f"pid {int(record['pid'])} on {record['host']} (`{record['command']}`, since {record['since']})")
    except (KeyError, TypeError, ValueError):
        return "another writer"


class Lease:
    """The lease of collection `name` on the server `client` talks to. `guard(what)` wraps each
    call into pymilvus (its errors become one line); `ensure_meta()` creates NAME_meta if needed."""

    def __init__(self, client, name: str, what: str, guard, ensure_meta):
        self.client, self.name, self.what, self.guard, self.ensure_meta = client, name, what, guard, ensure_meta
        self.meta = name + "_meta"
        self.owner = uuid.uuid4().hex
        self.host = socket.gethostname()
        self._renewed: float | None = None           # monotonic time at which our last renewal was sent
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()               # renewals and checks, one at a time

    # ---- the row -------------------------------------------------------------------------------

    def read(self) -> dict | None:
        with self.guard("reading the writer lease"):
            if not self.client.has_collection(self.meta):
                return None
            rows = self.client.query(self.meta, filter=f"id == {LEASE_ID}", output_fields=["info"],
                                     consistency_level="Strong")
        if not rows:
            return None
        try:
            record = json.loads(rows[0]["info"])
        except (ValueError, TypeError, RecursionError):
            return None                               # a damaged lease protects nothing: it is taken over
        return record if isinstance(record, dict) else None

    def _write(self) -> float:
        """Upsert our row; the monotonic time at which it was sent."""
        sent = time.monotonic()
        record = {"owner": self.owner, "host": self.host, "pid": os.getpid(), "command": command_line(),
                  "since": datetime.now().astimezone().isoformat(timespec="seconds"), "expires": time.time() + TTL}
        with self.guard("writing the writer lease"):
            self.client.upsert(self.meta, [{"id": LEASE_ID, "v": b"\0", "info": json.dumps(record)}])
        return sent

    def _other(self, record: dict | None) -> dict | None:
        """The record if it is another writer's live lease, else None (free, ours, expired, or left by
        a dead process of this machine)."""
        if record is None or record.get("owner") == self.owner:
            return None
        expires = record.get("expires")
        if not isinstance(expires, (int, float)) or expires <= time.time():
            return None
        pid = record.get("pid")
        if record.get("host") == self.host and isinstance(pid, int) and not _alive(pid):
            return None
        return record

    # ---- taking, holding, checking, releasing ----------------------------------------------------

    def acquire(self, wait: float = 0.0) -> "Lease":
        """Take the lease (see the module's docstring), waiting up to `wait` seconds for a holder."""
        self.ensure_meta()
        deadline, tries = time.monotonic() + wait, 0
        while True:
            start, tries = time.monotonic(), tries + 1
            other = self._other(self.read())
            if other is None:
                sent = self._write()
                if time.monotonic() - start < SETTLE:
                    time.sleep(SETTLE)
                    record = self.read()
                    if record is not None and record.get("owner") == self.owner:
                        self._renewed = sent
                        self._start_renewing()
                        return self
                    other = self._other(record)
            if other is None and tries < 5:
                continue                 # a slow round trip, or another writer took it first: look again
            if time.monotonic() >= deadline:
                if other is None:
                    raise HashingError(f"{self.what}: could not take the writer lease on the server (other writers "
                                       f"kept taking it); try again, or add wait SECONDS", settings=("wait",))
                waited = f" (waited {wait:g} s)" if wait else ""
                raise HashingError(f"{self.what} is being written by {holder_line(other)}{waited}; only one writer at a "
                                   f"time, on any machine: let it finish, stop it, or add wait SECONDS",
                                   settings=("wait",))
            time.sleep(0.5)

    @property
    def valid(self) -> bool:
        return self._renewed is not None and time.monotonic() - self._renewed < TTL - MARGIN

    def check(self) -> None:
        """Before a write: the lease must be ours and valid; one that lapsed is taken again (or refused)."""
        with self._mutex:
            if self.valid:
                return
            self._renewed = None
        self.acquire(0.0)

    def _start_renewing(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name="hashing-milvus-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(RENEW):
            with self._mutex:
                if not self.valid:
                    continue             # lapsed: check() takes it again before the next write, if it can
                try:
                    self._renewed = self._write()
                except HashingError:
                    pass                 # the server is away: the lease lapses, and writes stop, at TTL - MARGIN

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=RENEW + 5)
            self._thread = None
        with self._mutex:
            ours, self._renewed = self.valid, None
        if ours:                         # still valid: nobody else can have taken it
            try:
                with self.guard("releasing the writer lease"):
                    self.client.delete(self.meta, filter=f"id == {LEASE_ID}")
            except HashingError:
                pass                     # it expires by itself


def check_no_other(client, name: str, what: str, guard) -> None:
    """For a write by a process that holds no lease: refused if another writer's lease is live."""
    probe = Lease(client, name, what, guard, lambda: None)
    other = probe._other(probe.read())
    if other is not None:
        raise HashingError(f"{what} is being written by {holder_line(other)}; only one writer at a time, on any "
                           f"machine: wait for it or stop it")
