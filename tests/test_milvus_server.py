"""A real Milvus server (milvus-server from PyPI's `milvus`, started once for the session by the
`milvus_server` fixture) answers index, query, sync, remove and info exactly like FAISS flat: the
same ids, distances and order; and a server that is down or wrong is one line naming the URI.

The commands run in this process (conftest.run_hashing), except where a process is what is tested
(writers on other machines, with a host name of their own; kill -9; a new interpreter's logging) or
where processes side by side save waiting (the collections the tests start from are built at once; two
commands wait out an unreachable server's timeout together). Those are forks of test_crash.ForkServer
(real processes, without an interpreter's 5 s of imports each), or, for the logging, a new process."""

import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import one_line_error, run_hashing, run_hashing_process, write_digit_folder
from test_crash import shared_fork_server

pytestmark = pytest.mark.system             # every test here needs the real server the fixture starts


@pytest.fixture
def forks():
    return shared_fork_server()


def query(location, images, collection=None):
    """Every item ranked for each image (the whole ranking: no tie group cut at a k)."""
    from hashing.workflows.query import query_images

    return [[(h.id, h.distance, h.source) for h in r.hits] for r in query_images(images, str(location), radius=64,
                                                                                   collection=collection)]


def info(location, collection=None):
    from hashing.workflows.inventory import index_summary

    d = index_summary(str(location), collection=collection, items=True)
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


# Collections the tests start from, each `hashing index` of a folder as a user runs it (name: location
# suffix, collection, folder). Each test that writes into one has its own.
BUILT = {"living": ("", "living", "living"), "spelled": ("", "spelled", "files"), "leased": ("", "leased", "files"),
         "race": ("", "race", "files"), "killed": ("", "killed", "files"), "photos": ("/photos", "fam", "a"),
         "work": ("/work", "fam", "b")}


@pytest.fixture(scope="module")
def prebuilt(milvus_server, digits_run, folder, tmp_path_factory):
    """BUILT and LIBRARY_MADE, all at once: processes (and threads) side by side, since a new collection's
    time is the server's (about 10 s, most of it its two loads), not this machine's. {"folders": {folder:
    path}, name: (exit code, stdout, stderr)}; "living" is a copy of the files of its own (the test of it
    changes them), "a" and "b" 5 and 3 digits of the train split (in the databases "photos" and "work",
    made here)."""
    import os

    from pymilvus import MilvusClient

    files, _ = folder
    work = tmp_path_factory.mktemp("prebuilt")
    folders = {"files": files, "living": work / "living", "a": work / "a", "b": work / "b"}
    shutil.copytree(files, folders["living"])
    write_digit_folder(folders["a"], limit=5, seed=0)
    write_digit_folder(folders["b"], limit=3, seed=1)
    uri = milvus_server.uri
    client = MilvusClient(uri=uri, token=milvus_server.token)
    try:
        for db in ("photos", "work"):
            if db not in client.list_databases():
                client.create_database(db)
    finally:
        client.close()
    env = {**os.environ, "HASHING_MILVUS_TOKEN": milvus_server.token}
    jobs = {}
    for name, (suffix, collection, images) in BUILT.items():
        images = folders[images] / "train" if images in ("a", "b") else folders[images]
        jobs[name] = shared_fork_server().start("index", "--model", digits_run, "--images", images, "--out",
                                                uri + suffix, "--collection", collection, "--quiet", env=env)
    with pytest.MonkeyPatch.context() as m, ThreadPoolExecutor(len(LIBRARY_MADE)) as pool:
        m.setenv("HASHING_MILVUS_TOKEN", milvus_server.token)
        made = [pool.submit(thirty_two_bits, uri, name, *how) for name, how in LIBRARY_MADE.items()]
        results = {name: job.output() for name, job in jobs.items()}
        for future in made:
            future.result()
    return {"folders": folders, **results}


# Collections of 32-bit codes made with the library (no model: zeros as codes), beside BUILT: name:
# (sources, the run folder their model claims).
LIBRARY_MADE = {"bits32": (["a", "b", "c"], "/elsewhere"), "stale": (["a", "b"], "/x")}


def thirty_two_bits(uri: str, name: str, sources: list[str], run_dir: str) -> None:
    from hashing.indexes import IndexInfo, create

    index = create(uri, IndexInfo(bits=32, model={"run_dir": run_dir, "fingerprint": "f", "bits": 32}),
                   collection=name)
    index.add(np.zeros((len(sources), 4), np.uint8), None, sources)
    index.save()
    index.close()


def built(prebuilt, name: str) -> None:
    """The collection `name` of BUILT is there: its `hashing index` succeeded."""
    code, out, err = prebuilt[name]
    assert code == 0, err


