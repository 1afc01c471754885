"""Random views of a batch, on the batch's device, for augmentation-invariance objectives.

Small affine jitter (rotation, scale, shift, shear) done with one affine_grid/grid_sample
call per batch: no per-image host work. Inputs are normalised to [-1, 1] with -1 the
background, so the resampling pads with the background, not with mid-grey 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(x: torch.Tensor, degrees: float = 15.0, scale: tuple[float, float] = (0.85, 1.15),
                  shift: float = 0.12, shear: float = 0.15, background: float = -1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W), each image under its own random affine map.

    shift is a fraction of the half-width (0.12 ~ 1.7 px on 28 px).
    """
    b = x.shape[0]
    dev, dt = x.device, torch.float32

    def u(lo, hi):
        return torch.rand(b, device=dev, dtype=dt, generator=generator) * (hi - lo) + lo

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
