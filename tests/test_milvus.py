"""The Milvus backend (through Milvus Lite, a local .db file) gives the FAISS flat index's results."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from hashing.cli.main import cli
from hashing.codes.hamming import distances as hamming
from hashing.core.errors import HashingError
from hashing.indexes import IndexInfo, create, open_index

MODEL = {"run_dir": "/nowhere", "fingerprint": "abc", "bits": 64, "estimator": None, "dataset": None}


def codes(rng, n):
    centres = rng.integers(0, 2, (15, 64))
    bits = centres[rng.integers(0, 15, n)] ^ (rng.random((n, 64)) < 0.08)
    return np.packbits(bits.astype(bool), axis=1)


@pytest.fixture
def pair(tmp_path, rng):
    xb = codes(rng, 2500)
    labels = np.arange(len(xb)) % 10
    sources = [f"s{i}" for i in range(len(xb))]
    out = []
    for loc in (str(tmp_path / "f"), str(tmp_path / "m.db")):
        index = create(loc, IndexInfo(bits=64, model=MODEL))
        index.add(xb, labels, sources)
        index.save()
        out.append(index)
    return xb, out[0], out[1]


def test_search_equals_faiss_flat_tie_aware(pair, rng):
    xb, faiss_index, milvus = pair
    xq = codes(rng, 30)
    D1, I1 = faiss_index.search(xq, 20)
    D2, I2 = milvus.search(xq, 20)
    assert np.array_equal(D1, D2)
    full = hamming(xq, xb)
    for q in range(len(xq)):
        kth = D1[q, -1]
        assert set(I1[q][D1[q] < kth]) == set(I2[q][D2[q] < kth])
        assert np.array_equal(full[q][I2[q]], D2[q])
    h1, h2 = faiss_index.query(xq[:1], k=5)[0], milvus.query(xq[:1], k=5)[0]
    assert [(h.distance, h.label is not None) for h in h1] == [(h.distance, h.label is not None) for h in h2]
    assert all(h.source == f"s{h.id}" and h.label == h.id % 10 for h in h2)


def test_radius_search_equals_faiss(pair):
    xb, faiss_index, milvus = pair
    for (d1, i1), (d2, i2) in zip(faiss_index.range_search(xb[:5], 6), milvus.range_search(xb[:5], 6)):
        assert np.array_equal(d1, d2) and set(i1) == set(i2)
        assert d2.max() <= 6


@pytest.mark.system
def test_reopen_in_a_new_process_and_append(pair, tmp_path, rng):
    xb, _, milvus = pair
    milvus.close()
    code = (
        "import json, numpy as np\n"
        "from hashing.indexes import open_index\n"
        f"ix = open_index({str(tmp_path / 'm.db')!r})\n"
        f"xb = np.frombuffer(bytes.fromhex({xb[:3].tobytes().hex()!r}), np.uint8).reshape(3, 8)\n"
        "D, I = ix.search(xb, 1)\n"
        "print(json.dumps({'count': ix.count, 'd': D[:, 0].tolist(), 'model': ix.info.to_dict()['model']}))\n"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout.strip().splitlines()[-1])
    assert out["count"] == 2500 and out["d"] == [0, 0, 0] and out["model"] == MODEL
    again = open_index(str(tmp_path / "m.db"))
    more = codes(rng, 100)
    ids = again.add(more, None, ["new"] * 100)
    assert ids.tolist() == list(range(2500, 2600)) and again.count == 2600
    hit = again.query(more[:1], k=1)[0][0]
    assert hit.distance == 0 and hit.label is None


def test_wrong_collection_and_unreachable_server(pair, tmp_path):
    with pytest.raises(HashingError, match="no index 'nope'"):
        open_index(str(tmp_path / "m.db"), "nope")
    with pytest.raises(HashingError, match="cannot reach Milvus"):
        open_index("http://127.0.0.1:9")


def test_cli_milvus_backend_matches_faiss(digits_run, digits_index, tmp_path):
    from PIL import Image

    from hashing.images.datasets import load_dataset

    db = str(tmp_path / "digits.db")
    r = CliRunner().invoke(cli, ["index", "--model", str(digits_run), "--dataset", "digits", "--backend", "milvus",
                                 "--uri", db, "--collection", "dig", "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    q = tmp_path / "q.png"
    Image.fromarray(load_dataset("digits", "test").images[3]).save(q)
    a = CliRunner().invoke(cli, ["query", str(q), "--index", db, "--collection", "dig", "-k", "8", "--json"])
    b = CliRunner().invoke(cli, ["query", str(q), "--index", str(digits_index), "-k", "8", "--json"])
    ra, rb = json.loads(a.output)[0]["results"], json.loads(b.output)[0]["results"]
    assert [x["distance"] for x in ra] == [x["distance"] for x in rb]
    kth = ra[-1]["distance"]
    assert {x["id"] for x in ra if x["distance"] < kth} == {x["id"] for x in rb if x["distance"] < kth}
    assert all(x["source"] == f"digits/train/{x['id']}" for x in ra)
    bad = CliRunner().invoke(cli, ["query", str(q), "--index", db, "--collection", "other"])
    assert bad.exit_code == 1 and "no index 'other'" in bad.output


def test_failed_rebuild_leaves_the_collection_intact(digits_run, tmp_path):
    from hashing.workflows.index import build_index

    db = str(tmp_path / "keep.db")
    build_index(digits_run, db, dataset="digits", split="test", progress=False)
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(HashingError, match="not a readable image"):
        build_index(digits_run, db, images=folder, progress=False)
    index = open_index(db)
    try:
        assert index.count == 360
    finally:
        index.close()


class _NotReadyOnce:
    """A stand-in MilvusClient whose server fails the first `fails` creations as Milvus Lite 2.5 does
    before its memory mapping is set up (after creating the collection), then succeeds."""

    def __init__(self, fails: int, message: str = "Assert \"init_flag_ == true\" => Mmap manager has not been init."):
        self.fails, self.message, self.collections, self.calls = fails, message, set(), 0

    def create_collection(self, name, schema=None, index_params=None):
        self.calls += 1
        self.collections.add(name)
        if self.calls <= self.fails:
            raise RuntimeError(self.message)

    def has_collection(self, name):
        return name in self.collections

    def drop_collection(self, name):
        self.collections.discard(name)


def test_a_collection_is_created_again_while_milvus_lite_is_not_ready_and_other_errors_pass():
    from hashing.indexes.milvus.client import create_collection as _create_collection

    client = _NotReadyOnce(fails=2)
    _create_collection(client, "c__v0", None, None)
    assert client.calls == 3 and client.collections == {"c__v0"}
    with pytest.raises(RuntimeError, match="quota"):
        _create_collection(_NotReadyOnce(fails=1, message="quota exceeded"), "c__v0", None, None)
    stuck = _NotReadyOnce(fails=10**6)
    with pytest.raises(RuntimeError, match="Mmap"):
        _create_collection(stuck, "c__v0", None, None, wait=1.0)          # not forever
    assert 2 <= stuck.calls <= 4


@pytest.mark.system
def test_milvus_lite_servers_started_together_each_have_their_own_scratch_folder(tmp_path):
    """Milvus Lite's server keeps scratch files in $HOME/.cache/milvus and deletes that folder when it
    exits, so servers started together used to fail ("create dir ... failed"; CI, four at once), and
    every start failed where $HOME/.cache cannot be made. Here $HOME is a plain file: no server can
    make a folder under it, and four writers start at once. A scratch folder left by a killed process
    is swept by the next start; ours are removed when the index closes."""
    import tempfile
    from pathlib import Path

    home = tmp_path / "home-is-a-file"
    home.write_text("")
    dead = Path(tempfile.gettempdir()) / "hashing-milvus-lite-999999999-left"   # no such process
    (dead / ".cache" / "milvus").mkdir(parents=True, exist_ok=True)
    code = (
        "import sys, numpy as np\n"
        "from hashing.indexes import IndexInfo, create, open_index\n"
        f"ix = create(sys.argv[1], IndexInfo(bits=64, model={MODEL!r}))\n"
        "ix.add(np.full((5, 8), 7, np.uint8), None, ['a'] * 5)\n"
        "ix.save(); ix.close()\n"
        "print(open_index(sys.argv[1]).count)\n"
    )
    env = {**__import__("os").environ, "HOME": str(home)}
    jobs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"w{i}.db")], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(4)]
    for job in jobs:
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0, err[-2000:]
        assert out.split()[-1] == "5"
    assert not dead.exists()
    pids = {str(job.pid) for job in jobs}
    assert not [p for p in Path(tempfile.gettempdir()).glob("hashing-milvus-lite-*") if p.name.split("-")[3] in pids]


HOT_JOURNAL = """
import os, signal, sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA cache_size=2")            # spill pages to the file mid-transaction
con.execute("BEGIN")
con.execute("CREATE TABLE torn(x)")
con.executemany("INSERT INTO torn VALUES (?)", [(os.urandom(500),) for _ in range(3000)])
os.kill(os.getpid(), signal.SIGKILL)          # as a kill -9 of the Milvus Lite writer would
"""


@pytest.mark.system
def test_a_milvus_lite_file_killed_mid_write_opens_again_with_every_committed_item(pair, tmp_path):
    """A writer killed inside an SQLite transaction leaves a hot journal beside the .db file; a
    read-only look cannot roll it back, and the index could not be opened at all. Now the first
    process that opens it rolls it back (as SQLite does), and the committed items are all there."""
    db = tmp_path / "m.db"
    pair[2].close()
    with open_index(str(db)) as index:
        before = index.items()
    subprocess.run([sys.executable, "-c", HOT_JOURNAL, str(db)], check=False)
    journal = tmp_path / "m.db-journal"
    assert journal.exists()                                    # a hot journal, as kill -9 of a writer left
    r = CliRunner().invoke(cli, ["info", str(db), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["count"] == len(before[0])
    assert not journal.exists()
    with open_index(str(db)) as index:
        after = index.items()
    assert [list(map(list, before[:2])), before[2]] == [list(map(list, after[:2])), after[2]]
