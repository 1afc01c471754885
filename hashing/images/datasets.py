"""Where images come from: built-in datasets and image folders, as one `ImageSet` of uint8 arrays.

Preprocessing has two halves, each in one place: `hashing.images.reader.fit_image` turns any image
into uint8 (size, size[, 3]) at the model's ImageSpec (built-in datasets are already 28x28
grayscale and go through it only for another size or channel count), and
`HashAutoencoder.preprocess` (model.py) turns uint8 into the model's input, (x / 255 - mean)
/ std per channel. Training, encoding and querying all go through both. MNIST-style data are
white digits on a black background; a query image must be too (or be inverted with `invert=True`).

`load_split(dataset=..., images=...)` is the one entry point the workflows use; folders are
read through `hashing.images.folders` (layout, decode once, cache, memory budget).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashing.core.errors import HashingError
from hashing.images.reader import ImageSpec, conform, read_image

DATASETS = ("mnist", "fashion-mnist", "digits")
SPLITS = ("train", "test")
_TORCHVISION = {"mnist": ("MNIST", "MNIST"), "fashion-mnist": ("FashionMNIST", "FashionMNIST")}


@dataclass
class ImageSet:
    """A labelled split: images (N, H, W) or (N, H, W, 3) uint8, in RAM or memory-mapped
    (a folder bigger than the memory budget), labels (N,) int64 (-1: unlabelled).

    A built-in dataset's items are named "name/split/i"; a folder's items by their file
    paths (`sources`), and `skipped` says which files could not be read.
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    data_dir: str | None = None
    sources: list[str] | None = None
    classes: list[str] | None = None
    skipped: str = ""                    # hashing.images.folders.FolderRead.summary() of a folder

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_memory(self) -> bool:
        return not isinstance(self.images, np.memmap)

    def source(self, i: int) -> str:
        return self.sources[i] if self.sources is not None else f"{self.name}/{self.split}/{i}"

    def head(self, n: int | None) -> "ImageSet":
        """The first n items as a new ImageSet (all of them when n is None); self is unchanged."""
        if n is None:
            return self
        return dataclasses.replace(self, images=self.images[:n], labels=self.labels[:n],
                                   sources=None if self.sources is None else self.sources[:n])


def check_source(dataset: str | None, images: str | os.PathLike | None) -> None:
    """Exactly one source of images: a built-in dataset or an image folder (every command that reads one)."""
    if (dataset is None) == (images is None):
        raise HashingError("give exactly one of dataset or images", settings=("dataset", "images"))


def load_split(dataset: str | None = None, images: str | os.PathLike | None = None, split: str | None = None,
               default_split: str = "train", data_dir: str | None = None, spec: ImageSpec | None = None,
               strict: bool = False, progress: bool = True) -> ImageSet:
    """One split of a built-in dataset or of an image folder (exactly one of the two), at `spec`.

    `split` None means the command's `default_split`; a folder without train/ and test/ is one
    split and refuses an explicit `split`. A dataset keeps its own 28x28 grayscale when
    `spec` is None; a folder needs a spec (hashing.images.folders.inspect suggests one).
    """
    check_source(dataset, images)
    if dataset is not None:
        ds = load_dataset(dataset, split or default_split, data_dir)
        return ds if spec is None else dataclasses.replace(ds, images=conform(ds.images, spec))
    from hashing.images import folders

    lay = folders.layout(images)
    chosen = folders.choose_split(lay, split, default_split)
    paths, labels = folders.labelled_files(lay, chosen)
    got = folders.read_folder(paths, labels, spec, strict=strict, progress=progress,
                              desc=f"decoding {lay.split_root(chosen)}")
    return ImageSet("images", chosen or "all", got.images, got.labels, str(lay.root.resolve()),
                    [str(p.resolve()) for p in got.paths], lay.classes, got.read.summary())


