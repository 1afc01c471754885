"""Is one picture a copy of another? A pixel check of a candidate pair, after aligning the two.

`hashing duplicates` finds candidates by Hamming distance (each file's nearest codes) and keeps a
pair only when this check says the two files show the same picture. A short code tells copies from
other pictures only so well: at the copies model's calibrated threshold a rotated copy or one with a
caption is rarely within it, and look-alike pictures share codes. Looking at the pixels of the few
candidate pairs is both stricter and more forgiving than any threshold.

For each file (`view_of`): the picture in grey (transparency on white), its plain margins trimmed
(`images.trimmed`: a frame, the empty page around clip art), its ORB keypoints found with its longer
side at `SIDE` pixels (Rublee et al., "ORB: an efficient alternative to SIFT or SURF", ICCV 2011:
FAST corners with 256-bit binary descriptors), and its pixels kept at `KEEP_SIDE`. For a pair
(`similarity`), the larger of:

- the two pictures stretched onto each other (what a resize, JPEG, tone or a border leaves aligned):
  the normalised cross-correlation (NCC) of their pixels, each standardised (so brightness, contrast
  and grey vs colour say nothing);
- where that falls short, the first turned by a few degrees either way (`ROTATIONS`), trimmed and
  stretched onto the second, counted only from `ROTATED_MATCH` (a turn fits look-alikes too): a
  rotated copy of a picture without keypoints to match (flat colours, a flag);
- the first warped onto the second by the similarity transform (rotation, uniform scale, shift) that
  RANSAC fits to their matched keypoints (Lowe's ratio test, 0.8), when at least `MIN_INLIERS`
  matches agree with it: the NCC over the pixels both show (a crop, a rotation); and, with many
  agreeing matches (`MANY_INLIERS`), the best NCC with one band along an edge left out (up to a
  third of the side), so a caption, a strip or a watermark along one edge does not sink a pair whose
  keypoints already agree. A difference in the middle (another pictogram in the same warning
  triangle, another face in the same circle) is never left out: dropping the worst quarter of the
  picture's tiles instead let such look-alikes through at similarity 1.00.

Two blank pictures (no pattern to correlate) match when their grey levels agree and both were
blank before trimming too (a frame around nothing is not a blank page). Each path's NCC is held to
its worst 3 x 3 tile (that shows something) + `LOCAL_SLACK`, so a shared outline cannot carry
different insides, and a pair is tried both ways round. A pair is a copy when the similarity is at
least `MATCH` (0.93). On the openclipart benchmark (docs/duplicates.md, collection v2, a 64-bit
copies model): the codes alone at their best threshold F1 0.662, each file's 20 nearest codes within
16 bits checked 0.856 at precision 0.954 (rotations found 0.14 -> 0.77).

OpenCV (opencv-python-headless, the `copies` extra) does the keypoints, matching and warps; numpy
the rest. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hashing.core.errors import HashingError

SIDE = 256               # the longer side of the trimmed picture, in pixels, where keypoints are found
KEEP_SIDE = 128          # ... and of the copy kept for comparing pixels (16 KB a file, not 64)
FEATURES = 500           # ORB keypoints per picture at most
RATIO = 0.8              # Lowe's ratio test on the two nearest descriptors
RANSAC_PIXELS = 2.0      # a match agrees with the transform when it lands within this many (kept) pixels
MIN_INLIERS = 8          # agreeing matches before the alignment is trusted
MANY_INLIERS = 40        # ... before a band along one edge may differ (a caption)
ROTATIONS = (-10, -8, -6, -4, -2, 2, 4, 6, 8, 10)   # degrees tried when keypoints do not align a pair
ROTATION_SIDE = 128      # ... at this longer side
ROTATED_MATCH = 0.95     # ... and the similarity a turned picture must reach (a turn fits look-alikes too)
TRIM_LEVEL = 8           # grey levels below white that count as something
BANDS = (0.125, 0.25, 0.33)   # the widths of an edge band that may differ, as fractions of the side
MATCH = 0.93             # similarity from which a pair is a copy
LOCAL, LOCAL_LEVELS, LOCAL_SLACK = 3, 10.0, 0.1   # no tile of 3 x 3 that shows something may agree less than MATCH - 0.1
FLAT, FLAT_LEVELS = 2.0, 8.0   # a picture whose grey levels vary less is blank; two blanks this close match


@dataclass
class View:
    """One file as the check sees it."""

    pixels: np.ndarray | None          # (h, w) uint8, longer side KEEP_SIDE; None: the file could not be read
    points: np.ndarray                 # (n, 2) float32 keypoint positions, in the pixels' coordinates
    descriptors: np.ndarray | None     # (n, 32) uint8 ORB descriptors, None when there are none
    unread: str | None = None          # why the file could not be read (then pixels is None)
    plain: bool = False                # blank before its margins were trimmed too (not a frame around nothing)


def require_cv2():
    try:
        import cv2
    except ImportError:
        raise HashingError("checking pairs needs OpenCV: pip install 'hashing[copies]' "
                           "(or pass verify=False to trust the codes alone)", settings=("verify",)) from None
    return cv2


def view_of(path: str) -> View:
    """A file -> its View (never raises for a file that vanished or broke since it was encoded)."""
    cv2 = require_cv2()
    from hashing.images.reader import load_picture, to_gray, trimmed

    from PIL import Image

    try:
        grey = to_gray(load_picture(path))
        im = trimmed(grey)
    except HashingError as e:
        return View(None, np.zeros((0, 2), np.float32), None, str(e))

    w, h = im.size
    s = SIDE / max(w, h)
    a = np.asarray(im.resize((max(8, round(w * s)), max(8, round(h * s))), Image.BILINEAR))
    keypoints, descriptors = cv2.ORB_create(nfeatures=FEATURES).detectAndCompute(a, None)
    f = KEEP_SIDE / SIDE
    kept = cv2.resize(a, (max(4, round(a.shape[1] * f)), max(4, round(a.shape[0] * f))), interpolation=cv2.INTER_AREA)
    points = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2) * np.float32(f)
    if im.size == grey.size:                       # nothing trimmed: blank now is blank before
        plain = float(kept.std()) < FLAT
    else:
        small = grey.resize((min(grey.size[0], 64), min(grey.size[1], 64)), Image.BOX)
        plain = float(np.asarray(small, np.float32).std()) < FLAT
    return View(kept, points, descriptors, plain=plain)


def _view_of_one(path: str) -> View:
    import cv2

    cv2.setNumThreads(1)          # one process per core already (folders.fork_map)
    return view_of(path)


def views_of(paths: list[str], progress: bool = True) -> list[View]:
    from hashing.core.parallel import fork_map

    require_cv2()
    return list(fork_map(_view_of_one, paths, progress, "checking: keypoints"))


def _stats(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(NCC, std of x, std of y) of two equal-length arrays, in one pass of sums: the mean of the
    product of x and y, each standardised ((v - mean) / (std + 1e-3))."""
    n = x.size
    x, y = x.astype(np.float64, copy=False), y.astype(np.float64, copy=False)
    sx, sy = float(x.sum()), float(y.sum())
    mx, my = sx / n, sy / n
    vx, vy = max(float(np.dot(x, x)) / n - mx * mx, 0.0), max(float(np.dot(y, y)) / n - my * my, 0.0)
    cov = float(np.dot(x, y)) / n - mx * my
    dx, dy = vx ** 0.5, vy ** 0.5
    return cov / ((dx + 1e-3) * (dy + 1e-3)), dx, dy


