"""The workflows behind `hashing encode`, `hashing index` and `hashing query`.

Each function takes paths and options, does one job end to end, and returns a small
result object that the CLI prints. Images are streamed in batches; only codes
(bits/8 bytes per image) are kept in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashing import checkpoint
from hashing.atomic import atomic_path, check_output_file
from hashing.codes import encode_array, encode_batches
from hashing.data import find_images, iter_image_batches, load_dataset, load_source, read_image
from hashing.device import resolve_device
from hashing.errors import HashingError
from hashing.indexes import BinaryIndex, Hit, IndexInfo, create, open_index
from hashing.indexes.backends import backend_class, backend_for


@dataclass
class EncodeResult:
    out: Path
    count: int
    bits: int
    images_per_second: float


def encode_dataset(run_dir: str | Path, dataset: str, split: str, out: str | Path, data_dir: str | None = None,
                   batch_size: int = 1024, device: str = "auto", progress: bool = True) -> EncodeResult:
    """Write CODES.npz with `codes` (N, bits/8) uint8 and `labels` (N,) int64."""
    check_output_file(out, "--out")
    model = checkpoint.load(run_dir, resolve_device(device)).model
    ds = load_dataset(dataset, split, data_dir)
    enc = encode_array(model, ds.images, batch_size, progress, desc=f"encoding {dataset}/{split}")
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, codes=enc.codes, labels=ds.labels.astype(np.int64))
    return EncodeResult(Path(out), len(enc.codes), model.cfg.bits, enc.images_per_second)


@dataclass
class IndexResult:
    location: str
    added: int
    total: int
    bits: int
    index_type: str
    images_per_second: float
    skipped: str = ""          # FolderRead.summary() of an --images run: '' when every file was read


def build_index(run_dir: str | Path, out: str, dataset: str | None = None, split: str = "train",
                images: str | Path | None = None, data_dir: str | None = None, index_type: str = "flat",
                backend: str | None = None, collection: str | None = None, append: bool = False,
                batch_size: int = 1024, device: str = "auto", progress: bool = True,
                strict: bool = False) -> IndexResult:
    """Encode a dataset split or a folder of images and store the codes with their metadata.

    Everything that can be refused is refused before encoding (the location, the model, the
    index type for this many items); the destination is touched only after encoding, and the
    backend's save() is one atomic commit, so a failure or a kill leaves the old index whole.
    """
    if (dataset is None) == (images is None):
        raise HashingError("give exactly one of --dataset or --images")
    kind = backend_class(backend_for(out, backend))
    kind.check_location(out, creating=not append, collection=collection)
    ckpt = checkpoint.load(run_dir, resolve_device(device))
    model, record = ckpt.model, ckpt.record()
    if append:
        index = open_index(out, collection, backend)
        try:
            index.info.check_model(record)
        finally:
            index.close()
    else:
        kind.check_type(index_type, model.cfg.bits)
    if dataset is not None:
        ds = load_dataset(dataset, split, data_dir)
        n = len(ds)
    else:
        paths = find_images(images)
        n = len(paths)
    if not append:
        kind.check_type(index_type, model.cfg.bits, n)
    skipped = ""
    if dataset is not None:
        enc = encode_array(model, ds.images, batch_size, progress, desc=f"encoding {dataset}/{split}")
        labels, sources = ds.labels, [ds.source(i) for i in range(len(ds))]
        datasets = {f"{dataset}/{split}": ds.data_dir}
    else:
        batches, read = iter_image_batches(paths, batch_size, model.cfg.image_size, strict=strict)
        enc = encode_batches(model, batches, len(paths), progress, desc="encoding images")
        if not read.kept:
            raise HashingError(f"none of the {len(paths)} images under {images} could be read ({read.summary(1)})")
        labels, sources, datasets, skipped = None, [str(p.resolve()) for p in read.kept], {}, read.summary()
    index = open_index(out, collection, backend) if append else \
        create(out, IndexInfo(bits=model.cfg.bits, model=record, index_type=index_type), backend, collection)
    try:
        index.info.datasets.update(datasets)
        index.add(enc.codes, labels, sources)
        index.save()
        return IndexResult(str(out), len(enc.codes), index.count, index.bits, index.info.index_type,
                           enc.images_per_second, skipped)
    finally:
        index.close()


@dataclass
class QueryResult:
    image: str
    hits: list[Hit]

    def to_dict(self) -> dict:
        return {"image": self.image, "results": [h.to_dict() for h in self.hits]}


def query_images(paths: list[str | os.PathLike], index_location: str, k: int = 10, radius: int | None = None,
                 collection: str | None = None, invert: bool = False,
                 grid: str | Path | None = None) -> list[QueryResult]:
    """Encode each image with the index's model and return its neighbours. Reads, never writes."""
    check_output_file(grid, "--grid")
    index = open_index(index_location, collection)
    try:
        return _query(index, paths, k, radius, invert, grid)
    finally:
        index.close()


def _query(index: BinaryIndex, paths, k, radius, invert, grid) -> list[QueryResult]:
    index.check_searchable(None if radius is not None else k, radius)   # before loading the model
    model = load_model_for(index)
    size = model.cfg.image_size
    arrays = [read_image(p, size, invert) for p in paths]  # all read before any work: fail early
    xq = encode_array(model, np.stack(arrays), progress=False).codes
    results = [QueryResult(str(p), hits) for p, hits in zip(paths, index.query(xq, k=k, radius=radius))]
    if grid is not None:
        save_grid(results, arrays, index, grid)
    return results


def load_model_for(index: BinaryIndex):
    """The model that built the index, checked to be that very model (bits and weights)."""
    run_dir = index.info.model.run_dir
    if not run_dir:
        raise HashingError("the index does not record the model that built it; rebuild it with `hashing index`")
    ckpt = checkpoint.load(run_dir, resolve_device("auto"))
    index.info.check_model(ckpt.record())
    return ckpt.model


def save_grid(results: list[QueryResult], arrays: list[np.ndarray], index: BinaryIndex, path: str | Path,
              max_neighbours: int = 16) -> None:
    from hashing.plots import retrieval_grid

    size = arrays[0].shape[0]
    neighbours = [[load_source(h.source, index.info.datasets, size) for h in r.hits[:max_neighbours]]
                  for r in results]
    retrieval_grid(arrays, neighbours, path)
