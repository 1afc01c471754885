"""Binary codes in Milvus: Milvus Lite (a local .db file) or a Milvus server/cluster (http URI).

Collection NAME: id INT64 (primary, our item id), code BINARY_VECTOR(bits), label INT64
(-1 = unknown), source VARCHAR; a BIN_FLAT (or BIN_IVF_FLAT) index with metric HAMMING.
Collection NAME_meta: one row holding the IndexInfo as JSON (Milvus Lite cannot alter
collection properties, and every collection needs a vector field, hence the 8-bit dummy).

Needs the optional group `pip install .[milvus]`: pymilvus 2.5 with milvus-lite 2.5
(3.x dropped binary vectors); milvus-lite 2.5 imports pkg_resources, so setuptools<81.
"""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np

from hashing.errors import HashingError
from hashing.indexes.base import BinaryIndex, IndexInfo

DEFAULT_COLLECTION = "hashing"
INSERT_BATCH = 5000
MAX_LIMIT = 16384          # Milvus's cap on results per query (topk)
INDEX_TYPES = {"flat": ("BIN_FLAT", {}), "ivf": ("BIN_IVF_FLAT", {"nlist": 1024})}


def _client(uri: str, timeout: float = 5.0):
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)   # we report errors ourselves, on one line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                         # milvus-lite's pkg_resources deprecation
        return _connect(uri, timeout)


def _connect(uri: str, timeout: float):
    try:
        from pymilvus import MilvusClient, MilvusException
    except ImportError:
        raise HashingError("the Milvus backend needs its extras: pip install '.[milvus]' "
                           "(pymilvus 2.5, milvus-lite 2.5, setuptools<81)") from None
    try:
        return MilvusClient(uri=uri, timeout=timeout)
    except MilvusException as e:
        raise HashingError(f"cannot reach Milvus at {uri} ({getattr(e, 'message', e)}); start the server or "
                           f"check --uri") from None
    except Exception as e:  # milvus-lite start failures, bad paths
        raise HashingError(f"cannot open Milvus at {uri} ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None


class MilvusIndex(BinaryIndex):
    def __init__(self, client, uri: str, collection: str, info: IndexInfo):
        self.client, self.uri, self.collection, self.info = client, uri, collection, info

    @staticmethod
    def _schema(client, bits: int):
        from pymilvus import DataType

        s = client.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("id", DataType.INT64, is_primary=True)
        s.add_field("code", DataType.BINARY_VECTOR, dim=bits)
        s.add_field("label", DataType.INT64)
        s.add_field("source", DataType.VARCHAR, max_length=4096)
        return s

    @classmethod
    def create(cls, uri: str, info: IndexInfo, collection: str | None = None) -> "MilvusIndex":
        """A new collection; an existing one of the same name is replaced."""
        from pymilvus import DataType

        collection = collection or DEFAULT_COLLECTION
        client = _client(uri)
        if info.index_type not in INDEX_TYPES:
            raise HashingError(f"--index-type {info.index_type!r} is not offered on Milvus; choose "
                               f"{', '.join(INDEX_TYPES)}")
        for name in (collection, collection + "_meta"):
            if client.has_collection(name):
                client.drop_collection(name)
        index_type, params = INDEX_TYPES[info.index_type]
        ip = client.prepare_index_params()
        ip.add_index(field_name="code", index_type=index_type, metric_type="HAMMING", params=params)
        client.create_collection(collection, schema=cls._schema(client, info.bits), index_params=ip)
        meta = client.create_schema(auto_id=False, enable_dynamic_field=False)
        meta.add_field("id", DataType.INT64, is_primary=True)
        meta.add_field("v", DataType.BINARY_VECTOR, dim=8)
        meta.add_field("info", DataType.VARCHAR, max_length=65535)
        mip = client.prepare_index_params()
        mip.add_index(field_name="v", index_type="BIN_FLAT", metric_type="HAMMING")
        client.create_collection(collection + "_meta", schema=meta, index_params=mip)
        index = cls(client, uri, collection, info)
        index.save()
        return index

    @classmethod
    def open(cls, uri: str, collection: str | None = None) -> "MilvusIndex":
        collection = collection or DEFAULT_COLLECTION
        client = _client(uri)
        if not client.has_collection(collection) or not client.has_collection(collection + "_meta"):
            have = [c for c in client.list_collections() if not c.endswith("_meta")]
            raise HashingError(f"no collection {collection!r} at {uri} (it has: {', '.join(have) or 'none'}); "
                               f"check --collection")
        rows = client.query(collection + "_meta", filter="id == 0", output_fields=["info"])
        if not rows:
            raise HashingError(f"collection {collection!r} at {uri} has no hashing metadata; rebuild it")
        try:
            info = IndexInfo(**json.loads(rows[0]["info"]))
        except (HashingError, TypeError, ValueError) as e:
            raise HashingError(f"collection {collection!r} at {uri} has damaged hashing metadata ({e}); rebuild it") from None
        return cls(client, uri, collection, info)

    def save(self) -> None:
        self.client.upsert(self.collection + "_meta", [{"id": 0, "v": b"\0", "info": json.dumps(self.info.to_dict())}])
        self.client.flush(self.collection)

    def close(self) -> None:
        self.client.close()
        if self.uri.endswith(".db"):  # stop the embedded server so that another process may open the file
            try:
                from milvus_lite.server_manager import server_manager_instance
                server_manager_instance.release_server(self.uri)
            except (ImportError, AttributeError):
                pass

    @property
    def count(self) -> int:
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def add(self, xb, labels, sources):
        xb = self.check_codes(xb)
        n = len(xb)
        labels = np.full(n, -1, np.int64) if labels is None else np.asarray(labels, np.int64)
        start = self.count
        ids = np.arange(start, start + n, dtype=np.int64)
        for s in range(0, n, INSERT_BATCH):   # batches: one round trip per 5,000 rows, not per row
            rows = [{"id": int(ids[i]), "code": xb[i].tobytes(), "label": int(labels[i]), "source": str(sources[i])}
                    for i in range(s, min(n, s + INSERT_BATCH))]
            self.client.insert(self.collection, rows)
        self.client.flush(self.collection)
        return ids

    def _search(self, xq: np.ndarray, limit: int, params: dict):
        res = self.client.search(self.collection, data=[q.tobytes() for q in xq], anns_field="code", limit=limit,
                                 search_params={"metric_type": "HAMMING", "params": params},
                                 output_fields=["label", "source"])
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
        if k > MAX_LIMIT:
            raise HashingError(f"Milvus returns at most {MAX_LIMIT} results per query; ask for -k <= {MAX_LIMIT}")
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
        missing = [i for i in ids if i not in getattr(self, "_entities", {})]
        if missing:
            rows = self.client.query(self.collection, filter=f"id in {missing}", output_fields=["label", "source"])
            self._entities = {**getattr(self, "_entities", {}),
                              **{int(r["id"]): (int(r["label"]), r["source"]) for r in rows}}
        labels = np.array([self._entities[i][0] for i in ids], np.int64)
        return labels, [self._entities[i][1] for i in ids]