def _ncc(x: np.ndarray, y: np.ndarray) -> float:
    return _stats(x.ravel(), y.ravel())[0] if x.size >= 64 else 0.0


def _ncc_without_a_band(x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> float:
    """The best NCC over `valid` with one band along an edge left out (top, bottom, left or right; a
    `BANDS` fraction of the side): where a copy has a caption, a strip or a watermark added along one
    edge. A difference in the middle of the picture is never left out."""
    h, w = valid.shape
    best, kept = -1.0, valid
    for f in BANDS:
        bh, bw = max(1, round(f * h)), max(1, round(f * w))
        for band in ((slice(0, bh), slice(None)), (slice(h - bh, h), slice(None)),
                     (slice(None), slice(0, bw)), (slice(None), slice(w - bw, w))):
            keep = valid.copy()
            keep[band] = False
            s = _ncc(x[keep], y[keep])
            if s > best:
                best, kept = s, keep
    return min(best, _local(x, y, kept) + LOCAL_SLACK)


def _trim_white(a: np.ndarray) -> np.ndarray:
    """A grey array without its white margins (what a rotation's white corners add, then the reader trims)."""
    rows = np.flatnonzero((a < 255 - TRIM_LEVEL).any(1))
    cols = np.flatnonzero((a < 255 - TRIM_LEVEL).any(0))
    return a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] if len(rows) and len(cols) else a


def _rotated_ncc(a: np.ndarray, b: np.ndarray) -> float:
    """The best NCC of b with a turned by a few degrees either way (ROTATIONS) on white, about its
    centre, either within its own frame (a picture that fills it loses its corners) or on a frame
    grown to hold it, then trimmed and stretched onto b: a rotated copy whose keypoints did not match
    (flat colours, lines). At ROTATION_SIDE pixels."""
    import cv2

    def small(x: np.ndarray) -> np.ndarray:
        if max(x.shape) == ROTATION_SIDE:              # the kept pixels already are (KEEP_SIDE)
            return x
        f = ROTATION_SIDE / max(x.shape)
        return cv2.resize(x, (max(4, round(x.shape[1] * f)), max(4, round(x.shape[0] * f))), interpolation=cv2.INTER_AREA)

    a, b = small(a), small(b).astype(np.float32)
    h, w = a.shape
    best = -1.0
    for degrees in ROTATIONS:
        for grow in (False, True):
            m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
            size = (w, h)
            if grow:
                c, s = abs(m[0, 0]), abs(m[0, 1])
                size = (int(np.ceil(h * s + w * c)), int(np.ceil(h * c + w * s)))
                m[0, 2] += size[0] / 2 - w / 2
                m[1, 2] += size[1] / 2 - h / 2
            turned = _trim_white(cv2.warpAffine(a, m, size, flags=cv2.INTER_LINEAR, borderValue=255))
            turned = cv2.resize(turned, (b.shape[1], b.shape[0]), interpolation=cv2.INTER_AREA).astype(np.float32)
            best = max(best, _ncc(turned.ravel(), b.ravel()))
    return best


