"""`hashing serve` and the items themselves: a thumbnail names its picture, never just its id (so a
rebuild by another process is never shown stale); ids and integers out of any index's range are a 404
or a 422, never a 500 (and an unexpected 500 keeps the connection open); a removed item's uploaded
file goes after the removal's commit, and files orphaned by a kill -9 are swept at the next start,
while a file that an item still names stays."""

import io
import json
import shutil
import signal
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from conftest import Server, error_of  # noqa: E402

TOKEN = "items-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def png_of(i: int, split: str = "test") -> bytes:
    """A digit of scikit-learn's digits as PNG bytes."""
    from PIL import Image

    from hashing.images.datasets import load_dataset

    buf = io.BytesIO()
    Image.fromarray(load_dataset("digits", split).images[i]).save(buf, "PNG")
    return buf.getvalue()


def pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)))


def client_of(engine, **options):
    from fastapi.testclient import TestClient

    from hashing.serve.app import create_app

    return TestClient(create_app(engine, **options), raise_server_exceptions=False)


@pytest.fixture
def index(digits_index, tmp_path):
    dest = tmp_path / "idx"
    shutil.copytree(digits_index, dest)
    return dest


def uploads_in(folder) -> list[str]:
    """The upload files in a folder (not the owner mark, not anything else)."""
    from hashing.serve.engine import _UPLOAD_FILE

    return sorted(p.name for p in folder.iterdir() if _UPLOAD_FILE.fullmatch(p.name)) if folder.exists() else []


# ---- 6: a thumbnail is cached by what it shows ---------------------------------------------------------


def test_a_thumbnail_follows_a_rebuild_that_gives_its_id_another_file(digits_run, tmp_path):
    """A read-only service, another process rebuilds the index: id 0 is another file now, and its
    thumbnail (server cache and browser cache alike) is the new file's; so is a file replaced under
    its name."""
    from hashing.serve.engine import Engine
    from hashing.workflows.index import build_index

    first, second = tmp_path / "first", tmp_path / "second"
    for folder, offset in ((first, 0), (second, 1)):
        folder.mkdir()
        for i in range(3):
            (folder / f"{i}.png").write_bytes(png_of(i + offset * 10))
    where = tmp_path / "idx"
    build_index(digits_run, str(where), images=first, progress=False)
    engine = Engine(str(where))                              # a reader: it follows other writers' commits
    try:
        with client_of(engine, read_only=True) as client:
            r = client.get("/items/0/image")
            assert r.status_code == 200 and np.array_equal(pixels(r.content), pixels(png_of(0)))
            old_tag = r.headers["etag"]
            assert "no-cache" in r.headers["cache-control"]            # a browser asks again before it shows it
            again = client.get("/items/0/image", headers={"If-None-Match": old_tag})
            assert again.status_code == 304 and again.content == b""   # unchanged: no body

            build_index(digits_run, str(where), images=second, progress=False)    # "another process" rebuilds
            r = client.get("/items/0/image", headers={"If-None-Match": old_tag})
            assert r.status_code == 200, r.status_code
            assert client.get("/items/0").json()["source"].startswith(str(second))
            assert np.array_equal(pixels(r.content), pixels(png_of(10))) and r.headers["etag"] != old_tag

            time.sleep(0.01)
            (second / "0.png").write_bytes(png_of(20))                 # the same source, another picture
            r = client.get("/items/0/image")
            assert np.array_equal(pixels(r.content), pixels(png_of(20)))
    finally:
        engine.close()


# ---- 7: ids and integers out of range --------------------------------------------------------------------


@pytest.fixture(scope="module")
def writer_client(digits_index, tmp_path_factory):
    from hashing.serve.engine import Engine

    dest = tmp_path_factory.mktemp("range") / "idx"
    shutil.copytree(digits_index, dest)
    engine = Engine(str(dest), writer=True)
    with client_of(engine, token=TOKEN) as client:
        yield client
    engine.close()


@pytest.mark.parametrize("method, url, status, words", [
    ("get", f"/items/{2**70}", 404, f"no item {2**70}"),
    ("get", f"/items/{2**63}", 404, f"no item {2**63}"),
    ("get", f"/items/{2**63 - 1}", 404, f"no item {2**63 - 1}"),
    ("get", f"/items/{-2**70}", 404, f"no item {-2**70}"),
    ("get", f"/items/{2**70}/image", 404, f"no item {2**70}"),
    ("get", f"/items/{2**63}/image?size=64", 404, f"no item {2**63}"),
    ("delete", f"/items/{2**70}", 404, f"no item {2**70}"),
    ("delete", f"/items/{2**63}", 404, f"no item {2**63}"),
    ("delete", f"/items/{-2**63 - 1}", 404, "no item"),
    ("get", f"/items/3/image?size={2**70}", 422, "size"),
    ("post", f"/search?k={2**70}", 422, "larger than the index"),
    ("post", f"/search?k={-2**70}", 422, "k must be at least 1"),
    ("post", f"/search?radius={2**70}", 422, "radius must be from 0 to 64"),
    ("post", f"/search?radius={-2**70}&k=3", 422, "radius must be from 0 to 64"),
])
def test_ids_and_integers_beyond_int64_are_a_404_or_a_422(writer_client, method, url, status, words):
    kwargs = {"files": [("image", ("d.png", png_of(0), "image/png"))]} if method == "post" else {}
    r = getattr(writer_client, method)(url, headers=AUTH, **kwargs)
    assert words in error_of(r, status)
    assert writer_client.get("/health").json()["items"] == 1437              # nothing was removed


