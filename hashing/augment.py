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
  probability 0.2 grayscale. On one channel only brightness and contrast apply.
- auto: chosen by `resolve_views` from the dataset (AUTO_VIEWS) or, for image folders, from
  the channels: photo for colour, crop for grayscale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): crop-and-resize, then colour jitter and grayscale (see above)."""
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
    return ((p - mean) / std).to(x.dtype)


VIEWS = {"affine": random_affine, "crop": random_crop, "photo": random_photo}
# "auto" picks by dataset: crop for clothing (a mirrored or partly seen shirt is still a
# shirt), affine for digits (a mirrored or partial digit can be another digit). Chosen by
# measurement; the numbers are in the README's "Recipes" section. Image folders hold
# anything: photo views for colour, crop for grayscale (objects, scans, screenshots).
AUTO_VIEWS = {"fashion-mnist": "crop", "mnist": "affine", "digits": "affine"}


def resolve_views(name: str, dataset: str, channels: int = 1) -> str:
    """'auto' -> the view family chosen for `dataset` (or for a folder, by channels); a family name stays."""
    if name != "auto":
        return name
    return AUTO_VIEWS.get(dataset) or ("photo" if channels == 3 else "crop")
