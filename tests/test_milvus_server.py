"""A real Milvus server (milvus-server from PyPI's `milvus`, started once for the session by the
`milvus_server` fixture) answers index, query, sync, remove and info exactly like FAISS flat: the
same ids, distances and order; and a server that is down or wrong is one line naming the URI."""

import shutil

import numpy as np
import pytest

from conftest import one_line_error, run_hashing, write_digit_folder


def query(location, images, collection=None):
    """Every item ranked for each image (the whole ranking: no tie group cut at a k)."""
    from hashing.workflows.query import query_images

    return [[(h.id, h.distance, h.source) for h in r.hits] for r in query_images(images, str(location), radius=64,
                                                                                   collection=collection)]


def info(location, collection=None):
    from hashing.workflows.inventory import describe

    d = describe(str(location), collection, items=True)
    return d, [(it["id"], it["source"], it["label"]) for it in d["items"]]


@pytest.fixture(autouse=True)
def token(monkeypatch, milvus_server):
    """The server requires a user: every command here (and the processes it starts) gets root's token."""
    monkeypatch.setenv("HASHING_MILVUS_TOKEN", milvus_server.token)
    return milvus_server.token


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """30 digits in class folders, and 6 of the query images as files."""
    from PIL import Image

    from hashing.images.datasets import load_dataset

    root = tmp_path_factory.mktemp("server") / "digits"
    write_digit_folder(root, limit=30)
    test = load_dataset("digits", "test")
    queries = []
    for i in range(6):
        queries.append(root.parent / f"q{i}.png")
        Image.fromarray(test.images[i * 5]).save(queries[-1])
    return root / "train", queries


def test_index_query_sync_remove_info_match_faiss(milvus_server, digits_run, folder, tmp_path):
    files, queries = folder
    mine = tmp_path / "digits"
    shutil.copytree(files, mine)
    faiss_loc, uri = tmp_path / "idx", milvus_server.uri
    from hashing.workflows.index import build_index

    build_index(digits_run, str(faiss_loc), images=mine, progress=False)
    code, out, err = run_hashing("index", "--model", digits_run, "--images", mine, "--out", uri, "--collection",
                                 "living", "--quiet")
    assert code == 0, err
    assert query(uri, queries, "living") == query(faiss_loc, queries)
    # the folder changes: one file gone, one new, one edited, one touched only
    classes = sorted(p for p in mine.iterdir())
    (sorted(classes[0].iterdir())[0]).unlink()
    shutil.copy(sorted(classes[1].iterdir())[0], classes[1] / "new.png")
    edited = sorted(classes[2].iterdir())[0]
    from PIL import Image
    Image.open(edited).rotate(90).save(edited)
    touched = sorted(classes[3].iterdir())[0]
    touched.touch()
    from hashing.workflows.sync import sync_index

    code, out, err = run_hashing("index", "--model", digits_run, "--images", mine, "--out", uri, "--collection",
                                 "living", "--sync", "--quiet")
    assert code == 0 and "1 added, 1 removed, 1 changed, 28 unchanged (30 items in all" in out, err
    r = sync_index(digits_run, str(faiss_loc), mine, progress=False)
    assert (r.added, r.removed, r.changed, r.unchanged, r.total) == (1, 1, 1, 28, 30)
    (d_f, items_f), (d_m, items_m) = info(faiss_loc), info(uri, "living")
    assert items_f == items_m and (d_m["count"], d_m["next_id"], d_m["backend"]) == (30, 32, "milvus")
    assert query(uri, queries, "living") == query(faiss_loc, queries)
    # remove the nearest item of each query, by id and by source
    first = [r[0] for r in query(faiss_loc, queries)]
    ids = sorted({i for i, _, _ in first[1:]})
    from hashing.workflows.inventory import remove_items

    code, out, err = run_hashing("remove", "--index", uri, "--collection", "living", *map(str, ids), "--source",
                                 first[0][2])
    assert code == 0 and f"removed {len(ids) + 1} items" in out, err
    remove_items(str(faiss_loc), ids, [first[0][2]])
    (_, items_f), (_, items_m) = info(faiss_loc), info(uri, "living")
    assert items_f == items_m and not {first[0][0], *ids} & {i for i, _, _ in items_m}
    after = query(uri, queries, "living")
    assert after == query(faiss_loc, queries)
    assert not {first[0][0], *ids} & {i for r in after for i, _, _ in r}


