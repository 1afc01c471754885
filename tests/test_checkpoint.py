import json

import numpy as np
import pytest
import torch

from hashing.model import checkpoint
from hashing.model.encode import encode_array
from hashing.images.datasets import load_dataset
from hashing.core.errors import HashingError


def weights_of(run):
    return run / json.loads((run / "config.json").read_text())["files"]["weights"]


def test_save_load_gives_identical_codes(digits_run, tmp_path):
    ckpt = checkpoint.load(digits_run)
    images = load_dataset("digits", "test").images[:200]
    a = encode_array(ckpt.model, images, progress=False).codes
    checkpoint.save(tmp_path / "copy", ckpt.model, ckpt.train)
    again = checkpoint.load(tmp_path / "copy")
    b = encode_array(again.model, images, progress=False).codes
    assert np.array_equal(a, b)
    assert again.config == ckpt.config and again.fingerprint == ckpt.fingerprint
    assert a.shape == (200, 8) and a.dtype == np.uint8


def test_config_rebuilds_everything(digits_run):
    meta = json.loads((digits_run / "config.json").read_text())
    assert meta["model"]["bits"] == 64 and meta["model"]["head"] == "batchnorm"
    assert meta["model"]["mean"] == 0.5 and meta["model"]["dataset"] == "digits"
    assert meta["train"]["dataset"] == "digits" and "objective" in meta["train"]
    assert (digits_run / "neighbours.png").stat().st_size > 0              # the default trains no decoder
    history = json.loads((digits_run / meta["files"]["history"]).read_text())
    assert len(history["epoch_loss"]) == 3 and history["epoch_loss"][-1] < history["epoch_loss"][0]


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(HashingError, match="not a folder"):
        checkpoint.load(tmp_path / "missing")
    with pytest.raises(HashingError, match="not a checkpoint"):
        checkpoint.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(HashingError, match="corrupt"):
        checkpoint.load(tmp_path)


def test_corrupt_weights(digits_run, tmp_path):
    import shutil

    shutil.copytree(digits_run, tmp_path / "run")
    weights_of(tmp_path / "run").write_bytes(b"\x00" * 100)
    with pytest.raises(HashingError, match="corrupt"):
        checkpoint.load(tmp_path / "run")


def test_eval_codes_are_deterministic(digits_run):
    model = checkpoint.load(digits_run).model
    x = model.preprocess(torch.from_numpy(load_dataset("digits", "test").images[:50]))
    assert torch.equal(model.binarize(x), model.binarize(x))


def test_weights_that_do_not_match_the_fingerprint_are_refused(digits_run, tmp_path):
    import shutil

    shutil.copytree(digits_run, tmp_path / "run")
    weights = weights_of(tmp_path / "run")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01                                      # one flipped bit in the last weight
    weights.write_bytes(bytes(data))
    with pytest.raises(HashingError, match="fingerprint"):
        checkpoint.load(tmp_path / "run")


def test_non_finite_weights_are_never_saved(digits_run, tmp_path):
    model = checkpoint.load(digits_run).model
    with torch.no_grad():
        model.encoder.net[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(HashingError, match="non-finite"):
        checkpoint.save(tmp_path / "nan", model, {})
    assert not (tmp_path / "nan").exists() or not any((tmp_path / "nan").glob("model*"))
