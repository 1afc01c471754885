"""A Milvus server URI names a server and a database; every spelling of one names one lock."""

import pytest

from hashing.core.errors import HashingError
from hashing.indexes.lock import lock_path
from hashing.indexes.milvus.address import parse_server_uri


def test_the_path_is_the_database_and_the_port_defaults_to_19530():
    a = parse_server_uri("http://milvus-host/photos")
    assert (a.scheme, a.host, a.port, a.database) == ("http", "milvus-host", 19530, "photos")
    assert a.client_uri == "http://milvus-host:19530"
    for uri in ("http://h:1", "http://h:1/", "http://h:1//", "http://h:1/default"):
        assert parse_server_uri(uri).database == "default", uri
    assert parse_server_uri("http://[::1]:5/db").client_uri == "http://[::1]:5"


@pytest.mark.parametrize("uri", ["http://:19530", "http://h:port", "http://h:99999", "ftp://h:1", "http://h:1/a/b",
                                 "http://h:1/bad-name", "http://u:secret@h:1", "http://h:1/db?x=1", "http://h:1/#f"])
def test_a_uri_that_names_no_server_and_database_is_one_line(uri):
    with pytest.raises(HashingError) as e:
        parse_server_uri(uri)
    assert "\n" not in str(e.value) and "secret" not in str(e.value)


def test_every_spelling_of_one_server_and_database_is_one_lock():
    same = ["http://127.0.0.1:7/", "http://localhost:7", "http://LOCALHOST:7/default", "tcp://127.0.0.1:7",
            "https://127.0.0.1:7//"]
    assert len({lock_path(u, "milvus", "c") for u in same}) == 1
    assert lock_path(same[0], "milvus", None) == lock_path(same[0], "milvus", "hashing")   # the default collection
    others = ["http://127.0.0.1:8", "http://127.0.0.1:7/photos", "http://192.0.2.1:7"]
    assert len({lock_path(u, "milvus", "c") for u in [same[0], *others]}) == 4
    assert lock_path(same[0], "milvus", "c") != lock_path(same[0], "milvus", "d")


def test_a_link_to_a_milvus_lite_file_is_the_same_lock(tmp_path):
    (tmp_path / "real.db").write_bytes(b"")
    (tmp_path / "link.db").symlink_to(tmp_path / "real.db")
    assert lock_path(str(tmp_path / "link.db"), "milvus") == lock_path(str(tmp_path / "real.db"), "milvus")
