"""Folders of image files as datasets: torchvision's ImageFolder layout, decoded once into a cache.

Layout. A file's first folder below the root is its class; files directly in the root are
unlabelled (label -1). Labels number the class names in sorted order. If the root holds both
`train/` and `test/` folders, those are the two splits (anything else in the root is not
read) and the class names are the union of both, so a label means the same class in each;
otherwise the whole root is one split.

Cache, and why. Decoding and resizing a PNG or JPEG costs more CPU than a training step on
it does at these image sizes, and training reads every image once per epoch, `evaluate`
reads the split again, `index` again. On a 2-core machine, decoding in DataLoader workers
every epoch would compete with training for the same cores. So the first command that needs
a folder decodes every file exactly once (in worker processes, with a progress bar) into one
uint8 array file (N, *spec.shape) in the cache folder, keyed by the files' paths, sizes and
modification times and by the ImageSpec; every later epoch and command maps that file. A
changed, added or removed file changes the key (a new cache is built; delete the cache folder
to reclaim the space). The array is written under a temporary name and renamed, and its
manifest after it: a killed decode leaves no cache that a later command would trust.

Memory. A split whose decoded bytes fit the memory budget (HASHING_MEMORY_BUDGET bytes,
default 2 GiB; suffixes K/M/G allowed) is read into RAM, and training puts it on the device
as one tensor, the fast path. A bigger split stays a read-only memory map: training gathers
each batch's rows from it (the page cache keeps what fits), encoding reads it in order.

Cache folder: hashing.core.paths.cache_dir("images") ($HASHING_CACHE/images, else ~/.cache/hashing/images).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from hashing.core import paths
from hashing.core.paths import distinct_files
from hashing.core.errors import HashingError
from hashing.core.parallel import fork_map
from hashing.images.reader import IMAGE_SUFFIXES, MIN_SIZE, ImageSpec, is_gray, read_image_noting

CACHE_FORMAT = "hashing-image-cache/1"
DEFAULT_BUDGET = 2 << 30
AUTO_SIZE_MAX = 32             # the automatic image size: the folder's median shorter side, at most this (docs/images.md)


def cache_dir() -> Path:
    return paths.cache_dir("images")


def memory_budget() -> int:
    """HASHING_MEMORY_BUDGET in bytes (K, M, G suffixes), default 2 GiB."""
    text = os.environ.get("HASHING_MEMORY_BUDGET", "").strip().upper()
    if not text:
        return DEFAULT_BUDGET
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise HashingError(f"HASHING_MEMORY_BUDGET must be a number of bytes such as 2G or 500M, got {text!r}") from None
    if value < 0:
        raise HashingError(f"HASHING_MEMORY_BUDGET must not be negative, got {text!r}")
    return int(value)


def image_files(folder: str | os.PathLike, dropped: list | None = None) -> list[str]:
    """Every image file (by suffix) under `folder`, recursively, in a stable (sorted) order, as strings
    (40,000 Path objects cost a tenth of a second: sync lists whole folders).

    Hidden files and folders (a leading dot) are skipped, as are links to folders; broken links,
    link loops and folders that cannot be listed are left out and, with `dropped`, added to it as
    (path, why)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise HashingError(f"not a folder: {folder}" if not os.path.exists(folder) else f"{folder} is a file, not a folder")
    found: list[str] = []
    drop = dropped if dropped is not None else []
    stack = [folder]
    while stack:                                    # os.scandir: one stat per file at most
        top = stack.pop()
        try:
            entries = list(os.scandir(top))
        except OSError as e:
            if top != folder:
                drop.append((top, f"a folder that cannot be read ({e.strerror or e}): its files were not looked at"))
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            elif os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES:
                try:
                    if e.is_file():
                        found.append(e.path)
                    elif not os.path.exists(e.path):
                        drop.append((e.path, "a broken link (its target does not exist)"))
                except OSError as err:
                    drop.append((e.path, f"cannot be read ({err.strerror or err})"))
    if not found:
        raise HashingError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    found.sort(key=lambda f: f.split(os.sep))       # the order of sorted Paths: part by part
    return found


