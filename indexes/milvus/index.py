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

import contextlib
import json
import re
import time
from pathlib import Path

import numpy as np

from hashing.core import validation as V
from hashing.core.atomic import crashpoint
from hashing.core.errors import HashingError
from hashing.indexes.base import BinaryIndex, IndexInfo
from hashing.indexes.milvus.address import (DEFAULT_COLLECTION, check_collection_name, is_lite_file)
from hashing.indexes.milvus.client import check_location, connect, create_collection, guarded, own_alias
from hashing.indexes.milvus.ids import pack_ids, split_removals, unpack_ids
from hashing.indexes.milvus.lite import check_room, stop_server
from hashing.indexes.milvus.server import check_writer, ensure_manifest

INSERT_BATCH = 5000
MAX_LIMIT = 16384          # Milvus's cap on results per query (topk)
MAX_SOURCE = 4096          # VARCHAR length of a source
MAX_STAMP = 256            # VARCHAR length of a file stamp
PAGE = 16384               # rows per query when listing every item (Milvus's cap on offset + limit)
INDEX_TYPES = {"flat": ("BIN_FLAT", {}), "ivf": ("BIN_IVF_FLAT", {"nlist": 1024})}


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
        with guarded("reading the manifest", uri):
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
        parts = split_removals(pending)
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
        check_room(self.uri, 4096)
        self._check_version()
        with guarded("committing", self.uri):
            self.client.insert(self.name + "_meta", [{"id": version, "v": b"\0", "info": json.dumps(row)}])
            self.client.flush(self.name + "_meta")
        crashpoint("committed manifest row")
        self.version, self._removing = version, list(removing)

    def _forget_removed(self) -> None:
        """Delete the rows that the committed version lists as removed (they are already invisible)."""
        if not self._removing:
            return
        self._check_version()
        with guarded("deleting removed items", self.uri):
            for s in range(0, len(self._removing), INSERT_BATCH):
                self.client.delete(self.data, filter=f"id in {self._removing[s:s + INSERT_BATCH]}")
            self.client.flush(self.data)
        crashpoint("deleted removed rows")

    def _housekeeping(self) -> None:
        version = self.version
        try:        # committed: clearing the old version is housekeeping, which the next writer redoes
            with guarded("removing the old version", self.uri):
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
        if is_lite_file(self.uri):
            return
        check_writer(self.client, self.uri, self.name)
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
        check_location(location, creating)

    @classmethod
    def check_type(cls, index_type: str, bits: int, n: int | None = None) -> None:
        if index_type not in INDEX_TYPES:
            raise HashingError(f"index_type {index_type!r} is not offered on Milvus; choose {', '.join(INDEX_TYPES)}",
                               settings=("index_type",))

    @classmethod
    def create(cls, uri: str, info: IndexInfo, collection: str | None = None) -> "MilvusIndex":
        """A new version under `collection`, empty until add() and committed by save(); the
        committed version, if any, stays what readers see until then."""
        from pymilvus import DataType

        name = check_collection_name(DEFAULT_COLLECTION if collection is None else collection)
        cls.check_type(info.index_type, info.bits)
        check_room(uri)
        client = connect(uri, creating=True, alias=None if is_lite_file(uri) else own_alias())
        check_writer(client, uri, name)
        current = cls._manifest(client, name, uri)
        version = None if current is None else current[0]
        data = f"{name}__v{0 if version is None else version + 1}"
        with guarded("creating the collection", uri):
            if client.has_collection(data):        # an orphan of an interrupted rebuild
                client.drop_collection(data)
            if current is None and client.has_collection(name):   # a plain collection of that name, not ours
                raise HashingError(f"{uri} holds {name!r}, which is not a hashing index; choose another collection",
                                   settings=("collection",))
            index_type, params = INDEX_TYPES[info.index_type]
            ip = client.prepare_index_params()
            ip.add_index(field_name="code", index_type=index_type, metric_type="HAMMING", params=params)
            s = client.create_schema(auto_id=False, enable_dynamic_field=False)
            s.add_field("id", DataType.INT64, is_primary=True)
            s.add_field("code", DataType.BINARY_VECTOR, dim=info.bits)
            s.add_field("label", DataType.INT64)
            s.add_field("source", DataType.VARCHAR, max_length=MAX_SOURCE)
            s.add_field("stamp", DataType.VARCHAR, max_length=MAX_STAMP)
            create_collection(client, data, s, ip)
            crashpoint(f"created {data}")
        ensure_manifest(client, name, uri)
        return cls(client, uri, name, info, version, data, 0, created=None if current is None else
                   current[1].get("created"))

    @classmethod
    def open(cls, uri: str, collection: str | None = None) -> "MilvusIndex":
        name = check_collection_name(DEFAULT_COLLECTION if collection is None else collection)
        client = connect(uri, alias=None if is_lite_file(uri) else own_alias())
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
            with guarded("listing collections", uri):
                have = sorted(c[:-len("_meta")] for c in client.list_collections() if c.endswith("_meta"))
            raise HashingError(f"no index {name!r} at {uri} (hashing indexes there: {', '.join(have) or 'none'}); "
                               f"check collection", settings=("collection",))
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
        with guarded("opening the collection", uri):
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
        if is_lite_file(self.uri) or time.monotonic() - self._checked < self.CHECK_EVERY:
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
        if is_lite_file(self.uri):
            stop_server(self.uri)

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
        check_room(self.uri, n * (xb.shape[1] + 64) + sum(len(s) for s in sources))
        self._check_version()            # the delete below must never reach another writer's committed rows
        with guarded("adding items", self.uri):
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
        return "Bounded" if self._seen and not is_lite_file(self.uri) else "Strong"

    def _filter(self) -> str:
        """The rows of this version: below next_id, and not listed as removed."""
        gone = self._removing + self._pending
        return f"id < {self.next_id}" + (f" and id not in {gone}" if gone else "")

    def missing(self, ids) -> list[int]:
        ids = [int(i) for i in np.asarray(ids, np.int64)]
        found = set()
        with guarded("looking up items", self.uri):
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
        with guarded("listing items", self.uri):
            for s in range(0, self.next_id, PAGE):
                rows += self.client.query(self.data, filter=f"({self._filter()}) and id >= {s} and id < {s + PAGE}",
                                          output_fields=fields, consistency_level="Strong", limit=PAGE)
        rows.sort(key=lambda r: int(r["id"]))
        return (np.array([int(r["id"]) for r in rows], np.int64), np.array([int(r["label"]) for r in rows], np.int64),
                [r["source"] for r in rows], [r.get("stamp", "") for r in rows])

    def disk_bytes(self) -> int | None:
        if not is_lite_file(self.uri):
            return None
        with contextlib.suppress(OSError):
            return Path(self.uri).stat().st_size
        return None

    def _search(self, xq: np.ndarray, limit: int, params: dict):
        with guarded("searching", self.uri):
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
            raise HashingError(f"more than {MAX_LIMIT} items within {radius} bits: Milvus caps results; "
                               f"use a smaller radius", settings=("radius",))
        return [(d[d <= radius], i[d <= radius]) for d, i in pairs]

    def lookup(self, ids):
        ids = [int(i) for i in np.asarray(ids)]
        missing = [i for i in ids if i not in self._entities]
        if missing:
            with guarded("looking up items", self.uri):
                rows = self.client.query(self.data, filter=f"id in {missing}", output_fields=["label", "source"],
                                         consistency_level="Strong")
            self._entities.update({int(r["id"]): (int(r["label"]), r["source"]) for r in rows})
        labels = np.array([self._entities[i][0] for i in ids], np.int64)
        return labels, [self._entities[i][1] for i in ids]