def test_a_server_that_is_down_or_wrong_is_one_line_and_changes_nothing(milvus_server, digits_run, folder):
    from hashing.indexes import IndexInfo, create, open_index

    files, queries = folder
    down = "http://127.0.0.1:9"                         # the discard port: nothing answers there
    for args in (("info", down), ("index", "--model", digits_run, "--images", files, "--out", down, "--quiet")):
        line = one_line_error(*run_hashing(*args)[::2])
        assert down in line, line
    uri = milvus_server.uri
    # a collection of 32-bit codes: a 64-bit model's append or sync is refused, naming the URI; nothing is written
    index = create(uri, IndexInfo(bits=32, model={"run_dir": "/elsewhere", "fingerprint": "f", "bits": 32}),
                   collection="bits32")
    index.add(np.zeros((3, 4), np.uint8), None, ["a", "b", "c"])
    index.save()
    index.close()
    for extra in ("--append", "--sync"):
        line = one_line_error(*run_hashing("index", "--model", digits_run, "--images", files, "--out", uri,
                                           "--collection", "bits32", extra, "--quiet")[::2])
        assert "bit length" in line and uri in line, line
    with open_index(uri, "bits32") as index:
        assert index.count == 3 and index.next_id == 3 and index.items()[2] == ["a", "b", "c"]
    line = one_line_error(*run_hashing("remove", "--index", uri, "--collection", "bits32", "7")[::2])
    assert "no item 7" in line
    line = one_line_error(*run_hashing("info", uri, "--collection", "missing")[::2])
    assert "missing" in line and uri in line


def test_a_wrong_or_missing_token_is_one_line_naming_the_uri_and_writes_nothing(milvus_server, digits_run, folder,
                                                                                 monkeypatch):
    from pymilvus import MilvusClient

    files, _ = folder
    uri = milvus_server.uri
    for token in ("root:wrong-password", "nobody:Milvus", None):
        if token is None:
            monkeypatch.delenv("HASHING_MILVUS_TOKEN")
        else:
            monkeypatch.setenv("HASHING_MILVUS_TOKEN", token)
        for args in (("info", uri), ("index", "--model", digits_run, "--images", files, "--out", uri,
                                     "--collection", "tokens", "--quiet")):
            line = one_line_error(*run_hashing(*args)[::2])
            assert uri in line and "HASHING_MILVUS_TOKEN" in line, (token, line)
            if token:
                assert token not in line, line                   # a password is never printed
    client = MilvusClient(uri=uri, token=milvus_server.token)
    try:
        assert "tokens" not in client.list_collections()        # nothing was written with a refused token
    finally:
        client.close()
    monkeypatch.setenv("HASHING_MILVUS_TOKEN", milvus_server.token)
    code, out, err = run_hashing("index", "--model", digits_run, "--images", files, "--out", uri,
                                 "--collection", "tokens", "--quiet")
    assert code == 0, err


def test_the_uri_path_is_the_database_and_a_missing_one_writes_nothing(milvus_server, digits_run, tmp_path):
    """`http://HOST:P/photos` and `.../work` are two databases: one collection name in each holds its
    own items (pymilvus alone reads the database from a second path segment, so both were `default`)."""
    from pymilvus import MilvusClient

    uri = milvus_server.uri
    client = MilvusClient(uri=uri, token=milvus_server.token)
    try:
        for db in ("photos", "work"):
            if db not in client.list_databases():
                client.create_database(db)
    finally:
        client.close()
    a, b = tmp_path / "a", tmp_path / "b"
    write_digit_folder(a, limit=5, seed=0)
    write_digit_folder(b, limit=3, seed=1)
    for db, folder in (("photos", a), ("work", b)):
        code, out, err = run_hashing("index", "--model", digits_run, "--images", folder / "train", "--out",
                                     f"{uri}/{db}", "--collection", "fam", "--quiet")
        assert code == 0, err
    photos, work = info(f"{uri}/photos", "fam")[1], info(f"{uri}/work", "fam")[1]
    assert photos and all(str(a) in s for _, s, _ in photos), photos
    assert work and all(str(b) in s for _, s, _ in work), work
    assert len(photos) != len(work)
    assert info(f"{uri}/photos/", "fam")[1] == photos             # a trailing slash is the same database
    for args in (("index", "--model", digits_run, "--images", b / "train", "--out", f"{uri}/nodb",
                  "--collection", "fam2", "--quiet"), ("info", f"{uri}/nodb", "--collection", "fam"),
                 ("index", "--model", digits_run, "--images", b / "train", "--out", f"{uri}/a/b", "--quiet")):
        line = one_line_error(*run_hashing(*args)[::2])
        assert ("nodb" in line and "no database" in line) or "/a/b" in line, line
    client = MilvusClient(uri=uri, token=milvus_server.token)
    try:
        assert "fam2_meta" not in client.list_collections()     # nothing went into `default` instead
    finally:
        client.close()


