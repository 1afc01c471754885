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

The header names the folder the log was written in: a folder moved or renamed since is undone from
where it is now (its destinations are read below the new place). A line that cannot be read is
allowed only as the last one (torn by a kill); one elsewhere is damage, and since moves run in order
and a run stops at its first failure, a move logged as done means every earlier one was done: that
much is read through the damage; what comes after the damage cannot be told, and what of it sits in
the folder is reported, not moved.

Stopping. A full disk (or quota) stops a run at once, with one line: the part-file of the copy it
cut short is removed first (the file is still in its old place), so nothing half-copied is left in
the target, or, undoing, in the user's folder. A file that another process moved or removed while a
run was moving it (two runs planning the same files) stops the run the same way.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from hashing.core.atomic import crashpoint
from hashing.core.errors import HashingError, full_disk

FORMAT = "hashing-moves/2"          # /2: part-files named after the log, {"copied": n} records
FORMATS = ("hashing-moves/1", FORMAT)
PART = ".hashing-part"
LOCK = ".hashing-moves.lock"


@dataclass
class Moved:
    log: Path | None
    moved: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)          # one line each: how a moved or damaged log was read


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
    from hashing.core.locks import WriterLock

    return WriterLock(folder / LOCK, f"move_to {folder}",
                      busy=f"{folder}: another `hashing duplicates` is moving files there or back ({{holder}}); "
                           f"run again when it has finished; nothing was {doing}", settings=("move_to",)).acquire()


def _part(dst: Path, tag: str | None) -> Path:
    """The hidden part-file beside dst that a copy across file systems is written to (`tag`: the log's name)."""
    return dst.with_name(f".{dst.name}.{tag}{PART}" if tag else f".{dst.name}{PART}")


def check_target(moves: list[tuple[str, str]], target: str | os.PathLike) -> None:
    """Before anything moves: the target folder can take the files (writable, room for what must be copied)
    and each file's folder lets it go. One line on the first problem."""
    from hashing.core.atomic import check_output_folder

    target = Path(target)
    if target.exists() and not target.is_dir():
        raise HashingError(f"move_to {target} is a file, not a folder", settings=("move_to",))
    check_output_folder(target, "move_to")
    existing = target
    while not existing.exists():
        existing = existing.parent
    device = existing.stat().st_dev
    to_copy = 0
    for src, _ in moves:
        folder = Path(src).parent
        if not os.access(folder, os.W_OK | os.X_OK):
            raise HashingError(f"cannot move {src}: no permission to remove files from {folder}; nothing was moved")
        try:
            st = os.lstat(src)                        # a link moves as a link: its own size
        except FileNotFoundError:
            raise HashingError(f"{src} is no longer there: it was moved or removed by another process (another "
                               f"`hashing duplicates`?) since this run found it; nothing was moved") from None
        if st.st_dev != device:
            to_copy += st.st_size
    free = shutil.disk_usage(existing).free
    needed = to_copy + (1 << 20)                      # the log and the folders
    if needed > free:
        raise HashingError(f"move_to {target}: {needed / 1e6:.1f} MB needed on its disk, {free / 1e6:.1f} MB free; "
                           f"nothing was moved", settings=("move_to",))


