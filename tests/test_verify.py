"""The pixel check of candidate pairs (hashing.dedup.verify) and the candidates it starts from: copies that
moved (rotated, cropped, captioned) pass, other pictures do not, and `hashing duplicates` uses it by
default (--no-verify: the codes alone)."""

import json
import sys

import numpy as np
import pytest

from conftest import one_line_error, run_hashing


def scene(seed: int, size=(320, 240)):
    """A picture nobody has to download: random filled shapes and lines on white."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    w, h = size
    for _ in range(14):
        x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
        x1, y1 = x0 + rng.integers(15, 90), y0 + rng.integers(15, 90)
        colour = tuple(int(v) for v in rng.integers(0, 200, 3))
        kind = rng.integers(3)
        if kind == 0:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(2, 6)))
    return im


def copies_of(im):
    """{edit: PIL image}: the edits a code moves most, made the way people make them."""
    from PIL import Image, ImageDraw

    w, h = im.size
    captioned = im.copy()
    draw = ImageDraw.Draw(captioned)
    draw.rectangle((0, h - 40, w, h), fill=(30, 60, 160))
    draw.text((10, h - 32), "Holiday 2026, Bergen", fill="white")
    return {"rotate": im.rotate(7, resample=Image.BILINEAR, fillcolor="white"),
            "crop": im.crop((25, 20, w - 30, h - 15)),
            "caption": captioned,
            "small": im.resize((w * 2 // 5, h * 2 // 5), Image.BILINEAR),
            "grey": im.convert("L")}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify") / "pics"
    root.mkdir()
    paths = {}
    for s in range(3):
        im = scene(s)
        paths[(s, "original")] = root / f"scene{s}.png"
        im.save(paths[(s, "original")])
        for name, c in copies_of(im).items():
            paths[(s, name)] = root / f"scene{s}-{name}.{'jpg' if name == 'small' else 'png'}"
            c.save(paths[(s, name)], **({"quality": 60} if name == "small" else {}))
    return root, paths


def test_copies_that_moved_match_and_other_pictures_do_not(pictures):
    from hashing.dedup.verify import MATCH, view_of, similarity

    _, paths = pictures
    views = {k: view_of(str(p)) for k, p in paths.items()}
    for s in range(3):
        original = views[(s, "original")]
        for name in ("rotate", "crop", "caption", "small", "grey"):
            assert similarity(original, views[(s, name)]) >= MATCH, (s, name)
            assert similarity(views[(s, name)], original) >= MATCH, (s, name)
        for other in range(3):
            if other != s:
                for name in ("original", "rotate", "caption"):
                    assert similarity(original, views[(other, name)]) < MATCH, (s, other, name)


def test_a_file_that_broke_since_it_was_encoded_matches_nothing(pictures, tmp_path):
    from hashing.dedup.verify import view_of, similarity

    _, paths = pictures
    broken = tmp_path / "broken.png"
    broken.write_bytes(paths[(0, "original")].read_bytes()[:80])
    gone = view_of(str(broken))
    assert gone.pixels is None
    assert similarity(gone, view_of(str(paths[(0, "original")]))) == 0.0
    assert view_of(str(tmp_path / "vanished.png")).pixels is None
    # in `hashing duplicates`: a candidate that broke or vanished between encoding and the check is
    # in no group and is listed as skipped, with the reason
    from hashing.dedup.find import _checked_pairs

    files = [str(paths[(0, "original")]), str(paths[(0, "grey")]), str(broken), str(tmp_path / "vanished.png")]
    i, j, unread = _checked_pairs(np.zeros((4, 8), np.uint8), files, 4, progress=False)
    assert {(int(a), int(b)) for a, b in zip(i, j)} == {(0, 1)}
    assert sorted(p for p, _ in unread) == sorted(files[2:])
    assert all("unreadable at the pixel check" in why for _, why in unread)


def test_candidates_are_each_rows_nearest_within_the_radius(rng):
    from hashing.codes.grouping import neighbours_within
    from hashing.codes.hamming import distances as hamming_distances

    codes = rng.integers(0, 256, (300, 8), dtype=np.uint8)
    codes[150:] = codes[:150] ^ (rng.random((150, 8)) < 0.03).astype(np.uint8) * rng.integers(1, 256, (150, 8),
                                                                                             dtype=np.uint8)
    D = hamming_distances(codes, codes).astype(np.int64)
    np.fill_diagonal(D, 10**6)
    for radius, k in ((6, 3), (20, 5), (64, 1)):
        i, j, d = neighbours_within(codes, radius, k, chunk=70)
        assert (i < j).all() and (d == D[i, j]).all() and (d <= radius).all()
        pairs = set(zip(i.tolist(), j.tolist()))
        assert len(pairs) == len(i)                                      # each pair once
        for r in range(len(codes)):
            kth = np.sort(D[r])[k - 1]
            must = np.flatnonzero((D[r] < kth) & (D[r] <= radius))      # strictly nearer than the k-th: no tie
            assert all((min(r, c), max(r, c)) in pairs for c in must), (radius, k, r)
            mine = [c for a, c in pairs if a == r] + [a for a, c in pairs if c == r]
            assert all(D[r, c] <= radius for c in mine)


def test_duplicates_checks_pairs_by_default_and_finds_copies_the_codes_miss(pictures, tmp_path):
    root, paths = pictures
    out, plain, auto = tmp_path / "checked.json", tmp_path / "plain.json", tmp_path / "auto.json"
    code, stdout, stderr = run_hashing("duplicates", root, "--hash", "phash", "--quiet", "--json", auto)
    assert code == 0, stderr
    found = json.loads(auto.read_text())
    assert found["verified"] is True and found["threshold"] == 16 and "pairs checked by their pixels" in stdout
    assert "20 nearest" in found["threshold_note"]
    # every pair a candidate (18 files, 32 of 64 bits): the check alone must tell the scenes apart
    code, stdout, stderr = run_hashing("duplicates", root, "--hash", "phash", "--quiet", "--json", out,
                                       "--threshold", "32")
    assert code == 0, stderr
    found = json.loads(out.read_text())
    group_of = {f["path"]: n for n, g in enumerate(found["groups"]) for f in g["files"]}
    for s in range(3):                       # every copy with its original, and no two scenes together
        want = {str(p) for (t, _), p in paths.items() if t == s}
        assert {group_of.get(p) for p in want} == {group_of[str(paths[(s, "original")])]}, s
    assert len(found["groups"]) == 3
    code, _, stderr = run_hashing("duplicates", root, "--hash", "phash", "--quiet", "--no-verify", "--json", plain)
    assert code == 0, stderr
    codes_alone = json.loads(plain.read_text())
    assert codes_alone["verified"] is False and codes_alone["threshold"] == 10
    grouped = sum(len(g["files"]) for g in codes_alone["groups"])
    assert grouped < len(paths)              # pHash alone at its usual threshold misses some of these copies


def test_without_opencv_the_check_is_a_one_line_error(monkeypatch):
    from hashing.core.errors import HashingError
    from hashing.dedup.verify import require_cv2

    monkeypatch.setitem(sys.modules, "cv2", None)                        # import cv2 -> ImportError
    with pytest.raises(HashingError, match="verify=False"):
        require_cv2()


def test_a_given_threshold_bounds_the_candidates(pictures, tmp_path):
    root, _ = pictures
    out = tmp_path / "t0.json"
    code, _, stderr = run_hashing("duplicates", root, "--hash", "dhash", "--quiet", "--threshold", "0", "--json", out)
    assert code == 0, stderr
    found = json.loads(out.read_text())
    assert found["threshold"] == 0 and found["threshold_note"] == "given"
    assert all(f["distance"] == 0 for g in found["groups"] for f in g["files"])
    code, _, stderr = run_hashing("duplicates", root, "--hash", "dhash", "--threshold", "-1")
    assert "from 0 to 64" in one_line_error(code, stderr)


def test_blank_pictures_match_only_the_same_blank(pictures, tmp_path):
    from PIL import Image

    from hashing.dedup.verify import MATCH, view_of, similarity

    _, paths = pictures
    Image.new("L", (40, 30), 255).save(tmp_path / "white.png")
    Image.new("RGB", (300, 200), "white").save(tmp_path / "white-big.jpg", quality=90)
    Image.new("RGBA", (50, 50), (0, 0, 0, 0)).save(tmp_path / "clear.png")          # transparent: on white
    Image.new("L", (40, 30), 0).save(tmp_path / "black.png")
    v = {p.stem: view_of(str(p)) for p in tmp_path.iterdir()}
    assert similarity(v["white"], v["white-big"]) >= MATCH and similarity(v["white"], v["clear"]) >= MATCH
    assert similarity(v["white"], v["black"]) < MATCH
    assert similarity(v["white"], view_of(str(paths[(0, "original")]))) < MATCH
    # a frame around nothing trims to a blank inside, but is not a blank page
    from PIL import ImageDraw

    frame = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(frame).rectangle((0, 0, 199, 199), outline=0, width=3)
    frame.save(tmp_path / "frame.png")
    assert similarity(view_of(str(tmp_path / "frame.png")), v["white"]) < MATCH
    assert similarity(view_of(str(tmp_path / "frame.png")), view_of(str(tmp_path / "frame.png"))) >= MATCH
