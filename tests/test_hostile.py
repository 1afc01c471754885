"""The hostile cases a probe of the landed code still got through (issue 37): each is now a one-line
error and a non-zero exit, or a documented behaviour; a full disk and a kill -9 in a first save leave
nothing that stops the next run."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import one_line_error, run_hashing, small_tmpfs
from hashing.images.datasets import load_dataset


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "digit.png"
    Image.fromarray(load_dataset("digits", "test").images[0]).save(path)
    return path


def rewrite_weights(run, change):
    """A run folder whose weights `change(state)` edited, with a fingerprint that matches them again."""
    from safetensors.torch import load, save

    from hashing.model.checkpoint import fingerprint

    config = json.loads((run / "config.json").read_text())
    state = load((run / config["files"]["weights"]).read_bytes())
    change(state)
    data = save(state)
    fp = fingerprint(data)
    (run / f"model-{fp}.safetensors").write_bytes(data)
    config.update(fingerprint=fp)
    config["files"]["weights"] = f"model-{fp}.safetensors"
    (run / "config.json").write_text(json.dumps(config))


def test_weights_with_nan_are_refused_on_load(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)

    def poison(state):
        name = next(k for k, v in state.items() if v.is_floating_point())
        state[name][..., 0] = float("nan")
    rewrite_weights(run, poison)
    code, _, err = run_hashing("encode", "--model", run, "--dataset", "digits", "--out", tmp_path / "c.npz")
    assert "NaN or infinite" in one_line_error(code, err)
    assert not (tmp_path / "c.npz").exists()


def test_a_config_that_is_a_folder_is_refused(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    (run / "config.json").unlink()
    (run / "config.json").mkdir()
    code, _, err = run_hashing("encode", "--model", run, "--dataset", "digits", "--out", tmp_path / "c.npz")
    assert "is a folder" in one_line_error(code, err)


@pytest.mark.parametrize("case", ["fifo-query", "proc-out", "sys-out", "image-size", "max-upload-nan",
                                  "max-upload-inf", "megapixels-nan", "eval-k", "eval-same-split", "eval-copies",
                                  "collection-empty", "wait-negative"])
def test_bad_values_are_one_line_before_any_work(case, digits_run, digits_index, digit_png, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    evaluate = ["evaluate", "--model", digits_run, "--dataset", "digits", "--baselines", ""]
    args, words = {
        "fifo-query": (["query", fifo, "--index", digits_index], "not a regular file"),
        "proc-out": (["encode", "--model", digits_run, "--dataset", "digits", "--out", "/proc/codes.npz"],
                     "does not take new files"),
        "sys-out": (["index", "--model", digits_run, "--dataset", "digits", "--out", "/sys/idx"],
                    "does not take new files"),
        "image-size": (["train", "--dataset", "digits", "--out", tmp_path / "r", "--image-size", "100000"],
                       "--image-size must be an integer from 16 to 256"),
        "max-upload-nan": (["serve", "--index", digits_index, "--max-upload", "nan"], "--max-upload"),
        "max-upload-inf": (["serve", "--index", digits_index, "--max-upload", "inf"], "--max-upload"),
        "megapixels-nan": (["serve", "--index", digits_index, "--max-megapixels", "nan"], "--max-megapixels"),
        "eval-k": ([*evaluate, "--k", "999999999"], "more than the database's 1437 images"),
        "eval-same-split": ([*evaluate, "--database-split", "test"], "both test"),
        "eval-copies": ([*evaluate, "--task", "copies", "--copies", "100000"], "more than the 360 images"),
        "collection-empty": (["query", digit_png, "--index", tmp_path / "m.db", "--collection", ""], "--collection"),
        "wait-negative": (["index", "--model", digits_run, "--dataset", "digits", "--out", tmp_path / "i", "--wait",
                           "-1"], "--wait"),
    }[case]
    code, _, err = run_hashing(*args, timeout=120)
    assert words in one_line_error(code, err)
    assert not (tmp_path / "r").exists() and not (tmp_path / "i").exists() and not (tmp_path / "m.db").exists()


@pytest.mark.parametrize("make", ["folder", "loop"])
def test_a_manifest_that_is_a_folder_or_a_loop_is_named(make, digits_index, digit_png, tmp_path):
    idx = tmp_path / "idx"
    shutil.copytree(digits_index, idx)
    (idx / "meta.json").unlink()
    (idx / "meta.json").mkdir() if make == "folder" else (idx / "meta.json").symlink_to("meta.json")
    code, _, err = run_hashing("query", digit_png, "--index", idx)
    assert ("is a folder" if make == "folder" else "broken symlink") in one_line_error(code, err)


def test_k_with_radius_means_at_most_k_within_it(digits_index, digit_png):
    code, out, err = run_hashing("query", digit_png, "--index", digits_index, "--radius", "20", "--json")
    everything = json.loads(out)[0]["results"]
    assert code == 0 and len(everything) > 3 and all(h["distance"] <= 20 for h in everything)
    code, out, err = run_hashing("query", digit_png, "--index", digits_index, "--radius", "20", "-k", "3", "--json")
    assert code == 0 and json.loads(out)[0]["results"] == everything[:3]


# ---- a full disk ---------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs (see conftest.small_tmpfs)."""
    with small_tmpfs(tmp_path, "1m") as where:
        yield where