def new_log_path(target: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, k = target / f"hashing-moves-{stamp}.jsonl", 2
    while path.exists():
        path, k = target / f"hashing-moves-{stamp}-{k}.jsonl", k + 1
    return path


def _write(f, text: str) -> None:
    """All of `text` to the unbuffered log, then to disk. A failure (a full disk) leaves at most a torn
    last line, which read_log ignores, and nothing in a buffer that a later write or close would add."""
    data = memoryview(text.encode("ascii"))                      # json.dumps writes ASCII only
    while data:
        data = data[f.write(data):]
    os.fsync(f.fileno())


def _append(f, record: dict) -> None:
    _write(f, json.dumps(record) + "\n")


def _gone(e: OSError, src: Path) -> bool:
    """The error is the source vanishing: another process moved or removed it meanwhile."""
    return e.errno == errno.ENOENT and not os.path.lexists(src)


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
        f = open(log, "xb", buffering=0)
    except OSError as e:
        raise HashingError(f"cannot write the undo log {log} ({e.strerror}); nothing was moved") from None
    try:
        try:
            head = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "moves": len(moves),
                    "folder": os.path.abspath(target)}
            _write(f, "".join(json.dumps(r) + "\n" for r in [head, *(
                {"n": n, "from": os.path.abspath(src), "to": os.path.abspath(dst)} for n, (src, dst) in enumerate(moves))]))
        except OSError as e:
            f.close()
            log.unlink(missing_ok=True)
            why = full_disk(e) or e.strerror or str(e)
            raise HashingError(f"cannot write the undo log {log} ({why}); nothing was moved") from None
        crashpoint("wrote the move log")
        undo_line = f"hashing duplicates --undo {log}"
        try:
            for n, (src, dst) in enumerate(moves):
                try:
                    _move(Path(src), Path(dst), tag, lambda: _append(f, {"copied": n}))
                    crashpoint(f"moved {n}")
                    _append(f, {"done": n})
                except OSError as e:
                    state = (f"{len(done.moved)} of {len(moves)} files were moved before it, the others are in their "
                             f"old places, every file is whole in one place or the other")
                    if full_disk(e):                      # the copy, or the log's record of a move just made
                        this = ("its partial copy removed, the file still in its old place" if os.path.lexists(src)
                                else f"the file already in {target}")
                        raise HashingError(f"{full_disk(e)} on the disk of {target} while moving {src} ({this}): "
                                           f"{state}; free some space and run again, or put them back with: "
                                           f"{undo_line}") from None
                    if _gone(e, Path(src)):
                        raise HashingError(f"{src} was moved or removed by another process (another `hashing "
                                           f"duplicates`?) while this run was moving files: {state}; put this run's "
                                           f"back with: {undo_line}") from None
                    done.problems.append(f"{src}: {e.strerror or e} (moves from here on not tried)")
                    break
                done.moved.append((src, dst))
        except KeyboardInterrupt:
            raise HashingError(f"interrupted after {len(done.moved)} of {len(moves)} moves: every file is in its old "
                               f"place or in {target}; put them back with: {undo_line}") from None
    finally:
        with contextlib.suppress(OSError):
            f.close()
    return done


def _move(src: Path, dst: Path, tag: str | None, copied=lambda: None) -> None:
    """src -> dst, never overwriting dst, never leaving the file nowhere; `copied()` is called once a
    copy across file systems is complete, before it takes dst's name."""
    if os.path.lexists(dst):
        raise OSError(errno.EEXIST, f"{dst} exists")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst, follow_symlinks=False)   # same file system: dst appears atomically, src still there
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
    else:
        crashpoint("linked")
        try:
            os.unlink(src)
        except FileNotFoundError:
            # src went between the two steps (another run moved or removed it): dst is then this run's
            # own second name of the file; drop it when the file still has another name somewhere
            with contextlib.suppress(OSError):
                if os.lstat(dst).st_nlink > 1:
                    os.unlink(dst)
            raise
        return
    part = _part(dst, tag)
    if os.path.lexists(part):                      # never written over: not this move's
        raise OSError(errno.EEXIST, f"{part} exists")
    try:
        shutil.copy2(src, part, follow_symlinks=False)
        if not part.is_symlink():
            with open(part, "rb") as f:
                os.fsync(f.fileno())
        crashpoint("copied")
        copied()
        if os.path.lexists(dst):                   # rename(2) would replace it
            raise OSError(errno.EEXIST, f"{dst} exists")
        os.rename(part, dst)
    except BaseException:
        # a copy cut short (a full disk, Ctrl-C, dst taken): the file is still whole at src, and the
        # part-file (this move's own, made just now) goes at once rather than waiting for an undo
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    crashpoint("renamed copy")
    os.unlink(src)


@dataclass
class Log:
    path: Path
    format: str
    moves: list[tuple[str, str]]
    done: set[int]
    copied: set[int]
    unknown_from: int | None = None       # damage hides whether the moves from this one on were made
    damaged: list[int] = field(default_factory=list)                  # line numbers, the torn last one not among them
    notes: list[str] = field(default_factory=list)

    @property
    def tag(self) -> str | None:
        return self.path.stem if self.format != "hashing-moves/1" else None


def _number(value, below: int) -> int:
    """A move's number as the log must hold it: an int from 0 to below - 1 (json.loads reads 1e400 as a
    float, inf: int() of it would raise OverflowError)."""
    if type(value) is not int or not 0 <= value < below:
        raise ValueError(value)
    return value


