"""`hashing info` and `hashing remove`: removal by id and by source on FAISS flat, IVF, HNSW and
Milvus Lite keeps the other ids, is all or nothing, holds the writer lock, and a removed item is
never seen again (queries, info, after reopening); the service's DELETE /items/{id}."""

import json
import shutil

import numpy as np
import pytest

from conftest import one_line_error, run_hashing


def copy_as(digits_index, dest, index_type: str = "flat"):
    """The digits index's codes, labels and sources in a new index of this type at `dest` (no model run)."""
    from hashing.indexes import create, open_index

    with open_index(str(digits_index)) as src:
        xb = src.reconstruct_all()
        ids, labels, sources = src.items()[:3]
        info = src.info
    if index_type == "flat" and not str(dest).endswith(".db"):
        shutil.copytree(digits_index, dest)
        return xb, labels, sources
    info.index_type = index_type
    index = create(str(dest), info)
    try:
        index.add(xb, labels, sources)
        index.save()
    finally:
        index.close()
    return xb, labels, sources


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw", "milvus"])
def test_remove_by_id_and_source_keeps_other_ids_and_never_shows_them_again(digits_index, tmp_path, index_type):
    from hashing.workflows.inventory import index_summary, remove_items
    from hashing.indexes import open_index

    if index_type == "milvus":
        pytest.importorskip("milvus_lite")
    dest = str(tmp_path / ("idx.db" if index_type == "milvus" else "idx"))
    xb, labels, sources = copy_as(digits_index, dest, "flat" if index_type == "milvus" else index_type)
    n = len(xb)
    gone = [3, 10, 500]
    r = remove_items(dest, ids=gone[:2], sources=[sources[500]])
    assert (r.removed, r.total) == (3, n - 3)
    d = index_summary(dest, items=True)
    assert d["count"] == n - 3 and d["next_id"] == n
    kept = [i for i in range(n) if i not in gone]
    assert [it["id"] for it in d["items"]] == kept
    assert [it["source"] for it in d["items"]] == [sources[i] for i in kept]
    assert [it["label"] for it in d["items"]] == [int(labels[i]) for i in kept]
    with open_index(dest) as index:            # reopened: gone from searches, the rest at their old ids
        assert index.missing(np.array(gone)) == gone
        within = index.range_search(xb[gone + [7, 1000]], 0)
        assert all(not set(i.tolist()) & set(gone) for _, i in within)
        assert 7 in within[3][1] and 1000 in within[4][1]
        _, I = index.search(xb[gone + [7]], 20)
        assert not set(I.ravel().tolist()) & set(gone)
        assert index.lookup(np.array([7, 1000]))[1] == [sources[7], sources[1000]]
        if index_type != "milvus":             # a new item gets a new id, never a removed one
            index.add(xb[:1], None, ["again"])
            assert index.items()[0][-1] == n


