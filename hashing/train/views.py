"""Random views of a batch, on the batch's device, for augmentation-invariance objectives.

Every view family is one affine_grid/grid_sample call per batch plus elementwise colour
work: no per-image host work. Inputs are the model's normalised input, (x/255 - mean) / std
per channel (`mean`, `std`: floats or (1, C, 1, 1) tensors, the model's own); resampling pads
with black, the MNIST background, not with the mid-grey that 0 would be.

- affine: small rotation, scale, shift and shear (digits: a flipped 2 is not a 2).
- crop: crop-and-resize (SimCLR's main view, Chen et al. 2020) of 35-100 % of the area,
  aspect 3/4-4/3, mirrored half of the time, plus a contrast change; for objects such
  as clothing, where a mirror image is the same kind of thing.
- photo: SimCLR's views for photographs: crop-and-resize of 25-100 % of the area, mirrored
  half of the time, then with probability 0.8 colour jitter (brightness, contrast and
  saturation each x U(0.6, 1.4), hue rotated by up to +-0.1 turn in YIQ space) and with
  probability 0.2 grayscale; `p_shuffle` and `p_invert` (0 unless set: the default recipe sets
  them for colour folders, recipes.COLOUR_FOLDER) put the colour channels in a random order and
  invert the colours. On one channel only brightness, contrast and inversion apply.
- copies: the edits of the copy-detection protocol (hashing.images.edits), batched on the device.
  Half of the views (`p_single`) get exactly one edit family, as the protocol's single-edit
  queries do (rescale, blur and occlusion more often than the rest: SINGLE_WEIGHTS); the
  others are composites: crop keeping 70-100 % of the area (aspect 3/4-4/3) with a rotation
  of up to +-10 degrees half of the time, then each with its own probability:
  downscale-upscale (0.3-0.6 of the side), Gaussian blur, brightness and contrast x 0.6-1.4
  (the protocol's ranges; `rescale`, `blur`, `brightness` and `contrast` widen them, and the
  `copies` recipe goes past the protocol on these: recipes.py),
  an occluding rectangle of 4-12 % of the area, Gaussian noise (5-20 grey levels) and, last,
  JPEG re-encoding at quality 20-70 (8x8 DCT quantised with the standard tables, as libjpeg
  does, without chroma subsampling). Why the half: composites alone rarely show a purely
  rescaled or blurred picture (MNIST recall@1 on those 0.812 / 0.899), single edits alone
  lose crops (0.598 -> 0.358); half and half measured best (docs/experiments.md, "The copies recipe").
  No mirror: a flipped copy is the user's call (`hashing evaluate --task copies` reports
  flips apart).
- auto: chosen by `resolve_views` from the dataset (AUTO_VIEWS) or, for image folders, from
  the channels: photo for colour, crop for grayscale.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Mapping

import torch
import torch.nn.functional as F

from hashing.images.edits import RANGES, SINGLE
from hashing.model.network import gaussian_taps


def _uniform(x: torch.Tensor, generator: torch.Generator | None):
    """u(lo, hi) -> (B,) float32 uniform draws on x's device, one per image."""
    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(x.shape[0], device=x.device, dtype=torch.float32, generator=generator) * (hi - lo) + lo
    return u


Norm = "float | torch.Tensor"


def _background(mean, std):
    """What black (pixel 0) is after normalisation: -mean / std, a float or (1, C, 1, 1)."""
    return -mean / std


