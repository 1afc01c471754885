"""Talking to Milvus: a connected MilvusClient for a location, every call guarded and bounded.

`connect` opens a client for a Milvus Lite file (starting its server) or a server URI (the path is
the database, the token from $HASHING_MILVUS_TOKEN); `guarded` wraps every call into pymilvus so its
log lines are silenced and its exceptions become one line that says what failed; on a server each
call carries an int timeout (`TimedClient`), since pymilvus bounds its retries only by one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings

from hashing.core.errors import HashingError
from hashing.indexes.milvus.address import is_lite_file, is_server_uri, parse_server_uri
from hashing.indexes.milvus.lite import LITE_LOGGING, check_lite_file, disk_full, in_use, start_server

# gRPC's C core logs to stderr by itself (three "Handshake failed" lines for https:// against a plain
# server); our own one-line error says what failed. Read when grpc starts, so set before pymilvus loads.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

TOKEN_ENV = "HASHING_MILVUS_TOKEN"   # a server's token: USER:PASSWORD or an API key (never on the command line)


@contextlib.contextmanager
def guarded(what: str, uri: str):
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
        if disk_full(uri):
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


# Milvus Lite 2.5 can take a collection before its server has set up memory mapping, and then
# fails it with this segcore assertion (milvus-io/pymilvus#2981, fixed in milvus-lite#277); seen
# once in this project's tests on a busy 2-core machine. It passes when asked again.
_NOT_READY = "Mmap manager has not been init"


def create_collection(client, name: str, schema, index_params, wait: float = 30.0) -> None:
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


# Seconds each call into a server may take, retries included. pymilvus bounds its retries only by
# an int timeout given to the call; without one a call to a server that went away retries 75 times,
# about 220 s, before it fails. A flush waits for the server to seal what was inserted: longer.
CALL_TIMEOUTS = {"flush": 600, "create_collection": 120, "drop_collection": 120}


CALL_TIMEOUT = 60


_TIMED = {"has_collection", "query", "insert", "upsert", "delete", "flush", "search", "list_collections",
          "describe_collection", "create_collection", "drop_collection", "list_databases"}


class TimedClient:
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


def own_alias() -> str | None:
    """A connection of its own for each index on a server (see connect)."""
    import uuid

    return f"hashing-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def connect(uri: str, creating: bool = False, timeout: float | None = None, alias: str | None = None):
    """A MilvusClient for `uri`; `timeout` bounds the wait for its channel (None: 5 s for a
    server, 60 s for a Milvus Lite file, whose server this process starts first: on a busy
    2-core machine that start has taken more than 5 s). A server URI's path is the database
    (`hashing.indexes.milvus.address`). pymilvus shares one connection between clients of the
    same server, database and token, and closing any client closes it: `alias` gives this client
    a connection of its own."""
    check_location(uri, creating)
    if timeout is None:
        timeout = 60.0 if is_lite_file(uri) else 5.0
    if is_lite_file(uri):
        # Milvus Lite's server logs through glog, which writes files into /tmp on every start and never
        # removes them: log to stderr instead, fatal errors only (our own error says what failed).
        for name, value in LITE_LOGGING.items():
            os.environ.setdefault(name, value)
    if is_lite_file(uri) and in_use(uri):
        raise HashingError(f"{uri} is open in another process (Milvus Lite allows one at a time); "
                           f"stop it, or use a Milvus server")
    try:
        with guarded("connecting", uri):
            if is_lite_file(uri):
                start_server(uri)
            from pymilvus import MilvusClient
            extra = {} if alias is None else {"alias": alias}
            if is_lite_file(uri):
                client = MilvusClient(uri=uri, timeout=timeout, **extra)
            else:
                address = parse_server_uri(uri)
                client = TimedClient(MilvusClient(uri=address.client_uri, db_name=address.database, timeout=timeout,
                                             token=os.environ.get(TOKEN_ENV, ""), **extra))
                client.list_collections()        # a wrong token or database fails here, not halfway through a write
            return client
    except HashingError as e:
        if is_lite_file(uri):
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


def check_location(location: str, creating: bool) -> None:
    """A Milvus location is a server URI (checked by parsing it) or a Milvus Lite .db file (checked to be
    one; only `creating` may name a new one, in a folder this process can write)."""
    if is_server_uri(location):
        parse_server_uri(location)
        return
    if not is_lite_file(location):
        raise HashingError(f"{location}: a Milvus Lite location is a file ending in .db (or give an http(s):// URI)")
    check_lite_file(location, creating)
    if creating and not os.path.exists(location):
        from hashing.core.atomic import check_writable_location
        check_writable_location(location, "out")