def fill(disk, leave: int = 0):
    """Fill the disk but `leave` bytes."""
    free = shutil.disk_usage(disk).free - leave
    with open(disk / "filler", "wb") as f:
        try:
            f.write(b"\0" * max(0, free))
        except OSError:
            pass


def test_a_full_disk_is_one_line_and_leaves_the_old_index_and_no_new_files(digits_run, digits_index, digit_png,
                                                                           small_disk):
    pytest.importorskip("milvus_lite")
    idx, lite = small_disk / "idx", small_disk / "m.db"
    shutil.copytree(digits_index, idx)
    append = ["index", "--model", digits_run, "--dataset", "digits", "--split", "test", "--quiet"]
    code, _, err = run_hashing(*append, "--out", small_disk.parent / "m.db")
    assert code == 0, err
    shutil.copy(small_disk.parent / "m.db", lite)
    before = [run_hashing("query", digit_png, "--index", where, "--json") for where in (idx, lite)]
    fill(small_disk)
    files_before = sorted(os.listdir(idx))
    for args in ([*append, "--out", idx, "--append"], [*append, "--out", lite, "--append"],
                 [*append, "--out", small_disk / "new"], [*append, "--out", small_disk / "new.db"],
                 ["encode", "--model", digits_run, "--dataset", "digits", "--out", small_disk / "c.npz", "--quiet"]):
        code, _, err = run_hashing(*args, timeout=300)
        assert "no space left" in one_line_error(code, err), args
    assert sorted(os.listdir(idx)) == files_before                       # the old version, nothing beside it
    os.unlink(small_disk / "filler")                                      # room again: what does it hold now?
    assert [run_hashing("query", digit_png, "--index", where, "--json") for where in (idx, lite)] == before
    left = sorted(p.name for p in small_disk.iterdir() if not p.name.startswith("."))
    assert left == ["idx", "m.db"]                                        # no new folder, no 0-byte .db


def test_a_full_disk_in_training_leaves_no_run(small_disk):
    fill(small_disk, leave=20_000)
    code, _, err = run_hashing("train", "--dataset", "digits", "--epochs", "1", "--bits", "64", "--out",
                               small_disk / "run", "--quiet", timeout=300)
    assert "no space left" in one_line_error(code, err)
    assert not (small_disk / "run").exists()                    # the folder it made goes again


# ---- a kill -9 in the very first save ----------------------------------------------------------------------
# The killed commands are real processes, forks of test_crash.ForkServer (no interpreter start each); the
# probe that lists the steps and the reruns run in this process.


@pytest.fixture
def forks():
    from test_crash import shared_fork_server

    return shared_fork_server()


