"""`hashing serve`: every endpoint and error status (the app in-process), then real server processes on
a loopback port over FAISS and Milvus Lite: the same answers as `hashing query --json`, additions that
survive a restart, concurrent requests, a clean stop on SIGTERM."""

import io
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from conftest import Server, error_of, one_line_error, run_hashing  # noqa: E402

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    """Six digits of the test split as PNG files, and their bytes."""
    from PIL import Image

    from hashing.images.datasets import load_dataset

    folder = tmp_path_factory.mktemp("queries")
    test = load_dataset("digits", "test")
    paths = []
    for i in range(6):
        paths.append(folder / f"digit{i}.png")
        Image.fromarray(test.images[i * 11]).save(paths[-1])
    return paths


def expected(paths, index, **kw) -> list[dict]:
    """What `hashing query --json` prints for these files, with the names a browser uploads."""
    from hashing.workflows.query import query_images

    return [{**r.to_dict(), "image": p.name} for p, r in zip(paths, query_images(paths, str(index), **kw))]


def files(*paths):
    return [("image", (p.name, p.read_bytes(), "image/png")) for p in paths]


@pytest.fixture(scope="module")
def app_client(digits_index, tmp_path_factory):
    """The application in-process (FastAPI's test client) over a copy of the digits index, with a token."""
    from fastapi.testclient import TestClient

    from hashing.serve.engine import Engine
    from hashing.serve.app import create_app

    index = tmp_path_factory.mktemp("served") / "idx"
    shutil.copytree(digits_index, index)
    engine = Engine(str(index), writer=True)
    with TestClient(create_app(engine, token=TOKEN, max_upload_mb=1.0), raise_server_exceptions=False) as client:
        client.index = index
        yield client
    engine.close()


def test_health_says_what_is_served(app_client, digits_run):
    h = app_client.get("/health").json()
    assert h["status"] == "ok" and h["items"] == 1437 and h["bits"] == 64 and h["backend"] == "faiss"
    assert h["model"] == str(digits_run) and h["image"] == {"size": 28, "channels": 1, "resize": "crop",
                                                              "background": "white", "exif": True, "trim": False}


def test_search_answers_as_the_cli_does(app_client, pngs):
    r = app_client.post("/search", files=files(*pngs[:3]), params={"k": 7})
    assert r.status_code == 200
    assert r.json() == expected(pngs[:3], app_client.index, k=7)
    assert "encode;dur=" in r.headers["server-timing"]
    by_radius = app_client.post("/search", files=files(pngs[3]), params={"radius": 12}).json()
    assert by_radius == expected(pngs[3:4], app_client.index, radius=12)
    assert all(h["distance"] <= 12 for h in by_radius[0]["results"])
    default = app_client.post("/search", files=files(pngs[0])).json()
    assert len(default[0]["results"]) == 10
    both = app_client.post("/search", files=files(pngs[3]), params={"radius": 12, "k": 2}).json()   # at most k
    assert both[0]["results"] == by_radius[0]["results"][:2]


def test_search_by_codes_matches_search_by_image(app_client, pngs, digits_run):
    import hashing

    codes = hashing.load(digits_run).encode(pngs[:2])
    r = app_client.post("/search/codes", json={"codes": [c.tobytes().hex() for c in codes], "k": 5})
    assert r.status_code == 200, r.text
    by_image = expected(pngs[:2], app_client.index, k=5)
    assert [x["results"] for x in r.json()] == [x["results"] for x in by_image]
    assert [x["code"] for x in r.json()] == [c.tobytes().hex() for c in codes]


