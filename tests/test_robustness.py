"""Bad files, bad options and bad places, as a hostile user tries them, through the command line:
each is one `Error:` line and a non-zero exit, nothing already written changes, and nothing is
created where a command only reads."""

import hashlib
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import one_line_error, run_hashing
from hashing.images.datasets import load_dataset
from hashing.images.reader import read_image


def snapshot(path):
    """Every file under path (or the file) with its bytes' hash: to prove nothing changed."""
    if os.path.isfile(path):
        return {"": hashlib.sha256(open(path, "rb").read()).hexdigest()}
    return {os.path.relpath(os.path.join(d, f), path): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, fs in os.walk(path) for f in fs}


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "digit.png"
    Image.fromarray(load_dataset("digits", "test").images[0]).save(path)
    return path


def edited_copy(folder, dest, manifest, edit):
    """A copy of a run or index folder whose manifest (and files) `edit(manifest_dict, folder)` changed."""
    shutil.copytree(folder, dest)
    content = json.loads((dest / manifest).read_text())
    edit(content, dest)
    (dest / manifest).write_text(json.dumps(content))
    return dest


def set_model(key, value):
    def edit(config, run):
        config["model"][key] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (lambda c, r: c.update(model=None), "invalid model config"),
    (set_model("estimator_options", {"bogus": 1}), "estimator_options"),
    (set_model("image_size", 0), "image_size"),
    (set_model("image_size", 100000), "image_size"),
    (set_model("std", 0), "std"),
    (set_model("bits", "64"), "bits"),
    (lambda c, r: c["files"].update(weights="../../etc/passwd"), "not a file name"),
    (lambda c, r: c.update(fingerprint="0" * 16), "fingerprint"),
    (lambda c, r: (r / c["files"]["weights"]).unlink(), "missing"),
], ids=["model-null", "estimator-options", "image-size-0", "image-size-huge", "std-0", "bits-string",
        "weights-path", "fingerprint", "weights-missing"])
def test_hand_edited_run_folders_are_refused_by_file_and_field(digits_run, tmp_path, edit, message):
    run = edited_copy(digits_run, tmp_path / "run", "config.json", edit)
    code, _, err = run_hashing("encode", "--model", run, "--dataset", "digits", "--out", tmp_path / "c.npz", "--quiet")
    line = one_line_error(code, err)
    assert message in line and str(run) in line
    assert not (tmp_path / "c.npz").exists()


def resum(meta, idx):
    """Checksums of the edited files, as a deliberate editor would recompute them: past the checksum
    check, to reach the field checks."""
    meta["sha256"] = {role: hashlib.sha256((idx / name).read_bytes()).hexdigest() for role, name in meta["files"].items()}


def rewrite_items(**arrays):
    def edit(meta, idx):
        path = idx / meta["files"]["items"]
        with np.load(path) as z:
            items = {k: z[k] for k in z.files}
        items.update(arrays)
        with open(path, "wb") as f:
            np.savez(f, **items)
        resum(meta, idx)
    return edit


def truncate_items(meta, idx):
    path = idx / meta["files"]["items"]
    path.write_bytes(path.read_bytes()[:100])
    resum(meta, idx)


def wrong_dimension(meta, idx):
    import faiss

    index = faiss.IndexBinaryFlat(32)
    index.add(np.zeros((meta["count"], 4), np.uint8))
    faiss.write_index_binary(index, str(idx / meta["files"]["index"]))
    resum(meta, idx)


def swap_model(meta, idx):
    """The model record of another run (a self-consistent manifest, but not these codes' model)."""
    meta["info"]["model"].update(fingerprint="0123456789abcdef", run_dir="/elsewhere/run")


@pytest.mark.parametrize("edit, message", [
    (lambda m, i: m["info"].update(model=None), "model"),
    (lambda m, i: m["info"].update(bits="64"), "bits"),
    (lambda m, i: m.update(count=5), "counts disagree"),
    (truncate_items, "damaged"),
    (rewrite_items(labels=np.zeros((1437, 2), np.int64)), "wrong shape"),
    (wrong_dimension, "32-bit codes"),
    (lambda m, i: (i / m["files"]["items"]).write_bytes(b"x"), "checksum"),
    (lambda m, i: m.pop("sha256"), "checksums"),
    (lambda m, i: m["sha256"].pop("items"), "sha256.items"),
    (swap_model, "model record was edited or swapped"),
    (lambda m, i: m.update(backend="milvus"), "backend"),
    (lambda m, i: m["info"].update(index_type="BOGUS9"), "info.index_type"),
    (lambda m, i: m.update(extra=1), "unknown field 'extra'"),
    (lambda m, i: m["info"].update(extra=1), "unknown field 'info.extra'"),
    (lambda m, i: m.update(format="hashing-index/9"), "format"),
], ids=["model-null", "bits-string", "count", "truncated-items", "labels-shape", "index-dimension", "checksum",
        "no-checksums", "no-items-checksum", "model-swapped", "backend", "index-type", "unknown-field", "unknown-info",
        "format"])
