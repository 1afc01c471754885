"""hashing.dedup.moves: one mover per folder, an undo that puts back only what its own run moved (never a
file another run moved there since), kills at every step on one disk and across disks (a copy),
and logs that were edited by hand."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_hashing, small_tmpfs
from hashing.dedup import moves
from hashing.core.errors import HashingError

CROSS_DISK = """
import errno, os, sys
from hashing.dedup import moves
if sys.argv[1] == "copy":                      # as if the target were on another disk: no hard links
    def no_link(*a, **k):
        raise OSError(errno.EXDEV, "cross-device link")
    os.link = no_link
plan = [tuple(pair) for pair in __import__("json").loads(sys.argv[2])]
moves.move_files(plan, sys.argv[3])
"""


def make_folder(root, n=6, tag=b"a"):
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        (root / f"{k}.png").write_bytes(tag * (1000 + k))
    return {p.name: p.read_bytes() for p in root.iterdir()}


def plan_for(folder, target):
    return moves.plan([(str(p), str(folder)) for p in sorted(folder.iterdir())], target)


def run_killed(plan, target, crash_at, how="link"):
    env = {**os.environ, "HASHING_CRASH_AT": str(crash_at)}
    p = subprocess.run([sys.executable, "-c", CROSS_DISK, how, json.dumps(plan), str(target)], env=env,
                       capture_output=True, text=True)
    assert p.returncode == -9, p.stderr                       # killed at that step
    (log,) = target.glob("hashing-moves-*.jsonl")
    return log


def files_in(folder):
    """The pictures in a folder (not the log or the lock), by name."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".png"} if folder.exists() else {}


def test_a_second_mover_into_the_same_folder_is_refused_before_anything_moves(tmp_path):
    before = make_folder(tmp_path / "pics")
    target = tmp_path / "dups"
    target.mkdir()
    held = moves._lock(target, "moved")                          # another run moving files there
    try:
        with pytest.raises(HashingError, match="another `hashing duplicates` is moving files there"):
            moves.move_files(plan_for(tmp_path / "pics", target), target)
        with pytest.raises(HashingError, match="another `hashing duplicates`"):
            moves._lock(target, "moved back")                   # what an undo into it takes first
    finally:
        held.release()
    assert files_in(tmp_path / "pics") == before and not list(target.glob("*.jsonl"))
    done = moves.move_files(plan_for(tmp_path / "pics", target), target)
    assert len(done.moved) == len(before) and files_in(target) == before


@pytest.mark.system
@pytest.mark.parametrize("how, crash_at", [("link", 4), ("copy", 5), ("copy", 6)])
def test_undo_leaves_alone_what_another_run_moved_into_the_folder_since(tmp_path, how, crash_at):
    # two folders with the same names and the same bytes: the second run takes the names the first
    # one planned and never used; undoing the first must not take (or delete) the second's files
    one, two = make_folder(tmp_path / "one"), make_folder(tmp_path / "two")
    target = tmp_path / "dups"
    log1 = run_killed(plan_for(tmp_path / "one", target), target, crash_at, how)
    second = moves.move_files(plan_for(tmp_path / "two", target), target)
    assert len(second.moved) == len(two)
    back = moves.undo(log1)
    assert not back.problems, back.problems
    assert files_in(tmp_path / "one") == one                     # the first run's files all back
    assert not files_in(tmp_path / "two")                        # the second's still moved ...
    assert len([p for p in target.iterdir() if p.suffix == ".png"]) == len(two)
    assert not moves.undo(second.log).problems                   # ... and its own undo brings them all back
    assert files_in(tmp_path / "two") == two
    assert not [p for p in target.iterdir() if p.suffix == ".png" or p.name.endswith(moves.PART)]


