"""One writer per index, with real processes: two services, a service and a CLI append, a kill -9 of
the lock holder, a reader that follows another process's commits. After each, the index holds
exactly the items that were acknowledged (HTTP 2xx, CLI exit 0), no id twice, and a query finds
every acknowledged item."""

import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from conftest import Server, one_line_error, run_hashing  # noqa: E402

pytestmark = pytest.mark.system          # real service processes, kill -9

TOKEN = "writer-token"


@pytest.fixture
def index(digits_index, tmp_path):
    dest = tmp_path / "idx"
    shutil.copytree(digits_index, dest)
    return dest


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    """Eight distinct test digits as PNG files (bytes)."""
    import io

    from PIL import Image

    from hashing.images.datasets import load_dataset

    test = load_dataset("digits", "test")
    out = []
    for i in range(8):
        buf = io.BytesIO()
        Image.fromarray(test.images[i * 13]).save(buf, "PNG")
        out.append((f"d{i}.png", buf.getvalue()))
    return out


def add(url: str, name: str, blob: bytes) -> list[int]:
    r = httpx.post(f"{url}/items", files=[("image", (name, blob, "image/png"))],
                   headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()["ids"]


def check_holds(index, acknowledged: dict[int, str], base: int, appended: int = 0) -> None:
    """The index has base + acknowledged + appended items, ids 0..n-1 once each, and every
    acknowledged upload is found at distance 0 under its own id."""
    from hashing.indexes import open_index

    with open_index(str(index)) as idx:
        assert idx.count == base + len(acknowledged) + appended
        assert len(set(acknowledged)) == len(acknowledged)
        labels, sources = idx.lookup(np.arange(idx.count))
        assert len(set(sources[:base])) <= base
        for i, name in acknowledged.items():
            assert sources[i].endswith(name), (i, sources[i], name)


def found_by_query(index, files) -> list[list[int]]:
    code, out, err = run_hashing("query", *files, "--index", index, "--radius", "0", "--json")
    assert code == 0, err
    import json
    return [[h["id"] for h in r["results"]] for r in json.loads(out)]


def test_a_second_writer_is_refused_by_name_and_a_kill_frees_the_lock_at_once(index, uploads, tmp_path):
    base = 1437
    acknowledged = {}
    with Server("--index", index, "--token", TOKEN) as first:
        pid = first.proc.pid
        # A second service with a token on the same index: one line naming the holder, non-zero exit.
        code, _, err = run_hashing("serve", "--index", index, "--token", "other", "--port", "0")
        line = one_line_error(code, err)
        assert f"pid {pid}" in line and "hashing serve" in line and TOKEN not in line and "--wait" in line
        # A CLI append while the service takes additions: refused before any work, nothing lost.
        errors = []

        def keep_adding():
            try:
                for name, blob in uploads[:4]:
                    for i in add(first.url, name, blob):
                        acknowledged[i] = name
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        t = threading.Thread(target=keep_adding)
        t.start()
        code, _, err = run_hashing("index", "--model", index_model(index), "--dataset", "digits", "--split", "test",
                                   "--out", index, "--append", "--quiet")
        t.join()
        assert not errors, errors
        assert f"pid {pid}" in one_line_error(code, err)
        # kill -9 of the holder: the kernel drops its lock; the next writer gets it at once.
        os.kill(pid, signal.SIGKILL)
        first.proc.wait(30)
    t0 = time.monotonic()
    code, out, err = run_hashing("index", "--model", index_model(index), "--dataset", "digits", "--split", "test",
                                 "--out", index, "--append", "--quiet")
    assert code == 0, err
    assert time.monotonic() - t0 < 60
    check_holds(index, acknowledged, base, appended=360)
    files = []
    for i, name in acknowledged.items():
        path = tmp_path / name
        path.write_bytes(dict(uploads)[name])
        files.append((i, path))
    hits = found_by_query(index, [p for _, p in files])
    for (i, _), ids in zip(files, hits):
        assert i in ids


def test_wait_takes_the_lock_when_the_holder_stops(index, uploads):
    with Server("--index", index, "--token", TOKEN) as server:
        ids = add(server.url, *uploads[5])
        stopper = threading.Timer(2.0, server.stop)
        stopper.start()
        code, out, err = run_hashing("index", "--model", index_model(index), "--dataset", "digits", "--split",
                                     "test", "--out", index, "--append", "--quiet", "--wait", "60")
        stopper.join()
    assert code == 0, err
    check_holds(index, {ids[0]: uploads[5][0]}, 1437, appended=360)


def test_a_reader_follows_another_writers_commits_without_a_mix(index, uploads):
    with Server("--index", index) as reader:
        assert httpx.get(f"{reader.url}/health").json()["items"] == 1437
        seen, bad = set(), []
        stop = threading.Event()

        def search_all_along():
            while not stop.is_set():
                r = httpx.post(f"{reader.url}/search/codes", json={"codes": ["00" * 8], "k": 1437}, timeout=60)
                if r.status_code != 200 or len(r.json()[0]["results"]) != 1437:
                    bad.append((r.status_code, r.text[:200]))
                h = httpx.get(f"{reader.url}/health", timeout=60).json()["items"]
                seen.add(h)

        t = threading.Thread(target=search_all_along)
        t.start()
        code, _, err = run_hashing("index", "--model", index_model(index), "--dataset", "digits", "--split", "test",
                                   "--out", index, "--append", "--quiet")
        assert code == 0, err
        deadline = time.monotonic() + 30
        while 1797 not in seen and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        t.join()
        assert not bad, bad[:3]
        assert seen <= {1437, 1797} and 1797 in seen
        # the new version answers: k over the old count works now
        r = httpx.post(f"{reader.url}/search/codes", json={"codes": ["00" * 8], "k": 1797})
        assert r.status_code == 200 and len(r.json()[0]["results"]) == 1797
        r = httpx.post(f"{reader.url}/items", files=[("image", uploads[0])], headers={"Authorization": "Bearer x"})
        assert r.status_code == 403


def index_model(index) -> str:
    import json

    return json.loads((index / "meta.json").read_text())["info"]["model"]["run_dir"]
