import json
import subprocess
import sys

import numpy as np
import pytest

from hashing.codes.hamming import distances as hamming
from hashing.core.errors import HashingError
from hashing.indexes import IndexInfo, ModelRecord, create, open_index
from hashing.indexes.faiss import FaissIndex

MODEL = {"run_dir": "/nowhere", "fingerprint": "abc", "bits": 64}


def assert_same_neighbours_tie_aware(D, I, xq, xb, k):
    """D ascending and equal to the oracle's k smallest; ids strictly inside the k-th distance
    equal the oracle's; ids at the k-th distance are any of the oracle's items at that distance."""
    full = hamming(xq, xb)
    for q in range(len(xq)):
        oracle = np.sort(full[q])[:k]
        assert np.all(np.diff(D[q]) >= 0)
        assert D[q].tolist() == oracle.tolist()
        kth = oracle[-1]
        assert set(I[q][D[q] < kth]) == set(np.flatnonzero(full[q] < kth))
        assert set(I[q][D[q] == kth]) <= set(np.flatnonzero(full[q] == kth))
        assert np.array_equal(full[q][I[q]], D[q])


def make(tmp_path, xb, index_type="flat", labels=None):
    index = create(str(tmp_path / "idx"), IndexInfo(bits=xb.shape[1] * 8, model=MODEL, index_type=index_type))
    index.add(xb, labels, [f"item{i}" for i in range(len(xb))])
    return index


def clustered_codes(rng, n, nbytes, centres=20, flip=0.1):
    """Codes near a few centres: many exact ties and real neighbours."""
    c = rng.integers(0, 2, (centres, nbytes * 8))
    bits = c[rng.integers(0, centres, n)] ^ (rng.random((n, nbytes * 8)) < flip)
    return np.packbits(bits.astype(bool), axis=1)


def test_flat_search_equals_popcount_oracle(tmp_path, rng):
    xb = clustered_codes(rng, 3000, 8, flip=0.05)   # 64 bits, lots of ties
    xq = clustered_codes(rng, 40, 8, flip=0.05)
    index = make(tmp_path, xb)
    D, I = index.search(xq, 25)
    assert_same_neighbours_tie_aware(D, I, xq, xb, 25)


def test_range_search_equals_oracle_for_flat_and_hnsw(tmp_path, rng):
    xb = clustered_codes(rng, 1000, 8, flip=0.05)
    xq = xb[:5]
    full = hamming(xq, xb)
    for t in ("flat", "hnsw"):
        index = create(str(tmp_path / t), IndexInfo(bits=64, model=MODEL, index_type=t))
        index.add(xb, None, [""] * len(xb))
        for q, (D, I) in enumerate(index.range_search(xq, 4)):
            assert set(I) == set(np.flatnonzero(full[q] <= 4))
            assert np.all(np.diff(D) >= 0) and np.array_equal(full[q][I], D)


def test_hnsw_is_approximate_but_close(tmp_path, rng):
    xb = clustered_codes(rng, 2000, 8)
    index = make(tmp_path, xb, "hnsw")
    D, I = index.search(xb[:200], 10)
    assert (D[:, 0] == 0).mean() >= 0.9       # each query is in the database: most find themselves


def test_save_open_gives_identical_results(tmp_path, rng):
    xb = clustered_codes(rng, 500, 8)
    index = make(tmp_path, xb, labels=np.arange(500) % 10)
    index.save()
    D1, I1 = index.search(xb[:20], 7)
    again = open_index(str(tmp_path / "idx"))
    D2, I2 = again.search(xb[:20], 7)
    assert np.array_equal(D1, D2) and np.array_equal(I1, I2)
    assert again.lookup(I2[0])[1] == [f"item{i}" for i in I2[0]]
    assert again.info.model == ModelRecord.from_dict(MODEL)
    hits = again.query(xb[:1], k=3)[0]
    assert hits[0].distance == 0 and hits[0].label == 0 and hits[0].source == "item0"


def test_append_continues_ids(tmp_path, rng):
    xb = clustered_codes(rng, 100, 8)
    index = make(tmp_path, xb[:60])
    index.save()
    again = open_index(str(tmp_path / "idx"))
    ids = again.add(xb[60:], None, ["x"] * 40)
    assert ids.tolist() == list(range(60, 100)) and again.count == 100