def test_items_and_their_images(app_client):
    from PIL import Image

    from hashing.images.datasets import load_dataset

    item = app_client.get("/items/17").json()
    train = load_dataset("digits", "train")
    assert item == {"id": 17, "label": int(train.labels[17]), "class": None, "source": "digits/train/17",
                    "image": "/items/17/image"}
    r = app_client.get("/items/17/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), train.images[17])
    small = Image.open(io.BytesIO(app_client.get("/items/17/image", params={"size": 16}).content))
    assert max(small.size) == 16


@pytest.mark.parametrize("method, url, kwargs, status, words", [
    ("post", "/search", {"files": [("image", ("notes.txt", b"not an image at all", "text/plain"))]}, 400,
     "not a readable image: notes.txt"),
    ("post", "/search", {"files": [("image", ("big.png", b"\0" * (1024 * 1024 + 1), "image/png"))]}, 413, "1 MB"),
    ("post", "/search?k=0", "png", 422, "k must be at least 1"),
    ("post", "/search?k=ten", "png", 422, "k:"),
    ("post", "/search?k=5000", "png", 422, "larger than the index (1437 items)"),
    ("post", "/search?radius=65", "png", 422, "radius must be from 0 to 64"),
    ("post", "/search?radius=-1", "png", 422, "radius must be from 0 to 64"),
    ("post", "/search?k=0&radius=4", "png", 422, "k must be at least 1"),
    ("post", "/search", {}, 422, "image"),
    ("post", "/search/codes", {"json": {"codes": ["00ff"], "k": 3}}, 422, "16 hex digits"),
    ("post", "/search/codes", {"json": {"codes": ["zz" * 8], "k": 3}}, 422, "hex"),
    ("post", "/search/codes", {"json": {"codes": [], "k": 3}}, 422, "at least one"),
    ("post", "/search/codes", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, ""),
    ("get", "/items/1437", {}, 404, "no item 1437"),
    ("get", "/items/-3", {}, 404, "no item -3"),
    ("get", "/items/abc", {}, 422, "item_id"),
    ("get", "/items/99999/image", {}, 404, "no item"),
    ("get", "/items/3/image?size=5000", {}, 422, "size"),
    ("get", "/items/..%2F..%2Fetc%2Fpasswd/image", {}, 404, ""),
    ("get", "/nowhere", {}, 404, "Not Found"),
])
def test_errors_are_one_json_line_with_the_right_status(app_client, pngs, method, url, kwargs, status, words):
    if kwargs == "png":
        kwargs = {"files": files(pngs[0])}
    assert words in error_of(getattr(app_client, method)(url, **kwargs), status)


def test_additions_need_the_token(app_client, pngs):
    count = app_client.get("/health").json()["items"]
    assert "Authorization: Bearer" in error_of(app_client.post("/items", files=files(pngs[0])), 401)
    bad = app_client.post("/items", files=files(pngs[0]), headers={"Authorization": "Bearer nope"})
    assert error_of(bad, 401)
    too_many = app_client.post("/items", files=files(*pngs[:2]), data={"label": ["1", "2", "3"]},
                               headers={"Authorization": f"Bearer {TOKEN}"})
    assert "one label for all" in error_of(too_many, 422)
    junk = app_client.post("/items", files=[("image", ("x.png", b"GIF89a broken", "image/png"))],
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert "not a readable image" in error_of(junk, 400)
    huge = app_client.post("/items", files=files(pngs[0]), data={"label": str(2 ** 64)},
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert "labels are -1" in error_of(huge, 422)
    assert app_client.get("/health").json()["items"] == count          # nothing was added by any of them


def test_a_file_name_cannot_choose_where_an_upload_is_stored(app_client, pngs):
    r = app_client.post("/items", files=[("image", ("../../../evil name<script>.png", pngs[1].read_bytes(),
                                                    "image/png"))],
                        headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 201, r.text
    source = app_client.get(f"/items/{r.json()['ids'][0]}").json()["source"]
    assert source.startswith(str((app_client.index / "uploads").resolve()) + "/")
    assert "<" not in source and ".." not in source


@pytest.mark.parametrize("options, words", [({"read_only": True, "token": TOKEN}, "read-only"),
                                            ({}, "additions are off")])
def test_additions_and_removals_can_be_switched_off(digits_index, pngs, options, words):
    from fastapi.testclient import TestClient

    from hashing.serve.engine import Engine
    from hashing.serve.app import create_app

    engine = Engine(str(digits_index))
    try:
        with TestClient(create_app(engine, **options)) as client:
            r = client.post("/items", files=files(pngs[0]), headers={"Authorization": f"Bearer {TOKEN}"})
            assert words in error_of(r, 403)
            r = client.delete("/items/3", headers={"Authorization": f"Bearer {TOKEN}"})   # removals too
            assert words.replace("additions", "removals") in error_of(r, 403)
    finally:
        engine.close()


def test_concurrent_searches_are_batched_and_each_gets_its_own_answer(digits_index, pngs):
    """Many threads at once, with different k and radius: every answer is the one it gets alone."""
    from hashing.serve.engine import Engine
    from hashing.images.reader import read_image

    engine = Engine(str(digits_index))
    try:
        arrays = [read_image(p, engine.spec)[None] for p in pngs]
        asks = [(i % len(pngs), {"k": 1 + i % 4} if i % 5 else {"radius": 10}) for i in range(60)]
        alone = [engine.search(arrays=arrays[q], **{"k": None, "radius": None, **kw}).result()[0] for q, kw in asks]
        with ThreadPoolExecutor(16) as pool:
            futures = list(pool.map(lambda a: engine.search(arrays=arrays[a[0]], **{"k": None, "radius": None,
                                                                                     **a[1]}), asks))
            together = [f.result() for f in futures]
        assert [hits for hits, _ in together] == alone
        assert max(t.batch for _, t in together) >= 1
    finally:
        engine.close()


# ---- real server processes ---------------------------------------------------------------------------


@pytest.mark.system
def test_a_real_server_answers_adds_and_keeps_additions_across_a_restart(digits_index, pngs, tmp_path):
    index = tmp_path / "idx"
    shutil.copytree(digits_index, index)
    with Server("--index", index, "--token", TOKEN) as server:
        assert server.url.startswith("http://127.0.0.1:")                    # loopback unless told otherwise
        with httpx.Client(base_url=server.url, timeout=60) as c:
            assert c.post("/search", files=files(*pngs[:2]), params={"k": 4}).json() == expected(pngs[:2], index, k=4)
            with ThreadPoolExecutor(8) as pool:                                 # concurrent clients
                answers = list(pool.map(lambda p: c.post("/search", files=files(p), params={"k": 3}).json(),
                                        pngs * 3))
            assert answers == [expected([p], index, k=3) for p in pngs] * 3
            r = c.post("/items", files=files(*pngs[4:6]), data={"label": "7"},
                       headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 201 and r.json() == {"ids": [1437, 1438], "items": 1439}
            same = c.post("/search", files=files(pngs[5]), params={"radius": 0}).json()[0]["results"]
            assert {"id": 1438, "distance": 0, "label": 7} in [{k: h[k] for k in ("id", "distance", "label")}
                                                              for h in same]      # a train digit may share its code
            assert c.get("/").text.startswith("<!doctype html>")
            assert "swagger-ui" in c.get("/docs").text and "/static/swagger/" in c.get("/docs").text
            assert c.get("/static/swagger/swagger-ui-bundle.js").status_code == 200   # served here, no CDN
        code, out, err = server.stop()
        assert code == 0 and "stopped" in out and "Traceback" not in err
    # on disk before the answer: a new process (and the CLI) sees the additions
    assert 1438 in [h["id"] for h in expected(pngs[5:6], index, radius=0)[0]["results"]]
    with Server("--index", index) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.get("/health").json()["items"] == 1439
        assert c.get("/items/1437").json()["label"] == 7
        png = c.get("/items/1437/image")
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
        assert "additions are off" in error_of(c.post("/items", files=files(pngs[0]),
                                                      headers={"Authorization": f"Bearer {TOKEN}"}), 403)


@pytest.mark.system
def test_a_real_server_over_milvus_lite_keeps_an_addition_through_kill_9(digits_run, pngs, tmp_path):
    pytest.importorskip("milvus_lite")
    from hashing.workflows.index import build_index

    db = str(tmp_path / "served.db")
    build_index(digits_run, db, dataset="digits", split="test", progress=False)
    want = expected(pngs[:3], db, k=5)
    with Server("--index", db, env={"HASHING_TOKEN": TOKEN}) as server:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            h = c.get("/health").json()
            assert h["backend"] == "milvus" and h["items"] == 360
            assert c.post("/search", files=files(*pngs[:3]), params={"k": 5}).json() == want
            r = c.post("/items", files=files(pngs[0]), headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 201 and r.json()["ids"] == [360]
            assert c.get("/items/360/image").status_code == 200
            # the file is held by the service: a second process gets a one-line refusal, not a hang
            code, _, err = run_hashing("query", pngs[0], "--index", db)
            assert "open in another process" in one_line_error(code, err)
        server.proc.kill()                   # kill -9 right after the answer: the addition was already on disk
        server.proc.wait()
    with Server("--index", db) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.get("/health").json()["items"] == 361
        # Every item ranked: digits/test/0 and the upload are both at distance 0 (tied there, maybe,
        # with other zeros: 64-bit codes name kinds).
        top = c.post("/search", files=files(pngs[0]), params={"k": 361}).json()[0]["results"]
        assert {(0, 0), (360, 0)} <= {(h["id"], h["distance"]) for h in top}
        assert c.get("/items/360").json()["source"].endswith("-digit0.png")


def test_serve_refuses_bad_starts_in_one_line(digits_index, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_hashing("serve", "--index", digits_index, "--port", port, timeout=60)
        assert "in use" in one_line_error(code, err)
    code, _, err = run_hashing("serve", "--index", tmp_path / "nothing", "--port", 0, timeout=60)
    assert "is not an index" in one_line_error(code, err)
    code, _, err = run_hashing("serve", "--index", digits_index, "--port", 0, "--max-upload", 0, timeout=60)
    assert "--max-upload" in one_line_error(code, err)
    code, _, err = run_hashing("serve", "--index", digits_index, "--port", 70000, timeout=60)
    assert "--port" in one_line_error(code, err)
    code, out, _ = run_hashing("serve", "--help")
    assert code == 0 and "--token" in out and "HASHING_TOKEN" in out


@pytest.mark.system
def test_huge_uploads_are_refused_from_their_header_and_memory_stays_bounded(digits_index):
    """Eight 9000 x 9000 PNGs at once (81 megapixels each, 320 MB decoded as RGBA): each a 413 from
    its header, the peak memory of the service far below 1 GB, and small queries answered meanwhile
    (benchmarks/serve_memory.py measures it with accepted 16-megapixel images too)."""
    import re
    from pathlib import Path

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGBA", (9000, 9000), (40, 80, 120, 200)).save(buf, "PNG", compress_level=1)
    huge = buf.getvalue()
    small = io.BytesIO()
    Image.new("L", (28, 28), 0).save(small, "PNG")
    with Server("--index", digits_index) as server, httpx.Client(base_url=server.url, timeout=120) as c:
        def upload(blob):
            return c.post("/search", files=[("image", ("huge.png", blob, "image/png"))], params={"k": 3})

        with ThreadPoolExecutor(9) as pool:
            answers = list(pool.map(upload, [huge] * 8 + [small.getvalue()]))
        assert [a.status_code for a in answers] == [413] * 8 + [200]
        assert "9000 x 9000" in error_of(answers[0], 413)
        peak_kb = int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{server.proc.pid}/status").read_text()).group(1))
        assert peak_kb < 1024 * 1024, peak_kb
