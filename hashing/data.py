"""Datasets and image files, as the uint8 arrays every other part of the project starts from.

Preprocessing has two halves, each in one place: this module turns a dataset or an image
file into grayscale uint8 (H, W) at the model's size (`read_image` for files: decode,
composite transparency on black, convert, resize); `HashAutoencoder.preprocess` (model.py)
turns uint8 into the model's input, (x / 255 - mean) / std with the config's mean and std.
Training, encoding and querying all go through both. MNIST-style data are white digits on
a black background; a query image must be too (or be inverted with `invert=True`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from hashing.errors import HashingError

DATASETS = ("mnist", "fashion-mnist", "digits")
SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_TORCHVISION = {"mnist": ("MNIST", "MNIST"), "fashion-mnist": ("FashionMNIST", "FashionMNIST")}


@dataclass
class ImageSet:
    """A labelled split held in memory: images (N, H, W) uint8, labels (N,) int64."""

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    data_dir: str | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def source(self, i: int) -> str:
        return f"{self.name}/{self.split}/{i}"

    def head(self, n: int | None) -> "ImageSet":
        """The first n items as a new ImageSet (all of them when n is None); self is unchanged."""
        if n is None:
            return self
        return ImageSet(self.name, self.split, self.images[:n], self.labels[:n], self.data_dir)


def default_data_dir() -> Path:
    return Path(os.environ.get("HASHING_DATA", Path.home() / ".cache" / "hashing" / "data"))


def load_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None) -> ImageSet:
    """Load `split` ('train' or 'test') of a named dataset into memory."""
    if name not in DATASETS:
        raise HashingError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise HashingError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if name == "digits":
        images, labels = _digits(split)
        return ImageSet(name, split, images, labels, None)
    return _torchvision(name, split, data_dir)


def _torchvision(name: str, split: str, data_dir) -> ImageSet:
    import torchvision

    folder, cls_name = _TORCHVISION[name]
    cls = getattr(torchvision.datasets, cls_name)
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    raw = root / folder / "raw"
    if data_dir is not None and not raw.is_dir():
        raise HashingError(
            f"{name} not found: expected the IDX files under {raw} "
            f"(torchvision layout {folder}/raw/*-ubyte); check --data-dir")
    try:
        ds = cls(str(root), train=(split == "train"), download=data_dir is None)
    except Exception as e:  # torchvision raises RuntimeError or URLError, depending on what failed
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = ("pass --data-dir DIR with the IDX files in DIR/" + folder + "/raw"
                if data_dir is None else "check the files under " + str(raw))
        raise HashingError(f"{name} ({split}) could not be loaded ({first}); {hint}") from None
    return ImageSet(name, split, ds.data.numpy().astype(np.uint8), ds.targets.numpy().astype(np.int64),
                    str(root.resolve()))


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (0..16) as MNIST-like 28x28 uint8.

    MNIST centres each digit in a 20x20 box inside a 28x28 frame, so the 8x8 digit is
    scaled to 20x20 (bilinear) and padded by 4 on every side; values map 0..16 -> 0..255.
    Split: stratified 80/20, random_state 0, fixed forever so tests are reproducible.
    """
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    small = np.clip(d.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    big = np.zeros((len(small), 28, 28), dtype=np.uint8)
    for i, im in enumerate(small):
        big[i, 4:24, 4:24] = np.asarray(Image.fromarray(im).resize((20, 20), Image.BILINEAR))
    idx = np.arange(len(big))
    train_idx, test_idx = train_test_split(idx, test_size=0.2, stratify=d.target, random_state=0)
    sel = train_idx if split == "train" else test_idx
    return big[sel], d.target[sel].astype(np.int64)


def read_image(path: str | os.PathLike, size: int = 28, invert: bool = False) -> np.ndarray:
    """Any image file Pillow reads, any size and mode -> grayscale uint8 (size, size), as the model expects.

    Transparent pixels are composited on black (the MNIST background) before the grayscale
    conversion; 16- and 32-bit grayscale is scaled to 0..255 (not clipped); an animated file
    gives its first frame; the resize uses antialiasing like a downsampled scan. Images over
    Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS) are refused, not decoded.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise HashingError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise HashingError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.seek(0)
                im.load()
                arr = image_array(im, size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise HashingError(f"image too large: {path} has more than {Image.MAX_IMAGE_PIXELS:,} pixels "
                           f"(refused as a possible decompression bomb)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise HashingError(f"not a readable image: {path} ({type(e).__name__})") from None
    return 255 - arr if invert else arr


def image_array(im, size: int = 28, invert: bool = False) -> np.ndarray:
    """A loaded PIL image -> grayscale uint8 (size, size): the step read_image applies to files."""
    from PIL import Image

    gray = _to_gray(im)
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.BILINEAR, reducing_gap=None)
    arr = np.asarray(gray, dtype=np.uint8)
    return 255 - arr if invert else arr


def _to_gray(im):
    """A loaded PIL image of any mode -> mode 'L'."""
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("L")
    if im.mode.startswith("I"):         # I;16, I;16B, I;16L, I: integers up to 65535 (16-bit files)
        wide = np.asarray(im, dtype=np.float64)
        scale = 255.0 / 65535.0 if im.mode.startswith("I;16") or wide.max() > 255 else 1.0
        return Image.fromarray(np.clip(np.rint(wide * scale), 0, 255).astype(np.uint8))
    if im.mode == "F":                  # floats: [0, 1] when they fit there, else 0..255
        wide = np.asarray(im, dtype=np.float64)
        scale = 255.0 if wide.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(wide * scale), 0, 255).astype(np.uint8))
    return im.convert("L")


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Every image file (by suffix) under `folder`, recursively, in a stable (sorted) order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HashingError(f"not a folder: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise HashingError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return files


@dataclass
class FolderRead:
    """What reading a list of image files found: the files that decoded, and the ones skipped with why."""

    kept: list[Path]
    skipped: list[tuple[Path, str]]

    def summary(self, shown: int = 3) -> str:
        """'' when nothing was skipped, else one line: how many, and the first few with their reasons."""
        if not self.skipped:
            return ""
        first = "; ".join(reason for _, reason in self.skipped[:shown])
        more = f"; and {len(self.skipped) - shown} more" if len(self.skipped) > shown else ""
        return f"skipped {len(self.skipped)} unreadable file(s): {first}{more}"


def iter_image_batches(paths: list[Path], batch_size: int, size: int = 28, invert: bool = False,
                       strict: bool = False) -> tuple[Iterator[np.ndarray], FolderRead]:
    """Stream (B, size, size) uint8 batches so a million files are never all in memory.

    Unreadable files are skipped and recorded in the returned FolderRead as the iterator runs
    (`strict`: the first one is an error instead); only decoded images are ever in a batch.
    """
    read = FolderRead([], [])

    def batches() -> Iterator[np.ndarray]:
        buf: list[np.ndarray] = []
        for p in paths:
            try:
                buf.append(read_image(p, size, invert))
            except HashingError as e:
                if strict:
                    raise
                read.skipped.append((p, str(e)))
                continue
            read.kept.append(p)
            if len(buf) == batch_size:
                yield np.stack(buf)
                buf = []
        if buf:
            yield np.stack(buf)
    return batches(), read


def load_source(source: str, datasets: dict[str, str | None], size: int = 28) -> np.ndarray:
    """The uint8 image behind an index item's `source` ("name/split/i" or a file path)."""
    parts = source.split("/")
    if len(parts) == 3 and parts[0] in DATASETS and parts[1] in SPLITS and parts[2].isdigit():
        key = f"{parts[0]}/{parts[1]}"
        ds = _cached(parts[0], parts[1], datasets.get(key))
        return ds.images[int(parts[2])]
    return read_image(source, size)


_CACHE: dict[tuple, ImageSet] = {}


def _cached(name: str, split: str, data_dir: str | None) -> ImageSet:
    key = (name, split, data_dir)
    if key not in _CACHE:
        _CACHE[key] = load_dataset(name, split, data_dir)
    return _CACHE[key]
