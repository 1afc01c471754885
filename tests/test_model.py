import pytest
import torch

from hashing.core.errors import HashingError
from hashing.model.network import HashAutoencoder
from hashing.model.config import HashConfig
from hashing.model.device import resolve_device
from hashing.train.recipes import RECIPES, resolve
from hashing.train.config import TrainConfig, batch_plan, effective_lr


def test_shapes_for_any_bit_length():
    x = torch.randn(3, 1, 28, 28)
    for bits in (8, 64, 512, 1024):
        z, code, recon = HashAutoencoder(HashConfig(bits=bits)).train()(x)
        assert z.shape == (3, bits) and code.shape == (3, bits) and recon.shape == (3, 1, 28, 28)
        assert set(code.unique().tolist()) <= {0.0, 1.0}
        assert recon.min() >= -1 and recon.max() <= 1


def test_a_standardising_encoder_ignores_brightness_and_contrast():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28) * 1.6 - 0.8
    on = HashAutoencoder(HashConfig(bits=32, standardise=True)).eval()
    off = HashAutoencoder(HashConfig(bits=32)).eval()
    with torch.no_grad():
        for a, b in ((0.5, 0.3), (1.2, -0.1)):
            assert torch.allclose(on.encoder(x), on.encoder(a * x + b), atol=1e-3)
            assert not torch.allclose(off.encoder(x), off.encoder(a * x + b), atol=1e-3)
        assert torch.equal(on.binarize(x), on.binarize(0.5 * x + 0.3))
    assert HashConfig().standardise is False                  # configs written before it load unchanged


def test_lowpass_removes_fine_detail_before_the_encoder():
    from hashing.model.network import Encoder

    enc = Encoder(HashConfig(bits=32, lowpass=1.5)).eval()
    k = enc.lowpass                                          # (1, 1, 11, 11): 2 * ceil(3 * 1.5) + 1 taps
    assert k.shape == (1, 1, 11, 11) and abs(k.sum().item() - 1) < 1e-6
    # A 1-pixel checkerboard (the finest detail there is) is all but gone, a constant image is kept;
    # the pixels the blur hands the network: run the first part of forward by hand.
    seen = []
    enc.net[0].register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    ii, jj = torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij")
    checker = ((ii + jj) % 2 * 2 - 1).float()[None, None]       # (1, 1, 28, 28) in {-1, +1}
    with torch.no_grad():
        enc(checker)
        enc(torch.full((1, 1, 28, 28), 0.25))
    assert seen[0][..., 6:-6, 6:-6].abs().max() < 1e-3         # away from the replicated border
    assert torch.allclose(seen[1], torch.full_like(seen[1], 0.25), atol=1e-6)
    assert HashConfig().lowpass == 0 and Encoder(HashConfig(bits=32)).lowpass is None   # old configs: no blur


def test_seed_head_blocks_gradient_of_off_bits_and_default_does_not():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 28, 28)
    grads = {}
    for head in ("relu", "batchnorm"):
        torch.manual_seed(0)
        m = HashAutoencoder(HashConfig(bits=32, head=head)).train()
        z_pre = None

        def keep(_, __, out):
            nonlocal z_pre
            out.retain_grad()
            z_pre = out
        m.encoder.net[-1].register_forward_hook(keep)     # the last BatchNorm's output
        _, code, recon = m(x)
        ((recon - x) ** 2).mean().backward()
        off = z_pre.detach().flatten(1) <= 0
        grads[head] = z_pre.grad.flatten(1)[off].abs().sum().item()
    assert grads["relu"] == 0.0          # bits that are 0 get no gradient through the seed's ReLU
    assert grads["batchnorm"] > 0.0


