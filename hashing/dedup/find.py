"""`hashing duplicates`: which files of some folders are copies of each other.

Walk the folders (the files `hashing index --images` would read; one file reached twice, through a
symlink or two folders, counts once), code every file (a copies model through the same reader as
`index --images`, or a perceptual hash of the decoded file), find every pair within the threshold
and group them without chaining (hashing.codes.grouping: stars around a centre), mark one file per group
to keep (`KEEP` rules), write JSON / CSV / an HTML report, and move the others (hashing.dedup.moves).

Checked pairs (the default; `verify=False`, `--no-verify`, trusts the codes alone). The codes only
propose: the candidates are each file's `CANDIDATES` nearest codes within the threshold, and a pair
is kept when its pixels match after aligning the two pictures (hashing.dedup.verify). Then `auto` is the
wider `calibration.CANDIDATE_FRACTION` of the code length (16 of 64 bits), or the hash's own threshold if wider.

Thresholds without the check. For a model, `auto` is its calibrated operating point from config.json
(hashing.train.calibration), else bits/8, said in the result's note. For a perceptual hash, its users'
usual threshold (`HASH_THRESHOLDS`). A number the user gives wins, with or without the check.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashing.train.calibration import CANDIDATES, candidate_radius
from hashing.core.errors import HashingError
from hashing.core.paths import distinct_files, file_key

HASHES = ("model", "phash", "dhash", "pdq")
# The perceptual hashes' usual thresholds: imagededup's default max_distance_threshold for its 64-bit
# hashes (10), and the PDQ paper's recommended 31 of 256 bits.
HASH_THRESHOLDS = {"phash": 10, "dhash": 10, "pdq": 31}
KEEP = ("largest", "oldest", "newest", "shortest-path", "first")


@dataclass
class Member:
    path: str
    distance: int
    keep: bool


@dataclass
class Found:
    """What `find_duplicates` found: the groups (largest first, kept file first in each), and the files."""

    threshold: int
    threshold_note: str        # where the threshold came from
    hash: str
    bits: int
    files: list[str]           # every file read, in walk order
    groups: list[list[Member]]
    skipped: list[tuple[str, str]] = field(default_factory=list)     # (path, reason)
    verified: bool = False     # pairs kept only when their pixels matched (hashing.dedup.verify)
    aliases: int = 0           # paths that led to a file already seen (symlinks, a folder given twice)
    seconds: dict = field(default_factory=dict)                       # encode, group, total
    against: str | None = None  # --against INDEX: each group is an indexed item and the files that are its copies
    indexed: int = 0           # --against: files that are items of the index themselves (never compared, never moved)

    @property
    def in_groups(self) -> int:
        return sum(len(g) for g in self.groups)

    def to_json(self) -> dict:
        out = {"threshold": self.threshold, "hash": self.hash, "bits": self.bits, "threshold_note": self.threshold_note,
               "verified": self.verified, "files": len(self.files), "groups": [{"files": [vars(m) for m in g]} for g in self.groups],
               "skipped": [{"path": p, "reason": r} for p, r in self.skipped]}
        if self.against is not None:
            out.update(against=self.against, indexed=self.indexed)
        return out

    def summary(self) -> str:
        secs = self.seconds.get("total", 0.0)
        if self.against is not None:
            # the indexed item heading a group is usually not one of the files read: count the files only
            copies = self.in_groups - len(self.groups)
            return (f"{len(self.files)} files, {copies} with a copy in the index (under {len(self.groups)} of its "
                    f"items), {self.indexed} items of the index themselves (not compared), {len(self.skipped)} "
                    f"skipped, {secs:.1f} s ({self.hash}, threshold {self.threshold}: {self.threshold_note}; codes only)")
        return (f"{len(self.files)} files, {len(self.groups)} groups, {self.in_groups} files in groups "
                f"({self.in_groups - len(self.groups)} copies beside the kept ones), {len(self.skipped)} skipped, "
                f"{secs:.1f} s ({self.hash}, threshold {self.threshold}: {self.threshold_note}"
                f"{'; pairs checked by their pixels' if self.verified else ''})")


def collect(folders: list[str], exclude: str | None = None) -> tuple[list[str], int, list[tuple[str, str]]]:
    """(every image file under the folders, as given and in walk order, each real file once, by a path that is
    not a symlink when it has one; the number of other paths to a file already seen; (path, why) of what
    was left out: broken links, link loops, folders that cannot be read). Files under `exclude` (the
    --move-to folder) are left out."""
    from hashing.images.folders import image_files

    out, dropped = [], []
    skip = None if exclude is None else os.path.realpath(exclude).rstrip(os.sep) + os.sep
    for folder in folders:
        p = Path(folder)
        if not p.is_dir():
            raise HashingError(f"not a folder: {folder}" if not p.exists() else f"{folder} is a file, not a folder")
        try:
            paths = image_files(folder, dropped)      # strings: "./pics/a.png" stays as given
        except HashingError:
            continue                                  # a folder without images: nothing to add
        if skip is not None:
            paths = [path for path, where in zip(paths, located(paths)) if not where.startswith(skip)]
        out.extend(paths)
    kept, failed = distinct_files(out)                 # each file once, by the file itself rather than a link to it
    dropped += [(out[i], f"cannot be read ({why})") for i, why in failed]
    aliases = len(out) - len(kept) - len(failed)
    out = [out[i] for i in kept]
    return out, aliases, [(path, f"{path}: {why}") for path, why in dict(dropped).items()]


def located(paths: list[str]) -> list[str]:
    """Where each path's directory entry really is: its folder resolved (symlinks, `..`), its own name
    kept (a link stays the link, not its target). A path and the --move-to folder are compared this
    way: `--move-to s1link/extra`, s1link a link to a scanned s1, is s1/extra, and s1/extra/x.png is in
    it. One resolve per folder, not per file."""
    folders: dict[str, str] = {}
    out = []
    for path in paths:
        head, name = os.path.split(path)
        if head not in folders:
            folders[head] = os.path.realpath(head or ".")
        out.append(os.path.join(folders[head], name))
    return out


def resolved(paths: list[str]) -> list[str]:
    """os.path.realpath of each path (how an index names its sources), a link's by itself and the
    others by `located`."""
    return [os.path.realpath(p) if os.path.islink(p) else where for p, where in zip(paths, located(paths))]


def check_move_target(folders: list[str], move_to: str) -> str | None:
    """--move-to must not be one of the scanned folders or hold one (its files would be moved into
    themselves); inside one it is left out of the scan: that folder is returned (else None)."""
    target = os.path.realpath(move_to)
    holder = None
    for folder in folders:
        real = os.path.realpath(folder)
        common = os.path.commonpath([target, real])
        if common == target:
            what = "is" if real == target else "holds"
            raise HashingError(f"move_to {move_to} {what} the folder {folder} you are scanning: give a folder "
                               f"outside it (or inside it: that folder is then left out of the scan)",
                               settings=("move_to",))
        if common == real and holder is None:
            holder = folder
    return holder


def _perceptual_one(job) -> tuple[np.ndarray | None, str]:
    from hashing.images.reader import as_picture
    from hashing.images.perceptual import hasher

    path, name = job
    try:
        return hasher(name)(as_picture(path)), ""
    except HashingError as e:
        return None, str(e)


def encode_perceptual(paths: list[str], name: str, progress: bool) -> tuple[np.ndarray, list[int], list]:
    """(packed codes of the readable files, their positions in paths, [(path, reason)] of the others)."""
    from hashing.codes.bits import pack
    from hashing.core.parallel import fork_map
    from hashing.images.perceptual import PERCEPTUAL, hasher

    hasher(name)                                     # the package is there, before any file
    codes, kept, skipped = [], [], []
    for i, (bits, why) in enumerate(fork_map(_perceptual_one, [(p, name) for p in paths], progress, f"hashing ({name})")):
        if bits is None:
            skipped.append((paths[i], why))
        else:
            codes.append(bits)
            kept.append(i)
    packed = pack(np.stack(codes)) if codes else np.zeros((0, PERCEPTUAL[name] // 8), np.uint8)
    return packed, kept, skipped


def encode_model(model, paths: list[str], batch_size: int, progress: bool) -> tuple[np.ndarray, list[int], list]:
    """The same as encode_perceptual, with the model through the folder reader (its decode cache when one exists)."""
    from hashing.images import folders
    from hashing.model.encode import encode_batches

    as_paths = [Path(p) for p in paths]
    batches, read = folders.image_batches(as_paths, batch_size, model.cfg.spec, progress=progress)
    codes = encode_batches(model, batches, len(paths), progress, desc="encoding").codes
    row = {p: i for i, p in enumerate(as_paths)}
    return codes, [row[p] for p in read.kept], [(str(p), why) for p, why in read.skipped]


def resolve_threshold(threshold, hash_name: str, bits: int, config: dict | None, fingerprint: str | None) -> tuple[int, str]:
    from hashing.train.calibration import fallback, recorded
    from hashing.codes.grouping import check_threshold

    if threshold not in (None, "auto"):
        return check_threshold(threshold, bits), "given"
    if hash_name != "model":
        return HASH_THRESHOLDS[hash_name], f"the usual one for {hash_name}"
    cal = recorded(config or {}, fingerprint)
    if cal is not None:
        return check_threshold(cal["threshold"], bits), (f"the model's calibrated one, false-positive rate "
                                                        f"{cal['fpr']:g} per pair")
    recipe = ((config or {}).get("train") or {}).get("recipe")
    why = "a model without the copies recipe" if recipe not in (None, "copies") else "a model trained before calibration"
    return fallback(bits), f"bits/8: {why} has no calibrated threshold; give --threshold or retrain"


def resolve_candidate_radius(threshold, hash_name: str, bits: int, config: dict | None,
                             fingerprint: str | None) -> tuple[int, str]:
    """(radius, where it came from): the Hamming radius of the candidates that checked pairs start from
    (the module's docstring); a number the user gives wins."""
    t, note = resolve_threshold(threshold, hash_name, bits, config, fingerprint)
    wide = t if threshold not in (None, "auto") else candidate_radius(bits, t)
    return (t, note) if wide == t else (wide, f"candidates: each file's {CANDIDATES} nearest within a quarter of the bits")


def keep_order(paths: list[str], rule: str) -> np.ndarray:
    """(N,) rank of each file under the keep rule: 0 = the one to keep first. A file gone since it was
    read (another run moved it) ranks last by every rule that looks at the file."""
    n = len(paths)
    if rule == "first":
        return np.arange(n)
    if rule == "shortest-path":
        return np.lexsort((np.arange(n), [len(p) for p in paths])).argsort()
    stats = []
    for p in paths:
        try:
            stats.append(os.stat(p))
        except OSError:
            stats.append(None)
    gone = np.array([st is None for st in stats])
    if rule in ("oldest", "newest"):
        m = np.array([0 if st is None else st.st_mtime_ns for st in stats], dtype=np.float64)
        return np.lexsort((np.arange(n), m if rule == "oldest" else -m, gone)).argsort()
    if rule == "largest":
        headers = [_header(p) for p in paths]
        pixels = np.array([h[0] for h in headers], dtype=np.float64)
        lossless = np.array([h[1] for h in headers], dtype=np.float64)
        size = np.array([0 if st is None else st.st_size for st in stats], dtype=np.float64)
        return np.lexsort((np.arange(n), -size, -lossless, -pixels, gone)).argsort()
    raise HashingError(f"unknown keep {rule!r}: choose from {', '.join(KEEP)}", settings=("keep",))


LOSSY = ("JPEG", "MPO")          # formats whose re-save loses detail: a lossless file of as many pixels is kept first


def _header(path: str) -> tuple[int, bool]:
    """(width x height, lossless format) from the file's header (no decoding); (0, False) if it cannot be told."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.width * im.height, im.format not in LOSSY
    except Exception:       # noqa: BLE001  the file was read a moment ago; a vanished one just ranks last
        return 0, False


def find_duplicates(folders: list[str], run_dir: str | None = None, *, threshold="auto", hash_name: str = "model",
                    keep: str = "largest", batch_size: int = 256, device: str = "auto",
                    progress: bool = True, exclude: str | None = None, verify: bool = True) -> Found:
    """Every group of copies among the images under `folders` (see the module's docstring)."""
    from hashing.codes.grouping import distances_to, pairs_within, star_groups

    if hash_name not in HASHES:
        raise HashingError(f"unknown hash_name {hash_name!r}: choose from {', '.join(HASHES)}", settings=("hash_name",))
    if keep not in KEEP:
        raise HashingError(f"unknown keep {keep!r}: choose from {', '.join(KEEP)}", settings=("keep",))
    if not folders:
        raise HashingError("give at least one folder")
    t0 = time.perf_counter()
    model = config = fingerprint = None
    if hash_name == "model":
        if run_dir is None:
            raise HashingError("duplicates needs a copies model: train one with `hashing train --images FOLDER "
                               "--recipe copies --out RUN`, then give run_dir RUN (or use hash_name phash|dhash|pdq)",
                               settings=("run_dir", "hash_name"))
        from hashing.model import checkpoint
        from hashing.model.device import resolve_device

        ckpt = checkpoint.load(run_dir, resolve_device(device))
        model, fingerprint, bits = ckpt.model, ckpt.fingerprint, ckpt.config.bits
        config = checkpoint.read_config(run_dir)
    else:
        from hashing.images.perceptual import PERCEPTUAL

        bits = PERCEPTUAL[hash_name]
    if verify:
        from hashing.dedup.verify import require_cv2

        require_cv2()
        t, note = resolve_candidate_radius(threshold, hash_name, bits, config, fingerprint)
    else:
        t, note = resolve_threshold(threshold, hash_name, bits, config, fingerprint)
    paths, aliases, dropped = collect(folders, exclude)
    found = Found(t, note, hash_name, bits, [], [], skipped=dropped, verified=verify, aliases=aliases)
    if not paths:
        found.seconds = {"total": time.perf_counter() - t0}
        return found
    t1 = time.perf_counter()
    if model is not None:
        codes, kept, skipped = encode_model(model, paths, batch_size, progress)
    else:
        codes, kept, skipped = encode_perceptual(paths, hash_name, progress)
    t2 = time.perf_counter()
    files = [paths[i] for i in kept]
    if verify:
        i, j, unread = _checked_pairs(codes, files, t, progress)
        skipped = skipped + unread
    else:
        i, j, _ = pairs_within(codes, t, progress)
    paired = np.unique(np.concatenate([i, j]))                # only files with a copy need ranking
    order = np.full(len(files), len(files), np.int64)
    order[paired] = keep_order([files[k] for k in paired], keep)
    groups = star_groups(len(files), i, j, order)
    out = []
    for members in groups.members:
        kept_row = members[np.argmin(order[members])]
        d = distances_to(codes, members, kept_row)
        rank = np.lexsort((order[members], d))
        out.append([Member(files[m], int(d[r]), bool(m == kept_row)) for r, m in zip(rank, members[rank])])
    out.sort(key=lambda g: (-len(g), g[0].path))
    found.files, found.groups, found.skipped = files, out, dropped + skipped
    found.seconds = {"encode": round(t2 - t1, 2), "group": round(time.perf_counter() - t2, 2),
                     "total": round(time.perf_counter() - t0, 2)}
    return found


def _checked_pairs(codes: np.ndarray, files: list[str], radius: int,
                   progress: bool) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """The candidate pairs (each file's CANDIDATES nearest within radius) whose pixels match, and
    the files that could not be read again for the check (changed or removed since they were
    encoded), with the reason: they are in no pair."""
    from hashing.dedup import verify
    from hashing.codes.grouping import neighbours_within

    i, j, _ = neighbours_within(codes, radius, CANDIDATES, progress)
    if not len(i):
        return i, j, []
    seen = np.unique(np.concatenate([i, j]))                  # only files with a candidate are looked at
    views = dict(zip(seen.tolist(), verify.views_of([files[k] for k in seen], progress)))
    score = verify.check_pairs([views[a] for a in i], [views[b] for b in j], progress)
    ok = score >= verify.MATCH
    unread = [(files[k], f"unreadable at the pixel check, after it was encoded: {v.unread}")
              for k, v in views.items() if v.unread is not None]
    return i[ok], j[ok], unread


AGAINST_K = 8       # --against: the nearest items asked for per file (its own item, if any, is one of them)


def find_in_index(folders: list[str], index_location: str, *, threshold="auto", collection: str | None = None,
                  batch_size: int = 256, device: str = "auto", progress: bool = True,
                  exclude: str | None = None) -> Found:
    """`--against INDEX`: the files under `folders` that already have a copy in an index (nothing is added to
    it). One group per indexed item that has copies: the item itself first (its source as the index
    records it), then the files whose nearest indexed item within T it is.

    A file that is itself an item of the index (its resolved path is an item's source, or it is the same
    file as the source of one of its nearest items: a hard link, another mount) is already in the
    collection, not a copy of it: it is counted (`indexed`) and never compared, so an index built from
    the very folder scanned finds nothing to move rather than every file. The item heads its group as
    the kept file when its source is a file on disk; when it is not (a dataset's item, a file removed
    since), the group's nearest file is kept instead, so moving the others never leaves a group with
    no file on disk."""
    from hashing.model import checkpoint
    from hashing.indexes import open_index
    from hashing.model.checkpoint import load_model_for

    t0 = time.perf_counter()
    index = open_index(index_location, collection)
    try:
        model = load_model_for(index, device)
        run_dir = index.info.model.run_dir
        config, fingerprint = checkpoint.read_config(run_dir), index.info.model.fingerprint
        bits = model.cfg.bits
        t, note = resolve_threshold(threshold, "model", bits, config, fingerprint)
        index.check_searchable(min(2, index.count), t)
        paths, aliases, dropped = collect(folders, exclude)
        found = Found(t, note, "model", bits, [], [], skipped=dropped, aliases=aliases, against=str(index_location))
        if not paths:
            return found
        codes, kept, skipped = encode_model(model, paths, batch_size, progress)
        t1 = time.perf_counter()
        sources = set(index.items()[2])
        hits = index.query(codes, k=min(AGAINST_K, index.count), radius=t) if len(codes) else []
    finally:
        index.close()
    files = [paths[i] for i in kept]
    by_item: dict[int, list] = {}
    keys: dict[str, tuple | None] = {}

    def key(path):                                       # (dev, inode), each source looked at once
        if path not in keys:
            keys[path] = file_key(path)
        return keys[path]

    indexed = 0
    for path, real, h in zip(files, resolved(files), hits):
        mine = file_key(path)
        if real in sources or mine is not None and any(key(x.source) == mine for x in h):
            indexed += 1                                 # an item of the index itself: not its own copy
            continue
        if h:
            by_item.setdefault(h[0].id, [h[0].source]).append(Member(path, int(h[0].distance), False))
    groups = []
    for members in by_item.values():
        item, copies = members[0], sorted(members[1:], key=lambda m: (m.distance, m.path))
        on_disk = os.path.isfile(item)
        if not on_disk:
            copies[0].keep = True
        groups.append([Member(item, 0, on_disk), *copies])
    groups.sort(key=lambda g: (-len(g), g[0].path))
    found.files, found.groups, found.skipped, found.indexed = files, groups, dropped + skipped, indexed
    found.seconds = {"encode": round(t1 - t0, 2), "total": round(time.perf_counter() - t0, 2)}
    return found


def write_csv(found: Found, path: str | os.PathLike) -> None:
    """One row per file in a group: group (1-based, largest first), path, distance to the kept file, keep."""
    from hashing.core.atomic import atomic_path

    # A name that is not UTF-8 (os.fsdecode gave it surrogates) is written as its own bytes: the CSV
    # names every file as the file system holds it (read it with errors="surrogateescape").
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        w = csv.writer(f)
        w.writerow(["group", "path", "distance", "keep"])
        for g, members in enumerate(found.groups, 1):
            for m in members:
                w.writerow([g, m.path, m.distance, "true" if m.keep else "false"])


@dataclass
class Job:
    """What `hashing duplicates` did: what it found, and the moves it made or would make."""

    found: Found
    moves: list[tuple[str, str]] = field(default_factory=list)      # (from, to) planned
    moved: object = None                                            # hashing.dedup.moves.Moved, when files moved
    written: list[str] = field(default_factory=list)                # the output files written
    notes: list[str] = field(default_factory=list)                  # one line each, for the user


def run(folders: list[str], run_dir: str | None = None, *, threshold="auto", hash_name: str = "model",
        keep: str = "largest", json_out=None, csv_out=None, report=None, move_to=None, dry_run: bool = False,
        batch_size: int = 256, device: str = "auto", progress: bool = True, against: str | None = None,
        verify: bool = True) -> Job:
    """`hashing duplicates`: every output and the move target checked before any work, then find, write, move."""
    from hashing.dedup import moves
    from hashing.core.atomic import check_output_file, write_json

    from hashing.images.reader import IMAGE_SUFFIXES

    outputs = [(path, what, ending) for path, what, ending in
               ((json_out, "json_out", "json"), (csv_out, "csv_out", "csv"), (report, "report", "html"))
               if path is not None]
    for path, what, ending in outputs:
        check_output_file(path, what)
        if Path(path).suffix.lower() in IMAGE_SUFFIXES:
            raise HashingError(f"{what} {path} is named like a picture ({Path(path).suffix}): writing there could "
                               f"replace one of your images; give a name ending .{ending}", settings=(what,))
        real = os.path.realpath(path)                   # an output is written through a link, to its target
        if Path(real).suffix.lower() in IMAGE_SUFFIXES:
            raise HashingError(f"{what} {path} is a link to {real}, named like a picture: writing there could "
                               f"replace one of your images; give a file of its own", settings=(what,))
    for k, (path, what, _) in enumerate(outputs):
        for other, other_what, _ in outputs[k + 1:]:
            if os.path.realpath(path) == os.path.realpath(other):       # a link to the other one too
                raise HashingError(f"{what} and {other_what} are the same file ({path}): give each its own",
                                   settings=(what, other_what))
    if dry_run and move_to is None:
        raise HashingError("dry_run shows what move_to DIR would move: give move_to too",
                           settings=("dry_run", "move_to"))
    inside = None
    if move_to is not None:
        inside = check_move_target(folders, move_to)
        moves.check_target([], move_to)
    if against is not None:
        if hash_name != "model":
            raise HashingError("against INDEX compares with the codes of the index's own model: leave out hash_name",
                               settings=("against", "hash_name"))
        found = find_in_index(folders, against, threshold=threshold, batch_size=batch_size, device=device,
                              progress=progress, exclude=move_to)
    else:
        found = find_duplicates(folders, run_dir, threshold=threshold, hash_name=hash_name, keep=keep,
                                batch_size=batch_size, device=device, progress=progress, exclude=move_to,
                                verify=verify)
    job = Job(found)
    if inside is not None and os.path.isdir(move_to):
        job.notes.append(f"left out of the scan: {move_to} (the --move-to folder, inside {inside})")
    if against is not None and move_to is not None:
        job.notes.append(f"--against moves the files of {', '.join(folders)} that have a copy in the index; "
                         f"never an item of the index itself")
    if json_out is not None:
        write_json(json_out, found.to_json())
        job.written.append(str(json_out))
    if csv_out is not None:
        write_csv(found, csv_out)
        job.written.append(str(csv_out))
    if report is not None:
        from hashing.dedup.html import write_report

        write_report(found, report, progress)
        job.written.append(str(report))
    if move_to is not None:
        read = set(found.files)                         # not an --against item: its source need not be a file
        gone = [m.path for g in found.groups for m in g if m.path in read and file_key(m.path) is None]
        if gone:
            job.notes.append(f"{len(gone)} file(s) of the groups no longer there (moved or removed by another process "
                             f"since this run read them; first {gone[0]}): not moved")
        job.moves = moves.plan([(path, _root_of(path, folders)) for path in to_move(found.groups)], move_to)
        if not dry_run and job.moves:
            job.moved = moves.move_files(job.moves, move_to)
    return job


def to_move(groups: list[list[Member]]) -> list[str]:
    """The files --move-to moves: every file of a group but its kept one; never a file some group keeps
    (compared as files, not names: another path or a hard link to it is the same file), never one file
    twice, and never the last file of a group still on disk (a group's kept file gone since it was
    found: its first other file stays in its place)."""
    key = {m.path: file_key(m.path) for g in groups for m in g}
    kept = {key[m.path] for g in groups for m in g if m.keep} - {None}
    out, taken = [], set()
    for g in groups:
        stays = any(key[m.path] is not None and (m.keep or key[m.path] in kept) for m in g)
        for m in g:
            k = key[m.path]
            if m.keep or k is None or k in kept or k in taken:
                continue
            if not stays:
                stays = True
                continue
            taken.add(k)
            out.append(m.path)
    return out


def _root_of(path: str, folders: list[str]) -> str:
    """The folder argument a file was found under (the first that contains it)."""
    p = os.path.abspath(path)
    for folder in folders:
        root = os.path.abspath(folder)
        if p.startswith(root.rstrip(os.sep) + os.sep):
            return folder
    return os.path.dirname(path)