def test_k_beyond_int64_with_a_radius_is_at_most_k_and_codes_are_checked_alike(writer_client):
    r = writer_client.post(f"/search?k={2**70}&radius=8", files=[("image", ("d.png", png_of(0), "image/png"))])
    assert r.status_code == 200 and all(h["distance"] <= 8 for h in r.json()[0]["results"])
    for body in ({"codes": ["00" * 8], "k": 2**70}, {"codes": ["00" * 8], "radius": 2**70}):
        assert error_of(writer_client.post("/search/codes", json=body), 422)
    r = writer_client.post("/items", headers=AUTH, files=[("image", ("d.png", png_of(0), "image/png"))],
                           data={"label": str(2**70)})
    assert "labels are -1" in error_of(r, 422)


@pytest.mark.system
def test_an_out_of_range_id_leaves_a_real_servers_connection_and_log_clean(digits_index, tmp_path):
    """Over one keep-alive connection: the 404s, then the next request answers (it was reset after the
    500); the service's log has no traceback."""
    index = tmp_path / "idx"
    shutil.copytree(digits_index, index)
    with Server("--index", index, "--token", TOKEN) as server:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for method, url in (("delete", f"/items/{2**70}"), ("delete", f"/items/{2**63}"),
                                ("get", f"/items/{2**70}"), ("get", f"/items/{2**70}/image")):
                assert "no item" in error_of(c.request(method, url, headers=AUTH), 404)
                assert c.get("/health").json()["items"] == 1437               # the same connection, still open
        code, _, err = server.stop()
    assert code == 0 and "Traceback" not in err, err


def test_an_unexpected_error_is_a_500_and_the_connection_stays_open():
    """A bug's exception: a 500 naming only its type, the traceback in the log, and the client's
    next request on the same connection answered (uvicorn closes it when an exception escapes)."""
    import http.client

    import uvicorn
    from fastapi import FastAPI

    from hashing.serve.app import Unexpected

    app = FastAPI()
    app.add_middleware(Unexpected)

    @app.get("/bug")
    async def bug():
        raise RuntimeError("a bug")

    @app.get("/fine")
    async def fine():
        return {"ok": True}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        conn = http.client.HTTPConnection("127.0.0.1", sock.getsockname()[1], timeout=10)
        conn.request("GET", "/bug")
        r = conn.getresponse()
        assert r.status == 500 and json.loads(r.read()) == {"detail": "internal error (RuntimeError); see the "
                                                                       "service's log"}
        assert r.getheader("connection") != "close"
        conn.request("GET", "/fine")                      # the same connection
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read()) == {"ok": True}
        conn.close()
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


# ---- 8: a removed item's upload goes, crash-safely ---------------------------------------------------------


@pytest.mark.parametrize("backend", ["faiss", "milvus-lite"])
def test_a_removed_items_upload_is_deleted_once_no_item_names_it(digits_index, digits_run, tmp_path, backend):
    """Uploads of one picture twice (one file, two items), and of another: removing the other deletes
    its file; removing one of the twins keeps the file the second still names; removing that deletes it."""
    from hashing.serve.engine import Engine
    from hashing.indexes import open_index

    if backend == "faiss":
        where = tmp_path / "idx"
        shutil.copytree(digits_index, where)
        folder = where / "uploads"
    else:
        pytest.importorskip("milvus_lite")
        from hashing.workflows.index import build_index

        where = tmp_path / "served.db"
        build_index(digits_run, str(where), dataset="digits", split="test", progress=False)
        folder = tmp_path / "served.db.uploads"
    engine = Engine(str(where), writer=True)
    try:
        with client_of(engine, token=TOKEN) as client:
            def add(name, blob):
                r = client.post("/items", headers=AUTH, files=[("image", (name, blob, "image/png"))])
                assert r.status_code == 201, r.text
                return r.json()["ids"][0]

            twin_a, twin_b, other = add("twin.png", png_of(1)), add("twin.png", png_of(1)), add("other.png", png_of(2))
            sources = {i: client.get(f"/items/{i}").json()["source"] for i in (twin_a, twin_b, other)}
            assert sources[twin_a] == sources[twin_b] and len(uploads_in(folder)) == 2
            assert client.delete(f"/items/{other}", headers=AUTH).status_code == 200
            assert uploads_in(folder) == [sources[twin_a].rsplit("/", 1)[1]]
            assert client.delete(f"/items/{twin_a}", headers=AUTH).status_code == 200
            assert uploads_in(folder) == [sources[twin_a].rsplit("/", 1)[1]]    # twin_b names it still
            assert client.get(f"/items/{twin_b}/image").status_code == 200
            assert client.delete(f"/items/{twin_b}", headers=AUTH).status_code == 200
            assert uploads_in(folder) == []
            assert (folder / ".hashing-uploads").exists()
    finally:
        engine.close()
    with open_index(str(where)) as idx:
        assert idx.missing([twin_a, twin_b, other]) == [twin_a, twin_b, other]


