"""A duplicate-finding benchmark collection from real pictures nobody here drew, with its truth.

    python benchmarks/duplicates_collection.py --out /work/bench-dups [--pictures 3000] [--sources 1000] [--seed 0]
                                               [--flatten]

Reads Debian's openclipart-png (/usr/share/openclipart/png: 8,121 clip-art PNGs, many transparent,
1,221 of them symlinks to others), keeps one file per distinct picture (symlinks resolved, identical
bytes dropped, then identical pixels at 16 x 16 on white dropped, and the 15 over 4 megapixels left out)
and, to keep look-alike families (openclipart has hundreds of generated stars that differ by a point or
two) from counting as distinct pictures, a picture within pHash distance 4 (on white) of one already kept
is left out too; so is, since the benchmark's second version (--lookalike, default 10), a picture
whose margins-trimmed grey version is within pHash distance 10 (the usual threshold: imagededup's
default) of a kept one's. openclipart holds one drawing many times: the same icon in two themes at
two sizes, one card in two card sets, one shape in two colours, a picture and the same picture in a
frame, dozens of generated circles that differ by a hair; version 1 (--lookalike -1: the 16 x 16
rule alone) counted those as distinct pictures, so any finder that grouped them lost precision for
being right. Both rules can only flatter pHash, an anchor. Then --pictures of them are drawn with
--seed. --sources of those get --copies edited copies each, every copy by a different edit:

  jpeg        flattened on white, re-encoded as JPEG at quality 30..80
  downscale   resized to 30..60 % of each side and saved small (PNG, transparency kept)
  crop        70..90 % of the area, anywhere, aspect within 3/4..4/3 (PNG, transparency kept)
  border      a solid border of 5..15 % of the shorter side on each edge, of one random colour (PNG)
  tone        brightness x0.7..1.3, contrast x0.7..1.3 and gamma 0.6..1.6 (PNG, transparency kept)
  greyscale   to grey (PNG, mode LA: transparency kept)
  rotate      rotated 3..10 degrees either way about the centre, no expansion (PNG, corners transparent)
  caption     a band of 12..20 % of the height at the top or bottom with 6..14 random characters (PNG)
  combo       downscale to 50..80 % then flattened on white and saved as JPEG at quality 50..80

--flatten: every original is first composited on white and saved as an opaque PNG, the way it looks
in a viewer (the copies are made from that), for readers that composite transparency on black.

Every file (originals and copies) goes flat into OUT/images/ under a shuffled name (pic-NNNNN.png or
.jpg), so neither a name nor a folder gives a copy away. OUT/truth.json records, per file, its group
(the source's index; every picture without copies is its own group), its edit ("original" or one of
the above) and the original's path under /usr/share/openclipart. Deterministic for a seed: rerun it
after a change to the image reader and the benchmark reads the same files.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import string
import sys
from pathlib import Path

import numpy as np

CLIPART = Path("/usr/share/openclipart/png")
MAX_PIXELS = 4_000_000          # 15 of the pictures are larger (up to 623 megapixels): left out
EDITS = ("jpeg", "downscale", "crop", "border", "tone", "greyscale", "rotate", "caption", "combo")


def distinct_pictures(root: Path, lookalike: int = 10) -> list[Path]:
    """One real path per distinct picture, sorted."""
    from PIL import Image

    import imagehash

    from hashing.images.reader import trimmed

    real = sorted({p.resolve() for p in root.rglob("*.png") if p.is_file()})
    by_bytes, by_pixels, out = set(), set(), []
    hashes = np.zeros((len(real), 64), dtype=bool)
    trims = np.zeros((len(real), 64), dtype=bool)
    for p in real:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if digest in by_bytes:
            continue
        by_bytes.add(digest)
        try:
            with Image.open(p) as im:
                if im.width * im.height > MAX_PIXELS:
                    continue
                im.load()
                grey = on_white(im).convert("L")
                small = grey.resize((16, 16), Image.BILINEAR)
                t = np.asarray(imagehash.phash(trimmed(grey)).hash, dtype=bool).ravel()
        except Exception:          # noqa: BLE001  a file Pillow cannot read is no picture for the benchmark
            continue
        key = (np.asarray(small) // 8).tobytes()
        if key in by_pixels:
            continue
        h = np.asarray(imagehash.phash(small.resize((64, 64))).hash, dtype=bool).ravel()
        if out and (hashes[:len(out)] != h).sum(axis=1).min() <= 4:
            continue
        if out and lookalike >= 0 and (trims[:len(out)] != t).sum(axis=1).min() <= lookalike:
            continue
        by_pixels.add(key)
        hashes[len(out)] = h
        trims[len(out)] = t
        out.append(p)
    return out


def on_white(im):
    from PIL import Image

    rgba = im.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def keeps_alpha(im):
    return im.convert("RGBA") if im.mode in ("RGBA", "LA", "PA", "P") else im.convert("RGB")


def edit(im, name: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """A PIL image -> (the copy's bytes, its suffix)."""
    from PIL import Image, ImageDraw, ImageEnhance, ImageFont

    u = rng.uniform
    w, h = im.size
    if name == "jpeg":
        return save(on_white(im), "JPEG", quality=int(rng.integers(30, 81)))
    if name == "combo":
        f = u(0.5, 0.8)
        small = keeps_alpha(im).resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR)
        return save(on_white(small), "JPEG", quality=int(rng.integers(50, 81)))
    im = keeps_alpha(im)
    if name == "downscale":
        f = u(0.3, 0.6)
        return save(im.resize((max(8, round(w * f)), max(8, round(h * f))), Image.BILINEAR), "PNG")
    if name == "crop":
        area, aspect = u(0.70, 0.90), np.exp(u(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = min(w, max(1, round(w * np.sqrt(area * aspect)))), min(h, max(1, round(h * np.sqrt(area / aspect))))
        left, top = round(u(0, 1) * (w - cw)), round(u(0, 1) * (h - ch))
        return save(im.crop((left, top, left + cw, top + ch)), "PNG")
    if name == "border":
        b = max(1, round(u(0.05, 0.15) * min(w, h)))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3)) + (255,)
        canvas = Image.new("RGBA", (w + 2 * b, h + 2 * b), colour)
        canvas.alpha_composite(im.convert("RGBA"), (b, b))
        return save(canvas.convert("RGB"), "PNG")
    if name == "tone":
        rgb, alpha = im.convert("RGB"), im.getchannel("A") if im.mode == "RGBA" else None
        rgb = ImageEnhance.Contrast(ImageEnhance.Brightness(rgb).enhance(u(0.7, 1.3))).enhance(u(0.7, 1.3))
        g = u(0.6, 1.6)
        rgb = rgb.point([round(255 * (i / 255) ** g) for i in range(256)] * 3)
        if alpha is not None:
            rgb.putalpha(alpha)
        return save(rgb, "PNG")
    if name == "greyscale":
        return save(im.convert("LA") if im.mode == "RGBA" else im.convert("L"), "PNG")
    if name == "rotate":
        deg = u(3, 10) * (1 if rng.random() < 0.5 else -1)
        rot = im.convert("RGBA").rotate(deg, resample=Image.BILINEAR, expand=False, fillcolor=(0, 0, 0, 0))
        return save(rot, "PNG")
    if name == "caption":
        band = max(6, round(u(0.12, 0.20) * h))
        text = "".join(rng.choice(list(string.ascii_letters + string.digits + "  "), size=int(rng.integers(6, 15))))
        out = im.convert("RGBA")
        draw = ImageDraw.Draw(out)
        top = 0 if rng.random() < 0.5 else h - band
        bg = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.rectangle((0, top, w - 1, top + band - 1), fill=bg + (255,))
        font = ImageFont.load_default(size=max(6, round(0.7 * band)))
        fg = tuple(255 - v for v in bg) + (255,)
        draw.text((round(0.03 * w), top + round(0.1 * band)), text, fill=fg, font=font)
        return save(out, "PNG")
    raise ValueError(name)