def _local(x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> float:
    """The lowest NCC over the LOCAL x LOCAL tiles that lie mostly in `valid` and show something
    (grey levels spread by LOCAL_LEVELS or more in either picture); 1 when none does."""
    h, w = valid.shape
    rows, cols = np.linspace(0, h, LOCAL + 1).astype(int), np.linspace(0, w, LOCAL + 1).astype(int)
    worst = 1.0
    for r in range(LOCAL):
        for c in range(LOCAL):
            v = valid[rows[r]:rows[r + 1], cols[c]:cols[c + 1]]
            if v.size == 0 or v.mean() < 0.5:
                continue
            xs, ys = x[rows[r]:rows[r + 1], cols[c]:cols[c + 1]][v], y[rows[r]:rows[r + 1], cols[c]:cols[c + 1]][v]
            ncc, dx, dy = _stats(xs, ys)
            if max(dx, dy) < LOCAL_LEVELS:
                continue
            worst = min(worst, ncc if min(dx, dy) > 1e-3 and xs.size >= 64 else 0.0)
    return worst


def _agreement(x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> float:
    """NCC over `valid`, held to the worst tile's NCC + LOCAL_SLACK: one shared outline (a warning
    triangle, a round button) cannot carry a pair whose insides differ."""
    return min(_ncc(x[valid], y[valid]), _local(x, y, valid) + LOCAL_SLACK)


def similarity(a: View, b: View) -> float:
    """How surely a and b show the same picture, in [-1, 1]: the better of the two directions (see the
    module's docstring)."""
    s = _one_way(a, b, turn=True)
    return s if s >= MATCH else max(s, _one_way(b, a, turn=False))     # a turn is tried one way only


def _one_way(a: View, b: View, turn: bool) -> float:
    """How surely b shows the same picture as a, in [-1, 1], with a brought onto b (`turn`: small turns
    tried too)."""
    if a.pixels is None or b.pixels is None:
        return 0.0
    import cv2

    flat_a, flat_b = float(a.pixels.std()) < FLAT, float(b.pixels.std()) < FLAT
    if flat_a or flat_b:               # a blank picture: no pattern to correlate; the same blank or not at all
        same = flat_a and flat_b and a.plain == b.plain     # a frame around nothing is not a blank page
        return 1.0 if same and abs(float(a.pixels.mean()) - float(b.pixels.mean())) < FLAT_LEVELS else 0.0

    y = b.pixels.astype(np.float32)
    h, w = y.shape
    stretched = cv2.resize(a.pixels, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    best = _agreement(stretched, y, np.ones((h, w), bool))
    if best < MATCH and turn:
        turned = _rotated_ncc(a.pixels, b.pixels)
        if turned >= ROTATED_MATCH:
            return turned
    if best >= MATCH or a.descriptors is None or b.descriptors is None or min(len(a.points), len(b.points)) < 2:
        return best
    matches = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(a.descriptors, b.descriptors, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < MIN_INLIERS:
        return best
    src = a.points[[g.queryIdx for g in good]]
    dst = b.points[[g.trainIdx for g in good]]
    transform, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS)
    if transform is None or inliers is None or int(inliers.sum()) < MIN_INLIERS:
        return best
    warped = cv2.warpAffine(a.pixels.astype(np.float32), transform, (w, h), flags=cv2.INTER_LINEAR)
    valid = cv2.warpAffine(np.ones_like(a.pixels, np.float32), transform, (w, h), flags=cv2.INTER_NEAREST) > 0.5
    if valid.sum() < 0.25 * valid.size:           # too little of b is shown by a: not a crop of it
        return best
    best = max(best, _agreement(warped, y, valid))
    if int(inliers.sum()) >= MANY_INLIERS:
        best = max(best, _ncc_without_a_band(warped, y, valid))
    return best


_PAIRS: tuple[list[View], list[View]] = ([], [])       # what forked workers of check_pairs read
PAIRS_PER_JOB = 16


def _check_job(span: tuple[int, int]) -> np.ndarray:
    import cv2

    cv2.setNumThreads(1)
    a, b = _PAIRS
    return np.array([similarity(a[p], b[p]) for p in range(*span)], np.float64)


def check_pairs(a: list[View], b: list[View], progress: bool = True) -> np.ndarray:
    """(P,) similarity of each pair (a[p], b[p]), in worker processes."""
    global _PAIRS
    from hashing.core.parallel import fork_map

    require_cv2()
    spans = [(s, min(s + PAIRS_PER_JOB, len(a))) for s in range(0, len(a), PAIRS_PER_JOB)]
    _PAIRS = (a, b)
    try:
        out = list(fork_map(_check_job, spans, progress, "checking: pairs", unit="x16 pairs"))
    finally:
        _PAIRS = ([], [])
    return np.concatenate(out) if out else np.zeros(0, np.float64)