def class_labels(files: list[str], top: str | os.PathLike, classes: list[str]) -> np.ndarray:
    """(N,) int64: the index in `classes` of each file's first folder under `top`; -1 for files in `top` itself."""
    ids = {name: i for i, name in enumerate(classes)}
    skip = len(os.fspath(top).rstrip(os.sep)) + 1          # every file starts with top + os.sep (image_files)
    firsts = [f[skip:].split(os.sep, 1) for f in files]
    return np.array([ids.get(f[0], -1) if len(f) > 1 else -1 for f in firsts], dtype=np.int64)


@dataclass
class Layout:
    """What a folder holds: its root, whether it has train/ and test/ splits, its class names."""

    root: Path
    has_splits: bool
    classes: list[str]

    def split_root(self, split: str | None) -> Path:
        return self.root / split if self.has_splits else self.root


def layout(folder: str | os.PathLike) -> Layout:
    root = Path(folder)
    if not root.is_dir():
        raise HashingError(f"not a folder: {root}" if not root.exists() else f"{root} is a file, not a folder")
    has_splits = (root / "train").is_dir() and (root / "test").is_dir()
    tops = [root / "train", root / "test"] if has_splits else [root]
    classes = sorted({d.name for top in tops for d in top.iterdir() if d.is_dir() and not d.name.startswith(".")})
    return Layout(root, has_splits, classes)


def choose_split(lay: Layout, split: str | None, default: str | None) -> str | None:
    """The split to read: the one asked for (or the command's default) when the folder has
    splits; None (the whole folder) when it has none, where asking for one is an error."""
    if lay.has_splits:
        chosen = split or default
        if chosen not in ("train", "test"):
            raise HashingError(f"{lay.root} has train/ and test/ folders: give split train or split test",
                               settings=("split",))
        return chosen
    if split is not None:
        raise HashingError(f"{lay.root} has no train/ and test/ folders, so there is no split {split} "
                           f"(leave split out to use the whole folder)", settings=("split",))
    return None


def labelled_files(lay: Layout, split: str | None) -> tuple[list[Path], np.ndarray]:
    """(image files of the split, their labels (N,) int64: class index, -1 for files in the root)."""
    files, _, labels = split_files(lay, split)
    return [Path(f) for f in files], labels


def split_files(lay: Layout, split: str | None) -> tuple[list[str], list[str], np.ndarray]:
    """(the split's image files, their resolved paths, their labels), a file reached twice (a link
    to another file of the split, a hard link) once (hashing.core.paths.distinct_files): at its own
    path (else its first link in sorted order). A file that cannot be looked at stays, for the reader
    to skip with its reason."""
    top = lay.split_root(split)
    files = image_files(top)
    kept, failed = distinct_files(files)
    if len(kept) + len(failed) < len(files):
        files = [files[i] for i in sorted(kept + [i for i, _ in failed])]
    return files, resolved_paths(files, top), class_labels(files, top, lay.classes)


def resolved_paths(files: list[str], top: str | os.PathLike) -> list[str]:
    """os.path.realpath of every file under `top` (how indexes name sources), without resolving each
    path (40,000 resolves cost seconds): `top` is resolved once; a file that is a link by itself."""
    base = os.path.realpath(top)
    prefix = os.fspath(top).rstrip(os.sep) + os.sep
    return [os.path.realpath(f) if not f.startswith(prefix) or os.path.islink(f) else base + os.sep + f[len(prefix):]
            for f in files]


@dataclass
class FolderRead:
    """What reading a list of image files found: the files that decoded, and the ones skipped with why."""

    kept: list[Path]
    skipped: list[tuple[Path, str]]
    animated: list[Path] = dataclasses.field(default_factory=list)     # kept files of which the first frame was read

    def summary(self, shown: int = 3) -> str:
        """'' when every file was read whole, else one line: how many were skipped, with the first few
        reasons, and how many were animated (their first frame read)."""
        parts = []
        if self.skipped:
            first = "; ".join(reason for _, reason in self.skipped[:shown])
            more = f"; and {len(self.skipped) - shown} more" if len(self.skipped) > shown else ""
            parts.append(f"skipped {len(self.skipped)} unreadable file(s): {first}{more}")
        if self.animated:
            names = ", ".join(p.name for p in self.animated[:shown])
            more = f" and {len(self.animated) - shown} more" if len(self.animated) > shown else ""
            parts.append(f"{len(self.animated)} animated file(s), first frame only: {names}{more}")
        return "; ".join(parts)