@pytest.mark.system
@pytest.mark.parametrize("how", ["link", "copy"])
def test_a_kill_at_every_step_loses_nothing_and_undo_restores(tmp_path, how):
    steps = 1 + 6 * (2 if how == "link" else 3)                  # the log, then each file's steps
    for crash_at in range(1, steps + 1):
        pics, target = tmp_path / f"pics{crash_at}", tmp_path / f"dups{crash_at}"
        before = make_folder(pics)
        log = run_killed(plan_for(pics, target), target, crash_at, how)
        for name, data in before.items():                        # in its old place or in the target
            places = [p for p in (pics / name, target / name) if p.exists()]
            assert places and all(p.read_bytes() == data for p in places), (crash_at, name)
        assert not moves.undo(log).problems
        assert files_in(pics) == before, crash_at
        assert not [p for p in target.iterdir() if p.suffix == ".png" or p.name.endswith(moves.PART)], crash_at
        assert not moves.undo(log).problems and files_in(pics) == before          # twice is safe


def test_undo_refuses_an_edited_log_and_dry_run_moves_nothing(tmp_path):
    before = make_folder(tmp_path / "pics")
    target = tmp_path / "dups"
    done = moves.move_files(plan_for(tmp_path / "pics", target), target)
    lines = done.log.read_text().splitlines()
    preview = moves.undo(done.log, dry_run=True)
    assert len(preview.moved) == len(before) and files_in(target) == before    # nothing moved back
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    for edit in ({"to": str(victim)}, {"from": json.loads(lines[1])["to"]}):
        rec = {**json.loads(lines[1]), **edit}
        done.log.write_text("\n".join([lines[0], json.dumps(rec), *lines[2:]]) + "\n")
        with pytest.raises(HashingError, match="edited log"):
            moves.undo(done.log)
        assert victim.read_text() == "mine" and files_in(target) == before
    done.log.write_text("\n".join(lines) + "\n")
    assert not moves.undo(done.log).problems and files_in(tmp_path / "pics") == before


def test_a_link_is_moved_as_a_link_and_comes_back_as_one(tmp_path):
    pics = tmp_path / "pics"
    make_folder(pics, n=1)
    os.symlink("0.png", pics / "link.png")
    target = tmp_path / "dups"
    done = moves.move_files([(str(pics / "link.png"), str(target / "link.png"))], target)
    assert (target / "link.png").is_symlink() and not os.path.lexists(pics / "link.png")
    moves.undo(done.log)
    assert (pics / "link.png").is_symlink() and os.readlink(pics / "link.png") == "0.png"


def test_a_name_taken_between_plan_and_move_gets_the_next_free_one(tmp_path):
    before = make_folder(tmp_path / "pics", n=2)
    target = tmp_path / "dups"
    plan = plan_for(tmp_path / "pics", target)
    target.mkdir()
    (target / "0.png").write_bytes(b"someone else's")
    done = moves.move_files(plan, target)
    assert (target / "0.png").read_bytes() == b"someone else's"
    assert (target / "0-2.png").read_bytes() == before["0.png"] and not done.problems


def no_link(*a, **k):
    """os.link as on a target on another disk."""
    raise OSError(errno.EXDEV, "cross-device link")


def copy_until_full(real, ok: int):
    """shutil.copy2 that copies `ok` files, then on a full disk: writes part of the next and raises ENOSPC."""
    calls = []

    def copy(src, dst, **kw):
        calls.append(src)
        if len(calls) > ok:
            with open(dst, "wb") as f:
                f.write(b"partial bytes")
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, **kw)
    return copy


def parts_under(folder):
    return [p for p in folder.rglob("*") if p.name.endswith(moves.PART)]