def test_bottleneck_layers_equal_the_seed_convolutions():
    """MapToCode / CodeToMap at 3x3 compute exactly the seed's Conv2d(k4) / ConvTranspose2d(k5)."""
    from torch import nn

    from hashing.model.network import MapToCode, CodeToMap, upgrade_state_dict

    torch.manual_seed(0)
    conv, deconv = nn.Conv2d(32, 16, 4, 2, 1), nn.ConvTranspose2d(16, 32, 5, 2, 1)
    ours_c, ours_d = MapToCode(32, 16), CodeToMap(16, 32)
    ours_c.load_state_dict(upgrade_state_dict(conv.state_dict(), ours_c))
    ours_d.load_state_dict(upgrade_state_dict(deconv.state_dict(), ours_d))
    x, code = torch.randn(5, 32, 3, 3), torch.randn(5, 16)
    torch.testing.assert_close(ours_c(x), conv(x), atol=1e-5, rtol=1e-5)                  # (5, 16, 1, 1)
    torch.testing.assert_close(ours_d(code), deconv(code[:, :, None, None]), atol=1e-5, rtol=1e-5)  # (5, 32, 3, 3)
    # Gradients agree too, on the taps the seed layers actually use.
    ours_c(x).sum().backward()
    conv(x).sum().backward()
    torch.testing.assert_close(ours_c.weight.grad, conv.weight.grad[:, :, 1:4, 1:4], atol=1e-5, rtol=1e-5)
    assert conv.weight.grad[:, :, 0].abs().max() == 0 and conv.weight.grad[:, :, :, 0].abs().max() == 0


def test_recipes_and_overrides():
    cfg, tcfg = resolve("original", "digits", 1437, bits=64)
    obj = tcfg.objective
    assert cfg.head == "relu" and obj.reconstruction == 1 and obj.contrastive == 0 and cfg.bits == 64
    cfg, tcfg = resolve("default", "digits", 1437, estimator="identity", balance=0.1)
    assert cfg.head == "batchnorm" and cfg.estimator == "identity" and tcfg.objective.contrastive > 0
    assert tcfg.objective.balance == 0.1
    assert {"original", "default", "autoencoder", "supervised"} <= set(RECIPES)
    with pytest.raises(HashingError, match="unknown recipe"):
        resolve("nope", "digits", 10)
    with pytest.raises(HashingError, match="unknown training setting"):
        resolve("default", "digits", 10, bitz=64)


@pytest.mark.parametrize("recipe, settings, temperature", [
    ("default", {"bits": 16}, 0.5), ("default", {"bits": 64}, 0.5), ("default", {"bits": 128}, 0.3),
    ("default", {}, 0.3),                                            # 512 bits, the default length
    ("default", {"bits": 64, "temperature": 0.3}, 0.3), ("kinds", {"bits": 512}, 0.5),
    ("copies", {"bits": 64}, 0.1), ("copies", {"bits": 64, "temperature": "auto"}, 0.5),
])
def test_auto_temperature_follows_the_code_length_and_is_recorded_as_a_number(recipe, settings, temperature):
    _, tcfg = resolve(recipe, "mnist", 18097, **settings)
    assert tcfg.objective.temperature == temperature
    assert tcfg.to_dict()["objective"]["temperature"] == temperature


def test_resolve_leaves_nothing_automatic_and_flags_beat_the_recipe():
    cfg, tcfg = resolve("supervised", "mnist", 18097)
    assert (tcfg.epochs, tcfg.schedule) == (15, "cosine")                    # the recipe's training settings
    assert tcfg.objective.views == "affine" and cfg.dataset == tcfg.dataset == "mnist"
    assert tcfg.device in ("cpu", "cuda") and tcfg.batch_size and tcfg.scale_lr is not None
    cfg, tcfg = resolve("supervised", "mnist", 60000, epochs=1, schedule="constant", views="crop", device="cpu")
    assert (tcfg.epochs, tcfg.schedule, tcfg.objective.views, tcfg.device) == (1, "constant", "crop", "cpu")
    assert tcfg.recipe == "supervised" and tcfg.batch_size == 64


