"""`hashing encode`: a dataset split or a folder of images to a CODES.npz file.

Each workflow takes paths and options, does one job end to end, and returns a small result object
that the CLI prints. Images are streamed in batches; only codes (bits/8 bytes per image) are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashing.core.atomic import atomic_path, check_output_file
from hashing.core.errors import HashingError
from hashing.images.datasets import ImageSet, check_source, load_dataset
from hashing.images.reader import conform
from hashing.model import checkpoint
from hashing.model.device import resolve_device
from hashing.model.encode import encode_array, encode_batches


@dataclass
class EncodeResult:
    out: Path
    count: int
    bits: int
    images_per_second: float
    skipped: str = ""          # FolderRead.summary() of an --images run: '' when every file was read


@dataclass
class Encoding:
    """Codes of one split of a dataset or a folder, with what an index stores beside them."""

    codes: np.ndarray          # (N, bits/8) uint8
    labels: np.ndarray         # (N,) int64, -1 unlabelled
    sources: list[str]
    classes: list[str]
    datasets: dict             # "name/split" -> data_dir, for a dataset's sources
    images_per_second: float
    skipped: str


def plan_split(dataset: str | None, images: str | Path | None, split: str | None, default_split: str,
               data_dir: str | None):
    """Check the source (and the split it has) before any encoding: a dataset's split, loaded
    (ImageSet), or a folder's split as (paths, labels, classes), its files not yet read."""
    check_source(dataset, images)
    if images is None:
        return load_dataset(dataset, split or default_split, data_dir)
    from hashing.images import folders

    lay = folders.layout(images)
    paths, labels = folders.labelled_files(lay, folders.choose_split(lay, split, default_split))
    return paths, labels, lay.classes


def encode_split(model, planned, batch_size: int, progress: bool, strict: bool) -> Encoding:
    """Encode what plan_split found: a dataset split, or a folder's files in decoded batches
    (from the image cache when `train` or `evaluate` already decoded these files at this
    spec, else decoded as they stream by)."""
    from hashing.images import folders

    if isinstance(planned, ImageSet):
        ds = planned
        images = conform(ds.images, model.cfg.spec)
        enc = encode_array(model, images, batch_size, progress, desc=f"encoding {ds.name}/{ds.split}")
        return Encoding(enc.codes, ds.labels, [ds.source(i) for i in range(len(ds))], [],
                        {f"{ds.name}/{ds.split}": ds.data_dir}, enc.images_per_second, "")
    paths, labels, classes = planned
    batches, read = folders.image_batches(paths, batch_size, model.cfg.spec, strict=strict)
    enc = encode_batches(model, batches, len(paths), progress, desc="encoding images")
    row = {p: i for i, p in enumerate(paths)}
    kept_labels = labels[[row[p] for p in read.kept]] if read.kept else labels[:0]
    if not read.kept:
        raise HashingError(f"none of the {len(paths)} images could be read ({read.summary(1)})")
    return Encoding(enc.codes, kept_labels, [str(p.resolve()) for p in read.kept], classes, {},
                    enc.images_per_second, read.summary())


def encode(run_dir: str | Path, out: str | Path, *, dataset: str | None = None, images: str | Path | None = None,
           split: str | None = None, data_dir: str | None = None, batch_size: int = 1024, device: str = "auto",
           progress: bool = True, strict: bool = False) -> EncodeResult:
    """Write CODES.npz: `codes` (N, bits/8) uint8, `labels` (N,) int64 (-1: unlabelled) and,
    for a folder, `sources` (the files, in the order of the codes) and `classes`."""
    check_output_file(out, "out")
    planned = plan_split(dataset, images, split, "test", data_dir)
    model = checkpoint.load(run_dir, resolve_device(device)).model
    enc = encode_split(model, planned, batch_size, progress, strict)
    arrays = {"codes": enc.codes, "labels": enc.labels.astype(np.int64)}
    if not isinstance(planned, ImageSet):
        arrays.update(sources=np.array(enc.sources, dtype=str), classes=np.array(enc.classes, dtype=str))
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return EncodeResult(Path(out), len(enc.codes), model.cfg.bits, enc.images_per_second, enc.skipped)
