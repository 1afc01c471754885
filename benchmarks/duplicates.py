"""Duplicate finding on a real collection: `hashing duplicates` against imagededup, czkawka and perceptual hashes.

    python benchmarks/duplicates_collection.py --out /work/bench-dups
    hashing train --images /work/bench-dups/images --recipe copies --bits 64 --out RUN   (timed by the caller)
    python benchmarks/duplicates.py --collection /work/bench-dups --model RUN [--train-seconds S]

Scores each method's groups on the collection's truth (truth.json): pairwise precision, recall and F1
over all pairs of files (a pair is predicted when both files are in one group, or, for imagededup,
when it reports one as the other's duplicate), and per edit the recall of (copy, its original). Each
method at its default threshold and at the threshold of its best F1 over a sweep:

- model: `hashing duplicates --model RUN` (the codes encoded once; the command's grouping at each T):
  with its pixel check (the default: each file's 20 nearest codes within T checked by
  hashing.dedup.verify, computed once at the widest T; "auto" = a quarter of the bits) and `--no-verify`
  (the codes alone; "auto" = the model's calibrated threshold from its config.json);
- phash, dhash, pdq: `hashing duplicates --hash NAME`, the same two ways;
- imagededup PHash (its own encoder and find_duplicates; default max_distance_threshold 10);
- czkawka (the `czkawka` PyPI bindings of the Rust library: ImageSimilarity, similarity 0..50).

Writes benchmarks/results/duplicates_openclipart.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine  # noqa: E402


LOAD = os.getloadavg()[0]


def truth_pairs(truth: dict) -> tuple[set, dict]:
    groups: dict[int, list[str]] = {}
    for name, t in truth.items():
        groups.setdefault(t["group"], []).append(name)
    pairs = {tuple(sorted(p)) for g in groups.values() for p in combinations(g, 2)}
    originals = {t["group"]: name for name, t in truth.items() if t["edit"] == "original"}
    return pairs, originals


def score(pred: set, truth: dict, tpairs: set, originals: dict) -> dict:
    hit = len(pred & tpairs)
    p = hit / len(pred) if pred else 1.0
    r = hit / len(tpairs)
    per_edit: dict[str, list] = {}
    for name, t in truth.items():
        if t["edit"] != "original":
            per_edit.setdefault(t["edit"], []).append(tuple(sorted((name, originals[t["group"]]))) in pred)
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "pairs": len(pred),
            "per_edit": {e: float(np.mean(v)) for e, v in sorted(per_edit.items())}}


def group_pairs(groups: list[list[str]]) -> set:
    return {tuple(sorted(p)) for g in groups for p in combinations(g, 2)}


def ours(codes: np.ndarray, files: list[str], thresholds, order: np.ndarray) -> dict:
    """{T: predicted pairs} by the command's own grouping (pairs within the largest T found once)."""
    from hashing.codes.grouping import pairs_within, star_groups

    i, j, d = pairs_within(codes, max(thresholds))
    out = {}
    for t in thresholds:
        keep = d <= t
        g = star_groups(len(files), i[keep], j[keep], order)
        out[t] = group_pairs([[files[k] for k in m] for m in g.members])
    return out


def ours_checked(codes: np.ndarray, files: list[str], paths: list[str], radii, order: np.ndarray) -> tuple[dict, float]:
    """({R: predicted pairs} with the command's pixel check of each file's nearest codes within R, check seconds)."""
    from hashing.dedup import verify
    from hashing.train.calibration import CANDIDATES
    from hashing.codes.grouping import neighbours_within, star_groups

    t0 = time.perf_counter()
    i, j, d = neighbours_within(codes, max(radii), CANDIDATES)
    seen = np.unique(np.concatenate([i, j]))
    views = dict(zip(seen.tolist(), verify.views_of([paths[k] for k in seen], False)))
    ok = verify.check_pairs([views[a] for a in i], [views[b] for b in j], False) >= verify.MATCH
    secs = time.perf_counter() - t0
    out = {}
    for r in radii:
        keep = ok & (d <= r)
        g = star_groups(len(files), i[keep], j[keep], order)
        out[r] = group_pairs([[files[k] for k in m] for m in g.members])
    return out, secs


def encode_ours(images: Path, name: str, run: str | None):
    from hashing.model import checkpoint
    from hashing.dedup.find import collect, encode_model, encode_perceptual, keep_order

    paths, _, _ = collect([str(images)])
    t0 = time.perf_counter()
    if name == "model":
        model = checkpoint.load(run).model
        codes, kept, skipped = encode_model(model, paths, 256, False)
    else:
        codes, kept, skipped = encode_perceptual(paths, name, False)
    secs = time.perf_counter() - t0
    files = [Path(paths[k]).name for k in kept]
    return codes, files, keep_order([paths[k] for k in kept], "largest"), secs, [paths[k] for k in kept]


def imagededup_runs(images: Path, thresholds) -> tuple[dict, float]:
    from imagededup.methods import PHash

    ph = PHash(verbose=False)
    t0 = time.perf_counter()
    enc = ph.encode_images(image_dir=str(images), num_enc_workers=2)
    secs = time.perf_counter() - t0
    out = {}
    for t in thresholds:
        dup = ph.find_duplicates(encoding_map=enc, max_distance_threshold=t, num_dist_workers=2)
        out[t] = {tuple(sorted((a, b))) for a, bs in dup.items() for b in bs}
    return out, secs