def test_a_recipes_settings_for_a_dataset_apply_there_only_and_are_recorded():
    _, tcfg = resolve("supervised", "fashion-mnist", 60000, device="cpu")
    assert (tcfg.epochs, tcfg.schedule, tcfg.objective.views) == (60, "cosine", "crop")
    assert tcfg.to_dict()["objective"]["view_options"] == {"area": [0.8, 1.0]}          # in config.json
    assert tcfg.to_dict()["epochs"] == 60
    # the default recipe's for clothing: its own batch (halved for small splits, like any automatic one)
    cfg, tcfg = resolve("default", "fashion-mnist", 60000, bits=16, device="cpu")
    assert (cfg.lowpass, tcfg.objective.temperature, tcfg.batch_size, tcfg.scale_lr) == (1.0, 0.3, 512, True)
    assert (tcfg.objective.views, tcfg.objective.view_options) == ("photo", {"area": [0.6, 1.0]})
    assert resolve("default", "fashion-mnist", 5000, device="cpu")[1].batch_size == 128
    assert resolve("default", "fashion-mnist", 60000, batch_size=64, device="cpu")[1].batch_size == 64
    cfg, tcfg = resolve("default", "mnist", 18097, bits=16, device="cpu")
    assert (cfg.lowpass, tcfg.objective.temperature, tcfg.batch_size, tcfg.epochs) == (0.0, 0.5, 64, 5)
    # at every length on clothing, codes from the features' rotation from 64 bits up (test_rotation.py)
    cfg, tcfg = resolve("default", "fashion-mnist", 60000, bits=512, device="cpu")
    assert (tcfg.objective.neighbours, tcfg.epochs, cfg.lowpass, tcfg.batch_size, cfg.codes) == (20, 8, 1.0, 512, "itq")
    _, tcfg = resolve("default", "fashion-mnist", 60000, bits=512, neighbours=5, epochs=3, device="cpu")
    assert (tcfg.objective.neighbours, tcfg.epochs) == (5, 3)
    _, tcfg = resolve("default", "mnist", 18097, bits=512, device="cpu")
    assert (tcfg.objective.neighbours, tcfg.epochs) == (20, 5)
    _, tcfg = resolve("supervised", "digits", 1437, device="cpu")                   # not on other data
    assert (tcfg.epochs, tcfg.objective.view_options) == (15, {})
    # the user's flags still win: length, options merged over the dataset's, other views drop them
    _, tcfg = resolve("supervised", "fashion-mnist", 60000, epochs=2, view_options={"flip": False})
    assert (tcfg.epochs, tcfg.objective.view_options) == (2, {"area": [0.8, 1.0], "flip": False})
    _, tcfg = resolve("supervised", "fashion-mnist", 60000, view_options={"area": [0.5, 1.0]})
    assert tcfg.objective.view_options == {"area": [0.5, 1.0]}
    _, tcfg = resolve("supervised", "fashion-mnist", 60000, views="affine")
    assert (tcfg.epochs, tcfg.objective.views, tcfg.objective.view_options) == (60, "affine", {})


def test_a_recipes_settings_for_a_dataset_go_to_their_configs_and_merge_view_options():
    from hashing.train.recipes import Recipe

    r = Recipe("x", model={"bits": 64}, objective={"view_options": {"flip": False}}, train={"epochs": 3},
               datasets={"a": {"batch": 512, "epochs": 9, "lowpass": 1.0, "view_options": {"area": [0.5, 1.0]}}})
    assert r.settings("a") == ({"bits": 64, "lowpass": 1.0}, {"view_options": {"flip": False, "area": [0.5, 1.0]}},
                               {"epochs": 9}, 512)
    assert r.settings("b") == ({"bits": 64}, {"view_options": {"flip": False}}, {"epochs": 3}, None)


def test_help_shows_a_recipes_settings_for_a_dataset():
    from hashing.train.recipes import default_text

    assert default_text("epochs") == "5 (default; 8 on fashion-mnist; auto on colour folders), 64 (copies; auto on " \
                                     "images; auto on colour folders), 15 (supervised; 60 on fashion-mnist), else 5"
    assert default_text("neighbours") == "20 (default), 20 (kinds), else 0"
    assert default_text("codes") == "layer (default; auto on fashion-mnist), else layer"
    assert default_text("views") == "auto (default; photo on fashion-mnist; photo on colour folders), copies (copies), else auto"
    assert default_text("bits") == "512"
    assert '{} (supervised; {"area": [0.8, 1.0]} on fashion-mnist)' in default_text("view_options")