def test_index_query_sync_remove_info_match_faiss(milvus_server, digits_run, folder, tmp_path, prebuilt):
    _, queries = folder
    mine = prebuilt["folders"]["living"]                 # `hashing index --images mine --collection living`
    faiss_loc, uri = tmp_path / "idx", milvus_server.uri
    from hashing.workflows.index import build_index

    build_index(digits_run, str(faiss_loc), images=mine, progress=False)
    built(prebuilt, "living")
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
    r = sync_index(digits_run, str(faiss_loc), images=mine, progress=False)
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
    remove_items(str(faiss_loc), ids, sources=[first[0][2]])
    (_, items_f), (_, items_m) = info(faiss_loc), info(uri, "living")
    assert items_f == items_m and not {first[0][0], *ids} & {i for i, _, _ in items_m}
    after = query(uri, queries, "living")
    assert after == query(faiss_loc, queries)
    assert not {first[0][0], *ids} & {i for r in after for i, _, _ in r}


def test_a_server_that_is_down_or_wrong_is_one_line_and_changes_nothing(milvus_server, digits_run, folder, forks,
                                                                        prebuilt):
    from hashing.indexes import open_index

    files, queries = folder
    down = "http://127.0.0.1:9"                         # the discard port: nothing answers there
    # each waits out its connection timeout (5 s): two processes side by side
    waiting = [forks.start(*args) for args in (("info", down), ("index", "--model", digits_run, "--images", files,
                                                                "--out", down, "--quiet"))]
    for job in waiting:
        line = one_line_error(*job.output()[::2])
        assert down in line, (job.args, line)
    uri = milvus_server.uri
    # bits32, 32-bit codes (LIBRARY_MADE): a 64-bit model's append or sync is refused, naming the URI; nothing
    # is written
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


def test_the_uri_path_is_the_database_and_a_missing_one_writes_nothing(milvus_server, digits_run, prebuilt):
    """`http://HOST:P/photos` and `.../work` are two databases: one collection name in each holds its
    own items (pymilvus alone reads the database from a second path segment, so both were `default`)."""
    from pymilvus import MilvusClient

    uri = milvus_server.uri
    a, b = prebuilt["folders"]["a"], prebuilt["folders"]["b"]
    built(prebuilt, "photos")                          # `hashing index --images a/train --out URI/photos`
    built(prebuilt, "work")                            # ... b/train into URI/work, the same collection name
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


def spellings(uri: str) -> list[str]:
    """Other ways to write the address of the same server and database."""
    port = uri.rsplit(":", 1)[1]
    return [f"http://localhost:{port}", f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{port}/default",
            f"tcp://127.0.0.1:{port}", f"http://LOCALHOST:{port}//"]


def test_the_writer_lock_is_the_same_for_every_spelling_of_the_address(milvus_server, digits_run, folder, prebuilt):
    from hashing.indexes.backends import writer_lock

    files, _ = folder
    uri = milvus_server.uri
    built(prebuilt, "spelled")
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


def on_another_machine(forks, *args, cache, hostname: str = "other-machine"):
    """`hashing ARGS` started as if on another machine: its own host name (a UTS namespace, as
    `unshare --uts`) and its own lock folder `cache`, so only the lease on the server can keep it out.
    Needs root (CI runs as root). A Forked process (wait(), output())."""
    import os

    if os.geteuid() != 0:
        from conftest import skip_or_fail

        skip_or_fail("another host name needs root (a UTS namespace of its own)")
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "HASHING_CACHE": str(cache)}
    return forks.start(*args, env=env, hostname=hostname)


def test_a_writer_on_another_machine_is_refused_by_the_lease_on_the_server(milvus_server, digits_run, folder,
                                                                         tmp_path, forks, prebuilt):
    """The lock file guards one machine; the lease row on the server guards every machine: while a
    writer holds it, an append from another host name with its own lock folder is refused before it
    writes, and after the holder is killed (-9) the other machine waits for the lease to expire."""
    import json
    import os
    import signal
    import subprocess
    import time

    from pymilvus import MilvusClient

    files, _ = folder
    uri = milvus_server.uri
    built(prebuilt, "leased")
    before = info(uri, "leased")[1]
    append = ["index", "--model", digits_run, "--images", files, "--out", uri, "--collection", "leased", "--append",
              "--quiet"]
    # a holder in another process of this machine: it takes the lock and the lease, then waits
    holder = subprocess.Popen([sys_executable(), "-c", HOLDER, uri, "leased"], stdout=subprocess.PIPE,
                              text=True, env={**os.environ})
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = on_another_machine(forks, *append, cache=tmp_path / "cache").output()
        line = one_line_error(code, err)
        assert "being written by pid" in line and "on any machine" in line, line
        assert info(uri, "leased")[1] == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # killed: its lease stays on the server until it expires; the other machine waits for it
    client = MilvusClient(uri=uri, token=milvus_server.token)
    try:
        [row] = client.query("leased_meta", filter="id == -1", output_fields=["info"], consistency_level="Strong")
    finally:
        client.close()
    expires = json.loads(row["info"])["expires"]
    started = time.monotonic()
    code, _, err = on_another_machine(forks, *append[:-1], "--wait", "60", cache=tmp_path / "cache").output()
    assert code == 0, err
    assert time.time() >= expires and time.monotonic() - started > 5     # it did wait for the expiry
    assert len(info(uri, "leased")[1]) == 2 * len(before)