def test_hand_edited_indexes_are_refused_by_file_and_field(digits_index, digit_png, tmp_path, edit, message):
    idx = edited_copy(digits_index, tmp_path / "idx", "meta.json", edit)
    code, _, err = run_hashing("query", digit_png, "--index", idx)
    line = one_line_error(code, err)
    assert message in line and str(idx) in line


@pytest.mark.parametrize("case", ["train-out", "encode-out", "evaluate-json", "query-grid", "estimators-plot",
                                  "index-out-empty", "faiss-db-name", "milvus-folder", "index-type-format",
                                  "index-type-lists", "collection-name", "train-out-foreign"])
def test_bad_options_and_places_fail_before_any_work(case, digits_run, digits_index, digit_png, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"mine")
    index = ["index", "--model", digits_run, "--dataset", "digits"]
    args, message = {
        "train-out": (["train", "--dataset", "digits", "--out", blocker / "run"], "is a file"),
        "encode-out": (["encode", "--model", digits_run, "--dataset", "digits", "--out", blocker / "c.npz"], "is a file"),
        "evaluate-json": (["evaluate", "--model", digits_run, "--dataset", "digits", "--json", blocker / "e.json"],
                          "is a file"),
        "query-grid": (["query", digit_png, "--index", digits_index, "--grid", blocker / "g.png"], "is a file"),
        "estimators-plot": (["estimators", "--plot", blocker / "p.png"], "is a file"),
        "index-out-empty": ([*index, "--out", ""], "empty"),
        "faiss-db-name": ([*index, "--backend", "faiss", "--out", tmp_path / "x.db"], "FAISS index is a folder"),
        "milvus-folder": ([*index, "--backend", "milvus", "--out", tmp_path / "folder"], "names a folder"),
        "index-type-format": ([*index, "--out", tmp_path / "i", "--index-type", "{0}"], "index-type"),
        "index-type-lists": ([*index, "--out", tmp_path / "i", "--index-type", "BIVF100000"], "inverted lists"),
        "collection-name": ([*index, "--out", tmp_path / "m.db", "--collection", "bad name!"], "--collection"),
        "train-out-foreign": (["train", "--dataset", "digits", "--out", foreign], "other files"),
    }[case]
    before = snapshot(tmp_path)
    code, _, err = run_hashing(*args)
    assert message in one_line_error(code, err)
    assert snapshot(tmp_path) == before                     # nothing written, nothing created
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_query_never_creates_or_changes_a_milvus_location(digit_png, tmp_path):
    pytest.importorskip("milvus_lite")
    (tmp_path / "zero.db").write_bytes(b"")
    con = sqlite3.connect(tmp_path / "other.db")
    con.execute("CREATE TABLE notes (t TEXT)")
    con.commit()
    con.close()
    for name, message in [("missing.db", "no Milvus Lite database"), ("zero.db", "not a Milvus Lite database"),
                          ("other.db", "not a Milvus Lite database")]:
        before = snapshot(tmp_path)
        code, _, err = run_hashing("query", digit_png, "--index", tmp_path / name)
        assert message in one_line_error(code, err)
        assert snapshot(tmp_path) == before and sorted(os.listdir(tmp_path)) == sorted(["zero.db", "other.db"])


def test_index_refuses_a_file_that_is_not_milvus(digits_run, tmp_path):
    pytest.importorskip("milvus_lite")
    con = sqlite3.connect(tmp_path / "other.db")
    con.execute("CREATE TABLE notes (t TEXT)")
    con.commit()
    con.close()
    before = snapshot(tmp_path)
    code, _, err = run_hashing("index", "--model", digits_run, "--dataset", "digits", "--out", tmp_path / "other.db")
    assert "not a Milvus Lite database" in one_line_error(code, err)
    assert snapshot(tmp_path) == before