@pytest.mark.parametrize("settings, message", [
    ({"bits": 12}, "bits"), ({"bits": "64"}, "bits"), ({"estimator": "nope"}, "estimator"),
    ({"estimator_options": {"slope": 2}}, "estimator_options"), ({"lr": float("nan")}, "lr"),
    ({"lr": 0.0}, "lr"), ({"seed": -1}, "seed"), ({"seed": 2**70}, "seed"), ({"epochs": 0}, "epochs"),
    ({"balance": float("nan")}, "balance"), ({"reconstruction": 0.0, "contrastive": 0.0}, "every loss weight"),
    ({"views": "zoom"}, "views"), ({"schedule": "step"}, "schedule"), ({"batch_size": 1}, "batch_size"),
    ({"temperature": 0}, "temperature"), ({"temperature": "warm"}, "temperature"), ({"std": 0.0}, "std"), ({"standardise": "yes"}, "standardise"),
    ({"asymmetric": 1}, "asymmetric"), ({"lowpass": -1}, "lowpass"), ({"lowpass": 8}, "lowpass"),
    ({"view_options": [1]}, "view_options"), ({"views": "crop", "view_options": {"brightness": [0.6, 1.8]}}, "view_options"),
    ({"views": "copies", "view_options": {"brightness": [1.8, 0.6]}}, "brightness"),
    ({"views": "copies", "view_options": {"rescale": [0.2, 1.5]}}, "rescale"), ({"view_options": {"nope": 1}}, "nope"),
    ({"views": "copies", "view_options": {"brightness": [0.6, float("inf")]}}, "brightness"),
    ({"views": "copies", "view_options": {"p_single": 2}}, "p_single"),
    ({"views": "copies", "view_options": {"single_weights": {"zoom": 1}}}, "single_weights"),
    ({"views": "crop", "view_options": {"area": [-1, 1]}}, "area"), ({"views": "crop", "view_options": {"flip": "yes"}}, "flip"),
    ({"views": "copies", "view_options": {"generator": 1}}, "generator"),
])
def test_configs_validate_themselves_with_the_projects_error(settings, message):
    with pytest.raises(HashingError, match=message):
        resolve("default", "digits", 1437, **settings)


def test_batch_size_follows_the_device_unless_given():
    n = 60000
    assert batch_plan(None, None, "cpu", n) == (64, False)
    assert batch_plan(None, None, "cuda", n) == (512, True)
    gpu = TrainConfig(batch_size=512, scale_lr=True)
    assert effective_lr(gpu) == pytest.approx(1e-3 * 8 ** 0.5)
    # at least 32 steps an epoch: 18,097 images keep 512, 5,000 get 128, digits' 1,797 get 64 (unscaled)
    assert [batch_plan(None, None, "cuda", m)[0] for m in (18097, 5000, 1797)] == [512, 128, 64]
    assert batch_plan(None, None, "cuda", 1797) == (64, False)
    assert batch_plan(None, False, "cuda", n) == (512, False)
    assert batch_plan(128, None, "cuda", n) == (128, False)
    assert effective_lr(TrainConfig(batch_size=128, scale_lr=False)) == 1e-3


def test_a_recipes_own_batch_replaces_the_devices_and_halves_like_it():
    assert batch_plan(None, None, "cpu", 60000, auto=512) == (512, True)
    assert [batch_plan(None, None, "cpu", m, auto=512)[0] for m in (18097, 5000, 1797)] == [512, 128, 64]
    assert batch_plan(100, None, "cpu", 60000, auto=512) == (100, False)       # the user's batch wins
    # the copies recipe: its batch on CPU, lr scaled by sqrt(512 / 64); digits' 1,437 still get 64
    _, tcfg = resolve("copies", "mnist", 18097, device="cpu")
    assert (tcfg.batch_size, tcfg.scale_lr) == (512, True)
    assert effective_lr(tcfg) == pytest.approx(1e-3 * 8 ** 0.5)
    _, tcfg = resolve("copies", "digits", 1437, device="cpu")
    assert (tcfg.batch_size, tcfg.scale_lr) == (64, False)
    _, tcfg = resolve("default", "mnist", 18097, device="cpu")
    assert tcfg.batch_size == 64


def test_the_copies_recipe_records_its_view_options_and_they_lapse_with_its_views():
    _, tcfg = resolve("copies", "mnist", 18097, device="cpu")
    own = {"rescale": [0.2, 0.6], "brightness": [0.6, 2.2], "contrast": [0.6, 1.8], "blur": [0.5, 2.0]}
    assert tcfg.objective.view_options == own
    assert tcfg.to_dict()["objective"]["view_options"] == own                           # in config.json
    assert resolve("copies", "mnist", 18097, views="copies")[1].objective.view_options == own
    assert resolve("copies", "mnist", 18097, views="crop")[1].objective.view_options == {}
    # the user's options merge over the recipe's for its own views, and replace them for other views
    merged = resolve("copies", "mnist", 18097, view_options={"rescale": [0.25, 0.6]})[1].objective.view_options
    assert merged == own | {"rescale": [0.25, 0.6]}
    assert resolve("copies", "mnist", 18097, views="crop", view_options={"area": [0.5, 1]})[1].objective.view_options \
        == {"area": [0.5, 1]}
    assert resolve("default", "mnist", 18097)[1].objective.view_options == {}


