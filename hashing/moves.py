"""Moving files into a folder with an undo log, and moving them back: nothing is ever deleted.

One run at a time moves files into (or back out of) a folder: it holds an OS lock on
`DIR/.hashing-moves.lock` (`fcntl.flock`, released by the kernel however the run ends, kill -9
included); a second run is refused in one line before it moves anything.

The log (JSON lines) is written and fsynced in full before the first file moves: a header, then one
line per planned move {"n", "from", "to"} (absolute paths). Moves run in order, and after each one a
line {"done": n} follows. So at any moment, a kill -9 included, the log names every file this run
may have moved, and only one move can have been under way: the first one not done.

- on one file system a move is link(2) then unlink(2): the file is at "from", at both (one inode),
  or at "to", never neither;
- across file systems the file is copied to a hidden part-file beside "to" named after the log,
  fsynced, logged {"copied": n}, renamed to "to", and only then is "from" unlinked: it is at "from",
  at both (same bytes), or at "to".

`undo` walks the log backwards. A move that was done is put back by the same steps (a file found at
both places with the same bytes loses the second copy; one whose "from" was taken by another file
since is left where it is and reported). The one move under way is finished backwards from what the
disk shows (the second name of one inode, or a renamed copy the log says was made, is removed; its
part-file too). A planned move that never started is not touched: its "to" may belong to another
run by now. Running `undo` twice, or after an interrupted `undo`, is safe; `undo` refuses a log
whose destinations are not in the log's own folder (an edited log).
Destinations never overwrite: a name already there (or planned) gets "-2", "-3", ... before its suffix.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from hashing.atomic import crashpoint
from hashing.errors import HashingError

FORMAT = "hashing-moves/2"          # /2: part-files named after the log, {"copied": n} records
FORMATS = ("hashing-moves/1", FORMAT)
PART = ".hashing-part"
LOCK = ".hashing-moves.lock"


@dataclass
class Moved:
    log: Path | None
    moved: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def plan(files: list[tuple[str, str]], target: str | os.PathLike) -> list[tuple[str, str]]:
    """(path, folder it was found under) -> (path, destination): the path relative to its folder, under
    `target`, below the folder's own name when the files come from several folders; never onto a name
    that exists or is already planned."""
    target = Path(target)
    roots = list(dict.fromkeys(root for _, root in files))
    names = {}
    for root in roots:
        base = Path(os.path.abspath(root)).name or "root"
        name, k = base, 2
        while name in names.values():
            name, k = f"{base}-{k}", k + 1
        names[root] = name
    taken, out = set(), []
    for path, root in files:
        rel = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root)))
        dst = _free_name(target / (Path(names[root]) / rel if len(roots) > 1 else rel), taken)
        out.append((path, str(dst)))
    return out


def _free_name(dst: Path, taken: set) -> Path:
    """dst, or dst with "-2", "-3", ... before its suffix: a name neither on disk nor in `taken` (added to it)."""
    stem, suffix, k = dst.stem, dst.suffix, 2
    while str(dst) in taken or os.path.lexists(dst):
        dst, k = dst.with_name(f"{stem}-{k}{suffix}"), k + 1
    taken.add(str(dst))
    return dst


def _lock(folder: Path, doing: str):
    """The one-mover lock of `folder` (held until released or the process ends)."""
    from hashing.locks import WriterLock

    return WriterLock(folder / LOCK, f"--move-to {folder}",
                      busy=f"{folder}: another `hashing duplicates` is moving files there or back ({{holder}}); "
                           f"run again when it has finished; nothing was {doing}").acquire()


def _part(dst: Path, tag: str | None) -> Path:
    """The hidden part-file beside dst that a copy across file systems is written to (`tag`: the log's name)."""
    return dst.with_name(f".{dst.name}.{tag}{PART}" if tag else f".{dst.name}{PART}")


def check_target(moves: list[tuple[str, str]], target: str | os.PathLike) -> None:
    """Before anything moves: the target folder can take the files (writable, room for what must be copied)
    and each file's folder lets it go. One line on the first problem."""
    from hashing.atomic import check_output_folder

    target = Path(target)
    if target.exists() and not target.is_dir():
        raise HashingError(f"--move-to {target} is a file, not a folder")
    check_output_folder(target, "--move-to")
    existing = target
    while not existing.exists():
        existing = existing.parent
    device = existing.stat().st_dev
    to_copy = 0
    for src, _ in moves:
        folder = Path(src).parent
        if not os.access(folder, os.W_OK | os.X_OK):
            raise HashingError(f"cannot move {src}: no permission to remove files from {folder}; nothing was moved")
        st = os.stat(src)
        if st.st_dev != device:
            to_copy += st.st_size
    free = shutil.disk_usage(existing).free
    needed = to_copy + (1 << 20)                      # the log and the folders
    if needed > free:
        raise HashingError(f"--move-to {target}: {needed / 1e6:.1f} MB needed on its disk, {free / 1e6:.1f} MB free; "
                           f"nothing was moved")


def new_log_path(target: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, k = target / f"hashing-moves-{stamp}.jsonl", 2
    while path.exists():
        path, k = target / f"hashing-moves-{stamp}-{k}.jsonl", k + 1
    return path


def _append(f, record: dict) -> None:
    f.write(json.dumps(record) + "\n")
    f.flush()
    os.fsync(f.fileno())


def move_files(moves: list[tuple[str, str]], target: str | os.PathLike) -> Moved:
    """Move each (from, to), writing the undo log in `target` first (the module's protocol). A
    destination taken since it was planned gets the next free name."""
    target = Path(target)
    check_target(moves, target)
    target.mkdir(parents=True, exist_ok=True)
    lock = _lock(target, "moved")
    try:
        return _move_all(moves, target)
    finally:
        lock.release()


def _move_all(moves: list[tuple[str, str]], target: Path) -> Moved:
    taken: set = set()
    moves = [(src, str(_free_name(Path(dst), taken))) for src, dst in moves]
    log = new_log_path(target)
    tag = log.stem
    done = Moved(log)
    try:
        f = open(log, "x")
    except OSError as e:
        raise HashingError(f"cannot write the undo log {log} ({e.strerror}); nothing was moved") from None
    with f:
        try:
            _append(f, {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "moves": len(moves)})
            for n, (src, dst) in enumerate(moves):
                f.write(json.dumps({"n": n, "from": os.path.abspath(src), "to": os.path.abspath(dst)}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        except OSError as e:
            f.close()
            log.unlink(missing_ok=True)
            raise HashingError(f"cannot write the undo log {log} ({e.strerror}); nothing was moved") from None
        crashpoint("wrote the move log")
        try:
            for n, (src, dst) in enumerate(moves):
                try:
                    _move(Path(src), Path(dst), tag, lambda: _append(f, {"copied": n}))
                    crashpoint(f"moved {n}")
                    _append(f, {"done": n})
                except OSError as e:
                    done.problems.append(f"{src}: {e.strerror or e} (moves from here on not tried)")
                    break
                done.moved.append((src, dst))
        except KeyboardInterrupt:
            raise HashingError(f"interrupted after {len(done.moved)} of {len(moves)} moves: every file is in its old "
                               f"place or in {target}; put them back with: hashing duplicates --undo {log}") from None
    return done


def _move(src: Path, dst: Path, tag: str | None, copied=lambda: None) -> None:
    """src -> dst, never overwriting dst, never leaving the file nowhere; `copied()` is called once a
    copy across file systems is complete, before it takes dst's name."""
    if os.path.lexists(dst):
        raise OSError(errno.EEXIST, f"{dst} exists")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst, follow_symlinks=False)   # same file system: dst appears atomically, src still there
        crashpoint("linked")
        os.unlink(src)
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
    part = _part(dst, tag)
    shutil.copy2(src, part, follow_symlinks=False)
    if not part.is_symlink():
        with open(part, "rb") as f:
            os.fsync(f.fileno())
    crashpoint("copied")
    copied()
    if os.path.lexists(dst):                       # rename(2) would replace it
        part.unlink()
        raise OSError(errno.EEXIST, f"{dst} exists")
    os.rename(part, dst)
    crashpoint("renamed copy")
    os.unlink(src)


@dataclass
class Log:
    path: Path
    format: str
    moves: list[tuple[str, str]]
    done: set[int]
    copied: set[int]

    @property
    def tag(self) -> str | None:
        return self.path.stem if self.format != "hashing-moves/1" else None


def read_log(path: str | os.PathLike) -> Log:
    """A log: its planned (from, to) moves and what it says was done; one line on a file that is not
    one, or whose destinations are not all in its own folder (edited)."""
    path = Path(path)
    not_a_log = f"{path} is not a move log of `hashing duplicates --move-to`"
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise HashingError(not_a_log) from None
    except OSError as e:
        raise HashingError(f"cannot read the move log {path} ({e.strerror or type(e).__name__})") from None
    done, copied = set(), set()
    try:
        head = json.loads(lines[0]) if lines else None
        if not isinstance(head, dict) or head.get("format") not in FORMATS:
            raise ValueError
        moves = {}
        for line in lines[1:]:
            try:
                rec = json.loads(line)
            except ValueError:
                continue                        # a line torn by a kill: only ever the last one
            if not isinstance(rec, dict):
                raise ValueError
            if "from" in rec:
                moves[int(rec["n"])] = (str(rec["from"]), str(rec["to"]))
            elif "done" in rec:
                done.add(int(rec["done"]))
            elif "copied" in rec:
                copied.add(int(rec["copied"]))
    except (ValueError, KeyError, TypeError, IndexError):
        raise HashingError(not_a_log) from None
    if len(moves) != head.get("moves") or sorted(moves) != list(range(len(moves))):
        raise HashingError(f"{path} names {len(moves)} of its {head.get('moves')} moves: it was cut short or edited")
    folder = os.path.realpath(path.parent)
    for n in sorted(moves):
        src, dst = moves[n]
        where = os.path.realpath(os.path.dirname(dst))
        if not (os.path.isabs(src) and os.path.isabs(dst)) or os.path.commonpath([folder, where]) != folder \
                or os.path.abspath(src) == os.path.abspath(dst):
            raise HashingError(f"{path}: move {n} ({src} -> {dst}) does not lead into the log's folder {path.parent}: "
                               f"an edited log; nothing was moved back")
    return Log(path, head["format"], [moves[n] for n in sorted(moves)], done, copied)


def _same_bytes(a: Path, b: Path) -> bool:
    if a.is_symlink() or b.is_symlink():
        return a.is_symlink() and b.is_symlink() and os.readlink(a) == os.readlink(b)
    if a.stat().st_size != b.stat().st_size:
        return False
    digests = []
    for p in (a, b):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digests.append(h.digest())
    return digests[0] == digests[1]


def _same_file(a: Path, b: Path) -> bool:
    x, y = os.lstat(a), os.lstat(b)
    return (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)


def undo(log: str | os.PathLike, dry_run: bool = False) -> Moved:
    """Put back every file the log's run moved (the module's protocol); `dry_run`: say what would
    move back, change nothing."""
    record = read_log(log)
    lock = None if dry_run else _lock(Path(log).parent, "moved back")
    try:
        out = _undo(record, dry_run)
        if not dry_run:
            _remove_empty_folders(record)
        return out
    except KeyboardInterrupt:
        raise HashingError(f"interrupted: run `hashing duplicates --undo {log}` again to put back the rest "
                           f"(every file is in its old place or still in {Path(log).parent})") from None
    finally:
        if lock is not None:
            lock.release()


def _remove_empty_folders(record: Log) -> None:
    """The folders below the log's folder that its moves made and that are empty again (rmdir only
    ever removes an empty folder; the log's folder itself stays)."""
    top = os.path.realpath(record.path.parent)
    folders = {os.path.dirname(dst) for _, dst in record.moves}
    for folder in sorted(folders, key=len, reverse=True):
        while os.path.realpath(folder) != top and os.path.commonpath([top, os.path.realpath(folder)]) == top:
            try:
                os.rmdir(folder)
            except OSError:
                break
            folder = os.path.dirname(folder)


def _undo(record: Log, dry_run: bool) -> Moved:
    out = Moved(record.path)
    pending = [n for n in range(len(record.moves)) if n not in record.done]
    under_way = pending[0] if pending else None      # the one move a kill can have caught half done
    tag = record.tag
    for n in reversed(range(len(record.moves))):
        if n not in record.done and n != under_way:
            continue                                 # never started: its "to" is not this run's
        src, dst = record.moves[n]
        s, d = Path(src), Path(dst)
        part = _part(d, tag)
        part_left = os.path.lexists(part)            # a copy not yet renamed: the file is still at src
        if part_left and not dry_run:
            part.unlink()
        ours = n in record.done or (n in record.copied and not part_left)   # dst is this run's file
        back = _part(s, f"{tag}.undo" if tag else None)
        if os.path.lexists(back) and not dry_run:
            back.unlink()                            # an interrupted undo's copy: the file is still at dst
        if not os.path.lexists(d):
            if not os.path.lexists(s) and n in record.done:
                out.problems.append(f"{src}: in neither place (moved or removed by something else since)")
            continue
        if os.path.lexists(s):
            if _same_file(s, d):
                if not dry_run:
                    d.unlink()                       # the second name of one file (a move or undo cut short)
            elif ours and _same_bytes(s, d):
                if not dry_run:
                    d.unlink()                       # a copy across disks cut short: src has the same bytes
            elif ours:
                out.problems.append(f"{src}: another file is there now; its copy stays at {dst}")
            continue
        if dry_run:
            out.moved.append((dst, src))
            continue
        try:
            _move(d, s, f"{tag}.undo" if tag else None)
        except OSError as e:
            out.problems.append(f"{dst}: {e.strerror or e} (left there)")
            continue
        crashpoint("moved back")
        out.moved.append((dst, src))
    return out
