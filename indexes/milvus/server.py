"""One writer of a collection on a Milvus server, across machines: the manifest collection, the writer's
lease (hashing.indexes.milvus.lease) and the lock that holds both.

On a server the lock file of this machine (hashing.indexes.lock) keeps out writers here; the lease,
a row of the manifest collection, keeps out writers everywhere. Before every write the writer checks
it still holds its lease (`check_writer`); a Milvus Lite file needs none (one process per file).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time

from hashing.core.atomic import crashpoint
from hashing.core.locks import WriterLock
from hashing.indexes.milvus.address import DEFAULT_COLLECTION, check_collection_name, is_lite_file, parse_server_uri
from hashing.indexes.milvus.client import connect, create_collection, guarded
from hashing.indexes.milvus.lease import Lease, check_no_other

def ensure_manifest(client, name: str, uri: str) -> None:
    """The manifest collection NAME_meta: version rows (id >= 0) and the writer lease (id -1)."""
    from pymilvus import DataType

    with guarded("creating the manifest collection", uri):
        if client.has_collection(name + "_meta"):
            return
        meta = client.create_schema(auto_id=False, enable_dynamic_field=False)
        meta.add_field("id", DataType.INT64, is_primary=True)
        meta.add_field("v", DataType.BINARY_VECTOR, dim=8)     # every collection needs a vector field
        meta.add_field("info", DataType.VARCHAR, max_length=65535)
        mip = client.prepare_index_params()
        mip.add_index(field_name="v", index_type="BIN_FLAT", metric_type="HAMMING")
        try:
            create_collection(client, name + "_meta", meta, mip)
        except Exception:
            if not client.has_collection(name + "_meta"):      # else: another writer made it just now
                raise
        crashpoint("created the manifest collection")


_leases: dict[tuple[str, str], Lease] = {}      # (server key, collection) -> the lease this process holds


@functools.lru_cache(maxsize=64)
def lease_key(uri: str, name: str) -> tuple[str, str]:
    """(server key, collection): looked up before every write, so the host is resolved once per URI."""
    return parse_server_uri(uri).key, name


def check_writer(client, uri: str, name: str) -> None:
    """Before a write on a server: the lease this process holds is still valid (taken again if it
    lapsed), or, where this process holds none, nobody else holds one."""
    if is_lite_file(uri):
        return
    lease = _leases.get(lease_key(uri, name))
    if lease is not None:
        lease.check()
    else:
        check_no_other(client, name, f"the index {uri} (collection {name})", lambda what: guarded(what, uri))


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
            lease = Lease(self._client, self.name, self.what, lambda what: guarded(what, self.uri),
                          lambda: ensure_manifest(self._client, self.name, self.uri))
            lease.acquire(max(0.0, wait - (time.monotonic() - start)))
        except BaseException:
            self._close_client()
            super().release()
            raise
        self.lease = _leases[lease_key(self.uri, self.name)] = lease
        return self

    def release(self) -> None:
        if self.lease is not None:
            _leases.pop(lease_key(self.uri, self.name), None)
            self.lease.release()
            self.lease = None
        self._close_client()
        super().release()

    def _close_client(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