def _decode_one(job: tuple[str, ImageSpec, bool]) -> tuple[np.ndarray | None, str]:
    """(image, '') or (None, why not); why is 'animated' for an animated file that was read."""
    path, spec, invert = job
    try:
        arr, animated = read_image_noting(path, spec, invert)
        return arr, ANIMATED if animated else ""
    except HashingError as e:
        return None, str(e)


ANIMATED = "animated"


def decode_files(paths: list[Path], spec: ImageSpec, invert: bool = False, progress: bool = True,
                 desc: str = "decoding") -> Iterator[tuple[Path, np.ndarray | None, str]]:
    """(path, uint8 image or None, why not) for every path, in order (many in worker processes: the
    workers only run Pillow)."""
    jobs = [(str(p), spec, invert) for p in paths]
    for p, (arr, why) in zip(paths, fork_map(_decode_one, jobs, progress, desc)):
        yield p, arr, why


def iter_image_batches(paths: list[Path], batch_size: int, spec: ImageSpec, invert: bool = False,
                       strict: bool = False, progress: bool = False) -> tuple[Iterator[np.ndarray], FolderRead]:
    """Stream (B, *spec.shape) uint8 batches so a million files are never all in memory.

    Unreadable files are skipped and recorded in the returned FolderRead as the iterator runs
    (`strict`: the first one is an error instead); only decoded images are ever in a batch.
    """
    read = FolderRead([], [])

    def batches() -> Iterator[np.ndarray]:
        buf: list[np.ndarray] = []
        for p, arr, why in decode_files(paths, spec, invert, progress):
            if arr is None:
                if strict:
                    raise HashingError(why)
                read.skipped.append((p, why))
                continue
            read.kept.append(p)
            if why == ANIMATED:
                read.animated.append(p)
            buf.append(arr)
            if len(buf) == batch_size:
                yield np.stack(buf)
                buf = []
        if buf:
            yield np.stack(buf)
    return batches(), read


def image_batches(paths: list[Path], batch_size: int, spec: ImageSpec, strict: bool = False,
                  progress: bool = False) -> tuple[Iterator[np.ndarray], FolderRead]:
    """The files decoded at `spec` in batches of at most batch_size, from the decode cache when `train`
    or `evaluate` already decoded exactly these files at this spec, else decoded as they stream by
    (iter_image_batches; `progress`: its decoding bar). The FolderRead is complete once the batches are
    (at once from the cache); `strict`: an unreadable file is an error instead of skipped."""
    got = cached(paths, np.full(len(paths), -1, np.int64), spec)
    if got is None:
        return iter_image_batches(paths, batch_size, spec, strict=strict, progress=progress)
    if strict and got.read.skipped:
        raise HashingError(got.read.skipped[0][1])
    images = got.images
    return (images[s:s + batch_size] for s in range(0, len(images), batch_size)), got.read