def random_affine(x: torch.Tensor, mean: Norm = 0.5, std: Norm = 0.5, degrees: float = 15.0,
                  scale: tuple[float, float] = (0.85, 1.15), shift: float = 0.12, shear: float = 0.15,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W), each image under its own random affine map.

    shift is a fraction of the half-width (0.12 ~ 1.7 px on 28 px).
    """
    background = _background(mean, std)
    u = _uniform(x, generator)
    ang = u(-degrees, degrees) * (math.pi / 180)
    s = u(*scale)
    sh = u(-shear, shear)
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    theta = torch.stack([
        torch.stack([cos, -sin + sh * cos, u(-shift, shift)], 1),
        torch.stack([sin, cos + sh * sin, u(-shift, shift)], 1),
    ], 1)  # (B, 2, 3) maps output coords to input coords
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample((x - background).float(), grid.to(torch.float32), mode="bilinear",
                        padding_mode="zeros", align_corners=False)
    return (out + background).to(x.dtype)


def random_crop(x: torch.Tensor, mean: Norm = 0.5, std: Norm = 0.5, area: tuple[float, float] = (0.35, 1.0),
                aspect: tuple[float, float] = (0.75, 1.333), flip: bool = True,
                contrast: tuple[float, float] = (0.6, 1.0), generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): a random crop of each image resized to full size."""
    background = _background(mean, std)
    b, dev = x.shape[0], x.device
    u = _uniform(x, generator)
    a = u(*area)
    r = torch.exp(u(math.log(aspect[0]), math.log(aspect[1])))
    w, h = (a * r).sqrt().clamp(max=1.0), (a / r).sqrt().clamp(max=1.0)     # fractions of the full size
    cx, cy = u(-1, 1) * (1 - w), u(-1, 1) * (1 - h)
    sign = torch.where(u(0, 1) < 0.5, -1.0, 1.0) if flip else torch.ones(b, device=dev)
    zero = torch.zeros(b, device=dev)
    theta = torch.stack([torch.stack([w * sign, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)   # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample((x - background).float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out * u(*contrast)[:, None, None, None]          # dimmer foreground, same background
    return (out + background).to(x.dtype)


# ITU-R 601 RGB <-> YIQ: hue is the angle in the IQ plane.
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def random_photo(x: torch.Tensor, mean: Norm = 0.5, std: Norm = 0.5, area: tuple[float, float] = (0.25, 1.0),
                 jitter: float = 0.4, hue: float = 0.1, p_jitter: float = 0.8, p_gray: float = 0.2,
                 p_shuffle: float = 0.0, p_invert: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): crop-and-resize, then colour jitter and grayscale (see above),
    then with probability `p_shuffle` the colour channels in a random order and with `p_invert`
    the colours inverted (x -> 1 - x)."""
    x = random_crop(x, mean, std, area=area, contrast=(1.0, 1.0), generator=generator)
    u = _uniform(x, generator)
    b, c = x.shape[:2]
    p = (x.float() * std + mean).clamp(0, 1)                        # (B, C, H, W) pixels in [0, 1]
    on = (u(0, 1) < p_jitter)[:, None, None, None]
    lo, hi = 1 - jitter, 1 + jitter
    jittered = p * u(lo, hi)[:, None, None, None]                                   # brightness
    luma = jittered.mean(1, keepdim=True) if c == 1 else \
        torch.einsum("bchw,c->bhw", jittered, _YIQ[0].to(x.device))[:, None]
    grey = luma.mean((2, 3), keepdim=True)
    jittered = (jittered - grey) * u(lo, hi)[:, None, None, None] + grey            # contrast
    if c == 3:
        luma = torch.einsum("bchw,c->bhw", jittered, _YIQ[0].to(x.device))[:, None]
        jittered = (jittered - luma) * u(lo, hi)[:, None, None, None] + luma        # saturation
        yiq = torch.einsum("kc,bchw->bkhw", _YIQ.to(x.device), jittered)
        turn = u(-hue, hue) * (2 * math.pi)
        cos, sin = torch.cos(turn)[:, None, None], torch.sin(turn)[:, None, None]
        i, q = yiq[:, 1], yiq[:, 2]
        yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], 1)   # hue
        jittered = torch.einsum("ck,bkhw->bchw", torch.linalg.inv(_YIQ).to(x.device), yiq)
    p = torch.where(on, jittered.clamp(0, 1), p)
    if c == 3:
        gray = (u(0, 1) < p_gray)[:, None, None, None]
        luma = torch.einsum("bchw,c->bhw", p, _YIQ[0].to(x.device))[:, None].expand_as(p)
        p = torch.where(gray, luma, p)
        if p_shuffle:
            order = torch.rand(b, 3, device=x.device, generator=generator).argsort(1)      # (B, 3)
            shuffled = p.gather(1, order[:, :, None, None].expand_as(p))
            p = torch.where((u(0, 1) < p_shuffle)[:, None, None, None], shuffled, p)
    if p_invert:
        p = torch.where((u(0, 1) < p_invert)[:, None, None, None], 1 - p, p)
    return ((p - mean) / std).to(x.dtype)


# JPEG's quantisation tables (ITU-T T.81 Annex K) for luma and chroma, at quality 50.
_JPEG_LUMA = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32)
_JPEG_CHROMA = torch.full((8, 8), 99.0)
_JPEG_CHROMA[:4, :4] = torch.tensor([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]])
_YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def _dct_matrix(n: int = 8) -> torch.Tensor:
    """Orthonormal DCT-II: coefficients = M @ block @ M.T."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    m = torch.cos(math.pi * (2 * torch.arange(n, dtype=torch.float64)[None] + 1) * k / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m.float()


def jpeg(p: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) pixels in [0, 1], quality (B,) 1..100 -> the same after JPEG's lossy step.

    libjpeg's quality scaling of the tables (q < 50: 5000/q %, else 200 - 2q %), 8x8 blocks
    (the image padded by edge replication to a multiple of 8), YCbCr for colour, rounding of
    the quantised coefficients; no chroma subsampling and no integer DCT, so it is close to,
    not bit-exact with, a JPEG file (tests compare it with Pillow's).
    """
    b, c, h, w = p.shape
    dev = p.device
    x = F.pad(p.float() * 255, (0, -w % 8, 0, -h % 8), mode="replicate")
    if c == 3:
        x = torch.einsum("kc,bchw->bkhw", _YCC.to(dev), x)
        x[:, 1:] += 128
    q = quality.float().clamp(1, 100)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q)[:, None, None, None]               # (B, 1, 1, 1) percent
    tables = torch.stack([_JPEG_LUMA, _JPEG_CHROMA, _JPEG_CHROMA])[:c].to(dev)            # (C, 8, 8)
    table = ((tables[None] * scale + 50) / 100).floor().clamp(1, 255)                      # (B, C, 8, 8)
    blocks = (x - 128).unfold(2, 8, 8).unfold(3, 8, 8)                                     # (B, C, H/8, W/8, 8, 8)
    m = _dct_matrix().to(dev)
    coef = m @ blocks @ m.T
    t = table[:, :, None, None]
    blocks = m.T @ (torch.round(coef / t) * t) @ m + 128
    x = blocks.permute(0, 1, 2, 4, 3, 5).reshape(b, c, x.shape[2], x.shape[3])
    if c == 3:
        x[:, 1:] -= 128
        x = torch.einsum("ck,bkhw->bchw", torch.linalg.inv(_YCC).to(dev), x)
    return (x[:, :, :h, :w] / 255).clamp(0, 1).to(p.dtype)


def _gaussian_blur(p: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, C, H, W), sigma (B,) pixels -> each image blurred with its own separable Gaussian."""
    b, c, h, w = p.shape
    k = gaussian_taps(sigma.to(p.device), radius).repeat_interleave(c, 0)                  # (B*C, 2r+1)
    x = F.pad(p.float().reshape(1, b * c, h, w), (radius,) * 4, mode="replicate")
    x = F.conv2d(x, k[:, None, :, None], groups=b * c)
    x = F.conv2d(x, k[:, None, None, :], groups=b * c)
    return x.reshape(b, c, h, w).to(p.dtype)


COPY_EDITS = SINGLE   # the protocol's single-edit families (hashing.images.edits), one column each in a plan
# A single-edit view is a rescale three times and a blur or an occlusion twice as often as any
# other family (1): the edits a learned code finds hardest against pHash, whose low DCT
# frequencies ignore rescaling and blurring by construction. With the copies recipe's lowpass
# (MNIST recall@1, 12 epochs): rescale 0.909 -> 0.928, blur 0.962 -> 0.970, overlay 0.626 ->
# 0.642; heavier weights (5/3/3) measured no better (docs/experiments.md, "The copies recipe").
SINGLE_WEIGHTS = MappingProxyType({"rescale": 3.0, "blur": 2.0, "overlay": 2.0})


def copy_plan(b: int, probs: dict[str, float], p_single: float, u,
              weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """(B, len(COPY_EDITS)) bool: which edits each of B copy views gets.

    With probability `p_single` a view gets exactly one edit family, drawn with probability
    proportional to `weights[name]` (default: uniformly, as the protocol's single-edit queries
    are); otherwise each family applies with its own `probs[name]` (crop 1: a composite view is
    always cropped, by 70-100 % of the area). `u(lo, hi)` draws (B,) uniforms (`_uniform`).
    """
    single = u(0, 1) < p_single                                                # (B,)
    w = torch.tensor([float((weights or {}).get(name, 1.0)) for name in COPY_EDITS])
    edges = (w.cumsum(0) / w.sum()).to(single.device)                          # (edits,) right edges in (0, 1]
    family = torch.searchsorted(edges, u(0, 1), right=True).clamp(max=len(COPY_EDITS) - 1)  # (B,) its one edit
    one = family[:, None] == torch.arange(len(COPY_EDITS), device=family.device)[None]
    each = torch.stack([u(0, 1) < probs[name] for name in COPY_EDITS], 1)     # (B, edits)
    return torch.where(single[:, None], one, each)


def random_copy(x: torch.Tensor, mean: Norm = 0.5, std: Norm = 0.5, area: tuple[float, float] = (RANGES["crop"][0], 1.0),
                degrees: float = RANGES["rotate"][1], p_rotate: float = 0.5, p_rescale: float = 0.3, p_blur: float = 0.3,
                p_brightness: float = 0.5, p_overlay: float = 0.3, p_noise: float = 0.3, p_jpeg: float = 0.4,
                p_single: float = 0.5, single_weights: Mapping[str, float] = SINGLE_WEIGHTS,
                rescale: tuple[float, float] = RANGES["rescale"], blur: tuple[float, float] = RANGES["blur"],
                brightness: tuple[float, float] = RANGES["brightness"], contrast: tuple[float, float] = RANGES["contrast"],
                gamma: tuple[float, float] = (1.0, 1.0), p_border: float = 0.0, p_grey: float = 0.0,
                p_caption: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): each image edited as a copy of it might be (see above).

    `single_weights` weighs the families of the single-edit views ({} = all equally likely);
    `rescale` is the (low, high) range of the downscaled side's fraction, `blur` that of the
    Gaussian's sigma (pixels per 64 px of the shorter side, at least that many pixels), and
    `brightness` and `contrast` those of the two factors of a brightness edit, `gamma` that of
    its gamma (pixels ** gamma; (1, 1): none).

    Three edits of real collections, off unless set (the `copies` recipe sets them for image
    folders: recipes.py), each on its own, beside the plan: `p_border` a solid frame of 5-15 % of
    the side on every edge in one random colour (the picture shrunk inside it), `p_grey` to grey
    (colour images), `p_caption` a band of 12-20 % of the height at the top or bottom in one colour
    with a row of random marks (text) in another. Their random draws are made only when set, so a
    config without them trains exactly as before."""
    background = _background(mean, std)
    b, c, h, w = x.shape
    dev = x.device
    u = _uniform(x, generator)
    probs = {"crop": 1.0, "rotate": p_rotate, "rescale": p_rescale, "blur": p_blur, "brightness": p_brightness,
             "overlay": p_overlay, "noise": p_noise, "jpeg": p_jpeg}
    plan = copy_plan(b, probs, p_single, u, single_weights)                    # (B, edits)

    def chosen(name: str) -> torch.Tensor:                                     # (B, 1, 1, 1) bool
        return plan[:, COPY_EDITS.index(name), None, None, None]

    crop = chosen("crop").view(b)
    a = torch.where(crop, u(*area), 1.0)
    r = torch.where(crop, torch.exp(u(*(math.log(v) for v in RANGES["crop_aspect"]))), 1.0)
    sx, sy = (a * r).sqrt().clamp(max=1.0), (a / r).sqrt().clamp(max=1.0)      # kept fraction of each side
    ang = u(-degrees, degrees) * (math.pi / 180) * chosen("rotate").view(b)
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([sx * cos, -sy * sin, u(-1, 1) * (1 - sx)], 1),
                         torch.stack([sx * sin, sy * cos, u(-1, 1) * (1 - sy)], 1)], 1)   # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    p = F.grid_sample((x - background).float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    p = ((p + background) * std + mean).clamp(0, 1)                            # (B, C, H, W) pixels in [0, 1]

    if p_border > 0:
        p = _border(p, u(0, 1) < p_border, u(0.05, 0.15), generator)
    f = float(u(*rescale)[0])                                                  # one factor per batch: interpolate
    small = F.interpolate(p, size=(max(1, round(h * f)), max(1, round(w * f))), mode="bilinear", antialias=True)
    p = torch.where(chosen("rescale"), F.interpolate(small, size=(h, w), mode="bilinear"), p)
    sigma = u(*blur) * max(1.0, min(h, w) / 64)
    p = torch.where(chosen("blur"), _gaussian_blur(p, sigma, radius=max(2, math.ceil(3 * float(sigma.max())))), p)
    edited = (p * u(*brightness)[:, None, None, None]).clamp(0, 1)
    grey = edited.mean((1, 2, 3), keepdim=True)
    edited = ((edited - grey) * u(*contrast)[:, None, None, None] + grey).clamp(0, 1)
    if gamma != (1.0, 1.0):
        edited = edited.clamp_min(1e-6) ** u(*gamma)[:, None, None, None]
    p = torch.where(chosen("brightness"), edited, p)
    if p_grey > 0 and c == 3:
        luma = (p * torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)).sum(1, keepdim=True)
        p = torch.where((u(0, 1) < p_grey)[:, None, None, None], luma.expand_as(p), p)
    pa = u(*RANGES["overlay"])
    pr = torch.exp(u(*(math.log(v) for v in RANGES["overlay_aspect"])))
    pw, ph = (pa * pr).sqrt().clamp(max=1.0), (pa / pr).sqrt().clamp(max=1.0)  # fractions of the side
    left, top = u(0, 1) * (1 - pw), u(0, 1) * (1 - ph)
    ys = (torch.arange(h, device=dev) + 0.5) / h
    xs = (torch.arange(w, device=dev) + 0.5) / w
    inside = ((ys[None, :, None] >= top[:, None, None]) & (ys[None, :, None] < (top + ph)[:, None, None])
              & (xs[None, None, :] >= left[:, None, None]) & (xs[None, None, :] < (left + pw)[:, None, None]))
    colour = torch.rand(b, c, 1, 1, device=dev, generator=generator)
    p = torch.where(chosen("overlay") & inside[:, None], colour, p)
    if p_caption > 0:
        p = _caption(p, u(0, 1) < p_caption, u, generator)
    noise = torch.randn(p.shape, device=dev, generator=generator) * (u(*RANGES["noise"]) / 255)[:, None, None, None]
    p = torch.where(chosen("noise"), (p + noise).clamp(0, 1), p)
    p = torch.where(chosen("jpeg"), jpeg(p, u(*RANGES["jpeg"])), p)
    return ((p - mean) / std).to(x.dtype)


def _border(p: torch.Tensor, on: torch.Tensor, frac: torch.Tensor, generator) -> torch.Tensor:
    """Pixels (B, C, H, W) in [0, 1] -> the images where `on` (B,) shrunk to 1 - 2 `frac` (B,) of
    each side inside a frame of one random colour per image."""
    b, c = p.shape[:2]
    z = (1 / (1 - 2 * frac)).view(b)
    zero = torch.zeros_like(z)
    theta = torch.stack([torch.stack([z, zero, zero], 1), torch.stack([zero, z, zero], 1)], 1)
    grid = F.affine_grid(theta, list(p.shape), align_corners=False)
    inside = (grid.abs() <= 1).all(-1)[:, None]                               # (B, 1, H, W)
    framed = F.grid_sample(p, grid, mode="bilinear", padding_mode="border", align_corners=False)
    colour = torch.rand(b, c, 1, 1, device=p.device, generator=generator)
    framed = torch.where(inside, framed, colour)
    return torch.where(on[:, None, None, None], framed, p)


def _caption(p: torch.Tensor, on: torch.Tensor, u, generator) -> torch.Tensor:
    """Pixels (B, C, H, W) in [0, 1] -> the images where `on` (B,) with a caption band: 12-20 % of
    the height at the top or bottom in one colour, its middle half holding a row of random marks
    (a line of text at this size) over 30-90 % of the width in another colour."""
    b, c, h, w = p.shape
    dev = p.device
    height = u(0.12, 0.20)
    top = torch.where(u(0, 1) < 0.5, torch.zeros_like(height), 1 - height)    # (B,) band's top, a fraction
    ys = ((torch.arange(h, device=dev) + 0.5) / h)[None, :, None]
    xs = ((torch.arange(w, device=dev) + 0.5) / w)[None, None, :]
    rel = (ys - top[:, None, None]) / height[:, None, None]                   # 0..1 inside the band
    band = (rel >= 0) & (rel < 1)                                              # (B, H, 1)
    span = u(0.3, 0.9)
    start = u(0, 1) * (1 - span)
    line = band & (rel >= 0.25) & (rel < 0.75) & (xs >= start[:, None, None]) & (xs < (start + span)[:, None, None])
    marks = torch.rand(b, h, w, device=dev, generator=generator) < 0.5
    paper = torch.rand(b, c, 1, 1, device=dev, generator=generator)
    ink = torch.rand(b, c, 1, 1, device=dev, generator=generator)
    out = torch.where(band[:, None].expand(b, 1, h, w), paper, p)
    out = torch.where((line & marks)[:, None], ink, out)
    return torch.where(on[:, None, None, None], out, p)


VIEWS = {"affine": random_affine, "crop": random_crop, "photo": random_photo, "copies": random_copy}
# "auto" picks by dataset: crop for clothing (a mirrored or partly seen shirt is still a
# shirt), affine for digits (a mirrored or partial digit can be another digit). Chosen by
# measurement; the numbers are in docs/training.md, "Views". Image folders hold
# anything: photo views for colour, crop for grayscale (objects, scans, screenshots).
AUTO_VIEWS = {"fashion-mnist": "crop", "mnist": "affine", "digits": "affine"}


# Ranges that are fractions of the image (at most 1); every other (low, high) range of a view
# family is a positive factor or size.
_FRACTIONS = ("area", "rescale")
_NOT_OPTIONS = ("x", "mean", "std", "generator")      # given by the caller, never by a config


def _pair(name: str, value) -> tuple[float, float]:
    """A view family's (low, high) range, checked: finite, 0 < low <= high (<= 1 for fractions)."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two numbers (low, high), got {value!r}") from None
    top = 1.0 if name in _FRACTIONS else math.inf
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi <= top):
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high{' <= 1' if top == 1 else ''}, "
                         f"got {[lo, hi]}")
    return lo, hi


def _weights(value) -> None:
    if not (isinstance(value, Mapping) and set(value) <= set(COPY_EDITS)
            and all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in value.values())
            and sum(float(value.get(e, 1.0)) for e in COPY_EDITS) > 0):
        raise ValueError(f"single_weights must map edits of {', '.join(COPY_EDITS)} to weights >= 0 (not all 0), "
                         f"got {value!r}")


def check_view_options(name: str, options: Mapping) -> None:
    """Raise HashingError unless view family `name` takes `options`, its keyword arguments.

    By each parameter's annotation: ranges (pairs) finite with 0 < low <= high (<= 1 for
    fractions), probabilities (p_*) in [0, 1], other numbers finite, flags true or false, the
    copies' `single_weights` by edit name. Checked from the signature, not by calling the
    family: a checkpoint's config is rebuilt on every load, and a trial copy costs ~0.1 s."""
    import inspect

    from hashing.core import validation as V
    from hashing.core.errors import HashingError

    params = inspect.signature(VIEWS[name]).parameters
    try:
        for key, value in options.items():
            kind = params[key].annotation if key in params and key not in _NOT_OPTIONS else None
            if kind is None:
                raise ValueError(f"{VIEWS[name].__name__} takes no option {key!r}")
            if kind == "tuple[float, float]":
                _pair(key, value)
            elif key == "single_weights":
                _weights(value)
            elif kind == "bool":
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false, got {value!r}")
            elif kind == "float":
                V.number(key, value)
                if key.startswith("p_") and not 0 <= value <= 1:
                    raise ValueError(f"{key} is a probability: from 0 to 1, got {value!r}")
                if key == "jitter" and not 0 <= value < 1:     # a factor of 0 or less is a black image
                    raise ValueError(f"jitter scales by U(1 - jitter, 1 + jitter): from 0 to below 1, got {value!r}")
                if key == "hue" and not 0 <= value <= 0.5:
                    raise ValueError(f"hue is a fraction of a full turn: from 0 to 0.5, got {value!r}")
            else:                                  # a parameter this check does not know how to check
                raise ValueError(f"{key} cannot be set from a config")
    except (ValueError, HashingError) as e:
        raise HashingError(f"views {name!r}: bad view_options {dict(options)} ({e})") from None


def resolve_views(name: str, dataset: str, channels: int = 1) -> str:
    """'auto' -> the view family chosen for `dataset` (or for a folder, by channels); a family name stays."""
    if name != "auto":
        return name
    return AUTO_VIEWS.get(dataset) or ("photo" if channels == 3 else "crop")