@pytest.mark.system
def test_uploads_orphaned_by_a_kill_9_are_swept_at_the_next_start(index, tmp_path):
    """kill -9 right after an upload is stored (before its commit), and right after a removal's commit
    (before its file is deleted): each leaves a file that no item names; the next start removes it,
    and keeps the files items name and anything else in the folder."""
    folder = index / "uploads"
    log = tmp_path / "crash.log"

    def steps() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    def add(c, name, blob):
        r = c.post("/items", headers=AUTH, files=[("image", (name, blob, "image/png"))])
        assert r.status_code == 201, r.text
        return r.json()["ids"][0]

    # Where the crash points of an addition and a removal fall (one process's steps count from 1).
    with Server("--index", index, "--token", TOKEN, env={"HASHING_CRASH_LOG": str(log)}) as server, \
            httpx.Client(base_url=server.url, timeout=60) as c:
        kept = add(c, "kept.png", png_of(3))          # the first addition also marks the folder
        before = len(steps())
        gone = add(c, "gone.png", png_of(4))
        adding = steps()[before:]
        assert c.delete(f"/items/{gone}", headers=AUTH).status_code == 200
        removing = steps()[before + len(adding):]
        assert len(uploads_in(folder)) == 1                          # gone.png's file went with its item
        victim = add(c, "victim.png", png_of(5))
    log.unlink()
    stored = 1 + next(i for i, s in enumerate(adding) if s.split(" ", 1)[1].startswith("renamed ") and
                      s.endswith("-gone.png"))
    committed = 1 + next(i for i, s in enumerate(removing) if s.endswith(" renamed meta.json"))
    (folder / "notes.txt").write_text("not an upload: never touched")

    # 1. killed between storing an upload and committing its addition
    with Server("--index", index, "--token", TOKEN, env={"HASHING_CRASH_AT": str(stored)}) as server:
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"{server.url}/items", headers=AUTH, files=[("image", ("orphan.png", png_of(6), "image/png"))],
                       timeout=60)
        assert server.proc.wait(30) == -signal.SIGKILL
    assert any(n.endswith("-orphan.png") for n in uploads_in(folder))

    # 2. killed between a removal's commit and its file's deletion; this start swept the orphan of 1.
    with Server("--index", index, "--token", TOKEN, env={"HASHING_CRASH_AT": str(committed)}) as server:
        assert not any(n.endswith("-orphan.png") for n in uploads_in(folder))
        with pytest.raises(httpx.HTTPError):
            httpx.delete(f"{server.url}/items/{victim}", headers=AUTH, timeout=60)
        assert server.proc.wait(30) == -signal.SIGKILL
    assert any(n.endswith("-victim.png") for n in uploads_in(folder))

    # 3. the next start: the victim's item is gone, so is its file; the kept item and its file stay.
    with Server("--index", index, "--token", TOKEN) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.get(f"/items/{victim}").status_code == 404
        assert [n.split("-", 1)[1] for n in uploads_in(folder)] == ["kept.png"]
        assert c.get(f"/items/{kept}/image").status_code == 200
    assert (folder / "notes.txt").read_text() == "not an upload: never touched"


@pytest.mark.parametrize("case", ["marked for another index", "unmarked, files of another"])
def test_a_folder_that_may_hold_another_indexs_uploads_is_never_swept(index, tmp_path, case):
    """--uploads naming a folder another index uses: its files stay, at start and on removals, and the
    service says why in one line."""
    from hashing.serve.engine import UPLOADS_OWNER, Engine

    shared = tmp_path / "shared"
    shared.mkdir()
    theirs = shared / "0123456789abcdef-theirs.png"
    theirs.write_bytes(png_of(7))
    if case == "marked for another index":
        (shared / UPLOADS_OWNER).write_text(json.dumps({"index": str(tmp_path / "other"), "collection": None}))
    engine = Engine(str(index), uploads=shared, writer=True)
    try:
        assert engine.uploads_note and "\n" not in engine.uploads_note
        with client_of(engine, token=TOKEN) as client:
            r = client.post("/items", headers=AUTH, files=[("image", ("mine.png", png_of(8), "image/png"))])
            assert r.status_code == 201, r.text
            mine = r.json()["ids"][0]
            assert client.delete(f"/items/{mine}", headers=AUTH).status_code == 200
    finally:
        engine.close()
    assert theirs.exists() and any(n.endswith("-mine.png") for n in uploads_in(shared))   # kept, both
    if case == "marked for another index":
        assert json.loads((shared / UPLOADS_OWNER).read_text())["index"] == str(tmp_path / "other")
