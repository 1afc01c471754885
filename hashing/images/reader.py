"""One image -> the uint8 array a model reads. Training, encoding, querying, the Python API and
folder caches all go through `fit_image`; `HashAutoencoder.preprocess` (model.py) then turns
the uint8 into the model's input with the config's per-channel mean and std.

An `ImageSpec` is the model's view of an image: `size` x `size` pixels, 1 channel (grayscale,
array (size, size)) or 3 (RGB, array (size, size, 3)), and a `resize` rule for images of
another shape:

- "crop"    scale so the shorter side is `size`, then cut the centred square (nothing is
            distorted; the ends of the longer side are lost). The default for new models.
- "pad"     scale so the longer side is `size` and centre it on black (nothing is lost).
- "stretch" scale each side to `size`, changing the aspect ratio. What every model before
            image folders did; checkpoints without a recorded rule keep it, bit for bit.

All three give the same result for a square image. Resampling is bilinear with
antialiasing (Pillow's convolution resize). Before that, the picture is made upright and its
mode uniform:

- `exif`: a camera's EXIF Orientation tag (2..8) is applied, so a phone photo stored sideways
  reads as it is shown (older models, `exif=False`, read the stored pixels).
- `background`: transparency (RGBA, LA, PA, a palette's transparent index) is composited on
  "white", as viewers, browsers and printers show a transparent picture: dark line art on a
  transparent background (38 % of the transparent files in a sample of 400 from openclipart) stays a drawing (on
  "black", the rule of models trained before it was recorded, it was a black square).
- 16- and 32-bit integer images are scaled 0..65535 -> 0..255 (not clipped), float images in
  [0, 1] are scaled to 0..255, palette/CMYK/YCbCr are converted, and grayscale is replicated
  for an RGB model (an RGB image is converted with ITU-R 601 luma for a grayscale one).
- Animated GIF/WebP/PNG files give their first frame (`is_animated` tells; folders count them).
- `trim` (off unless a config sets it; the copies recipe does on folders): plain margins are cut
  before the resize (`trimmed`), so a frame put around a picture, or the empty page around clip
  art, does not change what the model sees.

Everything is Pillow (not torchvision.io): one decoder for every format, mode and tag above,
with its decompression-bomb check, and reduced-scale JPEG decoding (`Image.draft`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashing.core.errors import HashingError, TooLarge

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
RESIZE = ("crop", "pad", "stretch")
DEFAULT_RESIZE = "crop"                     # the rule a new model is given (HashConfig, folder_spec, train)
LEGACY_RESIZE = "stretch"                   # the rule before one was recorded: old configs, ImageSpec(), read_image(p, size)
CHANNELS = (1, 3)                           # grayscale, RGB
BACKGROUNDS = ("white", "black")            # what transparency is composited on; "black": older models
MIN_SIZE, MAX_SIZE = 16, 256
ORIENTATION = 0x0112                        # the EXIF tag that says how the stored pixels are turned


@dataclass(frozen=True)
class ImageSpec:
    size: int = 28
    channels: int = 1
    resize: str = LEGACY_RESIZE             # a bare ImageSpec(size) reads as models before the rule did
    background: str = "white"
    exif: bool = True
    trim: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        """The uint8 array of one image: (size, size) or (size, size, 3)."""
        return (self.size, self.size) if self.channels == 1 else (self.size, self.size, self.channels)


def fit_image(im, spec: ImageSpec, invert: bool = False) -> np.ndarray:
    """A loaded PIL image of any mode and size -> uint8 `spec.shape`, by the rules above."""
    from PIL import Image

    im = to_rgb(im, spec.background) if spec.channels == 3 else to_gray(im, spec.background)
    if spec.trim:
        im = trimmed(im)
    w, h, s = im.width, im.height, spec.size
    if (w, h) != (s, s):
        if spec.resize == "stretch":
            im = im.resize((s, s), Image.BILINEAR, reducing_gap=None)
        elif spec.resize == "crop":
            side = min(w, h)                             # the centred square, in source pixels
            left, top = (w - side) / 2, (h - side) / 2
            im = im.resize((s, s), Image.BILINEAR, box=(left, top, left + side, top + side), reducing_gap=None)
        else:                                            # pad
            scale = s / max(w, h)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            canvas = Image.new(im.mode, (s, s), 0)
            canvas.paste(im.resize((nw, nh), Image.BILINEAR, reducing_gap=None), ((s - nw) // 2, (s - nh) // 2))
            im = canvas
    arr = np.asarray(im, dtype=np.uint8)
    return 255 - arr if invert else arr


TRIM_LEVELS = 24          # grey levels: a row or column whose pixels (2nd..98th percentile) span at most this is plain
TRIM_SIDE = 256           # the plain margins are found on a copy at most this many pixels on its longer side


def trimmed(im):
    """The picture without its plain margins (`trim`): from each side, the rows or columns that are
    one flat colour (a frame added around a picture, the empty page around clip art) are cut, up to
    the first row or column with something in it. A picture that is plain all over is kept whole.
    The margins are found on a reduced copy of a large picture, so this costs about as much on a
    photo as on an icon."""
    from PIL import Image

    w, h = im.size
    f = min(1.0, TRIM_SIDE / max(w, h))
    small = im.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR) if f < 1 else im
    a = np.asarray(small, dtype=np.int16)
    a = a[..., None] if a.ndim == 2 else a

    def busy(b: np.ndarray, axis: int) -> np.ndarray:   # indices of the rows or columns not one flat colour
        lo, hi = np.percentile(b, [2, 98], axis=axis)   # (n, C)
        return np.flatnonzero((hi - lo).max(-1) > TRIM_LEVELS)

    top, bottom, left, right = 0, a.shape[0], 0, a.shape[1]
    for _ in range(4):          # a frame's side columns make its rows look busy: cut rows, then columns, again
        b = a[top:bottom, left:right]
        rows, cols = busy(b, 1), busy(b, 0)
        if len(rows) == 0 or len(cols) == 0:
            if (top, bottom, left, right) == (0, a.shape[0], 0, a.shape[1]):
                return im                               # plain all over: kept whole
            break
        box = (top + rows[0], top + rows[-1] + 1, left + cols[0], left + cols[-1] + 1)
        if box == (top, bottom, left, right):
            break
        top, bottom, left, right = box
    if (top, bottom, left, right) == (0, a.shape[0], 0, a.shape[1]):
        return im
    sx, sy = w / a.shape[1], h / a.shape[0]             # back to the picture's own pixels
    return im.crop((round(left * sx), round(top * sy), max(round(right * sx), round(left * sx) + 1),
                    max(round(bottom * sy), round(top * sy) + 1)))


def read_image(path: str | os.PathLike, spec: ImageSpec | int = ImageSpec(), invert: bool = False) -> np.ndarray:
    """An image file -> uint8 `spec.shape` (an int is a grayscale stretch spec of that size).

    Images over Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS) are refused, not
    decoded. A JPEG bigger than twice the target is decoded at a reduced scale (libjpeg's DCT
    scaling), which is several times faster and changes nothing visible after the resize;
    "stretch" models skip that so their codes stay exactly what they were.
    """
    if isinstance(spec, int):
        spec = ImageSpec(spec)
    return read_image_noting(path, spec, invert)[0]


def read_image_noting(path: str | os.PathLike, spec: ImageSpec, invert: bool = False) -> tuple[np.ndarray, bool]:
    """read_image, and whether the file is animated (only its first frame was read): folders count those."""
    path = Path(path)
    _check_file(path)
    with _opened(path, str(path)) as im:
        return _fit_first_frame(im, spec, invert), is_animated(im)


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise HashingError(f"{path} is a folder, not an image file")
    if path.exists() and not path.is_file():
        raise HashingError(f"{path} is not a regular file (a FIFO, socket or device), not an image file")
    if not path.is_file():
        raise HashingError(f"image not found: {path}")


def decode_image(data: bytes, name: str, spec: ImageSpec, invert: bool = False,
                 max_pixels: int | None = None) -> np.ndarray:
    """An image file's bytes (an upload) -> uint8 `spec.shape`, exactly as read_image reads that file.

    `max_pixels`: refuse, from the header alone and before any decoding, an image that would decode
    to more pixels (after a JPEG's reduced-scale decode), so one upload cannot take the memory of a
    service (a 9000 x 9000 PNG is a few MB on the wire and 320 MB decoded)."""
    import io

    with _opened(io.BytesIO(data), name) as im:
        return _fit_first_frame(im, spec, invert, max_pixels, name)


def load_picture(source: str | os.PathLike | bytes, name: str = "image"):
    """An image file (a path, or a file's bytes) -> its first frame, upright, as a loaded PIL image in its
    own mode, with read_image's refusals (copy detection hashes it, edits it, or fits it)."""
    import io

    fp = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
    with _opened(fp, name if isinstance(source, bytes) else str(source)) as im:
        im.seek(0)
        im.load()
        return upright(im.copy())


def thumbnail_png(path: str | os.PathLike, size: int) -> bytes:
    """An image file as a PNG that fits in size x size (never enlarged), for showing it: gray or RGB,
    upright, transparency on white, first frame."""
    with _opened(Path(path), str(path)) as im:
        im.seek(0)
        im.draft(im.mode, (size, size))              # JPEG: decode at a reduced scale when it is large
        im.load()
        im = upright(im)
        return png_bytes(gray_or_rgb(im), size)


def upright(im):
    """A loaded image with its EXIF Orientation tag applied (the same image when it has none or 1)."""
    from PIL import ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)     # Pillow warns of a corrupt EXIF block and goes on
            turned = im.getexif().get(ORIENTATION, 1) in range(2, 9)
    except Exception:            # noqa: BLE001  an unreadable EXIF block: the stored pixels as they are
        return im
    return ImageOps.exif_transpose(im) if turned else im


def is_animated(im) -> bool:
    """Whether an opened image has more than one frame (only the first is read)."""
    return bool(getattr(im, "is_animated", False)) and getattr(im, "n_frames", 1) > 1


def png_bytes(im, size: int) -> bytes:
    """A loaded PIL image (or a uint8 array) as PNG bytes that fit in size x size (never enlarged)."""
    import io

    from PIL import Image

    im = Image.fromarray(im) if isinstance(im, np.ndarray) else im.copy()
    im.thumbnail((size, size))
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def _fit_first_frame(im, spec: ImageSpec, invert: bool, max_pixels: int | None = None,
                     name: str = "the image") -> np.ndarray:
    if spec.resize != "stretch" and im.format == "JPEG":
        im.draft(im.mode, (2 * spec.size, 2 * spec.size))
    if max_pixels is not None and im.width * im.height > max_pixels:
        raise TooLarge(f"image too large: {name} is {im.width} x {im.height} "
                           f"({im.width * im.height / 1e6:.1f} megapixels); this service decodes at most "
                           f"{max_pixels / 1e6:g} (max_megapixels): send a smaller copy", settings=("max_megapixels",))
    im.seek(0)
    im.load()
    return fit_image(upright(im) if spec.exif else im, spec, invert)


@contextlib.contextmanager
def _opened(fp, name: str):
    """Image.open with the one set of refusals: decompression bombs, and anything Pillow cannot read,
    each as a one-line HashingError naming `name`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)         # Pillow's "Corrupt EXIF data": read on without it
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                yield im
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge(f"image too large: {name} has more than {Image.MAX_IMAGE_PIXELS:,} pixels "
                           f"(refused as a possible decompression bomb)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise HashingError(f"not a readable image: {name} ({type(e).__name__})") from None


def give_back_memory() -> None:
    """Return freed heap memory to the operating system (glibc's malloc_trim): after a large decode,
    freed buffers would otherwise stay in the process's arenas, one per decoding thread."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def to_gray(im, background: str = "white"):
    """A loaded PIL image of any mode -> mode 'L' (transparency on `background`)."""
    if _transparent(im):
        return _flattened(im, background).convert("L")
    wide = _wide_to_8bit(im)
    return wide if wide is not None else im if im.mode == "L" else im.convert("L")    # no copy of a large L image


def to_rgb(im, background: str = "white"):
    """A loaded PIL image of any mode -> mode 'RGB' (transparency on `background`)."""
    if _transparent(im):
        return _flattened(im, background).convert("RGB")
    wide = _wide_to_8bit(im)
    im = wide if wide is not None else im
    return im if im.mode == "RGB" else im.convert("RGB")                           # no copy of a large RGB image


def gray_or_rgb(im):
    """A loaded PIL image as mode 'L' when it carries no colour (is_gray), else 'RGB'; transparency on white."""
    return to_gray(im) if is_gray(im) else to_rgb(im)


def as_picture(ref):
    """An item as the picture that copies are made from and perceptual hashes read: a uint8 array (a
    dataset's image) as it is, an image file (a path or its bytes) by load_picture, in 'L' or 'RGB'."""
    from PIL import Image

    if isinstance(ref, np.ndarray):
        return Image.fromarray(ref)
    return gray_or_rgb(load_picture(ref))


def is_gray(im, tolerance: int = 8) -> bool:
    """Whether a loaded image carries no colour: a gray mode, or RGB whose channels agree."""
    if im.mode in ("1", "L", "LA", "I", "F") or im.mode.startswith("I;"):
        return True
    im = im.convert("RGBA") if im.mode in ("P", "PA") else im    # a palette's transparency: Pillow warns on P -> RGB
    small = np.asarray(im.convert("RGB").resize((32, 32)), dtype=np.int16)     # (32, 32, 3), any other mode
    return int(np.abs(small - small.mean(2, keepdims=True)).max()) <= tolerance


def _transparent(im) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)


def _flattened(im, background: str):
    """A transparent image composited on white or black (BACKGROUNDS), as RGBA with alpha 255."""
    from PIL import Image

    if background not in BACKGROUNDS:
        raise HashingError(f"background must be one of {', '.join(BACKGROUNDS)}, got {background!r}")
    rgba = im.convert("RGBA")
    value = 255 if background == "white" else 0
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (value, value, value, 255)), rgba)


def _wide_to_8bit(im):
    """16/32-bit integer and float images -> mode 'L' scaled to 0..255; None for other modes."""
    from PIL import Image

    if im.mode.startswith("I"):         # I;16, I;16B, I;16L, I: integers up to 65535 (16-bit files)
        wide = np.asarray(im, dtype=np.float64)
        scale = 255.0 / 65535.0 if im.mode.startswith("I;16") or wide.max() > 255 else 1.0
    elif im.mode == "F":                # floats: [0, 1] when they fit there, else 0..255
        wide = np.asarray(im, dtype=np.float64)
        scale = 255.0 if wide.max() <= 1.0 else 1.0
    else:
        return None
    return Image.fromarray(np.clip(np.rint(wide * scale), 0, 255).astype(np.uint8))


def conform(images: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """uint8 (N, H, W) or (N, H, W, C) already in memory (a built-in dataset) -> (N, *spec.shape)."""
    from PIL import Image

    if images.shape[1:] == spec.shape and not spec.trim:
        return images
    out = np.empty((len(images), *spec.shape), np.uint8)
    for i, im in enumerate(images):
        out[i] = fit_image(Image.fromarray(im), spec)
    return out