def _entry(path: str) -> str:
    """Where a directory entry is: its folder resolved, its own name kept (a link is itself)."""
    head, name = os.path.split(path)
    return os.path.join(os.path.realpath(head), name)


def read_log(path: str | os.PathLike) -> Log:
    """A log: its planned (from, to) moves and what it says was done; one line on a file that is not
    one, one damaged where it names the moves, or one whose destinations are not all in its own folder
    (edited). Damaged records and a moved folder are read as the module's docstring says."""
    path = Path(path)
    not_a_log = f"{path} is not a move log of `hashing duplicates --move-to`"
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise HashingError(not_a_log) from None
    except OSError as e:
        raise HashingError(f"cannot read the move log {path} ({e.strerror or type(e).__name__})") from None

    def parse(line: str) -> dict | None:
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):            # RecursionError: "[[[[..." nested deeper than Python goes
            return None
        return rec if isinstance(rec, dict) else None

    head = parse(lines[0]) if lines else None
    if head is None or head.get("format") not in FORMATS:
        raise HashingError(not_a_log)
    total = head.get("moves")
    if type(total) is not int or total < 0:
        raise HashingError(f"{path} is damaged: line 1 does not say how many moves it holds; nothing was moved back")
    moves: dict[int, tuple[str, str]] = {}
    done: dict[int, int] = {}                           # move -> the line that says it was done
    copied: set[int] = set()
    bad: list[int] = []
    for k, line in enumerate(lines[1:], 2):
        rec = parse(line)
        try:
            if rec is None:
                raise ValueError(line)
            if "from" in rec:
                n, src, dst = _number(rec["n"], total), rec["from"], rec["to"]
                if not isinstance(src, str) or not isinstance(dst, str) or n in moves:
                    raise ValueError(rec)
                moves[n] = (src, dst)
            elif "done" in rec:
                done[_number(rec["done"], total)] = k
            elif "copied" in rec:
                copied.add(_number(rec["copied"], total))
            else:
                raise ValueError(rec)
        except (ValueError, KeyError, TypeError):
            bad.append(k)
    if bad and bad[-1] == len(lines):
        bad.pop()                                       # the last line, torn by a kill
    planning = [k for k in bad if k <= total + 1]       # the moves are the lines after the header
    if planning:
        raise HashingError(f"{path} is damaged at line {planning[0]}, which names one of its {total} moves: undo cannot "
                           f"tell what it moved; nothing was moved back")
    if len(moves) != total:
        raise HashingError(f"{path} names {len(moves)} of its {total} moves: it was cut short or edited")
    last = max(done, default=-1)
    record = Log(path, head["format"], [moves[n] for n in range(total)], set(range(last + 1)), copied, damaged=bad)
    if bad:
        # moves run in order and a run stops at its first failure: "done" for one means done for all before it
        said = f"line{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))}"
        note = (f"{path}: {said} damaged, read through: moves run in order, so moves 0 to {last} (the last logged as "
                f"done) were all done" if last >= 0 else f"{path}: {said} damaged, and no move is logged as done")
        if bad[-1] > done.get(last, total + 1):
            record.unknown_from = last + 2              # last + 1 was under way: the disk shows how far it got
            note += (f"; whether the moves after move {last + 1} were made cannot be told: any of them found in the "
                     f"folder is reported, not moved back")
        record.notes.append(note)
    _relocate(record, head.get("folder"))
    folder = os.path.realpath(path.parent)
    for n, (src, dst) in enumerate(record.moves):
        where = os.path.realpath(os.path.dirname(dst))
        if not (os.path.isabs(src) and os.path.isabs(dst)) or os.path.commonpath([folder, where]) != folder \
                or _entry(src) == _entry(dst):
            raise HashingError(_outside(record, n), settings=("move_to",))
    return record


def _relocate(record: Log, was) -> None:
    """A log whose folder was moved or renamed since its run (the header names where it was written):
    its destinations are read below where the log is now. A log copied out of a folder that is still
    there is refused: its own copy there is the one to undo with."""
    here = Path(os.path.abspath(record.path.parent))
    if not isinstance(was, str) or not os.path.isabs(was) or os.path.realpath(was) == os.path.realpath(here):
        return
    if os.path.exists(os.path.join(was, record.path.name)):
        raise HashingError(f"{record.path} is a copy of the log of {was}, which is still there: undo with "
                           f"`hashing duplicates --undo {os.path.join(was, record.path.name)}`; nothing was moved back")
    if not all(os.path.isabs(dst) for _, dst in record.moves) \
            or any(os.path.commonpath([was, dst]) != was for _, dst in record.moves):
        return                                          # not all in its folder: an edited log, refused by the caller
    record.moves = [(src, str(here / os.path.relpath(dst, was))) for src, dst in record.moves]
    record.notes.append(f"{record.path}: its folder was moved from {was} to {here} since the run; moving the files "
                        f"back from {here}")


