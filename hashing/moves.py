"""Moving files into a folder with an undo log, and moving them back: nothing is ever deleted.

The log (JSON lines) is written and fsynced in full before the first file moves: a header, then one
line per planned move {"n", "from", "to"} (absolute paths). After each move a line {"done": n}
follows. So at any moment, a kill -9 included, the log names every file this run may have moved,
and where each one is can be read off the disk:

- on one file system a move is one rename(2): the file is at "from" or at "to", never neither;
- across file systems the file is copied to a hidden part-file beside "to", fsynced, renamed to
  "to", and only then is "from" unlinked: it is at "from", at both (same bytes), or at "to".

`undo` walks the log backwards and puts each file back by the same two steps; a file found at both
places with the same bytes loses the second copy, one whose "from" was taken by another file since
is left where it is and reported. Running `undo` twice, or after an interrupted `undo`, is safe.
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

FORMAT = "hashing-moves/1"
PART = ".hashing-part"


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
        dst = target / (Path(names[root]) / rel if len(roots) > 1 else rel)
        stem, suffix, k = dst.stem, dst.suffix, 2
        while str(dst) in taken or os.path.lexists(dst):
            dst, k = dst.with_name(f"{stem}-{k}{suffix}"), k + 1
        taken.add(str(dst))
        out.append((path, str(dst)))
    return out


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
    """Move each (from, to), writing the undo log in `target` first (the module's protocol)."""
    target = Path(target)
    check_target(moves, target)
    target.mkdir(parents=True, exist_ok=True)
    log = new_log_path(target)
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
        for n, (src, dst) in enumerate(moves):
            try:
                _move(Path(src), Path(dst))
            except OSError as e:
                done.problems.append(f"{src}: {e.strerror or e} (left in place; moves after it not tried)")
                break
            crashpoint(f"moved {n}")
            done.moved.append((src, dst))
            _append(f, {"done": n})
    return done


def _move(src: Path, dst: Path) -> None:
    """src -> dst, never overwriting dst, never leaving the file nowhere."""
    if os.path.lexists(dst):
        raise OSError(errno.EEXIST, f"{dst} exists")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)              # same file system: dst appears atomically, src still there
        crashpoint("linked")
        os.unlink(src)
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
    part = dst.with_name(f".{dst.name}{PART}")
    shutil.copy2(src, part)
    with open(part, "rb") as f:
        os.fsync(f.fileno())
    crashpoint("copied")
    os.rename(part, dst)
    crashpoint("renamed copy")
    os.unlink(src)


def read_log(path: str | os.PathLike) -> list[tuple[str, str]]:
    """The planned (from, to) moves of a log; one line on a file that is not one."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise HashingError(f"{path} is not a move log of `hashing duplicates --move-to`") from None
    except OSError as e:
        raise HashingError(f"cannot read the move log {path} ({e.strerror or type(e).__name__})") from None
    try:
        head = json.loads(lines[0]) if lines else None
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            raise ValueError
        moves = {}
        for line in lines[1:]:
            try:
                rec = json.loads(line)
            except ValueError:
                continue                        # a line torn by a kill: only ever a "done" line, which undo does not need
            if isinstance(rec, dict) and "from" in rec:
                moves[int(rec["n"])] = (str(rec["from"]), str(rec["to"]))
    except (ValueError, KeyError, TypeError, IndexError):
        raise HashingError(f"{path} is not a move log of `hashing duplicates --move-to`") from None
    if len(moves) != head.get("moves"):
        raise HashingError(f"{path} names {len(moves)} of its {head.get('moves')} moves: it was cut short or edited")
    return [moves[n] for n in sorted(moves)]


def _same_bytes(a: Path, b: Path) -> bool:
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


def undo(log: str | os.PathLike) -> Moved:
    """Put back every file the log's run moved (the module's protocol)."""
    log = Path(log)
    out = Moved(log)
    for src, dst in reversed(read_log(log)):
        s, d = Path(src), Path(dst)
        part = d.with_name(f".{d.name}{PART}")
        if part.exists():
            part.unlink()                      # a copy interrupted before it became the file: the file is at src
        if not os.path.lexists(d):
            if not os.path.lexists(s):
                out.problems.append(f"{src}: in neither place (moved or removed by something else since)")
            continue
        if os.path.lexists(s):
            if s.samefile(d):
                d.unlink()                     # the hard link of an interrupted move: src is the file
            elif _same_bytes(s, d):
                d.unlink()                     # an interrupted copy across disks: src still has the same bytes
            else:
                out.problems.append(f"{src}: another file is there now; its copy stays at {dst}")
            continue
        try:
            _move(d, s)
        except OSError as e:
            out.problems.append(f"{dst}: {e.strerror or e} (left there)")
            continue
        crashpoint("moved back")
        out.moved.append((dst, src))
    return out
