"""Edited copies of an image, as people make them: the queries of the copy-detection protocol.

An edit is drawn first, as a plan of steps with their random parameters (`plan`), then
applied to a PIL image and saved as a file (`make_copy` -> the file's bytes): a JPEG when the
last step is a JPEG re-encoding, a PNG otherwise. Both the model and the perceptual hashes
read that file, as they would read a copy found on the web.

Families (parameters drawn uniformly; sizes relative to the image, so a 28 px digit and a
1,000 px photo get the same kind of edit):

  jpeg        re-encode as JPEG, quality 20..70
  rescale     downscale to 30..60 % of each side, then back to the original size (bilinear)
  crop        keep 70..95 % of the area (aspect within 3/4..4/3 of the original), anywhere;
              the copy is the smaller picture
  rotate      rotate by up to +-10 degrees about the centre, corners filled with black
  brightness  brightness x 0.6..1.4, then contrast x 0.6..1.4
  blur        Gaussian blur, radius 0.5..1.5 px per 64 px of the shorter side (at least 0.5..1.5 px)
  noise       additive Gaussian noise, sigma 5..20 grey levels, clipped
  overlay     half the time an opaque rectangle of one random colour over 4..12 % of the area,
              else a short random text (4..8 characters, height ~20 % of the image) in a random colour
  combo       2 or 3 different families of the above, in random order, a JPEG step always last
  flip        mirror left-right (reported on its own: some users want flip invariance, some do not)
  identity    the file re-saved as PNG, nothing changed (a check of the protocol, not a default)
"""

from __future__ import annotations

import io
import string
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from hashing.core.errors import HashingError

SINGLE = ("jpeg", "rescale", "crop", "rotate", "brightness", "blur", "noise", "overlay")
EDITS = (*SINGLE, "combo", "flip", "identity")
DEFAULT_EDITS = (*SINGLE, "combo", "flip")
SEPARATE = ("flip",)        # families left out of the overall numbers when others are present

# The ranges the edits draw from (uniformly; the docstring's table), (low, high) each: the protocol's,
# and the training views' that imitate it (hashing.train.views.random_copy reads them from here).
RANGES = MappingProxyType({
    "jpeg": (20, 70),                   # quality, a whole number, both ends included
    "rescale": (0.3, 0.6),              # the downscaled side, a fraction of the original's
    "crop": (0.70, 0.95),               # the area kept, a fraction
    "crop_aspect": (3 / 4, 4 / 3),      # the crop's aspect over the original's (drawn log-uniformly)
    "rotate": (-10.0, 10.0),            # degrees about the centre
    "brightness": (0.6, 1.4),           # brightness factor
    "contrast": (0.6, 1.4),             # contrast factor, after the brightness
    "blur": (0.5, 1.5),                 # Gaussian radius, pixels per 64 px of the shorter side (at least pixels)
    "noise": (5.0, 20.0),               # Gaussian sigma, grey levels
    "overlay": (0.04, 0.12),            # the rectangle's area, a fraction
    "overlay_aspect": (1 / 2, 2.0),     # the rectangle's aspect (drawn log-uniformly)
})


@dataclass(frozen=True)
class Step:
    family: str
    params: tuple[float, ...]

    def label(self) -> str:
        return f"{self.family}({', '.join(f'{p:.3g}' for p in self.params)})"


def check_edits(names) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    unknown = [n for n in names if n not in EDITS]
    if unknown:
        raise HashingError(f"unknown edit {unknown[0]!r}: choose from {', '.join(EDITS)}")
    if not names:
        raise HashingError("no edits given")
    return names


def plan(edit: str, rng: np.random.Generator) -> list[Step]:
    """The steps of one copy under `edit`, with their parameters drawn from rng."""
    if edit == "combo":
        families = list(rng.choice(SINGLE, size=int(rng.integers(2, 4)), replace=False))
        families.sort(key=lambda f: f == "jpeg")                   # JPEG is what a copy is saved as: last
        return [_draw(f, rng) for f in families]
    if edit not in EDITS:
        raise HashingError(f"unknown edit {edit!r}: choose from {', '.join(EDITS)}")
    return [_draw(edit, rng)]


