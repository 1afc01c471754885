"""`hashing index`: encode a dataset split or a folder and store the codes in an index (new, or appended to)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from hashing.core.errors import HashingError
from hashing.core.locks import holding
from hashing.images.datasets import ImageSet
from hashing.indexes import IndexInfo, create, open_index
from hashing.indexes.backends import backend_class, backend_for, writer_lock
from hashing.indexes.milvus.address import is_lite_file
from hashing.model import checkpoint
from hashing.model.device import resolve_device
from hashing.workflows.encode import encode_split, plan_split


@dataclass
class IndexResult:
    location: str
    added: int
    total: int
    bits: int
    index_type: str
    images_per_second: float
    skipped: str = ""          # FolderRead.summary() of an --images run: '' when every file was read


def build_index(run_dir: str | Path, out: str, *, dataset: str | None = None, split: str | None = None,
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
    new_file = not append and is_lite_file(out) and not Path(out).exists()
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

    from hashing.images.stamps import file_stamp

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