def inspect(paths: list[Path], sample: int = 64) -> tuple[int, int]:
    """(automatic image size, channels) for a folder from an even sample of its files: the median
    shorter side clipped to 16..32 (AUTO_SIZE_MAX), and 1 channel when no sampled image has colour, else 3."""
    from hashing.images.reader import load_picture

    step = max(1, len(paths) // sample)
    sides, gray = [], []
    for p in paths[::step][:sample]:
        try:
            im = load_picture(p)              # the reader's refusals: a decompression bomb is not decoded
        except Exception:       # noqa: BLE001  unreadable files are counted when the folder is decoded
            continue
        sides.append(min(im.size))
        gray.append(is_gray(im))
    if not sides:
        raise HashingError(f"none of the {min(len(paths), sample)} sampled images could be read")
    size = int(np.clip(np.median(sides), MIN_SIZE, AUTO_SIZE_MAX))
    return size, 1 if all(gray) else 3


@dataclass
class FolderImages:
    """A decoded split: images (N, *spec.shape) uint8 in RAM or memory-mapped, with labels and files."""

    images: np.ndarray
    labels: np.ndarray
    paths: list[Path]
    read: FolderRead

    @property
    def in_memory(self) -> bool:
        return not isinstance(self.images, np.memmap)


def _key(paths: list[Path], spec: ImageSpec, invert: bool) -> str:
    h = hashlib.sha256(json.dumps([CACHE_FORMAT, *dataclasses.astuple(spec), invert]).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def _load_cached(where: Path, key: str, paths: list[Path]):
    """(memmap (kept, ...), kept indices into paths, skipped [(index, reason)], animated indices) or None."""
    manifest = where / f"{key}.json"
    try:
        meta = json.loads(manifest.read_text())
        kept = np.asarray(meta["kept"], dtype=np.int64)
        images = np.load(where / meta["array"], mmap_mode="r")
        if meta.get("format") != CACHE_FORMAT or meta.get("files") != len(paths) or len(images) < len(kept):
            return None
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    return (images[:len(kept)], kept, [(int(i), str(r)) for i, r in meta["skipped"]],
            [int(i) for i in meta.get("animated", [])])


def _build_cache(where: Path, key: str, paths: list[Path], spec: ImageSpec, invert: bool, strict: bool,
                 progress: bool, desc: str):
    from hashing.core.atomic import write_json

    try:
        where.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(where)
        tmp = where / f".tmp-{key}-{os.getpid()}.npy"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *spec.shape))
    except OSError as e:
        raise HashingError(f"cannot write the image cache in {where} ({e.strerror or e}); "
                           f"set HASHING_CACHE to a writable folder") from None
    try:
        kept, skipped, animated = [], [], []
        for i, (p, arr, why) in enumerate(decode_files(paths, spec, invert, progress, desc)):
            if arr is None:
                if strict:
                    raise HashingError(why)
                skipped.append((i, why))
                continue
            out[len(kept)] = arr            # rows stay packed: the kept images are out[:len(kept)]
            kept.append(i)
            if why == ANIMATED:
                animated.append(i)
        out.flush()
        del out
        array = f"{key}.npy"
        os.replace(tmp, where / array)
        write_json(where / f"{key}.json", {"format": CACHE_FORMAT, "array": array, "files": len(paths),
                                           "kept": kept, "skipped": skipped, "animated": animated})
    finally:
        if tmp.exists():
            tmp.unlink()
    return _load_cached(where, key, paths)


def _remove_stale_temporaries(where: Path) -> None:
    """Temporary arrays of decodes that were killed (their process is gone)."""
    for tmp in where.glob(".tmp-*.npy"):
        try:
            pid = int(tmp.stem.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


def cached(paths: list[Path], labels: np.ndarray, spec: ImageSpec, invert: bool = False) -> FolderImages | None:
    """The decoded files if a cache of exactly these files at this spec exists, else None."""
    found = _load_cached(cache_dir(), _key(paths, spec, invert), paths)
    return None if found is None else _result(paths, labels, *found)


def read_folder(paths: list[Path], labels: np.ndarray, spec: ImageSpec, invert: bool = False, strict: bool = False,
                progress: bool = True, desc: str = "decoding") -> FolderImages:
    """Decode `paths` at `spec` (once: later calls map the cache), in RAM when within the budget."""
    where, key = cache_dir(), _key(paths, spec, invert)
    found = _load_cached(where, key, paths) or _build_cache(where, key, paths, spec, invert, strict, progress, desc)
    got = _result(paths, labels, *found)
    if strict and got.read.skipped:
        raise HashingError(got.read.skipped[0][1])
    if not len(got.paths):
        raise HashingError(f"none of the {len(paths)} images could be read ({got.read.summary(1)})")
    return got


def _result(paths, labels, images, kept, skipped, animated) -> FolderImages:
    kept = np.asarray(kept, dtype=np.int64)
    read = FolderRead([paths[i] for i in kept], [(paths[i], why) for i, why in skipped], [paths[i] for i in animated])
    if isinstance(images, np.memmap) and images.nbytes <= memory_budget():
        images = np.array(images)
    return FolderImages(images, labels[kept], read.kept, read)