# A lease of 10 s renewed every second (the library's: 30 s, every 5 s): the other machine waits out at
# most 10 s of it after the kill, not 30.
HOLDER = """
import sys, time
from hashing.indexes.milvus import lease
lease.TTL, lease.RENEW, lease.MARGIN = 10.0, 1.0, 3.0
from hashing.indexes.backends import writer_lock
lock = writer_lock(sys.argv[1], sys.argv[2]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def sys_executable() -> str:
    import sys

    return sys.executable


def test_a_commit_over_another_writers_version_is_refused_and_loses_nothing(milvus_server, prebuilt):
    """A writer whose view is stale (another committed meanwhile) stops before it deletes or commits:
    the generation check at commit, for writers that hold no lease (the library used directly)."""
    from hashing.indexes import open_index

    uri = milvus_server.uri                                      # stale: a, b (LIBRARY_MADE)
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
    """A new process: gRPC reads its log level (GRPC_VERBOSITY, which the command sets) once, when this
    process's first channel starts; in the tests' own process an earlier client already started it."""
    port = milvus_server.uri.rsplit(":", 1)[1]
    code, out, err = run_hashing_process("info", f"https://127.0.0.1:{port}", "--collection", "x")
    line = one_line_error(code, err)
    assert "cannot reach Milvus" in line and "Handshake" not in err, err


def test_writers_on_three_machines_at_once_take_turns_and_lose_nothing(milvus_server, digits_run, folder, tmp_path,
                                                                       forks, prebuilt):
    """Three appends started together from three host names (each with its own lock folder, so only
    the lease orders them): each waits its turn, every one is acknowledged, and the collection ends
    with every item once under ids given once."""
    files, _ = folder
    uri = milvus_server.uri
    built(prebuilt, "race")
    base = len(info(uri, "race")[1])
    append = ["index", "--model", digits_run, "--images", files, "--out", uri, "--collection", "race", "--append",
              "--wait", "240", "--quiet"]
    jobs = [on_another_machine(forks, *append, cache=tmp_path / f"cache{i}", hostname=f"machine-{i}")
            for i in range(3)]
    results = [job.output() for job in jobs]
    assert all(code == 0 for code, _, _ in results), results
    d, items = info(uri, "race")
    ids = [i for i, _, _ in items]
    assert len(items) == 4 * base and sorted(set(ids)) == ids == list(range(4 * base)), (len(items), ids[-5:])
    assert d["count"] == 4 * base


def test_kill_9_at_every_commit_step_of_a_server_writer_leaves_old_or_new(milvus_server, digits_run, folder,
                                                                           tmp_path, forks, prebuilt):
    """`hashing index --append` and `hashing remove` on a server, SIGKILLed right after each of their
    commit steps: the collection is always the old version or the new one, and the next writer on this
    machine goes ahead at once (the dead holder's lease does not keep it out)."""
    import os

    files, _ = folder
    uri = milvus_server.uri
    built(prebuilt, "killed")
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
            code, _, err = forks.run(*args, env={**os.environ, "HASHING_CRASH_AT": str(at)})
            assert code == -9, (at, points[at - 1], err)                   # not refused: it reached the point
            after = info(uri, "killed")[1]
            assert after in (before, before + [(before[-1][0] + 1 + i, s, lab) for i, (_, s, lab)
                                               in enumerate(after[len(before):])]), (at, points[at - 1])
            assert len(after) in (len(before), len(before) + n), (at, points[at - 1], len(before), len(after))
    ids = [i for i, _, _ in info(uri, "killed")[1]]
    code, out, err = run_hashing("remove", "--index", uri, "--collection", "killed", *ids[:3])
    assert code == 0, err
    assert [i for i, _, _ in info(uri, "killed")[1]] == ids[3:]