def default_data_dir() -> Path:
    from hashing.core.paths import cache_dir

    return cache_dir("data")


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
            f"(torchvision layout {folder}/raw/*-ubyte); check data_dir", settings=("data_dir",))
    try:
        ds = cls(str(root), train=(split == "train"), download=data_dir is None)
    except Exception as e:  # torchvision raises RuntimeError or URLError, depending on what failed
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = ("pass data_dir DIR with the IDX files in DIR/" + folder + "/raw"
                if data_dir is None else "check the files under " + str(raw))
        raise HashingError(f"{name} ({split}) could not be loaded ({first}); {hint}",
                           settings=("data_dir",) if data_dir is None else ()) from None
    return ImageSet(name, split, ds.data.numpy().astype(np.uint8), ds.targets.numpy().astype(np.int64),
                    str(root.resolve()))


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (0..16) as MNIST-like 28x28 uint8.

    MNIST centres each digit in a 20x20 box inside a 28x28 frame, so the 8x8 digit is
    scaled to 20x20 (bilinear) and padded by 4 on every side; values map 0..16 -> 0..255.
    Split: stratified 80/20, random_state 0, fixed forever so tests are reproducible.
    The result is kept in the image cache folder (hashing.images.folders.cache_dir), keyed by the
    scikit-learn version: importing scikit-learn costs a command ~2.5 s, the cached file ~2 ms.
    """
    from importlib.metadata import version

    from hashing.images.folders import cache_dir

    cached = cache_dir() / f"digits-{version('scikit-learn')}.npz"
    try:
        with np.load(cached) as f:
            images, labels, test = f["images"], f["labels"], f["test"]
    except Exception:                             # noqa: BLE001 - missing, truncated, foreign: make it again
        images, labels, test = _make_digits()
        try:
            from hashing.core.atomic import atomic_path

            cached.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cached) as tmp, open(tmp, "wb") as out:
                np.savez(out, images=images, labels=labels, test=test)
        except OSError:
            pass                                  # no cache where none can be written: recomputed next time
    sel = test if split == "test" else ~test
    return images[sel], labels[sel]


def _make_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) int64, test (N,) bool): the split as a mask, in sklearn's order
    within each split."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    small = np.clip(d.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    big = np.zeros((len(small), 28, 28), dtype=np.uint8)
    for i, im in enumerate(small):
        big[i, 4:24, 4:24] = np.asarray(Image.fromarray(im).resize((20, 20), Image.BILINEAR))
    train_idx, test_idx = train_test_split(np.arange(len(big)), test_size=0.2, stratify=d.target, random_state=0)
    order = np.concatenate([train_idx, test_idx])      # train_test_split's order, kept: it is the items' order
    test = np.zeros(len(big), dtype=bool)
    test[len(train_idx):] = True
    return big[order], d.target[order].astype(np.int64), test


def folder_spec(images: str | os.PathLike, size: int | None = None, channels: int | None = None,
                resize: str | None = None, trim: bool = False) -> ImageSpec:
    """The ImageSpec to train on a folder with: what was given, the rest chosen from the folder's
    training files (hashing.images.folders.inspect: median shorter side up to 64, colour or not), crop."""
    from hashing.images import folders
    from hashing.images.reader import CHANNELS, DEFAULT_RESIZE, MAX_SIZE, MIN_SIZE, RESIZE
    from hashing.core import validation as V

    if size is not None:
        V.integer("image_size", size, MIN_SIZE, MAX_SIZE)
    if channels is not None:
        V.choice("channels", channels, CHANNELS)
    if resize is not None:
        V.choice("resize", resize, RESIZE)
    if size is None or channels is None:
        lay = folders.layout(images)
        paths, _ = folders.labelled_files(lay, folders.choose_split(lay, None, "train"))
        auto_size, auto_channels = folders.inspect(paths)
        size, channels = size or auto_size, channels or auto_channels
    return ImageSpec(size, channels, resize or DEFAULT_RESIZE, trim=trim)


def load_source(source: str, datasets: dict[str, str | None], spec: ImageSpec = ImageSpec()) -> np.ndarray:
    """The uint8 image behind an index item's `source` ("name/split/i" or a file path), at `spec`."""
    native = dataset_image(source, datasets)
    return read_image(source, spec) if native is None else conform(native[None], spec)[0]


def dataset_image(source: str, datasets: dict[str, str | None]) -> np.ndarray | None:
    """A built-in dataset item's image as stored ("name/split/i" -> uint8 (H, W)); None for a file source."""
    parts = source.split("/")
    if len(parts) == 3 and parts[0] in DATASETS and parts[1] in SPLITS and parts[2].isdigit():
        with _CACHE_LOCK:                        # the service asks from several threads; load a split once
            ds = _cached(parts[0], parts[1], datasets.get(f"{parts[0]}/{parts[1]}"))
        if int(parts[2]) >= len(ds.images):
            raise HashingError(f"{source}: {parts[0]}/{parts[1]} has {len(ds.images)} images here")
        return ds.images[int(parts[2])]
    return None


_CACHE: dict[tuple, ImageSet] = {}
_CACHE_LOCK = threading.Lock()


def _cached(name: str, split: str, data_dir: str | None) -> ImageSet:
    key = (name, split, data_dir)
    if key not in _CACHE:
        _CACHE[key] = load_dataset(name, split, data_dir)
    return _CACHE[key]