def built(run, files, uri: str, collection: str) -> None:
    """`hashing index` of `files` into `collection` at `uri`, as a user runs it; it must succeed."""
    code, out, err = run_hashing("index", "--model", run, "--images", files, "--out", uri, "--collection", collection,
                                 "--quiet")
    assert code == 0, err


def spellings(uri: str) -> list[str]:
    """Other ways to write the address of the same server and database."""
    port = uri.rsplit(":", 1)[1]
    return [f"http://localhost:{port}", f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{port}/default",
            f"tcp://127.0.0.1:{port}", f"http://LOCALHOST:{port}//"]


def test_the_writer_lock_is_the_same_for_every_spelling_of_the_address(milvus_server, digits_run, folder):
    from hashing.indexes.backends import writer_lock

    files, _ = folder
    uri = milvus_server.uri
    built(digits_run, files, uri, "spelled")
    before = info(uri, "spelled")[1]
    with writer_lock(uri, "spelled"):
        for other in spellings(uri):
            line = one_line_error(*run_hashing("index", "--model", digits_run, "--images", files, "--out", other,
                                               "--collection", "spelled", "--append", "--quiet")[::2])
            assert "being written by pid" in line, (other, line)
    assert info(uri, "spelled")[1] == before
    # the default collection is one lock whether named or not
    with writer_lock(uri, None):
        line = one_line_error(*run_hashing("remove", "--index", f"http://localhost:{uri.rsplit(':', 1)[1]}",
                                           "--collection", "hashing", "0")[::2])
        assert "being written by pid" in line, line


def other_machine(command: list, cache) -> list:
    """`command` as if run on another machine: its own host name (a UTS namespace) and its own lock
    folder, so only the lease on the server can keep it out. Needs root (CI runs as root)."""
    import os
    import shutil as sh

    if os.geteuid() != 0 or sh.which("unshare") is None:
        from conftest import skip_or_fail

        skip_or_fail("another host name needs root and unshare(1)")
    script = 'hostname "$0" && export XDG_CACHE_HOME="$1" HASHING_CACHE="$1" && shift && exec "$@"'
    return ["unshare", "--uts", "sh", "-c", script, "other-machine", str(cache), *map(str, command)]


def hashing_command() -> list:
    import sys

    return [shutil.which("hashing")] if shutil.which("hashing") else [sys.executable, "-m", "hashing"]


