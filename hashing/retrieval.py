"""The workflows behind `hashing encode`, `hashing index` and `hashing query`.

Each function takes paths and options, does one job end to end, and returns a small
result object that the CLI prints. Images are streamed in batches; only codes
(bits/8 bytes per image) are kept in memory.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashing import checkpoint
from hashing.atomic import atomic_path, check_output_file
from hashing.codes import encode_array, encode_batches
from hashing.data import ImageSet, load_dataset, load_source
from hashing.images import ImageSpec, conform, read_image
from hashing.device import resolve_device
from hashing.errors import HashingError
from hashing.indexes import BinaryIndex, Hit, IndexInfo, create, open_index
from hashing.indexes.backends import backend_class, backend_for, writer_lock
from hashing.indexes.lock import WriterLock


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
    if (dataset is None) == (images is None):
        raise HashingError("give exactly one of --dataset or --images")
    if images is None:
        return load_dataset(dataset, split or default_split, data_dir)
    from hashing import folders

    lay = folders.layout(images)
    paths, labels = folders.labelled_files(lay, folders.choose_split(lay, split, default_split))
    return paths, labels, lay.classes


def encode_split(model, planned, batch_size: int, progress: bool, strict: bool) -> Encoding:
    """Encode what plan_split found: a dataset split, or a folder's files in decoded batches
    (from the image cache when `train` or `evaluate` already decoded these files at this
    spec, else decoded as they stream by)."""
    from hashing import folders

    if isinstance(planned, ImageSet):
        ds = planned
        images = conform(ds.images, model.cfg.spec)
        enc = encode_array(model, images, batch_size, progress, desc=f"encoding {ds.name}/{ds.split}")
        return Encoding(enc.codes, ds.labels, [ds.source(i) for i in range(len(ds))], [],
                        {f"{ds.name}/{ds.split}": ds.data_dir}, enc.images_per_second, "")
    paths, labels, classes = planned
    got = folders.cached(paths, labels, model.cfg.spec)
    if got is not None:
        if strict and got.read.skipped:
            raise HashingError(got.read.skipped[0][1])
        enc = encode_array(model, got.images, batch_size, progress, desc="encoding images")
        read, kept_labels = got.read, got.labels
    else:
        batches, read = folders.iter_image_batches(paths, batch_size, model.cfg.spec, strict=strict)
        enc = encode_batches(model, batches, len(paths), progress, desc="encoding images")
        row = {p: i for i, p in enumerate(paths)}
        kept_labels = labels[[row[p] for p in read.kept]] if read.kept else labels[:0]
    if not read.kept:
        raise HashingError(f"none of the {len(paths)} images could be read ({read.summary(1)})")
    return Encoding(enc.codes, kept_labels, [str(p.resolve()) for p in read.kept], classes, {},
                    enc.images_per_second, read.summary())


def encode(run_dir: str | Path, out: str | Path, dataset: str | None = None, images: str | Path | None = None,
           split: str | None = None, data_dir: str | None = None, batch_size: int = 1024, device: str = "auto",
           progress: bool = True, strict: bool = False) -> EncodeResult:
    """Write CODES.npz: `codes` (N, bits/8) uint8, `labels` (N,) int64 (-1: unlabelled) and,
    for a folder, `sources` (the files, in the order of the codes) and `classes`."""
    check_output_file(out, "--out")
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


@dataclass
class IndexResult:
    location: str
    added: int
    total: int
    bits: int
    index_type: str
    images_per_second: float
    skipped: str = ""          # FolderRead.summary() of an --images run: '' when every file was read


def build_index(run_dir: str | Path, out: str, dataset: str | None = None, split: str | None = None,
                images: str | Path | None = None, data_dir: str | None = None, index_type: str = "flat",
                backend: str | None = None, collection: str | None = None, append: bool = False,
                batch_size: int = 1024, device: str = "auto", progress: bool = True,
                strict: bool = False, wait: float = 0.0) -> IndexResult:
    """Encode a dataset split or a folder of images and store the codes with their metadata.

    Everything that can be refused is refused before encoding (the location, the source and
    its split, the model, the index type for this many items, another writer holding the
    index's lock); the destination is touched only after encoding, and the backend's save()
    is one atomic commit, so a failure or a kill leaves the old index whole. The writer lock
    is held from before the first read of the index to the commit (`wait`: seconds to wait
    for another writer). A folder's labels are its class folders (names kept in the index's
    info); files in its root are unlabelled.
    """
    planned = plan_split(dataset, images, split, "train", data_dir)
    kind = backend_class(backend_for(out, backend))
    kind.check_location(out, creating=not append, collection=collection)
    ckpt = checkpoint.load(run_dir, resolve_device(device))
    model, record = ckpt.model, ckpt.record()
    new_file = not append and kind.__name__ == "MilvusIndex" and str(out).endswith(".db") and not Path(out).exists()
    with holding(writer_lock(out, collection, backend), wait), removed_on_failure(Path(out) if new_file else None):
        if append:
            index = open_index(out, collection, backend)
            try:
                index.info.check_model(record)
            except HashingError as e:
                raise HashingError(f"{out}: {e}") from None
            finally:
                index.close()
        else:
            kind.check_type(index_type, model.cfg.bits,
                            len(planned) if isinstance(planned, ImageSet) else len(planned[0]))
        stamps = None if isinstance(planned, ImageSet) else stamp_files(planned[0], progress)
        enc = encode_split(model, planned, batch_size, progress, strict)
        if not append:
            kind.check_type(index_type, model.cfg.bits, len(enc.codes))
        index = open_index(out, collection, backend) if append else \
            create(out, IndexInfo(bits=model.cfg.bits, model=record, index_type=index_type), backend, collection)
        try:
            index.info.datasets.update(enc.datasets)
            labels = index.info.merge_classes(enc.classes, enc.labels) if enc.classes else enc.labels
            index.add(enc.codes, labels, enc.sources, None if stamps is None else [stamps[s] for s in enc.sources])
            index.save()
            return IndexResult(str(out), len(enc.codes), index.count, index.bits, index.info.index_type,
                               enc.images_per_second, enc.skipped)
        finally:
            index.close()


def stamp_files(paths: list[Path], progress: bool = False) -> dict[str, str]:
    """{resolved path: stamp} of a folder's files, taken before they are decoded (a file changed
    while it is encoded then shows as changed to the next sync, never the other way round)."""
    from tqdm import tqdm

    from hashing.stamps import file_stamp

    return {str(p.resolve()): file_stamp(p) for p in tqdm(paths, desc="hashing files", unit="file", leave=False,
                                                          disable=not progress, dynamic_ncols=True)}


@contextlib.contextmanager
def removed_on_failure(path: Path | None):
    """A Milvus Lite file this command creates goes again if the command fails (a full disk, a kill of
    its server): no empty or half-made .db is left where none was."""
    try:
        yield
    except BaseException:
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()
        raise


@contextlib.contextmanager
def holding(lock: WriterLock, wait: float = 0.0):
    """Hold a writer lock for a block. If the block fails and taking the lock created the lock file
    (and its folder), they go again: a failed first build leaves nothing behind."""
    folder_existed, file_existed = lock.path.parent.exists(), lock.path.exists()
    lock.acquire(wait)
    ok = False
    try:
        yield lock
        ok = True
    finally:
        lock.release()
        if not ok and not file_existed:
            with contextlib.suppress(OSError):
                lock.path.unlink()
                if not folder_existed:
                    lock.path.parent.rmdir()       # only if empty


@dataclass
class QueryResult:
    image: str
    hits: list[Hit]
    classes: list[str] = field(default_factory=list)    # the index's class names, by label

    def class_of(self, hit: Hit) -> str | None:
        return self.classes[hit.label] if hit.label is not None and 0 <= hit.label < len(self.classes) else None

    def to_dict(self) -> dict:
        """{"image", "results": [{"id", "distance", "label", "source", "class"}]}; class is None unless the
        index was built from class folders."""
        return {"image": self.image, "results": [{**h.to_dict(), "class": self.class_of(h)} for h in self.hits]}


def query_images(paths: list[str | os.PathLike], index_location: str, k: int | None = None,
                 radius: int | None = None, collection: str | None = None, invert: bool = False,
                 grid: str | Path | None = None) -> list[QueryResult]:
    """Encode each image with the index's model and return its neighbours: the k nearest (default 10),
    every item within radius, or with both at most k of those within radius. Reads, never writes."""
    if k is None and radius is None:
        k = 10
    check_output_file(grid, "--grid")
    index = open_index(index_location, collection)
    try:
        return _query(index, paths, k, radius, invert, grid)
    finally:
        index.close()


def _query(index: BinaryIndex, paths, k, radius, invert, grid) -> list[QueryResult]:
    index.check_searchable(None if radius is not None else k, radius)   # before loading the model
    model = load_model_for(index)
    arrays = [read_image(p, model.cfg.spec, invert) for p in paths]  # all read before any work: fail early
    xq = encode_array(model, np.stack(arrays), progress=False).codes
    classes = list(index.info.classes)
    results = [QueryResult(str(p), hits, classes) for p, hits in zip(paths, index.query(xq, k=k, radius=radius))]
    if grid is not None:
        save_grid(results, arrays, index, grid, model.cfg.spec)
    return results


def load_model_for(index: BinaryIndex, device: str = "auto"):
    """The model that built the index, checked to be that very model (bits and weights), on `device`."""
    run_dir = index.info.model.run_dir
    if not run_dir:
        raise HashingError("the index does not record the model that built it; rebuild it with `hashing index`")
    ckpt = checkpoint.load(run_dir, resolve_device(device))
    index.info.check_model(ckpt.record())
    return ckpt.model


def save_grid(results: list[QueryResult], arrays: list[np.ndarray], index: BinaryIndex, path: str | Path,
              spec: ImageSpec, max_neighbours: int = 16) -> None:
    """A PNG: each query, then its neighbours (read back from their sources at the model's spec)."""
    from hashing.plots import retrieval_grid

    neighbours = [[_source_or_blank(h.source, index.info.datasets, spec) for h in r.hits[:max_neighbours]]
                  for r in results]
    retrieval_grid(arrays, neighbours, path)


def _source_or_blank(source: str, datasets: dict, spec: ImageSpec) -> np.ndarray | None:
    """An indexed item's image for a picture; None (a blank cell) when its file is gone."""
    try:
        return load_source(source, datasets, spec)
    except HashingError:
        return None
