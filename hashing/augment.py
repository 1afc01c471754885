"""Random views of a batch, on the batch's device, for augmentation-invariance objectives.

Every view family is one affine_grid/grid_sample call per batch: no per-image host work.
Inputs are normalised to [-1, 1] with -1 the background, so the resampling pads with the
background, not with mid-grey 0.

- affine: small rotation, scale, shift and shear (digits: a flipped 2 is not a 2).
- auto: crop for fashion-mnist, affine otherwise (see AUTO_VIEWS).
- crop: crop-and-resize (SimCLR's main view, Chen et al. 2020) of 35-100 % of the area,
  aspect 3/4-4/3, mirrored half of the time, plus a contrast change; for objects such
  as clothing, where a mirror image is the same kind of thing.
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


def random_affine(x: torch.Tensor, degrees: float = 15.0, scale: tuple[float, float] = (0.85, 1.15),
                  shift: float = 0.12, shear: float = 0.15, background: float = -1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W), each image under its own random affine map.

    shift is a fraction of the half-width (0.12 ~ 1.7 px on 28 px).
    """
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


def random_crop(x: torch.Tensor, area: tuple[float, float] = (0.35, 1.0), aspect: tuple[float, float] = (0.75, 1.333),
                flip: bool = True, contrast: tuple[float, float] = (0.6, 1.0), background: float = -1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): a random crop of each image resized to full size."""
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


VIEWS = {"affine": random_affine, "crop": random_crop}
# "auto" picks by dataset: crop for clothing (a mirrored or partly seen shirt is still a
# shirt), affine for digits (a mirrored or partial digit can be another digit). Chosen by
# measurement; the numbers are in the README's "Recipes" section.
AUTO_VIEWS = {"fashion-mnist": "crop"}


def resolve_views(name: str, dataset: str) -> str:
    """'auto' -> the view family chosen for `dataset` (affine unless listed); a family name stays."""
    return AUTO_VIEWS.get(dataset, "affine") if name == "auto" else name