def czkawka_runs(images: Path, levels) -> tuple[dict, float]:
    from czkawka import ImageSimilarity

    out, secs = {}, 0.0
    for level in levels:
        finder = ImageSimilarity()
        finder.set_directories([images])
        finder.set_similarity(level)
        t0 = time.perf_counter()
        groups = finder.find_similar()
        secs = time.perf_counter() - t0
        out[level] = group_pairs([[p.name for p in g] for g in groups])
    return out, secs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collection", type=Path, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--train-seconds", type=float, default=None, help="How long `hashing train` took (for the table).")
    p.add_argument("--train-command", default="", help="The training command line (for the table).")
    p.add_argument("--out", type=Path, default=HERE / "results" / "duplicates_openclipart.md")
    a = p.parse_args()
    from hashing.model import checkpoint
    from hashing.train.calibration import calibration_line, recorded
    from hashing.train.calibration import candidate_radius
    from hashing.dedup.find import HASH_THRESHOLDS

    meta = json.loads((a.collection / "truth.json").read_text())
    truth = meta["truth"]
    tpairs, originals = truth_pairs(truth)
    images = a.collection / "images"
    config = checkpoint.read_config(a.model)
    cal = recorded(config, config["fingerprint"])
    rows, notes = [], []

    def add(method, runs, default, secs, what="threshold"):
        best_t = max(runs, key=lambda t: score(runs[t], truth, tpairs, originals)["f1"])
        for label, t in ((f"default ({what} {default})", default), (f"best ({what} {best_t})", best_t)):
            if label.startswith("best") and best_t == default:
                continue
            rows.append((method, label, score(runs[t], truth, tpairs, originals), secs))
        print(f"{method}: default {default} F1 {score(runs[default], truth, tpairs, originals)['f1']:.3f}, "
              f"best {best_t} F1 {rows[-1][2]['f1']:.3f}", flush=True)

    auto = cal["threshold"] if cal else None
    for name in ("model", "phash", "dhash", "pdq"):
        codes, files, order, secs, paths = encode_ours(images, name, a.model)
        bits = codes.shape[1] * 8
        default = auto if name == "model" else HASH_THRESHOLDS[name]
        wide = candidate_radius(bits, default)
        radii = sorted({wide, *range(bits // 16, 5 * bits // 16 + 1, max(1, bits // 32))})
        runs, check_secs = ours_checked(codes, files, paths, radii, order)
        add(f"hashing duplicates --hash {name}", runs, wide, secs + check_secs)
        ts = list(range(0, 25)) if name != "pdq" else list(range(0, 81, 2))
        ts = sorted(set(ts) | {default})
        add(f"hashing duplicates --hash {name} --no-verify", ours(codes, files, ts, order), default, secs)
    try:
        runs, secs = imagededup_runs(images, range(0, 21))
        add("imagededup PHash", runs, 10, secs)
    except ImportError as e:
        notes.append(f"imagededup not installed ({e})")
    try:
        runs, secs = czkawka_runs(images, range(0, 21))
        add("czkawka (PyPI bindings 0.1.2)", runs, 10, secs, "similarity")
    except ImportError as e:
        notes.append(f"czkawka not installed ({e})")

    edits = meta["edits"]
    lines = [f"# Duplicates on openclipart ({meta['files']} files)", "",
             f"`python benchmarks/duplicates.py --collection {a.collection} --model {a.model}` on `{machine()}` "
             f"({time.strftime('%Y-%m-%d')}, load average {LOAD:.1f} at the start; notes: {'; '.join(notes) or 'none'}).",
             "",
             f"Collection: `python benchmarks/duplicates_collection.py --out {a.collection}"
             f"{' --flatten' if meta.get('flatten') else ''} --seed {meta['seed']}"
             f"{'' if meta.get('lookalike', 10) == 10 else ' --lookalike ' + str(meta['lookalike'])}`: "
             f"{meta['pictures']} distinct openclipart pictures, {meta['sources_with_copies']} of them with "
             f"{meta['copies_per_source']} edited copies each ({len(tpairs)} true pairs of "
             f"{meta['files'] * (meta['files'] - 1) // 2} pairs).", "",
             f"Model: {a.model}; {calibration_line(config)}." + (f" Trained{f' by `{a.train_command}`' if a.train_command else ''} in {a.train_seconds:.0f} s."
                                                        if a.train_seconds else ""), "",
             "| method | threshold | precision | recall | F1 | predicted pairs | encode (+ check) s |", "|---|---|---|---|---|---|---|"]
    for method, label, s, secs in rows:
        lines.append(f"| {method} | {label} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['pairs']} "
                     f"| {secs:.0f} |")
    lines += ["", "Recall of (copy, its original) per edit:", "",
              "| method | threshold | " + " | ".join(edits) + " |", "|---|---|" + "---|" * len(edits)]
    for method, label, s, _ in rows:
        lines.append(f"| {method} | {label} | " + " | ".join(f"{s['per_edit'].get(e, float('nan')):.2f}" for e in edits)
                     + " |")
    lines += [""] + [f"- {n}" for n in notes]
    a.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
