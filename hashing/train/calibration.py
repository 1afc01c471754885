"""A copies model's own operating point: the Hamming threshold `hashing duplicates --no-verify` uses (with
its pixel check, the default, `auto` is the wider candidate radius, hashing.dedup.find).

Measured once, right after training a model with the copies views (the `copies` recipe), on its own
training images, and recorded in the run's config.json under "calibration" (with the weights'
fingerprint, so a retrained model never inherits it):

1. `SOURCES` training images, drawn with the run's seed, get one edited copy per edit of
   hashing.images.edits (every single edit and a combination; not the mirror image), saved as a file and
   read back as `hashing duplicates` reads a file. A copy and its source are a *copy pair*.
2. Every copy against every other training image is a *non-copy pair*, except the images that are
   themselves copies of the source by the model's own measure (within the median copy distance of
   the source's code): a collection's own duplicates are not false positives.
3. The threshold is the largest T at which at most `FPR` of the non-copy pairs are at distance <= T
   (hashing.codes.metrics.operating_point); the record also says what share of the copy pairs, per edit,
   fall within it.

FPR is per pair. In a collection of N pictures there are N^2/2 pairs, so the expected false pairs
are FPR x N^2/2: 1e-5 keeps them to a few hundred in 10,000 pictures, where a duplicate finder's
precision is decided (docs/duplicates.md measures it).
"""

from __future__ import annotations

import time

import numpy as np

from hashing.core.errors import HashingError

FPR = 1e-5
SOURCES = 600
FORMAT = "hashing-calibration/1"


def copy_edits() -> tuple[str, ...]:
    from hashing.images.edits import SINGLE

    return (*SINGLE, "combo")


def _copy(job) -> np.ndarray | None:
    """(source ref, edit, rng key, spec) -> the copy as the model reads its file, or None if unreadable."""
    from hashing.images.edits import make_copy
    from hashing.core.errors import HashingError
    from hashing.images.reader import as_picture, fit_image, load_picture

    ref, edit, key, spec = job
    try:
        data, _ = make_copy(as_picture(ref), edit, np.random.default_rng(key))
        return fit_image(load_picture(data, "copy"), spec)
    except HashingError:
        return None