def _outside(record: Log, n: int) -> str:
    """Why move n of a log is refused: a folder that was moved (a log without the header that names its
    folder, written before it did) or an edited log."""
    src, dst = record.moves[n]
    dsts = [d for _, d in record.moves]
    where = os.path.commonpath([os.path.dirname(d) for d in dsts]) if all(map(os.path.isabs, dsts)) else None
    if where and os.path.isabs(src) and _entry(src) != _entry(dst) and not os.path.exists(where):
        return (f"{record.path}: its moves lead into {where}, which no longer exists: if the move_to folder was moved "
                f"or renamed since the run, move it back to where it was and run the undo there; nothing was moved back")
    return (f"{record.path}: move {n} ({src} -> {dst}) does not lead into the log's folder {record.path.parent}: "
            f"an edited log; nothing was moved back")


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


def undo(log: str | os.PathLike, *, dry_run: bool = False) -> Moved:
    """Put back every file the log's run moved (the module's protocol); `dry_run`: say what would
    move back, change nothing."""
    record = read_log(log)
    lock = None if dry_run else _lock(Path(log).parent, "moved back")
    try:
        if not dry_run:
            _check_room_back(record)
        out = _undo(record, dry_run)
        out.notes = record.notes
        if not dry_run:
            _remove_empty_folders(record)
        return out
    except KeyboardInterrupt:
        raise HashingError(f"interrupted: run `hashing duplicates --undo {log}` again to put back the rest "
                           f"(every file is in its old place or still in {Path(log).parent})") from None
    finally:
        if lock is not None:
            lock.release()


def _check_room_back(record: Log) -> None:
    """Before anything moves back: each disk the files go back to has room for those that must be
    copied there (from another file system). One line when one has not; nothing moved."""
    need: dict[int, list] = {}                           # device -> [bytes, a folder on it]
    for n in sorted(record.done):
        src, dst = record.moves[n]
        if not os.path.lexists(dst) or os.path.lexists(src):
            continue
        folder = os.path.dirname(src)
        while not os.path.isdir(folder):
            folder = os.path.dirname(folder)
        st, device = os.lstat(dst), os.stat(folder).st_dev
        if st.st_dev != device:
            need.setdefault(device, [0, folder])[0] += st.st_size
    for size, folder in need.values():
        free = shutil.disk_usage(folder).free
        if size + (1 << 20) > free:
            raise HashingError(f"no space left to move the files back: {size / 1e6:.1f} MB must be copied onto the disk "
                               f"of {folder}, {free / 1e6:.1f} MB free there; nothing was moved back: free some space "
                               f"and run `hashing duplicates --undo {record.path}` again")


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
        src, dst = record.moves[n]
        s, d = Path(src), Path(dst)
        if n not in record.done and n != under_way:
            if record.unknown_from is not None and n >= record.unknown_from and os.path.lexists(d) \
                    and not os.path.lexists(s):
                out.problems.append(f"{dst}: the log is damaged (line {record.damaged[-1]}), so whether this run moved "
                                    f"it there from {src} cannot be told; left there: move it back by hand if it is yours")
            continue                                 # never started: its "to" is not this run's
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
            if full_disk(e):
                folder = record.path.parent
                raise HashingError(f"{full_disk(e)} on the disk of {s.parent} while moving back {dst} (its partial "
                                   f"copy removed, the file still in {folder}): {len(out.moved)} files were moved back "
                                   f"before it, the others are still in {folder}, every file whole in one place or the "
                                   f"other; free some space and run `hashing duplicates --undo {record.path}` "
                                   f"again") from None
            if _gone(e, d):
                out.problems.append(f"{dst}: no longer there (moved or removed by another process meanwhile)")
            else:
                out.problems.append(f"{dst}: {e.strerror or e} (left there)")
            continue
        crashpoint("moved back")
        out.moved.append((dst, src))
    return out