def test_a_full_disk_stops_a_move_across_disks_at_once_and_leaves_no_part_file(tmp_path, monkeypatch):
    before = make_folder(tmp_path / "pics")
    target = tmp_path / "dups"
    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(shutil, "copy2", copy_until_full(shutil.copy2, ok=2))
    with pytest.raises(HashingError) as e:
        moves.move_files(plan_for(tmp_path / "pics", target), target)
    line = str(e.value)
    assert "\n" not in line and "no space left on the disk of" in line and "2 of 6 files were moved" in line
    (log,) = target.glob("hashing-moves-*.jsonl")
    assert f"hashing duplicates --undo {log}" in line
    assert not parts_under(target)                                  # the cut-short copy is gone at once
    assert len(files_in(target)) == 2 and len(files_in(tmp_path / "pics")) == 4
    monkeypatch.undo()
    assert not moves.undo(log).problems and files_in(tmp_path / "pics") == before


def test_a_full_disk_during_an_undo_stops_at_once_and_leaves_no_part_file_in_the_users_folder(tmp_path, monkeypatch):
    before = make_folder(tmp_path / "pics")
    target = tmp_path / "dups"
    monkeypatch.setattr(os, "link", no_link)                          # the target on another disk
    done = moves.move_files(plan_for(tmp_path / "pics", target), target)
    assert files_in(target) == before
    real = shutil.copy2
    monkeypatch.setattr(shutil, "copy2", copy_until_full(real, ok=1))
    with pytest.raises(HashingError) as e:
        moves.undo(done.log)
    line = str(e.value)
    assert "\n" not in line and "no space left on the disk of" in line and "1 files were moved back" in line
    assert f"hashing duplicates --undo {done.log}` again" in line
    assert not parts_under(tmp_path / "pics")                         # nothing half-copied beside the user's files
    assert len(files_in(tmp_path / "pics")) == 1 and len(files_in(target)) == 5
    monkeypatch.setattr(shutil, "copy2", real)                        # room again
    assert not moves.undo(done.log).problems and files_in(tmp_path / "pics") == before


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (see conftest.small_tmpfs)."""
    with small_tmpfs(tmp_path, "2m") as where:
        yield where


def test_an_undo_that_cannot_fit_on_the_disk_is_refused_before_anything_moves(tmp_path, small_disk):
    pics = small_disk / "pics"
    before = make_folder(pics, n=4, tag=b"x" * 100)                     # 400 KB on the small disk
    target = tmp_path / "dups"                                          # another file system: copied across
    done = moves.move_files(plan_for(pics, target), target)
    assert files_in(target) == before and not files_in(pics)
    with open(small_disk / "filler", "wb") as f:                        # the disk fills up meanwhile
        f.write(b"\0" * (shutil.disk_usage(small_disk).free - 200_000))
    with pytest.raises(HashingError, match="no space left to move the files back.*nothing was moved back"):
        moves.undo(done.log)
    assert files_in(target) == before and not files_in(pics) and not parts_under(pics)
    os.unlink(small_disk / "filler")
    assert not moves.undo(done.log).problems and files_in(pics) == before


@pytest.mark.parametrize("how", ["link", "copy"])
def test_a_file_another_run_moved_meanwhile_stops_the_run_in_one_line(tmp_path, monkeypatch, how):
    # two runs planned the same files into different folders; the other one got there first
    before = make_folder(tmp_path / "pics")
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    if how == "copy":
        monkeypatch.setattr(os, "link", no_link)
    plan, other = plan_for(tmp_path / "pics", mine), plan_for(tmp_path / "pics", theirs)
    real = moves._move
    calls = []

    def racing(src, dst, *a, **k):                  # just before this run's third move, the other run's moves
        calls.append(src)
        if len(calls) == 3:
            moves.move_files(other[2:], theirs)
        return real(src, dst, *a, **k)
    monkeypatch.setattr(moves, "_move", racing)
    with pytest.raises(HashingError) as e:
        moves.move_files(plan, mine)
    line = str(e.value)
    assert "\n" not in line and "was moved or removed by another process" in line and "2 of 6 files" in line
    assert "No such file" not in line
    assert len(files_in(mine)) == 2 and len(files_in(theirs)) == 4 and not parts_under(mine)
    # a run that starts after the other one moved its files is stopped before it moves anything
    monkeypatch.setattr(moves, "_move", real)
    with pytest.raises(HashingError, match="no longer there: it was moved or removed by another process.*nothing was moved"):
        moves.move_files([(str(tmp_path / "pics" / "2.png"), str(tmp_path / "late" / "2.png"))], tmp_path / "late")
    (log,) = mine.glob("hashing-moves-*.jsonl")
    (their_log,) = theirs.glob("hashing-moves-*.jsonl")
    assert not moves.undo(log).problems and not moves.undo(their_log).problems
    assert files_in(tmp_path / "pics") == before



def damage(log, edits: dict):
    """Rewrite lines of a log: {line number (1-based): new text}."""
    lines = log.read_text().splitlines()
    for k, text in edits.items():
        lines[k - 1] = text
    log.write_text("\n".join(lines) + "\n")


def test_numbers_no_int_can_hold_are_a_damaged_log_in_one_line(tmp_path):
    before = make_folder(tmp_path / "pics")
    target = tmp_path / "dups"
    done = moves.move_files(plan_for(tmp_path / "pics", target), target)
    lines = done.log.read_text().splitlines()
    head = json.loads(lines[0])
    for k, text in [(2, lines[1].replace('"n": 0', '"n": 1e400')),          # a move's number
                    (2, lines[1].replace('"n": 0', '"n": 0.5')),
                    (2, "[" * 100_000),                                      # deeper than json.loads can go
                    (1, json.dumps({**head, "moves": 1e400}))]:
        damage(done.log, {k: text})
        with pytest.raises(HashingError, match="damaged") as e:
            moves.undo(done.log)
        assert "\n" not in str(e.value) and files_in(target) == before
        damage(done.log, {1: lines[0], 2: lines[1]})
    for text in ('{"done": 1e400}', '{"done": 99}', '{"done": -1}', '{"done": true}', "[" * 100_000):
        damage(done.log, {9: text})                                          # a damaged record: read through it
        back = moves.undo(done.log)
        assert not back.problems and files_in(tmp_path / "pics") == before and "damaged" in back.notes[0], text
        done = moves.move_files(plan_for(tmp_path / "pics", target), target)


def test_damaged_done_lines_in_the_middle_of_a_log_still_bring_every_file_back(tmp_path):
    before = make_folder(tmp_path / "pics")
    target = tmp_path / "dups"
    done = moves.move_files(plan_for(tmp_path / "pics", target), target)
    lines = done.log.read_text().splitlines()
    assert [json.loads(x) for x in lines[7:]] == [{"done": n} for n in range(6)]
    damage(done.log, {9: '{"done": 1', 11: "garbage"})                      # moves 1 and 3: their "done" unreadable
    back = moves.undo(done.log)
    assert not back.problems and len(back.moved) == 6 and files_in(tmp_path / "pics") == before
    assert "lines 9, 11 damaged" in back.notes[0] and "moves 0 to 5" in back.notes[0]


def test_damage_after_the_last_move_logged_done_reports_what_it_cannot_tell(tmp_path):
    before = make_folder(tmp_path / "pics")
    target = tmp_path / "dups"
    done = moves.move_files(plan_for(tmp_path / "pics", target), target)
    damage(done.log, {12: "garbage", 13: '{"do'})                          # "done" of moves 4 and 5
    back = moves.undo(done.log)
    # 0 to 3 logged done, 4 was the one under way (the disk shows it was moved): 5 cannot be told
    assert len(back.moved) == 5 and len(back.problems) == 1 and "5.png" in back.problems[0]
    assert "the log is damaged" in back.problems[0] and "cannot be told" in back.problems[0]
    assert files_in(target) == {"5.png": before["5.png"]}                  # reported, left where it is, not lost
    code, out, err = run_hashing("duplicates", "--undo", done.log)
    assert code == 1 and "not moved back" in out and "Traceback" not in err, err


def test_a_moved_or_renamed_target_folder_is_undone_from_where_it_is_now(tmp_path, monkeypatch):
    before = make_folder(tmp_path / "pics")
    target = tmp_path / "dups"
    done = moves.move_files(plan_for(tmp_path / "pics", target), target)
    os.rename(target, tmp_path / "renamed")
    monkeypatch.chdir(tmp_path)
    log = Path("renamed") / done.log.name                                  # as a user names it, from where they are
    preview = moves.undo(log, dry_run=True)
    assert len(preview.moved) == 6 and "was moved from" in preview.notes[0]
    back = moves.undo(log)
    assert not back.problems and files_in(tmp_path / "pics") == before
    assert f"its folder was moved from {target} to {tmp_path / 'renamed'}" in back.notes[0]
    # a copy of a log whose folder is still there points to that folder's own log
    done = moves.move_files(plan_for(tmp_path / "pics", target), target)
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(done.log, tmp_path / "elsewhere" / done.log.name)
    with pytest.raises(HashingError, match=f"is a copy of the log of {target}.*--undo {done.log}"):
        moves.undo(tmp_path / "elsewhere" / done.log.name)
    assert files_in(target) == before


def test_a_log_whose_move_leads_onto_its_own_file_through_a_link_is_refused(tmp_path):
    make_folder(tmp_path / "pics")
    target = tmp_path / "dups"
    done = moves.move_files(plan_for(tmp_path / "pics", target), target)
    os.symlink(target, target / "back")                                     # dups/back -> dups
    lines = done.log.read_text().splitlines()
    rec = json.loads(lines[1])
    rec["from"] = str(target / "back" / Path(rec["to"]).name)               # the same file as "to", by another name
    damage(done.log, {2: json.dumps(rec)})
    with pytest.raises(HashingError, match="edited log"):
        moves.undo(done.log)
    assert (target / Path(rec["to"]).name).exists()                         # never unlinked as "its second name"
    assert not (tmp_path / "pics" / Path(rec["to"]).name).exists()



def test_a_full_disk_while_moving_or_undoing_is_one_line_from_the_command(tmp_path):
    from PIL import Image

    from conftest import one_line_error

    pics, dups = tmp_path / "pics", tmp_path / "dups"
    pics.mkdir()
    ramp = Image.linear_gradient("L").resize((64, 64))
    for k in range(4):                                       # one picture four times: three to move
        ramp.save(pics / f"{k}.png")
    before = files_in(pics)

    def hashing(room, *args):
        """The command with the target on another disk (no hard links), which is full after `room` files."""
        with pytest.MonkeyPatch.context() as m:
            m.setattr(os, "link", no_link)
            m.setattr(shutil, "copy2", copy_until_full(shutil.copy2, ok=room))
            return run_hashing(*args)

    move = ("duplicates", pics, "--hash", "phash", "--threshold", "4", "--quiet", "--move-to", dups)
    code, _, err = hashing(1, *move)
    line = one_line_error(code, err)
    (log,) = dups.glob("hashing-moves-*.jsonl")
    assert "no space left on the disk of" in line and "1 of 3 files were moved" in line and str(log) in line
    assert not parts_under(dups) and len(files_in(dups)) == 1
    code, _, err = hashing(9, "duplicates", "--undo", log)
    assert code == 0 and files_in(pics) == before, err
    code, out, err = hashing(9, *move)                       # all three copied across
    assert code == 0 and "moved 3 files" in out, err
    (log,) = set(dups.glob("hashing-moves-*.jsonl")) - {log}
    code, _, err = hashing(1, "duplicates", "--undo", log)   # and the disk of pics fills up after one back
    line = one_line_error(code, err)
    assert "no space left on the disk of" in line and "1 files were moved back" in line and f"--undo {log}" in line
    assert not parts_under(pics) and len(files_in(pics)) == 2 and len(files_in(dups)) == 2
    code, _, err = hashing(9, "duplicates", "--undo", log)
    assert code == 0 and files_in(pics) == before, err
