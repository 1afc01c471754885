"""`hashing index --sync` on FAISS flat, IVF, HNSW and Milvus Lite: new files added, deleted files removed,
edited files re-encoded, touched and unchanged files untouched (same ids); unreadable files skipped (a
changed one keeps its old item); items from elsewhere never touched; a sync with nothing to do commits
nothing. The same on a Milvus server: tests/test_milvus_server.py."""

import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import one_line_error, run_hashing, write_digit_folder


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sync") / "digits"
    write_digit_folder(root, limit=30)
    return root


def items(location):
    from hashing.indexes import open_index

    with open_index(str(location)) as index:
        ids, labels, sources, stamps = index.items()
        return dict(zip(sources, ids.tolist())), index.count, index.next_id


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw", "milvus"])
def test_sync_adds_removes_re_encodes_and_keeps_the_rest(digits_run, digit_files, tmp_path, index_type):
    from hashing.indexes import open_index
    from hashing.workflows.index import build_index
    from hashing.workflows.sync import sync_index

    if index_type == "milvus":
        pytest.importorskip("milvus_lite")
    folder = tmp_path / "photos"
    shutil.copytree(digit_files / "train", folder)
    other = tmp_path / "other"                          # a second folder appended: never touched by the sync
    shutil.copytree(digit_files / "test" / "one", other)
    loc = str(tmp_path / ("idx.db" if index_type == "milvus" else "idx"))
    build_index(digits_run, loc, images=folder, index_type="flat" if index_type == "milvus" else index_type,
                progress=False)
    build_index(digits_run, loc, images=other, append=True, progress=False)
    before, count, next_id = items(loc)
    files = sorted(folder.rglob("*.png"))
    gone, edited, touched, broken = files[0], files[1], files[2], files[3]
    gone.unlink()
    Image.open(edited).rotate(90).save(edited)
    touched.touch()
    broken.write_bytes(b"not an image any more")        # changed and unreadable: its old item stays
    shutil.copy(files[4], files[4].parent / "copy.png")
    (files[4].parent / "junk.png").write_bytes(b"junk")   # new and unreadable: skipped
    r = sync_index(digits_run, loc, images=folder, progress=False)
    assert (r.added, r.removed, r.changed, r.unchanged) == (1, 1, 1, 27)
    assert r.kept_old == [str(broken)] and "junk.png" in r.skipped and str(broken.name) in r.skipped
    after, count2, next_id2 = items(loc)
    assert count2 == count and next_id2 == next_id + 2
    key = lambda p: str(p.resolve())  # noqa: E731
    assert key(gone) not in after and after[key(edited)] >= next_id and key(files[4].parent / "copy.png") in after
    kept = {s: i for s, i in before.items() if s not in (key(gone), key(edited))}
    assert all(after[s] == i for s, i in kept.items())          # unchanged, touched, broken, other/: same ids
    with open_index(loc) as index:                              # the removed ids never answer again
        assert index.missing([before[key(gone)], before[key(edited)]]) == [before[key(gone)], before[key(edited)]]
        _, I = index.search(np.zeros((1, 8), np.uint8), index.count)
        assert not {before[key(gone)], before[key(edited)]} & set(I.ravel().tolist())
    # nothing to do: nothing is written
    broken.unlink()
    r = sync_index(digits_run, loc, images=folder, progress=False)
    assert (r.added, r.removed, r.changed) == (0, 1, 0)
    stamp = (tmp_path / "idx" / "meta.json").stat().st_mtime_ns if index_type != "milvus" else None
    r = sync_index(digits_run, loc, images=folder, progress=False)
    assert (r.added, r.removed, r.changed, r.unchanged) == (0, 0, 0, 29)
    if stamp is not None:
        assert (tmp_path / "idx" / "meta.json").stat().st_mtime_ns == stamp


def test_sync_on_the_command_line_and_what_it_refuses(digits_run, digit_files, tmp_path):
    from hashing.indexes.backends import writer_lock

    folder = tmp_path / "photos"
    shutil.copytree(digit_files / "test", folder)
    idx = tmp_path / "idx"
    code, out, err = run_hashing("index", "--model", digits_run, "--images", folder, "--out", idx,
                                 "--quiet")
    assert code == 0, err
    next(folder.rglob("*.png")).unlink()
    lock = writer_lock(str(idx)).acquire()
    try:
        line = one_line_error(*run_hashing("index", "--model", digits_run, "--images", folder,
                                           "--out", idx, "--sync", "--quiet")[::2])
        assert "being written by" in line
    finally:
        lock.release()
    code, out, err = run_hashing("index", "--model", digits_run, "--images", folder, "--out", idx,
                                 "--sync", "--quiet")
    assert code == 0 and "0 added, 1 removed, 0 changed, 29 unchanged (29 items in all" in out, err
    for extra, word in ((("--append",), "--append"), (("--dataset", "digits"), "--dataset")):
        line = one_line_error(*run_hashing("index", "--model", digits_run, "--out", idx, "--sync", *extra)[::2])
        assert word in line or "--images" in line
    line = one_line_error(*run_hashing("index", "--model", digits_run, "--images", folder,
                                       "--out", tmp_path / "none", "--sync")[::2])
    assert "none" in line
