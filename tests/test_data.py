import numpy as np
import pytest
from PIL import Image

from hashing.images.datasets import load_dataset
from hashing.images.folders import image_files
from hashing.images.reader import ImageSpec, read_image
from hashing.core.errors import HashingError


def test_digits_split_is_fixed_stratified_and_mnist_like():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.images.shape == (1437, 28, 28) and test.images.shape == (360, 28, 28)
    assert train.images.dtype == np.uint8 and train.images.max() == 255
    # MNIST-like: a black border round a centred digit
    assert train.images[:, :3, :].max() == 0 and train.images[:, :, -3:].max() == 0
    assert np.bincount(test.labels).min() >= 35
    assert np.array_equal(load_dataset("digits", "test").labels, test.labels)


def test_read_image_any_size_and_mode(tmp_path):
    rgb = np.zeros((90, 60, 3), np.uint8)
    rgb[20:70, 25:35] = 255
    Image.fromarray(rgb).save(tmp_path / "a.jpg")
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = 0            # fully transparent -> white background (black for models from before the rule)
    Image.fromarray(rgba).save(tmp_path / "b.png")
    a = read_image(tmp_path / "a.jpg")
    assert a.shape == (28, 28) and a.dtype == np.uint8 and a.max() > 200
    assert read_image(tmp_path / "b.png").min() == 255
    assert read_image(tmp_path / "b.png", invert=True).max() == 0
    assert read_image(tmp_path / "b.png", ImageSpec(28, background="black", exif=False)).max() == 0


def test_bad_images(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(HashingError, match="not a readable image"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(HashingError, match="not found"):
        read_image(tmp_path / "none.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HashingError, match="no images"):
        image_files(tmp_path / "empty")


def test_offline_mnist_is_a_user_error(tmp_path):
    with pytest.raises(HashingError, match="not found"):
        load_dataset("mnist", "train", tmp_path)
    with pytest.raises(HashingError, match="unknown dataset"):
        load_dataset("cifar", "train")


def test_crop_views_resample_within_the_image_and_keep_the_background():
    import torch

    from hashing.train.views import random_crop, resolve_views

    g = torch.Generator().manual_seed(0)
    x = torch.full((64, 1, 28, 28), -1.0)
    x[:, :, 10:18, 4:12] = 1.0                      # a bright block left of centre
    out = random_crop(x, generator=g)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    assert torch.allclose(random_crop(torch.full((4, 1, 28, 28), -1.0), generator=g), torch.tensor(-1.0))
    # Mirroring moves the block to the right half in some views and not in others.
    right = (out[:, 0, :, 14:] > 0).flatten(1).any(1)
    left = (out[:, 0, :, :14] > 0).flatten(1).any(1)
    assert right.any() and left.any()
    no_flip = random_crop(x, flip=False, area=(1.0, 1.0), aspect=(1.0, 1.0), contrast=(1.0, 1.0), generator=g)
    torch.testing.assert_close(no_flip, x, atol=1e-5, rtol=0)   # the whole image, unchanged
    assert resolve_views("auto", "fashion-mnist") == "crop" and resolve_views("auto", "mnist") == "affine"
    assert resolve_views("affine", "fashion-mnist") == "affine"
