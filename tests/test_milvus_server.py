"""A real Milvus server (milvus-server from PyPI's `milvus`, started once for the session by the
`milvus_server` fixture) answers index, query, sync, remove and info exactly like FAISS flat: the
same ids, distances and order; and a server that is down or wrong is one line naming the URI."""

import shutil

import numpy as np
import pytest

from conftest import one_line_error, run_hashing, write_digit_folder


def query(location, images, collection=None):
    """Every item ranked for each image (the whole ranking: no tie group cut at a k)."""
    from hashing.retrieval import query_images

    return [[(h.id, h.distance, h.source) for h in r.hits] for r in query_images(images, str(location), radius=64,
                                                                                   collection=collection)]


def info(location, collection=None):
    from hashing.inventory import describe

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

    from hashing.data import load_dataset

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
    from hashing.retrieval import build_index

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
    from hashing.sync import sync_index

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
    from hashing.inventory import remove_items

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
