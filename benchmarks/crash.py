"""Kill `hashing index`, `hashing remove` and `hashing train` at every commit step and check what survives.

    python benchmarks/crash.py [--out DIR] [--delays 0.5,1,2,3,4] [--only faiss,append,milvus,train]

For each scenario an old artefact exists (an index built by model A, or model A's run folder)
and a command rewrites it (an index of the same items by model B, an append, a removal of 50
items, a retraining).
The command is run once with HASHING_CRASH_LOG to list the file-system changes it commits
with (hashing.core.atomic.crashpoint), then once per point with HASHING_CRASH_AT=N, which SIGKILLs
it right after that change, and once per delay with an outside SIGKILL. After each kill the
artefact must be exactly the old version or exactly the new one: the same query results as
one of them (indexes), or a checkpoint whose weights are A's or B's (run folders); never a
mix, never an error. Tiny models on scikit-learn's digits; tests/test_crash.py runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CLI = [sys.executable, "-m", "hashing"]
# Each `hashing index` scenario: where its index lives under the work folder, and what the killed run does.
INDEX_SCENARIOS = {"faiss": ("idx", {}), "append": ("idx_append", {"append": True}),
                   "remove": ("idx_remove", {"remove": True}), "sync": ("idx_sync", {"sync": True}),
                   "milvus": ("m.db", {}), "milvus-append": ("ma.db", {"append": True}),
                   "milvus-remove": ("mr.db", {"remove": True}), "milvus-sync": ("ms.db", {"sync": True})}
SCENARIOS = (*INDEX_SCENARIOS, "train")
REMOVED = list(range(50))          # the ids a removal scenario removes (the queries' nearest among them)


@dataclass
class Outcome:
    scenario: str
    points: int = 0                                 # crash points the command passes
    kills: int = 0                                  # runs killed (at a point or a delay)
    old: int = 0                                    # ... that left the old version
    new: int = 0                                    # ... that left the new version
    bad: list[str] = field(default_factory=list)    # anything else, described


def run_cli(args: list, env: dict | None = None, kill_after: float | None = None) -> int:
    """Run `hashing ARGS` (quietly); with kill_after, SIGKILL it after that many seconds."""
    quiet = ["--quiet"] if args[0] != "remove" else []           # remove prints one line, no progress
    p = subprocess.Popen([*CLI, *map(str, args), *quiet], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env={**os.environ, **(env or {})})
    if kill_after is not None:
        try:
            p.wait(kill_after)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
    p.wait()
    return p.returncode


def crash_points(args: list, log: Path) -> list[str]:
    log.unlink(missing_ok=True)
    code = run_cli(args, {"HASHING_CRASH_LOG": str(log)})
    if code != 0:
        raise RuntimeError(f"hashing {' '.join(map(str, args))} failed with exit code {code}")
    return log.read_text().splitlines()


def index_answers(location: str, images: list[Path]) -> list:
    """[(id, distance), ...] per query image, or the error's text."""
    from hashing.core.errors import HashingError
    from hashing.workflows.query import query_images

    try:
        return [[(h.id, h.distance) for h in r.hits] for r in query_images(images, location, k=10)]
    except HashingError as e:
        return [f"error: {e}"]


def exercise(name: str, args: list, points: list[str], restore, judge, delays: list[float]) -> Outcome:
    """Kill `hashing ARGS` after each of its crash `points` (from `crash_points`, the whole run that
    made the new version) and at every delay; judge() says 'old', 'new' or why not."""
    out = Outcome(name)
    out.points = len(points)
    trials = [({"HASHING_CRASH_AT": str(i)}, None, p) for i, p in enumerate(points, 1)]
    trials += [(None, d, f"after {d} s") for d in delays]
    for env, delay, where in trials:
        restore()
        code = run_cli(args, env, delay)
        if code == -signal.SIGKILL:
            out.kills += 1
        verdict = judge()
        if verdict == "old":
            out.old += 1
        elif verdict == "new":
            out.new += 1
        else:
            out.bad.append(f"killed at {where}: {verdict}")
    return out


def train_model(run: Path, seed: int) -> None:
    from hashing.train.loop import train_on

    train_on("default", run, dataset="digits", progress=False, bits=16, epochs=1, seed=seed)


def query_images_of(work: Path, n: int = 6) -> list[Path]:
    from PIL import Image

    from hashing.images.datasets import load_dataset

    test = load_dataset("digits", "test")
    paths = []
    for i in range(n):
        paths.append(work / f"q{i}.png")
        Image.fromarray(test.images[i * 7]).save(paths[-1])
    return paths


def digit_folder(folder: Path, n: int = 120) -> Path:
    """The first n digits/test images as PNG files (the query images are among them)."""
    from PIL import Image

    from hashing.images.datasets import load_dataset

    test = load_dataset("digits", "test")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(test.images[i]).save(folder / f"{i:04d}.png")
    return folder


