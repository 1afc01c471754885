"""`hashing index --sync`: bring an existing index in step with the folder it was built from.

What sync compares: the image files under the folder (its split, as `hashing index` reads it)
against the index's items whose source lies under that folder; items from anywhere else (other
folders appended, datasets) are never touched. Each file is
- added when no item has its path;
- unchanged when its item's stamp matches (size and mtime equal, or else the same SHA-256:
  hashing.images.stamps): not read, not encoded, its id kept;
- changed otherwise: encoded again; its old item is removed and the new one gets a new id
  (ids are never reused);
and every item whose file is gone (deleted, renamed, no longer an image) is removed, as are
extra items of a file indexed twice. A file that cannot be decoded is skipped: a new one is not
added, a changed one keeps its old item (the summary names both). All of it is one commit
under the writer lock, like any build (a Milvus sync that removes more than about 20,000 items
commits its removals in parts: indexes/milvus/index.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashing.model import checkpoint
from hashing.model.device import resolve_device
from hashing.core.errors import HashingError
from hashing.indexes.backends import open_index, writer_lock
from hashing.core.locks import holding


@dataclass
class SyncResult:
    location: str
    added: int
    removed: int
    changed: int
    unchanged: int
    total: int
    bits: int
    index_type: str
    skipped: str = ""                                     # FolderRead.summary() of the files that failed
    kept_old: list[str] = field(default_factory=list)     # changed files that failed: their old items stay

    def summary(self) -> str:
        return (f"synced {self.location}: {self.added} added, {self.removed} removed, {self.changed} changed, "
                f"{self.unchanged} unchanged ({self.total} items in all, {self.bits} bits, {self.index_type})")


@dataclass
class Plan:
    """What a sync will do, before any encoding."""

    new: list[Path]                      # files with no item
    changed: list[Path]                  # files whose item is out of date
    unchanged: int
    gone: list[int]                      # ids of items whose file is gone (or indexed twice)
    old_ids: dict[str, int]              # resolved path -> the id of its item
    stamps: dict[str, str]               # resolved path -> its stamp now (new and changed files)
    key_of: dict[Path, str]              # new and changed files -> their resolved paths


def plan_sync(index, files: list[str], keys: list[str], root: Path, progress: bool = False) -> Plan:
    """Compare the folder's files (`keys`: their resolved paths) with the index's items under `root`."""
    from tqdm import tqdm

    from hashing.images.stamps import file_stamp, same_file

    ids, _, sources, stamps = index.items()
    under, gone = {}, []
    prefix = str(root.resolve())
    for i, source, stamp in zip(ids.tolist(), sources, stamps):
        if source == prefix or source.startswith(prefix.rstrip("/") + "/"):
            if source in under:
                gone.append(i)                       # a file indexed twice keeps its first item
            else:
                under[source] = (i, stamp)
    new, changed, now, key_of, unchanged = [], [], {}, {}, 0
    seen = set()
    for p, key in tqdm(zip(files, keys), total=len(files), desc="comparing files", unit="file", leave=False,
                       disable=not progress, dynamic_ncols=True):
        seen.add(key)
        if key not in under:
            new.append(Path(p))
            key_of[new[-1]] = key
            now[key] = file_stamp(p)
            continue
        same, stamp = same_file(p, under[key][1])
        if same:
            unchanged += 1
        else:
            changed.append(Path(p))
            key_of[changed[-1]] = key
            now[key] = stamp
    gone += [i for source, (i, _) in under.items() if source not in seen]
    return Plan(new, changed, unchanged, sorted(gone), {s: i for s, (i, _) in under.items()}, now, key_of)


def sync_index(run_dir: str | Path, location: str, *, images: str | Path, split: str | None = None,
               collection: str | None = None, batch_size: int = 1024, device: str = "auto",
               progress: bool = True, wait: float = 0.0) -> SyncResult:
    """Bring the index at `location` in step with the folder `images` (see the module's docstring)."""
    from hashing.images import folders
    from hashing.model.encode import encode_batches

    lay = folders.layout(images)
    chosen = folders.choose_split(lay, split, "train")
    top = lay.split_root(chosen)
    files, keys, labels = folders.split_files(lay, chosen)     # an empty folder is refused here, never emptied
    label_of = dict(zip(keys, labels.tolist()))
    ckpt = checkpoint.load(run_dir, resolve_device(device))
    with holding(writer_lock(location, collection), wait):
        index = open_index(location, collection)
        try:
            try:
                index.info.check_model(ckpt.record())
            except HashingError as e:
                raise HashingError(f"{location}: {e}") from None
            plan = plan_sync(index, files, keys, top, progress)
            todo = plan.new + plan.changed
            codes, kept, skipped = np.zeros((0, index.bits // 8), np.uint8), [], ""
            failed: set[str] = set()
            if todo:
                batches, read = folders.iter_image_batches(todo, batch_size, ckpt.model.cfg.spec, progress=False)
                codes = encode_batches(ckpt.model, batches, len(todo), progress, desc="encoding changes").codes
                kept = [plan.key_of[p] for p in read.kept]
                skipped, failed = read.summary(), {plan.key_of[p] for p, _ in read.skipped}
            changed_ok = [plan.key_of[p] for p in plan.changed if plan.key_of[p] not in failed]
            kept_old = [str(p) for p in plan.changed if plan.key_of[p] in failed]
            removed = plan.gone + [plan.old_ids[s] for s in changed_ok]
            if removed or kept:
                if removed:
                    index.remove(np.asarray(removed, np.int64))
                if kept:
                    item_labels = np.asarray([label_of[s] for s in kept], np.int64)
                    item_labels = index.info.merge_classes(lay.classes, item_labels)
                    index.add(codes, item_labels, kept, [plan.stamps[s] for s in kept])
                index.save()
            return SyncResult(str(location), len(kept) - len(changed_ok), len(plan.gone), len(changed_ok),
                              plan.unchanged, index.count, index.bits, index.info.index_type,
                              skipped, kept_old)
        finally:
            index.close()