def test_a_writer_on_another_machine_is_refused_by_the_lease_on_the_server(milvus_server, digits_run, folder,
                                                                         tmp_path):
    """The lock file guards one machine; the lease row on the server guards every machine: while a
    writer holds it, an append from another host name with its own lock folder is refused before it
    writes, and after the holder is killed (-9) the other machine waits for the lease to expire."""
    import os
    import signal
    import subprocess
    import time

    files, _ = folder
    uri = milvus_server.uri
    built(digits_run, files, uri, "leased")
    before = info(uri, "leased")[1]
    append = [*hashing_command(), "index", "--model", digits_run, "--images", files, "--out", uri,
              "--collection", "leased", "--append", "--quiet"]
    # a holder in another process of this machine: it takes the lock and the lease, then waits
    holder = subprocess.Popen([sys_executable(), "-c", HOLDER, uri, "leased"], stdout=subprocess.PIPE,
                              text=True, env={**os.environ})
    try:
        assert holder.stdout.readline().strip() == "held"
        p = subprocess.run(other_machine(append, tmp_path / "cache"), capture_output=True, text=True)
        line = one_line_error(p.returncode, p.stderr)
        assert "being written by pid" in line and "on any machine" in line, line
        assert info(uri, "leased")[1] == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # killed: its lease stays on the server until it expires; the other machine waits for it
    started = time.monotonic()
    p = subprocess.run(other_machine([*append[:-1], "--wait", "60"], tmp_path / "cache"), capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - started > 5                        # it did wait for the expiry
    assert len(info(uri, "leased")[1]) == 2 * len(before)


HOLDER = """
import sys, time
from hashing.indexes.backends import writer_lock
lock = writer_lock(sys.argv[1], sys.argv[2]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def sys_executable() -> str:
    import sys

    return sys.executable


def test_a_commit_over_another_writers_version_is_refused_and_loses_nothing(milvus_server):
    """A writer whose view is stale (another committed meanwhile) stops before it deletes or commits:
    the generation check at commit, for writers that hold no lease (the library used directly)."""
    from hashing.indexes import IndexInfo, create, open_index

    uri = milvus_server.uri
    info_ = IndexInfo(bits=32, model={"run_dir": "/x", "fingerprint": "f", "bits": 32})
    index = create(uri, info_, collection="stale")
    index.add(np.zeros((2, 4), np.uint8), None, ["a", "b"])
    index.save()
    index.close()
    first, second = open_index(uri, "stale"), open_index(uri, "stale")
    try:
        first.add(np.ones((3, 4), np.uint8), None, ["c", "d", "e"])
        first.save()                                             # acknowledged: ids 2, 3, 4
        from hashing.core.errors import HashingError

        with pytest.raises(HashingError, match="changed by another writer"):
            second.add(np.ones((1, 4), np.uint8), None, ["f"])   # its delete of ids >= 2 would lose c, d, e
        with pytest.raises(HashingError, match="changed by another writer"):
            second.remove([0])
            second.save()
    finally:
        first.close()
        second.close()
    with open_index(uri, "stale") as index:
        assert index.items()[2] == ["a", "b", "c", "d", "e"]


def test_https_against_a_plain_server_is_one_line(milvus_server):
    port = milvus_server.uri.rsplit(":", 1)[1]
    code, out, err = run_hashing("info", f"https://127.0.0.1:{port}", "--collection", "x")
    line = one_line_error(code, err)
    assert "cannot reach Milvus" in line and "Handshake" not in err, err


def test_writers_on_three_machines_at_once_take_turns_and_lose_nothing(milvus_server, digits_run, folder, tmp_path):
    """Three appends started together from three host names (each with its own lock folder, so only
    the lease orders them): each waits its turn, every one is acknowledged, and the collection ends
    with every item once under ids given once."""
    import subprocess

    files, _ = folder
    uri = milvus_server.uri
    built(digits_run, files, uri, "race")
    base = len(info(uri, "race")[1])
    append = [*hashing_command(), "index", "--model", digits_run, "--images", files, "--out", uri,
              "--collection", "race", "--append", "--wait", "240", "--quiet"]
    procs = [subprocess.Popen(other_machine(append, tmp_path / f"cache{i}"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    results = [(p.wait(400), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    d, items = info(uri, "race")
    ids = [i for i, _, _ in items]
    assert len(items) == 4 * base and sorted(set(ids)) == ids == list(range(4 * base)), (len(items), ids[-5:])
    assert d["count"] == 4 * base


def test_kill_9_at_every_commit_step_of_a_server_writer_leaves_old_or_new(milvus_server, digits_run, folder,
                                                                           tmp_path):
    """`hashing index --append` and `hashing remove` on a server, SIGKILLed right after each of their
    commit steps: the collection is always the old version or the new one, and the next writer on this
    machine goes ahead at once (the dead holder's lease does not keep it out)."""
    import os
    import subprocess

    files, _ = folder
    uri = milvus_server.uri
    built(digits_run, files, uri, "killed")
    n = len(info(uri, "killed")[1])
    commands = {"append": ["index", "--model", digits_run, "--images", files, "--out", uri, "--collection",
                           "killed", "--append", "--quiet"]}
    for name, args in commands.items():
        log = tmp_path / f"{name}.log"
        code, out, err = run_hashing(*args, env={**os.environ, "HASHING_CRASH_LOG": str(log)})
        assert code == 0, err
        points = log.read_text().splitlines()
        assert len(points) >= 3, points
        for at in range(1, len(points) + 1):
            before = info(uri, "killed")[1]
            p = subprocess.run([*hashing_command(), *map(str, args)], capture_output=True, text=True,
                               env={**os.environ, "HASHING_CRASH_AT": str(at)})
            assert p.returncode == -9, (at, points[at - 1], p.stderr)      # not refused: it reached the point
            after = info(uri, "killed")[1]
            assert after in (before, before + [(before[-1][0] + 1 + i, s, lab) for i, (_, s, lab)
                                               in enumerate(after[len(before):])]), (at, points[at - 1])
            assert len(after) in (len(before), len(before) + n), (at, points[at - 1], len(before), len(after))
    ids = [i for i, _, _ in info(uri, "killed")[1]]
    code, out, err = run_hashing("remove", "--index", uri, "--collection", "killed", *ids[:3])
    assert code == 0, err
    assert [i for i, _, _ in info(uri, "killed")[1]] == ids[3:]
