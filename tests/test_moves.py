"""hashing.moves: one mover per folder, an undo that puts back only what its own run moved (never a
file another run moved there since), kills at every step on one disk and across disks (a copy),
and logs that were edited by hand."""

import json
import os
import subprocess
import sys

import pytest

from hashing import moves
from hashing.errors import HashingError

CROSS_DISK = """
import errno, os, sys
from hashing import moves
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