def save(im, fmt: str, **kw) -> tuple[bytes, str]:
    out = io.BytesIO()
    im.save(out, fmt, **kw)
    return out.getvalue(), ".jpg" if fmt == "JPEG" else ".png"


def build(out: Path, pictures: int, sources: int, copies: int, seed: int, flatten: bool = False,
          lookalike: int = 10) -> dict:
    from PIL import Image

    rng = np.random.default_rng(seed)
    found = distinct_pictures(CLIPART, lookalike)
    if pictures > len(found):
        sys.exit(f"only {len(found)} distinct pictures in {CLIPART}")
    chosen = [found[i] for i in np.sort(rng.choice(len(found), pictures, replace=False))]
    with_copies = set(rng.choice(pictures, sources, replace=False).tolist())
    files = []                                   # (bytes, suffix, group, edit, original)
    for g, path in enumerate(chosen):
        with Image.open(path) as im:
            im.load()
            if flatten:
                im = on_white(im)
                files.append((save(im, "PNG")[0], ".png", g, "original", str(path)))
            else:
                files.append((path.read_bytes(), ".png", g, "original", str(path)))
            if g in with_copies:
                for name in rng.choice(EDITS, copies, replace=False):
                    data, suffix = edit(im, str(name), np.random.default_rng((seed, g, EDITS.index(name))))
                    files.append((data, suffix, g, str(name), str(path)))
    order = rng.permutation(len(files))
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for old in images.iterdir():
        old.unlink()
    truth = {}
    for n, i in enumerate(order):
        data, suffix, g, name, original = files[i]
        fname = f"pic-{n:05d}{suffix}"
        (images / fname).write_bytes(data)
        truth[fname] = {"group": g, "edit": name, "original": original}
    meta = {"source": str(CLIPART), "distinct_pictures_found": len(found), "pictures": pictures, "flatten": flatten,
            "lookalike": lookalike,
            "sources_with_copies": sources, "copies_per_source": copies, "seed": seed, "edits": list(EDITS),
            "files": len(truth), "truth": truth}
    tmp = out / ".truth.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, out / "truth.json")
    return meta


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pictures", type=int, default=3000)
    p.add_argument("--sources", type=int, default=1000)
    p.add_argument("--copies", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flatten", action="store_true", help="Originals composited on white (opaque), copies made from them.")
    p.add_argument("--lookalike", type=int, default=10,
                   help="Leave out a picture within this pHash distance of a kept one, both trimmed (-1: off, version 1).")
    a = p.parse_args()
    meta = build(a.out, a.pictures, a.sources, a.copies, a.seed, a.flatten, a.lookalike)
    print(f"{meta['files']} files in {a.out / 'images'} ({a.pictures} pictures, {a.sources} with {a.copies} copies "
          f"each; {meta['distinct_pictures_found']} distinct pictures found); truth in {a.out / 'truth.json'}")


if __name__ == "__main__":
    main()