@pytest.mark.system               # another process holds the Milvus Lite file
def test_milvus_errors_are_our_one_line_with_the_real_cause(digits_run, digit_png, tmp_path):
    pytest.importorskip("milvus_lite")
    db = tmp_path / "m.db"
    code, out, err = run_hashing("index", "--model", digits_run, "--dataset", "digits", "--split", "test",
                                 "--out", db, "--quiet")
    assert code == 0, err
    holder = subprocess.Popen([sys.executable, "-c", (
        "import warnings; warnings.simplefilter('ignore')\n"
        f"from hashing.indexes import open_index; ix = open_index({str(db)!r}); print('open', flush=True)\n"
        "import time; time.sleep(60)")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        code, _, err = run_hashing("query", digit_png, "--index", db)
        assert "open in another process" in one_line_error(code, err)
    finally:
        holder.kill()
        holder.wait()
    code, _, err = run_hashing("query", digit_png, "--index", "http://127.0.0.1:9")
    assert "cannot reach Milvus" in one_line_error(code, err)


def test_sixteen_bit_images_are_scaled_not_crushed(digits_index, digit_png, tmp_path):
    digit = np.asarray(Image.open(digit_png))
    wide = tmp_path / "digit16.png"
    Image.fromarray(digit.astype(np.uint16) * 257).save(wide)              # 16-bit grayscale PNG
    assert Image.open(wide).mode.startswith("I")
    assert np.abs(read_image(wide).astype(int) - read_image(digit_png).astype(int)).max() <= 1
    a = json.loads(run_hashing("query", digit_png, "--index", digits_index, "--json")[1])[0]["results"]
    b = json.loads(run_hashing("query", wide, "--index", digits_index, "--json")[1])[0]["results"]
    assert [x["id"] for x in a] == [x["id"] for x in b]


def decompression_bomb(path, side=20000):
    """A PNG that declares side x side pixels (its data is a few bytes): Pillow refuses it on open."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_image_folders_skip_and_count_unreadable_files(digits_run, digit_png, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    test = load_dataset("digits", "test")
    for i in range(4):
        Image.fromarray(test.images[i]).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "empty.jpg").write_bytes(b"")
    decompression_bomb(folder / "bomb.png")
    code, out, err = run_hashing("index", "--model", digits_run, "--images", folder, "--out", tmp_path / "idx", "--quiet")
    assert code == 0, err
    assert "indexed 4 items" in out and "skipped 3 unreadable file(s)" in out and "bomb.png" in out
    sources = [x["source"] for x in json.loads(run_hashing("query", digit_png, "--index", tmp_path / "idx", "-k", "4",
                                                          "--json")[1])[0]["results"]]
    assert not any(s.endswith(("broken.png", "empty.jpg", "bomb.png")) for s in sources)
    code, _, err = run_hashing("index", "--model", digits_run, "--images", folder, "--out", tmp_path / "i2", "--strict", "--quiet")
    assert "not a readable image" in one_line_error(code, err) or "too large" in err
    code, _, err = run_hashing("query", folder / "bomb.png", "--index", tmp_path / "idx", "-k", "4")
    assert "image too large" in one_line_error(code, err)


def test_encode_writes_through_a_symlink_and_refuses_special_files(digits_run, tmp_path):
    target = tmp_path / "real.npz"
    target.write_bytes(b"old")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    code, _, err = run_hashing("encode", "--model", digits_run, "--dataset", "digits", "--out", link, "--quiet")
    assert code == 0, err
    assert link.is_symlink() and np.load(target)["codes"].shape == (360, 8)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, _, err = run_hashing("encode", "--model", digits_run, "--dataset", "digits", "--out", fifo, timeout=120)
    assert "not a regular file" in one_line_error(code, err)
    assert not fifo.is_file() and fifo.exists()


def test_written_files_get_the_usual_permissions(digits_run, digits_index):
    umask = os.umask(0)
    os.umask(umask)
    for folder in (digits_run, digits_index):
        for p in folder.iterdir():
            assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p


def test_a_non_utf8_file_name_indexes_into_milvus(digits_run, tmp_path):
    pytest.importorskip("milvus_lite")
    folder = tmp_path / "imgs"
    folder.mkdir()
    test = load_dataset("digits", "test")
    Image.fromarray(test.images[0]).save(folder / "plain.png")
    odd = os.path.join(os.fsencode(folder), b"caf\xe9.png")          # Latin-1 bytes: not UTF-8
    Image.fromarray(test.images[1]).save(odd, format="PNG")
    db = tmp_path / "m.db"
    code, out, err = run_hashing("index", "--model", digits_run, "--images", folder, "--out", db, "--quiet")
    assert code == 0 and "indexed 2 items" in out, err
    code, out, err = run_hashing("query", folder / "plain.png", "--index", db, "-k", "2", "--json")
    sources = sorted(x["source"] for x in json.loads(out)[0]["results"])
    assert code == 0 and sources[0].endswith("caf\\xe9.png") and sources[1].endswith("plain.png"), (out, err)