def change_folder(folder: Path) -> None:
    """What a sync then brings into the index: two files deleted, one edited, one added (all near the queries)."""
    from PIL import Image

    for i in (0, 14):
        (folder / f"{i:04d}.png").unlink()
    Image.open(folder / "0007.png").rotate(90).save(folder / "0007.png")
    shutil.copy(folder / "0021.png", folder / "new.png")


def index_scenario(name: str, work: Path, run_a: Path, run_b: Path, images: list[Path], delays: list[float],
                   location: str, append: bool = False, remove: bool = False, sync: bool = False) -> Outcome:
    """Old: model A's index of digits/test at `location`. The command: model B's rebuild of it (or,
    with append, model A adding digits/train to it; with remove, removing the ids REMOVED; with sync, model
    A's index of a folder of digits, and `--sync` after two files were deleted, one edited, one added)."""
    from hashing.workflows.index import build_index

    pristine = work / f"{name}.pristine"
    loc = Path(location)

    def copy(src: Path, dst: Path) -> None:
        for p in (dst, dst.parent / f".{dst.name}.lock"):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)

    folder = digit_folder(work / f"{name}.folder") if sync else None
    if sync:
        build_index(run_a, location, images=folder, progress=False)
        change_folder(folder)
    else:
        build_index(run_a, location, dataset="digits", split="test", progress=False)
    old = index_answers(location, images)
    copy(loc, pristine)
    args = ["index", "--model", run_a if append else run_b, "--dataset", "digits", "--split",
            "train" if append else "test", "--out", location] + (["--append"] if append else [])
    if remove:
        args = ["remove", "--index", location, *REMOVED]
    if sync:
        args = ["index", "--model", run_a, "--images", folder, "--out", location, "--sync"]
    points = crash_points(args, work / f"{name}.log")   # the whole command (raises if it fails), its commits
    new = index_answers(location, images)
    assert old != new, "the scenario must change the answers"

    def judge() -> str:
        got = index_answers(location, images)
        return "old" if got == old else "new" if got == new else f"neither old nor new: {str(got)[:160]}"

    return exercise(name, args, points, lambda: copy(pristine, loc), judge, delays)


def train_scenario(work: Path, run_a: Path, delays: list[float]) -> Outcome:
    """Old: model A's run folder. The command: a retraining into it with another seed (model B)."""
    from hashing.model import checkpoint

    run = work / "train_run"
    args = ["train", "--dataset", "digits", "--bits", "16", "--epochs", "1", "--seed", "1", "--out", run]
    a = checkpoint.load(run_a).fingerprint

    def restore() -> None:
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(run_a, run)

    restore()
    points = crash_points(args, work / "train.log")     # the whole retraining: model B, and where it commits
    b = checkpoint.load(run).fingerprint
    assert a != b

    def judge() -> str:
        try:
            fp = checkpoint.load(run).fingerprint
        except Exception as e:                         # noqa: BLE001 - any failure to load is the finding
            return f"{type(e).__name__}: {e}"
        return "old" if fp == a else "new" if fp == b else f"weights {fp} are neither A's {a} nor B's {b}"

    return exercise("train", args, points, restore, judge, delays)


def run_all(work: Path, delays: list[float], only: set[str] | None = None) -> list[Outcome]:
    work.mkdir(parents=True, exist_ok=True)
    run_a, run_b = work / "model_a", work / "model_b"
    for run, seed in ((run_a, 0), (run_b, 1)):
        if not (run / "config.json").exists():
            train_model(run, seed)
    images = query_images_of(work)
    wanted = only or set(SCENARIOS)
    results = []
    for name, (where, options) in INDEX_SCENARIOS.items():
        if name in wanted:
            results.append(index_scenario(name, work, run_a, run_b, images, delays, str(work / where), **options))
    if "train" in wanted:
        results.append(train_scenario(work, run_a, delays))
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/out/crash")
    p.add_argument("--delays", default="0.5,1,2,3,4,5")
    p.add_argument("--only", default=None, help=f"comma-separated scenarios: {', '.join(SCENARIOS)}")
    a = p.parse_args()
    t0 = time.perf_counter()
    results = run_all(Path(a.out), [float(d) for d in a.delays.split(",") if d],
                      set(a.only.split(",")) if a.only else None)
    print("| scenario | crash points | runs killed | left old | left new | other |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.scenario} | {r.points} | {r.kills} | {r.old} | {r.new} | {len(r.bad)} |")
        for b in r.bad:
            print(f"  {r.scenario}: {b}")
    print(f"{time.perf_counter() - t0:.0f} s")
    print(json.dumps([r.__dict__ for r in results]), file=open(Path(a.out) / "crash.json", "w"))


if __name__ == "__main__":
    main()