def test_user_errors(tmp_path, rng):
    xb = clustered_codes(rng, 10, 8)
    index = make(tmp_path, xb)
    with pytest.raises(HashingError, match="larger than the index"):
        index.search(xb[:1], 11)
    with pytest.raises(HashingError, match="bit length mismatch"):
        index.search(np.zeros((1, 4), np.uint8), 1)
    empty = create(str(tmp_path / "e"), IndexInfo(bits=64, model=MODEL))
    with pytest.raises(HashingError, match="empty"):
        empty.search(xb[:1], 1)
    with pytest.raises(HashingError, match="not an index"):
        open_index(str(tmp_path / "missing"))
    with pytest.raises(HashingError, match="mismatch"):
        index.info.check_model(ModelRecord("/x", None, 128))
    with pytest.raises(HashingError, match="model mismatch"):
        index.info.check_model(ModelRecord("/x", "other", 64))
    with pytest.raises(HashingError, match="radius"):
        index.range_search(xb[:1], 2147483647)
    with pytest.raises(HashingError, match="collection"):
        open_index(str(tmp_path / "idx"), collection="c")


def test_damaged_index_is_refused_and_old_files_survive_failed_save(tmp_path, rng):
    xb = clustered_codes(rng, 50, 8)
    index = make(tmp_path, xb)
    index.save()
    items = json.loads((tmp_path / "idx" / "meta.json").read_text())["files"]["items"]
    (tmp_path / "idx" / items).write_bytes(b"garbage")
    with pytest.raises(HashingError, match="checksum"):
        FaissIndex.open(str(tmp_path / "idx"))


@pytest.mark.system
def test_indexes_never_imports_torch():
    code = "import hashing.indexes, hashing.indexes.faiss, hashing.indexes.milvus.index, hashing.core.locks, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def edit_manifest(folder, change):
    """meta.json after `change(meta)` edited it (the data files and their checksums untouched)."""
    meta = json.loads((folder / "meta.json").read_text())
    change(meta)
    (folder / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("field, value", [("next_id", 2**63), ("next_id", 2**64 + 5), ("count", 2**63)])
def test_manifest_integers_beyond_int64_are_refused_by_name(tmp_path, rng, field, value):
    """Ids and counts are int64 (numpy, Milvus): a larger value opened fine and crashed the next append."""
    index = make(tmp_path, clustered_codes(rng, 20, 8))
    index.save()
    edit_manifest(tmp_path / "idx", lambda m: m.update({field: value}))
    with pytest.raises(HashingError, match=rf"meta.json: {field} must be an integer from \d+ to {2**63 - 1}"):
        open_index(str(tmp_path / "idx"))


def test_ids_stop_at_int64_with_one_line_before_anything_changes(tmp_path, rng):
    xb = clustered_codes(rng, 60, 8)
    for index_type in ("flat", "ivf"):
        folder = tmp_path / index_type
        index = create(str(folder), IndexInfo(bits=64, model=MODEL, index_type=index_type))
        index.add(xb[:40], None, ["a"] * 40)
        index.save()
        edit_manifest(folder, lambda m: m.update(next_id=2**63 - 3))    # the largest ids: still valid
        index = open_index(str(folder))
        assert index.add(xb[40:42], None, ["b", "c"]).tolist() == [2**63 - 3, 2**63 - 2]
        index.save()
        index = open_index(str(folder))
        assert index.next_id == 2**63 - 1 and index.items()[0][-1] == 2**63 - 2
        with pytest.raises(HashingError, match=f"cannot add 1 item: .* ids stop at {2**63 - 1}"):
            index.add(xb[42:43], None, ["d"])
        assert index.count == 42 and index.next_id == 2**63 - 1 and len(index.items()[0]) == 42
        assert index.search(xb[40:41], 1)[1].tolist() == [[2**63 - 3]]


def test_a_manifest_nested_too_deeply_is_damaged_not_a_recursion_error(tmp_path, rng):
    index = make(tmp_path, clustered_codes(rng, 20, 8))
    index.save()
    for text in ("[" * 100_000 + "]" * 100_000, '{"format": ' + "[" * 100_000):
        (tmp_path / "idx" / "meta.json").write_text(text)
        with pytest.raises(HashingError, match=r"meta.json is (damaged|corrupt)"):
            open_index(str(tmp_path / "idx"))


def test_datasets_in_a_manifest_map_to_folders_by_name(tmp_path, rng):
    """info.datasets maps "name/split" to a data folder (or null): anything else is refused by name,
    never carried along (a deep value would crash the next save's JSON writer)."""
    index = make(tmp_path, clustered_codes(rng, 20, 8))
    index.save()
    edit_manifest(tmp_path / "idx", lambda m: m["info"].update(datasets={"mnist/train": None, "digits/test": "/d"}))
    assert open_index(str(tmp_path / "idx")).info.datasets == {"mnist/train": None, "digits/test": "/d"}
    edit_manifest(tmp_path / "idx", lambda m: m["info"].update(datasets={"mnist/train": [[[1]]]}))
    with pytest.raises(HashingError, match="datasets.mnist/train must be a string"):
        open_index(str(tmp_path / "idx"))
