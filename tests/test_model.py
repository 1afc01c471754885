import pytest
import torch

from hashing.errors import HashingError
from hashing.model import HashAutoencoder, HashConfig
from hashing.train import RECIPES, TrainConfig, apply_recipe, effective_lr, resolve_batch, resolve_device


def test_shapes_for_any_bit_length():
    x = torch.randn(3, 1, 28, 28)
    for bits in (8, 64, 512, 1024):
        z, code, recon = HashAutoencoder(HashConfig(bits=bits)).train()(x)
        assert z.shape == (3, bits) and code.shape == (3, bits) and recon.shape == (3, 1, 28, 28)
        assert set(code.unique().tolist()) <= {0.0, 1.0}
        assert recon.min() >= -1 and recon.max() <= 1


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
    """CentreConv / CentreConvTranspose compute exactly the seed's Conv2d(k4) / ConvTranspose2d(k5)."""
    from torch import nn

    from hashing.model import CentreConv, CentreConvTranspose, upgrade_state_dict

    torch.manual_seed(0)
    conv, deconv = nn.Conv2d(32, 16, 4, 2, 1), nn.ConvTranspose2d(16, 32, 5, 2, 1)
    ours_c, ours_d = CentreConv(32, 16), CentreConvTranspose(16, 32)
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
    cfg, obj = apply_recipe("seed", {"bits": 64}, {})
    assert cfg.head == "relu" and obj.reconstruction == 1 and obj.contrastive == 0
    cfg, obj = apply_recipe("default", {"estimator": "saturated"}, {"balance": 0.1})
    assert cfg.head == "batchnorm" and cfg.estimator == "saturated" and obj.contrastive > 0 and obj.balance == 0.1
    assert {"seed", "default", "autoencoder", "supervised"} <= set(RECIPES)
    with pytest.raises(HashingError, match="unknown recipe"):
        apply_recipe("nope", {}, {})


def test_batch_size_follows_the_device_unless_given():
    cpu, cuda, n = torch.device("cpu"), torch.device("cuda"), 60000
    assert (resolve_batch(TrainConfig(), cpu, n).batch_size, resolve_batch(TrainConfig(), cpu, n).scale_lr) == (64, False)
    gpu = resolve_batch(TrainConfig(), cuda, n)
    assert (gpu.batch_size, gpu.scale_lr) == (512, True)
    assert effective_lr(gpu) == pytest.approx(1e-3 * 8 ** 0.5)
    # at least 32 steps an epoch: 18,097 images keep 512, 5,000 get 128, digits' 1,797 get 64 (unscaled)
    assert [resolve_batch(TrainConfig(), cuda, m).batch_size for m in (18097, 5000, 1797)] == [512, 128, 64]
    assert resolve_batch(TrainConfig(), cuda, 1797).scale_lr is False
    assert resolve_batch(TrainConfig(scale_lr=False), cuda, n).scale_lr is False
    mine = resolve_batch(TrainConfig(batch_size=128), cuda, n)
    assert (mine.batch_size, mine.scale_lr, effective_lr(mine)) == (128, False, 1e-3)


def test_cuda_refused_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(HashingError, match="no CUDA"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_supervised_recipe_reaches_its_measured_quality(tmp_path):
    """Hash centres from labels on digits, 64 bits, 5 epochs (cosine): measured mAP 0.990, P@100 0.989."""
    from hashing import checkpoint
    from hashing.codes import encode_array
    from hashing.data import load_dataset
    from hashing.evaluation import score_codes
    from hashing.train import TrainConfig, recipe_train, train

    cfg, obj = apply_recipe("supervised", {"bits": 64}, {})
    tcfg = TrainConfig(dataset="digits", objective=obj, **{**recipe_train("supervised"), "epochs": 5})
    r = train(cfg, tcfg, tmp_path, progress=False)
    assert r.history["parts"][0]["supervised"] > r.history["parts"][-1]["supervised"] > 0
    model, meta = checkpoint.load(tmp_path)
    assert meta["train"]["schedule"] == "cosine" and meta["train"]["objective"]["views"] == "affine"
    db, qs = load_dataset("digits", "train"), load_dataset("digits", "test")
    xb = encode_array(model, db.images, progress=False).codes
    xq = encode_array(model, qs.images, progress=False).codes
    scores, _ = score_codes(xb, xq, db.labels, qs.labels, 64, (100,), progress=False)
    assert scores["mAP"] > 0.95 and scores["precision@100"] > 0.95
