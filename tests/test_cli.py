"""The commands end to end on scikit-learn's digits, and every user error as one line + exit code."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import run_hashing, run_hashing_process
from hashing.cli.main import cli
from hashing.images.datasets import load_dataset


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def query_png(tmp_path_factory):
    test = load_dataset("digits", "test")
    path = tmp_path_factory.mktemp("q") / "digit.png"
    Image.fromarray(test.images[0]).resize((56, 56)).save(path)  # another size on purpose
    return path, int(test.labels[0])


def test_train_index_query_end_to_end(tmp_path, query_png):
    run, idx = tmp_path / "run", tmp_path / "idx"
    r = invoke("train", "--dataset", "digits", "--out", run, "--bits", "32", "--epochs", "1", "--max-images", "100",
               "--quiet")
    assert r.exit_code == 0, r.output
    files = json.loads((run / "config.json").read_text())["files"]
    # The default trains no decoder: its picture is test images and their nearest training images.
    assert {files["weights"], files["history"], "config.json", "neighbours.png"} == set(os.listdir(run))
    assert "neighbours.png" in r.output
    r = invoke("index", "--model", run, "--dataset", "digits", "--split", "train", "--out", idx, "--quiet")
    assert r.exit_code == 0 and "indexed 1437 items" in r.output, r.output
    r = invoke("query", query_png[0], "--index", idx, "-k", "7", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert len(out) == 1 and out[0]["image"] == str(query_png[0])
    res = out[0]["results"]
    assert len(res) == 7
    d = [x["distance"] for x in res]
    assert d == sorted(d)
    assert all(set(x) == {"id", "distance", "label", "source", "class"} for x in res)
    assert all(x["source"].startswith("digits/train/") for x in res)
    r = invoke("query", query_png[0], "--index", idx, "-k", "3", "--grid", tmp_path / "grid.png")
    assert r.exit_code == 0 and "rank" in r.output and (tmp_path / "grid.png").exists()
    r = invoke("encode", "--model", run, "--dataset", "digits", "--split", "test", "--out", tmp_path / "c.npz",
               "--quiet")
    assert r.exit_code == 0, r.output
    z = np.load(tmp_path / "c.npz")
    assert z["codes"].shape == (360, 4) and z["codes"].dtype == np.uint8 and z["labels"].dtype == np.int64


def test_train_options_reach_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    small = ("--max-images", "64")                            # what is checked is the config, not the weights
    r = invoke("train", "--dataset", "digits", "--out", run, "--bits", "16", "--epochs", "1", "--views", "crop",
               "--schedule", "cosine", "--batch-size", "256", "--scale-lr", *small, "--quiet")
    assert r.exit_code == 0, r.output
    train = json.loads((run / "config.json").read_text())["train"]
    assert train["objective"]["views"] == "crop" and train["schedule"] == "cosine" and train["scale_lr"]
    assert train["epochs"] == 1 and train["batch_size"] == 256
    r = invoke("train", "--dataset", "digits", "--out", tmp_path / "cp", "--bits", "16", "--epochs", "1",
               "--recipe", "copies", "--view-options", '{"rescale": [0.2, 0.5]}', *small, "--quiet")
    assert r.exit_code == 0, r.output
    objective = json.loads((tmp_path / "cp" / "config.json").read_text())["train"]["objective"]
    assert objective["view_options"] == {"brightness": [0.6, 2.2], "contrast": [0.6, 1.8], "blur": [0.5, 2.0],
                                         "rescale": [0.2, 0.5]}                         # recipe's, flag's
    r = invoke("train", "--dataset", "digits", "--out", tmp_path / "sup", "--bits", "16", "--epochs", "1",
               "--recipe", "supervised", *small, "--quiet")
    assert r.exit_code == 0, r.output
    train = json.loads((tmp_path / "sup" / "config.json").read_text())["train"]
    assert train["schedule"] == "cosine" and train["epochs"] == 1     # recipe default, flag wins


def test_query_neighbours_mostly_share_the_label(digits_index, query_png):
    r = invoke("query", query_png[0], "--index", digits_index, "-k", "10", "--json")
    labels = [x["label"] for x in json.loads(r.output)[0]["results"]]
    assert sum(lab == query_png[1] for lab in labels) >= 6


def test_radius_returns_everything_within(digits_index, query_png):
    r = invoke("query", query_png[0], "--index", digits_index, "--radius", "12", "--json")
    res = json.loads(r.output)[0]["results"]
    assert all(x["distance"] <= 12 for x in res)
    k = len(res) + 1
    r = invoke("query", query_png[0], "--index", digits_index, "-k", k, "--json")
    assert json.loads(r.output)[0]["results"][-1]["distance"] > 12


def test_index_a_folder_of_images(digits_run, tmp_path, query_png):
    folder = tmp_path / "imgs" / "sub"
    folder.mkdir(parents=True)
    test = load_dataset("digits", "test")
    for i in range(5):
        Image.fromarray(test.images[i]).save(folder / f"{i}.png")
    Image.fromarray(test.images[5]).convert("RGB").save(folder / "5.jpg")
    r = invoke("index", "--model", digits_run, "--images", tmp_path / "imgs", "--out", tmp_path / "idx", "--quiet")
    assert r.exit_code == 0, r.output
    r = invoke("query", folder / "3.png", "--index", tmp_path / "idx", "-k", "6", "--json")
    res = json.loads(r.output)[0]["results"]
    # Every indexed file comes back (k = 6); the query's own file at distance 0, in the first place
    # or tied there with another digit of its kind (64-bit codes name kinds).
    assert len(res) == 6 and res[0]["distance"] == 0
    own = next(h for h in res if h["source"] == str((folder / "3.png").resolve()))
    assert own["distance"] == 0
    assert own["label"] == 0 and own["class"] == "sub"                # ImageFolder: the first folder is the class


@pytest.mark.system
def test_the_console_script_trains_indexes_and_queries(tmp_path, query_png):
    """The installed console script, each command a new process, end to end (the other tests run it in-process)."""
    run, idx = tmp_path / "run", tmp_path / "idx"
    code, out, err = run_hashing_process("train", "--dataset", "digits", "--out", run, "--bits", "32", "--epochs", "1",
                                         "--max-images", "200", "--quiet")
    assert code == 0 and (run / "config.json").is_file() and "neighbours.png" in out, err
    code, out, err = run_hashing_process("index", "--model", run, "--dataset", "digits", "--split", "train", "--out", idx,
                                         "--quiet")
    assert code == 0 and "indexed 1437 items" in out, err
    code, out, err = run_hashing_process("query", query_png[0], "--index", idx, "-k", "7", "--json")
    assert code == 0 and "Traceback" not in err, err
    res = json.loads(out)[0]["results"]
    assert len(res) == 7 and all(x["source"].startswith("digits/train/") for x in res)
    code, _, err = run_hashing_process("query", tmp_path / "nope.png", "--index", idx)
    assert code != 0 and "Traceback" not in err and err.strip().startswith("Error") and len(err.strip().splitlines()) == 1, err


def error_of(*args):
    """Run the command as the console script would: the user sees one line and a non-zero exit, never a traceback."""
    code, _, err = run_hashing(*args)
    return code, err.strip()


@pytest.mark.parametrize("case", ["missing", "corrupt", "not-checkpoint", "k-too-large", "unknown-dataset",
                                  "offline", "bits-mismatch", "empty-folder", "bad-bits", "bad-seed", "huge-seed",
                                  "nan-lr", "nan-balance", "bad-estimator", "bad-radius", "zero-weights",
                                  "bad-neighbours", "neighbours-without-contrastive", "bad-temperature",
                                  "word-temperature", "view-options-not-json", "view-options-bad-range"])
def test_user_errors_are_one_line(case, tmp_path, digits_run, digits_index, query_png):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    args = {
        "missing": ["query", tmp_path / "nope.png", "--index", digits_index],
        "corrupt": ["query", bad, "--index", digits_index],
        "not-checkpoint": ["index", "--model", tmp_path, "--dataset", "digits", "--out", tmp_path / "i"],
        "k-too-large": ["query", query_png[0], "--index", digits_index, "-k", "100000"],
        "unknown-dataset": ["train", "--dataset", "cifar", "--out", tmp_path / "r"],
        "offline": ["train", "--dataset", "mnist", "--data-dir", tmp_path, "--out", tmp_path / "r"],
        "bits-mismatch": ["index", "--model", tmp_path / "run32", "--dataset", "digits", "--out", digits_index,
                          "--append"],
        "empty-folder": ["index", "--model", digits_run, "--images", tmp_path / "empty", "--out", tmp_path / "i"],
        "bad-bits": ["train", "--dataset", "digits", "--bits", "12", "--out", tmp_path / "r"],
        "bad-seed": ["train", "--dataset", "digits", "--seed", "-1", "--out", tmp_path / "r"],
        "huge-seed": ["train", "--dataset", "digits", "--seed", str(2**70), "--out", tmp_path / "r"],
        "nan-lr": ["train", "--dataset", "digits", "--lr", "nan", "--out", tmp_path / "r"],
        "nan-balance": ["train", "--dataset", "digits", "--balance", "nan", "--out", tmp_path / "r"],
        "bad-estimator": ["train", "--dataset", "digits", "--estimator", "nope", "--out", tmp_path / "r"],
        "bad-radius": ["query", query_png[0], "--index", digits_index, "--radius", "2147483647"],
        "zero-weights": ["train", "--dataset", "digits", "--recipe", "autoencoder", "--reconstruction", "0",
                         "--out", tmp_path / "r"],
        "bad-neighbours": ["train", "--dataset", "digits", "--neighbours", "-3", "--out", tmp_path / "r"],
        "bad-temperature": ["train", "--dataset", "digits", "--temperature", "0", "--out", tmp_path / "r"],
        "word-temperature": ["train", "--dataset", "digits", "--temperature", "hot", "--out", tmp_path / "r"],
        "view-options-not-json": ["train", "--dataset", "digits", "--recipe", "copies", "--view-options", "{bad",
                                  "--out", tmp_path / "r"],
        "view-options-bad-range": ["train", "--dataset", "digits", "--recipe", "copies", "--view-options",
                                   '{"brightness": [1.8, 0.6]}', "--out", tmp_path / "r"],
        "neighbours-without-contrastive": ["train", "--dataset", "digits", "--recipe", "autoencoder", "--neighbours",
                                           "5", "--out", tmp_path / "r"],
    }[case]
    expected = {"bad-seed": "seed", "huge-seed": "seed", "nan-lr": "lr", "nan-balance": "balance",
                "bad-radius": "radius", "zero-weights": "weight", "bad-estimator": "estimator",
                "bad-neighbours": "neighbours", "neighbours-without-contrastive": "contrastive",
                "bad-temperature": "temperature", "word-temperature": "neither a number nor auto",
                "view-options-not-json": "not JSON", "view-options-bad-range": "brightness"}.get(case)
    (tmp_path / "empty").mkdir()
    if case == "bits-mismatch":
        from hashing.model import checkpoint
        from hashing.model.network import HashAutoencoder
        from hashing.model.config import HashConfig
        checkpoint.save(tmp_path / "run32", HashAutoencoder(HashConfig(bits=32)))
    before = sorted(os.listdir(digits_index))
    code, err = error_of(*args)
    assert code != 0
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines[-1].startswith("Error") and sum(x.startswith("Error") for x in lines) == 1, err
    assert len(lines) == 1 or lines[0].startswith("Usage"), err   # click's usage errors add a usage hint
    assert expected is None or expected in lines[-1], err
    assert sorted(os.listdir(digits_index)) == before
    assert not (tmp_path / "r").exists()


def test_help_explains_every_option():
    for cmd in ["train", "encode", "index", "query", "evaluate", "estimators"]:
        r = invoke(cmd, "--help")
        assert r.exit_code == 0
    assert "white" in invoke("query", "--help").output


def test_estimators_command_lists_and_plots(tmp_path):
    r = invoke("estimators", "--plot", tmp_path / "e.png")
    assert r.exit_code == 0
    for name in ["identity", "clipped-grad", "saturated", "reinforce", "gumbel", "reinmax"]:
        assert name in r.output
    assert (tmp_path / "e.png").stat().st_size > 10_000
