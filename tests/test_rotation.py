"""Codes by ITQ of the learned features (HashConfig.codes = "itq", hashing.model.rotation)."""

import numpy as np
import pytest
import torch

from hashing.core.errors import HashingError
from hashing.model.network import HashAutoencoder
from hashing.model.config import HashConfig, feature_dim
from hashing.train.recipes import resolve


def _inputs(n: int, seed: int = 0):
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 2 - 1     # (n, 1, 28, 28)
    return x, (lambda idx: x[idx])


def test_itq_codes_are_the_signs_of_an_itq_rotation_of_unit_features():
    from hashing.codes.baselines import ITQ
    from hashing.model.rotation import fit_rotation

    torch.manual_seed(0)
    model = HashAutoencoder(HashConfig(bits=32, codes="itq")).eval()
    x, inputs = _inputs(300)
    fit_rotation(model, inputs, len(x), torch.device("cpu"), batch=64)
    # Independently: the last conv map read by a hook, unit rows, then the baseline ITQ on them.
    maps = []
    hook = model.encoder.net[-3].register_forward_hook(lambda _m, _i, out: maps.append(out.flatten(1)))
    with torch.no_grad():
        model.encoder(x)
    hook.remove()
    f = maps[0] / maps[0].norm(dim=1, keepdim=True)                                          # (300, 2304)
    expected = ITQ(32, seed=0).fit(f.numpy()).project(f.numpy()) > 0
    assert np.mean(model.binarize(x).numpy().astype(bool) == expected) > 0.995          # float32 sums differ a hair
    # balanced bits, not the trained layer's signs
    codes = model.binarize(x).float()
    assert codes.mean(0).sub(0.5).abs().max() < 0.2
    assert not torch.equal(codes, (model.encoder(x) > 0).float())


def test_the_rotation_travels_in_the_checkpoint_and_changes_its_fingerprint(tmp_path):
    from hashing.model import checkpoint
    from hashing.model.rotation import fit_rotation

    torch.manual_seed(0)
    model = HashAutoencoder(HashConfig(bits=16, codes="itq")).eval()
    x, inputs = _inputs(100)
    before = checkpoint.save(tmp_path / "a", model)
    fit_rotation(model, inputs, len(x), torch.device("cpu"))
    after = checkpoint.save(tmp_path / "b", model)
    assert before != after
    loaded = checkpoint.load(tmp_path / "b")
    assert loaded.config.codes == "itq"
    assert torch.equal(loaded.model.binarize(x), model.binarize(x))


@pytest.mark.slow
def test_a_model_trained_with_itq_codes_retrieves(tmp_path):
    from hashing.model import checkpoint
    from hashing.evaluate.classes import evaluate
    from hashing.train.loop import train_on

    out = tmp_path / "itq"
    r = train_on("default", out, dataset="digits", progress=False, bits=64, epochs=2, seed=0, codes="itq")
    assert r.model.cfg.codes == "itq"
    ck = checkpoint.load(out)
    assert ck.config.codes == "itq" and ck.model.encoder.projection.abs().sum() > 0     # fitted before the save
    report = evaluate(out, dataset="digits", baselines=("lsh",), progress=False)
    # measured 0.765 mAP (LSH 0.579) after 2 epochs
    assert report.model["mAP"] > 0.65 and report.model["mAP"] > report.baselines["lsh"]["mAP"] + 0.1


def test_auto_codes_follow_the_length_on_clothing_only_and_flags_win():
    def codes(dataset, **settings):
        return resolve("default", dataset, 60000, device="cpu", **settings)[0].codes

    assert codes("fashion-mnist", bits=64) == codes("fashion-mnist", bits=512) == "itq"
    assert codes("fashion-mnist", bits=32) == "layer"
    assert codes("mnist", bits=64) == codes("digits", bits=512) == "layer"
    assert codes("fashion-mnist", bits=64, codes="layer") == "layer"
    assert codes("mnist", bits=64, codes="auto") == "itq" and codes("mnist", bits=16, codes="auto") == "layer"


@pytest.mark.parametrize("settings, message", [
    ({"codes": "pca"}, "codes"),
    ({"codes": "itq", "width": 1, "bits": 64}, "at most 36 bits"),          # width 1: 4 channels x 3 x 3
])
def test_itq_settings_are_validated(settings, message):
    with pytest.raises(HashingError, match=message):
        resolve("default", "digits", 1437, **settings)
    assert feature_dim(HashConfig(bits=8, width=1)) == 36


def test_too_few_images_for_the_rotation_is_a_one_line_error(tmp_path):
    from hashing.train.loop import train_on

    with pytest.raises(HashingError, match="at least 128 images"):
        train_on("default", tmp_path / "r", dataset="digits", progress=False, bits=128, epochs=1, max_images=100, codes="itq")
    assert not (tmp_path / "r" / "config.json").exists()


def test_data_parallel_training_leaves_the_rotation_out_of_its_broadcasts():
    # train() tells DDP to skip these names (rank 0 alone fits and saves them); a name that no
    # longer matches the model would skip nothing, silently.
    from hashing.train.distributed import Group
    from hashing.train.objectives import Objective
    from hashing.model.rotation import BUFFERS
    from hashing.train.loop import Step

    step = Step(HashAutoencoder(HashConfig(bits=16, codes="itq")), Objective(), None, Group())
    assert {f"model.{name}" for name in BUFFERS} <= set(step.state_dict())
    assert not {f"model.{name}" for name in BUFFERS} & set(Step(HashAutoencoder(HashConfig(bits=16)), Objective(),
                                                                 None, Group()).state_dict())