def crash_points(args, log):
    code, _, err = run_hashing(*args, env={**os.environ, "HASHING_CRASH_LOG": str(log)})
    assert code == 0, err
    return log.read_text().splitlines()


@pytest.mark.system
def test_a_kill_in_the_first_save_of_an_index_leaves_nothing_that_stops_the_rerun(digits_run, digit_png, tmp_path,
                                                                                  forks):
    args = ["index", "--model", digits_run, "--dataset", "digits", "--split", "test", "--quiet"]
    points = crash_points([*args, "--out", tmp_path / "probe"], tmp_path / "points.log")
    assert len(points) >= 5 and "renamed meta.json" in points[-1], points
    for n in range(1, len(points) + 1):
        out = tmp_path / f"idx{n}"
        code, _, err = forks.run(*args, "--out", out, env={**os.environ, "HASHING_CRASH_AT": str(n)})
        assert code == -9, (n, points[n - 1], err)
        code, _, err = run_hashing(*args, "--out", out)          # the rerun: no "other files", no "exists"
        assert code == 0, (n, points[n - 1], err)
        names = sorted(os.listdir(out))                           # one version, and the writer lock
        assert len(names) == 4 and names[0] == ".writer.lock" and names[-1] == "meta.json", names
        code, out_json, err = run_hashing("query", digit_png, "--index", out, "--json")
        assert code == 0 and len(json.loads(out_json)[0]["results"]) == 10


@pytest.mark.system
def test_a_kill_in_the_first_save_of_a_run_leaves_nothing_that_stops_the_rerun(tmp_path, forks):
    args = ["train", "--dataset", "digits", "--epochs", "1", "--bits", "64", "--max-images", "300", "--quiet"]
    points = crash_points([*args, "--out", tmp_path / "probe"], tmp_path / "points.log")
    n = next(i for i, line in enumerate(points, 1) if line.split(" ", 1)[1].startswith("renamed model"))
    out = tmp_path / "run"
    code, _, err = forks.run(*args, "--out", out, env={**os.environ, "HASHING_CRASH_AT": str(n)})
    assert code == -9 and any(f.name.endswith(".safetensors") for f in out.iterdir()), err
    code, _, err = run_hashing(*args, "--out", out, timeout=300)
    assert code == 0, err
    assert (out / "config.json").is_file()
    assert len([f for f in out.iterdir() if f.name.endswith(".safetensors")]) == 1


# ---- hand-edited manifests: numbers beyond int64, JSON nested too deeply ---------------------------------


NESTED = "[" * 100_000 + "]" * 100_000        # valid JSON that Python's parser cannot follow (RecursionError)


@pytest.mark.parametrize("edit", ["next-id-int64", "nested"])
def test_a_hand_edited_index_manifest_is_one_line_naming_it(edit, digits_index, digit_png, tmp_path):
    idx = tmp_path / "idx"
    shutil.copytree(digits_index, idx)
    if edit == "nested":
        (idx / "meta.json").write_text(NESTED)
        words = f"{idx / 'meta.json'} is damaged"
    else:
        meta = json.loads((idx / "meta.json").read_text())
        meta["next_id"] = 9223372036854775808
        (idx / "meta.json").write_text(json.dumps(meta))
        words = f"{idx / 'meta.json'}: next_id must be an integer from 1437 to 9223372036854775807"
    before = sorted(os.listdir(idx))
    for args in (["info", idx], ["info", idx, "--items", "--json"], ["remove", "--index", idx, "3"],
                 ["query", digit_png, "--index", idx]):
        code, _, err = run_hashing(*args)
        assert code == 1 and words in one_line_error(code, err), (args, err)
    assert sorted(os.listdir(idx)) == before


def test_a_run_config_nested_too_deeply_is_one_line(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    (run / "config.json").write_text(NESTED)
    for args in (["info", run], ["encode", "--model", run, "--dataset", "digits", "--out", tmp_path / "c.npz"]):
        code, _, err = run_hashing(*args)
        assert str(run / "config.json") in one_line_error(code, err), (args, err)