def test_every_option_of_every_view_family_can_be_set_from_a_config_at_its_default():
    import inspect

    from hashing.train.views import VIEWS, check_view_options

    for name, family in VIEWS.items():
        defaults = {k: p.default for k, p in inspect.signature(family).parameters.items()
                    if k not in ("x", "mean", "std", "generator")}
        defaults = {k: dict(v) if k == "single_weights" else list(v) if isinstance(v, tuple) else v
                    for k, v in defaults.items()}                       # as JSON brings them back
        assert defaults, name
        check_view_options(name, defaults)                               # raises if one cannot be checked


@pytest.mark.parametrize("options, message", [
    ({"p_jitter": 2}, "p_jitter is a probability"), ({"jitter": 1.0}, "from 0 to below 1"),
    ({"jitter": -0.1}, "from 0 to below 1"), ({"hue": 0.6}, "from 0 to 0.5"), ({"area": [0.6, 1.2]}, "<= 1"),
    ({"sharpness": 1}, "takes no option 'sharpness'")])
def test_photo_view_options_out_of_range_are_one_line_errors(options, message):
    from hashing.train.views import check_view_options

    check_view_options("photo", {"jitter": 0.99, "hue": 0.5, "p_jitter": 0.0})          # the edges are allowed
    with pytest.raises(HashingError, match=message):
        check_view_options("photo", options)


def test_copy_views_brighten_within_their_range():
    from hashing.train.views import random_copy

    x = torch.zeros(4000, 1, 8, 8)                  # mid-grey: model input (p - 0.5) / 0.5 = 0
    only = {"p_single": 1.0, "single_weights": {"brightness": 1e9}}   # every view a brightness edit alone
    for high in (1.4, 1.8):
        g = torch.Generator().manual_seed(0)
        p = random_copy(x, 0.5, 0.5, brightness=(0.6, high), generator=g, **only) * 0.5 + 0.5   # pixels (B, 1, 8, 8)
        # a flat image keeps its grey under a contrast change: each pixel is 0.5 x the brightness factor
        factor = p.mean((1, 2, 3)) / 0.5
        assert factor.min() >= 0.6 - 1e-4 and factor.max() <= high + 1e-4
        assert factor.max() > high - 0.01 and factor.min() < 0.61


def test_copy_views_change_contrast_within_their_range():
    from hashing.train.views import random_copy

    x = torch.zeros(4000, 1, 8, 8)
    x[:, :, :, :4] = -0.4                            # pixels 0.3 | 0.7: grey mean 0.5, nothing clips below x 2.5
    x[:, :, :, 4:] = 0.4
    only = {"p_single": 1.0, "single_weights": {"brightness": 1e9}, "brightness": (1.0, 1.0)}
    for high in (1.4, 1.8):
        g = torch.Generator().manual_seed(0)
        p = random_copy(x, 0.5, 0.5, contrast=(0.6, high), generator=g, **only) * 0.5 + 0.5   # (B, 1, 8, 8)
        factor = (p[:, 0, 0, 7] - p[:, 0, 0, 0]) / 0.4        # the two halves' difference, 0.4 before
        assert factor.min() >= 0.6 - 1e-4 and factor.max() <= high + 1e-4
        assert factor.max() > high - 0.01 and factor.min() < 0.61


def test_cuda_refused_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(HashingError, match="no CUDA"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.slow
def test_supervised_recipe_reaches_its_measured_quality(tmp_path):
    """Hash centres from labels on digits, 64 bits, 5 epochs (cosine): measured mAP 0.990, P@100 0.989."""
    from hashing.model import checkpoint
    from hashing.model.encode import encode_array
    from hashing.images.datasets import load_dataset
    from hashing.evaluate.classes import score_codes
    from hashing.train.loop import train

    db, qs = load_dataset("digits", "train"), load_dataset("digits", "test")
    cfg, tcfg = resolve("supervised", "digits", len(db), bits=64, epochs=5)
    r = train(cfg, tcfg, db, tmp_path, progress=False)
    assert r.history["parts"][0]["supervised"] > r.history["parts"][-1]["supervised"] > 0
    ckpt = checkpoint.load(tmp_path)
    model = ckpt.model
    assert ckpt.train["schedule"] == "cosine" and ckpt.train["objective"]["views"] == "affine"
    xb = encode_array(model, db.images, progress=False).codes
    xq = encode_array(model, qs.images, progress=False).codes
    scores, _ = score_codes(xb, xq, db.labels, qs.labels, 64, (100,), progress=False)
    assert scores["mAP"] > 0.95 and scores["precision@100"] > 0.95