def calibrate(model, images: np.ndarray, refs: list, fingerprint: str, seed: int = 0, sources: int = SOURCES,
              fpr: float = FPR, progress: bool = True) -> dict:
    """The record of the module's procedure for `model` over its training images (N, *spec) and their
    originals `refs` (N,) (file paths, or the arrays themselves)."""
    from hashing.codes import metrics
    from hashing.model.encode import encode_array
    from hashing.core.parallel import fork_map
    from hashing.codes.hamming import distances as hamming_distances, paired

    t0 = time.perf_counter()
    n, bits, spec = len(images), model.cfg.bits, model.cfg.spec
    edits = copy_edits()
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n, size=min(sources, n), replace=False))
    jobs = [(refs[s], e, (seed, int(s), k), spec) for s in chosen for k, e in enumerate(edits)]
    made = list(fork_map(_copy, jobs, progress, "calibrating: copies", "copy"))
    ok = np.array([m is not None for m in made])
    source = np.repeat(chosen, len(edits))[ok]
    edit = np.tile(np.array(edits), len(chosen))[ok]
    xq = encode_array(model, np.stack([m for m in made if m is not None]), progress=False).codes
    xb = encode_array(model, np.asarray(images), progress=False).codes
    positive = paired(xq, xb[source])
    near = float(np.median(positive))
    negatives = np.zeros(bits + 1)
    excluded = 0
    step = max(1, (1 << 22) // max(1, n))
    for start in range(0, len(xq), step):
        D = hamming_distances(xq[start:start + step], xb)                        # (q, N)
        own = hamming_distances(xb[source[start:start + step]], xb) <= near       # the source's own copies
        excluded += int(own.sum()) - len(D)
        negatives += np.bincount(D[~own], minlength=bits + 1)[:bits + 1]
    threshold, share = metrics.operating_point(negatives, fpr)
    threshold = max(threshold, 0)
    per_edit = {e: round(float((positive[edit == e] <= threshold).mean()), 4) for e in edits if (edit == e).any()}
    return {"format": FORMAT, "fingerprint": fingerprint, "threshold": int(threshold), "fpr": fpr,
            "copy_pairs_within": round(float((positive <= threshold).mean()), 4), "per_edit": per_edit,
            "sources": int(len(chosen)), "copy_pairs": int(len(positive)), "non_copy_pairs": int(negatives.sum()),
            "excluded_as_own_copies": excluded, "seed": seed, "seconds": round(time.perf_counter() - t0, 1)}


def recorded(config: dict, fingerprint: str) -> dict | None:
    """A run's calibration record from its config.json, if it has one for these very weights."""
    cal = config.get("calibration")
    if not (isinstance(cal, dict) and cal.get("format") == FORMAT and cal.get("fingerprint") == fingerprint):
        return None
    t, bits = cal.get("threshold"), (config.get("model") or {}).get("bits")

    def number(x, whole=False):
        return isinstance(x, int if whole else (int, float)) and not isinstance(x, bool)

    if not number(t, True) or t < 0 or (number(bits, True) and t > bits) or not number(cal.get("fpr")) \
            or not number(cal.get("copy_pairs"), True) or not number(cal.get("copy_pairs_within")):
        raise HashingError(f"config.json's calibration record is damaged (calibration.threshold {t!r} for {bits}-bit "
                           f"codes; edited by hand?): retrain the run, or give threshold", settings=("threshold",))
    return cal


# Checked pairs: each file's 20 nearest codes within a quarter of the bits are candidates. On the
# openclipart benchmark (collection v2, 64 bits; docs/duplicates.md) the calibrated threshold (2) held
# 14 % of the rotated copies and 11 % of the captioned ones; the 20 nearest within 16 bits held 89 % and
# 65 %, and checked, F1 went 0.662 -> 0.856 (radius 12: 0.842, 14: 0.852; 50 nearest: no more copies).
CANDIDATES = 20
CANDIDATE_FRACTION = 1 / 4


def candidate_radius(bits: int, threshold: int) -> int:
    """The Hamming radius `hashing duplicates` checks candidates within by default: a quarter of the
    bits, or the threshold if that is wider."""
    return max(round(CANDIDATE_FRACTION * bits), threshold)


def fallback(bits: int) -> int:
    """The threshold for a model without a calibration record: bits/8 (8 at 64 bits), below the 10-11 at
    which the copies recipe's 64-bit codes measured a false-positive rate of 1e-3 (docs/benchmarks.md)."""
    return max(1, bits // 8)


def calibration_line(config: dict, fingerprint: str | None = None) -> str:
    """One line for `hashing info` and `hashing train`: the run's duplicate threshold and where it comes from."""
    fingerprint = fingerprint or config.get("fingerprint")
    bits = (config.get("model") or {}).get("bits", 64)
    cal = recorded(config, fingerprint)
    if cal is None:
        return (f"duplicate threshold: not calibrated (trained before calibration, or not with the copies recipe); "
                f"`hashing duplicates --no-verify` uses {fallback(bits)} (bits/8)")
    return line(cal)


def line(cal: dict) -> str:
    """A calibration record in one line."""
    return (f"duplicate threshold: {cal['threshold']} (false-positive rate {cal['fpr']:g} per pair of different "
            f"training images; {100 * cal['copy_pairs_within']:.1f} % of {cal['copy_pairs']} edited copies within it)")


def run_summary(run_dir: str | Path) -> dict:
    """What `hashing info RUN` prints of a run folder: its model, how it reads an image, how it was
    trained and, for `hashing duplicates`, its threshold (the calibration record, or bits/8 without one)."""
    from dataclasses import asdict
    from pathlib import Path

    from hashing.model.checkpoint import CONFIG, read_config
    from hashing.core.errors import HashingError
    from hashing.model.config import HashConfig

    config = read_config(run_dir)
    try:
        cfg = HashConfig.from_dict(config.get("model", {}))
    except (HashingError, TypeError, ValueError) as e:
        raise HashingError(f"{Path(run_dir) / CONFIG}: its model settings are invalid ({e}); retrain the model") from None
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    cal = recorded(config, config.get("fingerprint"))
    keep = ("threshold", "fpr", "copy_pairs", "copy_pairs_within")
    return {"run": str(run_dir), "fingerprint": config.get("fingerprint"), "bits": cfg.bits, "dataset": cfg.dataset,
            "data_dir": train.get("data_dir"), "recipe": train.get("recipe"), "epochs": train.get("epochs"),
            "image": asdict(cfg.spec), "codes": cfg.codes,
            "duplicate_threshold": cal["threshold"] if cal else fallback(cfg.bits),
            "candidate_radius": candidate_radius(cfg.bits, cal["threshold"] if cal else fallback(cfg.bits)),
            "calibration": {k: cal[k] for k in keep if k in cal} if cal else None}