def test_info_prints_what_the_index_is_and_lists_items(digits_index, digits_run):
    code, out, err = run_hashing("info", digits_index)
    assert code == 0, err
    assert "faiss" in out and "flat" in out and "1437" in out and str(digits_run) in out
    code, out, err = run_hashing("info", digits_index, "--items", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert (d["count"], d["bits"], d["backend"]) == (1437, 64, "faiss")
    assert len(d["items"]) == 1437 and [it["id"] for it in d["items"]] == list(range(1437))
    assert {k: d["items"][17][k] for k in ("id", "source")} == {"id": 17, "source": "digits/train/17"}
    assert d["disk_bytes"] > 1437 * 8
    code, out, err = run_hashing("info", digits_index, "--json")
    assert "items" not in json.loads(out)
    assert "nowhere" in one_line_error(*run_hashing("info", digits_index.parent / "nowhere")[::2])


def test_unknown_ids_or_sources_remove_nothing_and_a_held_lock_refuses(digits_index, tmp_path):
    from hashing.indexes.backends import writer_lock

    dest = tmp_path / "idx"
    shutil.copytree(digits_index, dest)
    before = (dest / "meta.json").read_bytes()
    code, out, err = run_hashing("remove", "--index", dest, "1", "5000")
    assert "5000" in one_line_error(code, err)
    code, out, err = run_hashing("remove", "--index", dest, "--source", "digits/train/1", "--source", "no/such.png")
    assert "no/such.png" in one_line_error(code, err)
    assert "--source" in one_line_error(*run_hashing("remove", "--index", dest)[::2])
    assert (dest / "meta.json").read_bytes() == before
    lock = writer_lock(str(dest)).acquire()
    try:
        code, out, err = run_hashing("remove", "--index", dest, "1")
        assert "being written by" in one_line_error(code, err)
    finally:
        lock.release()
    assert (dest / "meta.json").read_bytes() == before
    code, out, err = run_hashing("remove", "--index", dest, "1", "2", "--source", "digits/train/9")
    assert code == 0 and "removed 3 items" in out and "1434 left" in out, err
    code, out, err = run_hashing("info", dest, "--json", "--items")
    assert {1, 2, 9}.isdisjoint(it["id"] for it in json.loads(out)["items"])


def test_delete_endpoint_removes_with_the_token_and_404s_an_unknown_id(digits_index, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hashing.serve.engine import Engine
    from hashing.indexes import open_index
    from hashing.serve.app import create_app

    dest = tmp_path / "idx"
    shutil.copytree(digits_index, dest)
    engine = Engine(str(dest), writer=True)
    auth = {"Authorization": "Bearer tok"}
    try:
        with TestClient(create_app(engine, token="tok"), raise_server_exceptions=False) as client:
            assert client.delete("/items/5").status_code == 401
            r = client.delete("/items/5", headers=auth)
            assert r.status_code == 200 and r.json() == {"removed": [5], "items": 1436}, r.text
            for again in ("/items/5", "/items/99999"):
                r = client.delete(again, headers=auth)
                assert r.status_code == 404 and "no item" in r.json()["detail"], r.text
            assert client.get("/items/5").status_code == 404
            assert client.get("/items/6").json()["id"] == 6
    finally:
        engine.close()
    with open_index(str(dest)) as index:
        assert index.count == 1436 and index.missing(np.array([5, 6])) == [5]


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw", "milvus"])
def test_an_id_beyond_int64_is_no_item_and_removes_nothing(digits_index, tmp_path, index_type):
    """An id of many digits (a paste gone wrong) is an unknown id like any other, not numpy's OverflowError."""
    from hashing.workflows.inventory import index_summary

    if index_type == "milvus":
        pytest.importorskip("milvus_lite")
    dest = tmp_path / ("idx.db" if index_type == "milvus" else "idx")
    copy_as(digits_index, dest, "flat" if index_type == "milvus" else index_type)
    def state():                    # what the index holds (a Milvus Lite file's size may change on any open)
        return {k: v for k, v in index_summary(str(dest), items=True).items() if k != "disk_bytes"}

    before = state()
    manifest = None if index_type == "milvus" else (dest / "meta.json").read_bytes()
    huge = "99999999999999999999999"
    code, _, err = run_hashing("remove", "--index", dest, huge, timeout=300)
    line = one_line_error(code, err)
    assert code == 1 and f"no item {huge} in the index" in line and "nothing was removed" in line, err
    code, _, err = run_hashing("remove", "--index", dest, "5", str(2**63), timeout=300)    # one past int64
    assert f"no item {2**63} in the index" in one_line_error(code, err)
    assert state() == before                                                  # nothing removed, item 5 included
    if manifest is not None:
        assert (dest / "meta.json").read_bytes() == manifest


def test_remove_through_the_api_names_an_id_beyond_int64(digits_index, tmp_path):
    from hashing.core.errors import HashingError
    from hashing.indexes import open_index

    dest = tmp_path / "idx"
    shutil.copytree(digits_index, dest)
    with open_index(str(dest)) as index:
        assert sorted(index.missing([2**64, 3, 2**63 - 1])) == [2**63 - 1, 2**64]
        with pytest.raises(HashingError, match=f"no item {2**64} in the index"):
            index.remove([3, 2**64])
        assert index.count == 1437 and index.missing([3]) == []


@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_info_items_give_each_label_its_class_name(digits_index, tmp_path, backend):
    """docs/storage.md promises {"id", "source", "label", "class"} per item: the class is the label's name
    among the index's classes, null where the label is unknown or has no name."""
    from hashing.indexes import create, open_index

    if backend == "milvus":
        pytest.importorskip("milvus_lite")
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight"]     # nine: 9 has no name
    with open_index(str(digits_index)) as src:
        xb, (_, labels, sources, _) = src.reconstruct_all()[:40], src.items()
        info = src.info
    labels, sources = labels[:40].copy(), sources[:40]
    labels[0] = -1
    info.classes = names
    dest = str(tmp_path / ("idx.db" if backend == "milvus" else "idx"))
    index = create(dest, info)
    try:
        index.add(xb, labels, sources)
        index.save()
    finally:
        index.close()
    code, out, err = run_hashing("info", dest, "--items", "--json", timeout=300)
    assert code == 0, err
    items = json.loads(out)["items"]
    assert [set(it) for it in items] == [{"id", "source", "label", "class"}] * 40
    assert items[0]["label"] is None and items[0]["class"] is None
    for it, label in zip(items[1:], labels[1:].tolist()):
        assert it["label"] == label and it["class"] == (names[label] if label < 9 else None), it
    assert any(it["class"] is None and it["label"] == 9 for it in items)
    code, out, err = run_hashing("info", digits_index, "--items", "--json")    # a built-in dataset: no names
    assert code == 0 and all(it["class"] is None and it["label"] is not None for it in json.loads(out)["items"])