def _draw(family: str, rng: np.random.Generator) -> Step:
    u, R = rng.uniform, RANGES

    def log_u(lo: float, hi: float) -> float:
        return np.exp(u(np.log(lo), np.log(hi)))

    params = {
        "jpeg": lambda: (float(rng.integers(R["jpeg"][0], R["jpeg"][1] + 1)),),
        "rescale": lambda: (u(*R["rescale"]),),
        "crop": lambda: (u(*R["crop"]), log_u(*R["crop_aspect"]), u(0, 1), u(0, 1)),
        "rotate": lambda: (u(*R["rotate"]),),
        "brightness": lambda: (u(*R["brightness"]), u(*R["contrast"])),
        "blur": lambda: (u(*R["blur"]),),
        "noise": lambda: (u(*R["noise"]), float(rng.integers(2**31))),
        "overlay": lambda: (float(rng.random() < 0.5), u(*R["overlay"]), log_u(*R["overlay_aspect"]),
                            u(0, 1), u(0, 1), float(rng.integers(2**31))),
        "flip": lambda: (),
        "identity": lambda: (),
    }[family]()
    return Step(family, tuple(float(p) for p in params))


def apply(im, steps: list[Step]) -> bytes:
    """A PIL image (L or RGB) under the steps -> the copy's file bytes (JPEG if the last step is one, else PNG)."""
    for i, step in enumerate(steps):
        if step.family == "jpeg":
            data = _save(im, "JPEG", quality=int(step.params[0]))
            if i == len(steps) - 1:
                return data
            im = _load(data)
        else:
            im = _APPLY[step.family](im, *step.params)
    return _save(im, "PNG")


def make_copy(im, edit: str, rng: np.random.Generator) -> tuple[bytes, list[Step]]:
    steps = plan(edit, rng)
    return apply(im, steps), steps


def _save(im, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **kw)
    return out.getvalue()


def _load(data: bytes):
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _rescale(im, factor):
    from PIL import Image

    w, h = im.size
    small = im.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.BILINEAR)
    return small.resize((w, h), Image.BILINEAR)


def _crop(im, area, aspect, fx, fy):
    w, h = im.size
    cw = min(w, max(1, round(w * np.sqrt(area * aspect))))
    ch = min(h, max(1, round(h * np.sqrt(area / aspect))))
    left, top = round(fx * (w - cw)), round(fy * (h - ch))
    return im.crop((left, top, left + cw, top + ch))


def _rotate(im, degrees):
    from PIL import Image

    return im.rotate(degrees, resample=Image.BILINEAR, expand=False, fillcolor=0)


def _brightness(im, brightness, contrast):
    from PIL import ImageEnhance

    return ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(brightness)).enhance(contrast)


def _blur(im, radius):
    from PIL import ImageFilter

    return im.filter(ImageFilter.GaussianBlur(radius * max(1.0, min(im.size) / 64)))


def _noise(im, sigma, seed):
    from PIL import Image

    x = np.asarray(im, dtype=np.float32)
    x = x + np.random.default_rng(int(seed)).normal(0, sigma, x.shape)
    return Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8), im.mode)


def _colour(im, rng: np.random.Generator):
    c = tuple(int(v) for v in rng.integers(0, 256, 3))
    return c if im.mode == "RGB" else int(round(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]))


def _overlay(im, is_patch, area, aspect, fx, fy, seed):
    from PIL import ImageDraw, ImageFont

    im = im.copy()
    rng = np.random.default_rng(int(seed))
    w, h = im.size
    draw = ImageDraw.Draw(im)
    if is_patch:
        pw = min(w, max(1, round(w * np.sqrt(area * aspect))))
        ph = min(h, max(1, round(h * np.sqrt(area / aspect))))
        left, top = round(fx * (w - pw)), round(fy * (h - ph))
        draw.rectangle((left, top, left + pw - 1, top + ph - 1), fill=_colour(im, rng))
        return im
    text = "".join(rng.choice(list(string.ascii_letters + string.digits), size=int(rng.integers(4, 9))))
    font = ImageFont.load_default(size=max(6, round(0.2 * h)))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = round(fx * max(0, w - (right - left))) - left
    y = round(fy * max(0, h - (bottom - top))) - top
    draw.text((x, y), text, fill=_colour(im, rng), font=font)
    return im


def _flip(im):
    from PIL import ImageOps

    return ImageOps.mirror(im)


_APPLY = {"rescale": _rescale, "crop": _crop, "rotate": _rotate, "brightness": _brightness, "blur": _blur,
          "noise": _noise, "overlay": _overlay, "flip": _flip, "identity": lambda im: im}
