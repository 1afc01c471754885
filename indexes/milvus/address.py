"""What a Milvus server URI names: the server, the database, and one key for both.

`http://HOST:PORT/DB` (or `https://`, `tcp://`) names database DB on the server at HOST:PORT; no
path, or `/`, is the `default` database, and no port is Milvus's 19530. pymilvus itself reads the
database from the *second* path segment only (Zilliz Cloud's `/v1/DB` form), so `/photos` would
silently mean `default`: we parse the URI here and give pymilvus the server and the database apart.

`server_key` is what identifies a collection's server and database however the URI is spelled:
`http://localhost:P`, `http://127.0.0.1:P/`, `http://127.0.0.1:P/default` and `tcp://127.0.0.1:P`
are one key. The writer lock of a Milvus server index is keyed by it (`hashing.indexes.lock`).

stdlib only (no pymilvus): the lock path is found without importing it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from hashing.core.errors import HashingError

SCHEMES = ("http", "https", "tcp")
DEFAULT_PORT = 19530
DEFAULT_DATABASE = "default"
DEFAULT_COLLECTION = "hashing"     # the collection of an index when none is named
DATABASE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
SERVER_PREFIXES = tuple(f"{scheme}://" for scheme in SCHEMES)


def is_server_uri(location) -> bool:
    """Whether a location names a Milvus server (http://, https://, tcp://) rather than a path."""
    return str(location).startswith(SERVER_PREFIXES)


def is_lite_file(location) -> bool:
    """Whether a location names a Milvus Lite database: a path ending in .db (the one rule for it)."""
    return str(location).endswith(".db") and not is_server_uri(location)


NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")


def check_collection_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or "__v" in name or name.endswith("_meta"):
        raise HashingError(f"collection {name!r}: use letters, digits and underscores, starting with a letter "
                           f"or underscore, at most 200 characters (and not ending in _meta or holding __v)",
                           settings=("collection",))
    return name


@dataclass(frozen=True)
class ServerAddress:
    scheme: str
    host: str           # as written (lower case), for connecting
    port: int
    database: str

    @property
    def client_uri(self) -> str:
        """The URI pymilvus connects to: the server alone, no path."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def key(self) -> str:
        """The server and database, the same for every spelling that reaches them from here."""
        return f"{canonical_host(self.host)}:{self.port}/{self.database}"


def parse_server_uri(uri: str) -> ServerAddress:
    """The server and database a Milvus server URI names; one line for a URI that names neither."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as e:
        raise HashingError(f"{uri} is not a Milvus server URI ({e}); write http://HOST:PORT/DATABASE") from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise HashingError(f"{uri} is not a Milvus server URI; write http://HOST:PORT/DATABASE "
                           f"(or https://, tcp://)")
    if parts.username or parts.password:
        raise HashingError(f"{parts.scheme}://...@{parts.hostname}: a user or password in the URI would show in "
                           f"the process list; set HASHING_MILVUS_TOKEN to USER:PASSWORD instead")
    if parts.query or parts.fragment:
        raise HashingError(f"{uri}: a Milvus server URI has no ?query or #fragment; write http://HOST:PORT/DATABASE")
    path = parts.path.strip("/")
    if not path:
        database = DEFAULT_DATABASE
    elif DATABASE_RE.fullmatch(path):
        database = path
    else:
        raise HashingError(f"{uri}: the URI's path names the database, one name of letters, digits and "
                           f"underscores (e.g. http://HOST:{port or DEFAULT_PORT}/photos), not {parts.path!r}")
    return ServerAddress(parts.scheme, parts.hostname.lower(), port or DEFAULT_PORT, database)


def canonical_host(host: str) -> str:
    """`localhost` for any name or address of this machine (loopback, or one of its own addresses);
    else the lowest address the name resolves to; the name itself if it does not resolve."""
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return host
    addresses = set()
    for a in found:
        try:
            addresses.add(ipaddress.ip_address(a.split("%", 1)[0]))
        except ValueError:
            continue
    if not addresses:
        return host
    if any(a.is_loopback or a.is_unspecified for a in addresses) or addresses & _own_addresses():
        return "localhost"
    return str(min(addresses, key=lambda a: (a.version, a)))


def _own_addresses() -> set:
    try:
        return {ipaddress.ip_address(a) for a in socket.gethostbyname_ex(socket.gethostname())[2]}
    except (OSError, ValueError):
        return set()
