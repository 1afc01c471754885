"""The convolutional hashing autoencoder, built from one `HashConfig` (hashing.model.config).

Encoder: stride-2 stages Conv2d(kernel 4, stride 2, padding 1) halve the image until it is at
most 4x4 (`stages`): 28 -> 14 -> 7 -> 3 (the original design), 32 -> 16 -> 8 -> 4,
64 -> ... -> 4, 256 -> ... -> 4. Channels start at `width` and double per stage up to
8 x width. BatchNorm after every conv but the first, ReLU between; then one linear map of
the whole last feature map to the (B, bits) pre-activations (`MapToCode`), a BatchNorm,
and the binarizer. At 28 this is exactly the first version's network and its checkpoints load.

`head="batchnorm"` (default) binarizes the last BatchNorm's output. `head="relu"` is the
original design's exact variant, a ReLU right before the binarizer: the forward bits are the same,
but ReLU's zero derivative blocks the gradient of every bit that is 0 for an image, so
a bit can be switched off by gradient descent but never back on.

`codes="layer"` (default): an index stores the signs of that trained layer. `codes="itq"`: it
stores the signs of an ITQ rotation of the last conv map (flattened, unit length), refitted
after every epoch on the training images (hashing.model.rotation) and kept as two buffers in the
weights; the layer is still trained, since the objective reads it.

Decoder, the mirror: the code becomes the last map (`CodeToMap`), then ConvTranspose2d
stages (stride 2, padding 1, kernel 4 or 5, whichever gives back the encoder's size at that
stage: 3 -> 7 -> 14 -> 28 at 28), BatchNorm+ReLU between, Tanh out.

At 28 the two bottleneck layers are the original Conv2d(k4, s2, p1) on the 3x3 map and
ConvTranspose2d(k5, s2, p1) from the 1x1 code, of which only the central 3x3 taps are ever
used; computing them as the matrix products they are skips the convolution backward that
took half of a CPU training step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hashing.model import estimators
from hashing.model.config import HashConfig, feature_dim, stage_channels, stages


def gaussian_taps(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """sigma (B,) pixels -> (B, 2 radius + 1) normalised 1-D Gaussian taps, one row per sigma."""
    t = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
    return k / k.sum(1, keepdim=True)


class MapToCode(nn.Module):
    r"""The whole (c_in, s, s) feature map -> (c_out, 1, 1), as one matrix product.

    y_o = sum_{c,i,j} W_{o,c,i,j} x_{c,i,j} + b_o: a convolution whose kernel covers the map.
    At s = 3 this is exactly Conv2d(c_in, c_out, kernel 4, stride 2, padding 1), whose one
    output pixel sees the map through kernel taps 1..3 (tap 0 only ever meets padding), so
    W = that kernel's [:, :, 1:4, 1:4]: (B, c_in, s, s) -> (B, c_out, 1, 1).
    """

    def __init__(self, c_in: int, c_out: int, size: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_out, c_in, size, size))
        self.bias = nn.Parameter(torch.empty(c_out))
        _init_like_conv(self.weight, self.bias, fan_in=c_in * size * size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.addmm(self.bias, x.flatten(1), self.weight.flatten(1).t())   # (B, c_out)
        return y[:, :, None, None]


class CodeToMap(nn.Module):
    r"""(B, c_in) codes -> a (c_out, s, s) feature map, as one matrix product.

    y_{o,i,j} = sum_c x_c W_{c,o,i,j} + b_o. At s = 3 this is exactly
    ConvTranspose2d(c_in, c_out, kernel 5, stride 2, padding 1) on a 1x1 input: its 5x5
    output is the kernel itself, padding 1 crops the border, so W = the kernel's [:, :, 1:4, 1:4].
    """

    def __init__(self, c_in: int, c_out: int, size: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_in, c_out, size, size))
        self.bias = nn.Parameter(torch.empty(c_out))
        _init_like_conv(self.weight, self.bias, fan_in=c_out * size * size)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        c_in, c_out, s = self.weight.shape[:3]
        y = (code @ self.weight.reshape(c_in, c_out * s * s)).view(-1, c_out, s, s)   # (B, c_out, s, s)
        y = y + self.bias[:, None, None]
        return y.contiguous(memory_format=torch.channels_last)  # what the next deconvolution is fastest on


def _init_like_conv(weight: nn.Parameter, bias: nn.Parameter, fan_in: int) -> None:
    # torch's default Conv init: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1 / math.sqrt(fan_in)
    nn.init.uniform_(weight, -bound, bound)
    nn.init.uniform_(bias, -bound, bound)


def upgrade_state_dict(state: dict, model: nn.Module) -> dict:
    """Original-shaped kernels (4x4 / 5x5 at the 1x1 bottleneck) -> the 3x3 taps they use."""
    own = model.state_dict()     # (first-version run folders still hold the full 4x4 / 5x5 kernels)
    out = dict(state)
    for k, v in state.items():
        if k in own and v.dim() == 4 and own[k].shape[-2:] == (3, 3) and v.shape[-2:] in ((4, 4), (5, 5)):
            out[k] = v[:, :, 1:4, 1:4].contiguous()
    return out


class Encoder(nn.Module):
    def __init__(self, cfg: HashConfig):
        super().__init__()
        chans = stage_channels(cfg)
        layers: list[nn.Module] = [nn.Conv2d(cfg.channels, chans[0], 4, 2, 1), nn.ReLU(inplace=True)]
        for c_in, c_out in zip(chans, chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        layers += [MapToCode(chans[-1], cfg.bits, stages(cfg.image_size)[-1]), nn.BatchNorm2d(cfg.bits)]
        self.net = nn.Sequential(*layers)
        self.head = nn.ReLU() if cfg.head == "relu" else nn.Identity()
        self.standardise = cfg.standardise
        self.register_buffer("lowpass", None, persistent=False)
        if cfg.lowpass > 0:
            g = gaussian_taps(torch.tensor([cfg.lowpass]), math.ceil(3 * cfg.lowpass))[0]       # (k,)
            # (C, 1, k, k) Gaussian, one per channel; a constant, not a weight.
            self.register_buffer("lowpass", (g[:, None] * g[None, :]).expand(cfg.channels, 1, -1, -1).clone(),
                                 persistent=False)
        if cfg.codes == "itq":
            # Fitted by hashing.model.rotation after each epoch; weights, so the fingerprint covers them.
            self.register_buffer("feature_mean", torch.zeros(feature_dim(cfg)))               # (D,)
            self.register_buffer("projection", torch.zeros(feature_dim(cfg), cfg.bits))       # (D, bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, size, size) -> pre-activations of the trained code layer (B, bits)."""
        return self.head(self.net[-2:](self._trunk(x))).flatten(1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, size, size) -> the last conv map, flattened and of unit length (B, D)."""
        return nn.functional.normalize(self._trunk(x).flatten(1), dim=1)

    def rotated(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, size, size) -> (B, bits) projections whose signs are the "itq" codes."""
        return (self.features(x) - self.feature_mean) @ self.projection

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, size, size) -> the last conv map (B, D', s, s), before the code layer."""
        if self.lowpass is not None:
            # Fine detail is what rescaling, blur, JPEG and noise destroy: the code never sees it.
            r = self.lowpass.shape[-1] // 2
            x = nn.functional.conv2d(nn.functional.pad(x, (r, r, r, r), mode="replicate"), self.lowpass,
                                     groups=x.shape[1])
        if self.standardise:
            # x -> (x - mean) / std over each image's pixels and channels: a change of brightness or
            # contrast of the whole image (affine in x, up to clipping) cannot change its code.
            mean = x.mean((1, 2, 3), keepdim=True)
            x = (x - mean) / (x - mean).square().mean((1, 2, 3), keepdim=True).add(1e-4).sqrt()
        return self.net[:-2](x)


class Decoder(nn.Module):
    def __init__(self, cfg: HashConfig):
        super().__init__()
        sizes, chans = stages(cfg.image_size), stage_channels(cfg)
        layers: list[nn.Module] = [CodeToMap(cfg.bits, chans[-1], sizes[-1]), nn.BatchNorm2d(chans[-1]),
                                   nn.ReLU(inplace=True)]
        outs = [cfg.channels] + chans[:-1]                  # each transposed stage's output channels
        for i in range(len(chans) - 1, -1, -1):
            # (in - 1) * 2 - 2 + kernel = out: kernel 4 when out is even, 5 when odd.
            kernel = sizes[i] - 2 * sizes[i + 1] + 4
            layers.append(nn.ConvTranspose2d(chans[i], outs[i], kernel, 2, 1))
            layers += [nn.BatchNorm2d(outs[i]), nn.ReLU(inplace=True)] if i else [nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        """(B, bits) -> (B, C, size, size) in [-1, 1]."""
        return self.net(code)


class HashAutoencoder(nn.Module):
    def __init__(self, cfg: HashConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.binarizer = estimators.get(cfg.estimator, domain=cfg.domain, **cfg.estimator_options)
        self.decoder = Decoder(cfg)
        # (1, C, 1, 1) normalisation constants; not weights, so not in the state dict.
        self.register_buffer("mean", _per_channel(cfg.mean, cfg.channels), persistent=False)
        self.register_buffer("std", _per_channel(cfg.std, cfg.channels), persistent=False)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> (pre-activations (B, bits), codes (B, bits)) through the estimator."""
        z = self.encoder(x)
        return z, self.binarizer(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> (pre-activations (B, bits), codes (B, bits), reconstruction (B, C, H, W))."""
        z, code = self.encode(x)
        return z, code, self.decoder(code)

    @torch.inference_mode()
    def binarize(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> deterministic (B, bits) uint8 0/1: what an index stores, once packed."""
        z = self.encoder.rotated(x) if self.cfg.codes == "itq" else self.encoder(x)
        return (z > 0).to(torch.uint8)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W) or (B, H, W, C) -> float (B, C, H, W), (x / 255 - mean) / std per channel.

        The second half of the one preprocessing path; hashing.images.reader.fit_image makes the uint8."""
        x = images.to(torch.float32).div_(255.0)
        x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)      # HWC -> CHW (a channels_last view)
        return x.sub_(self.mean).div_(self.std)

    def unprocess(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse: float (B, C, H, W) -> uint8 (B, H, W) or (B, H, W, C), for pictures."""
        u8 = ((x.float() * self.std + self.mean).clamp(0, 1) * 255).round().to(torch.uint8)
        return u8[:, 0] if u8.shape[1] == 1 else u8.permute(0, 2, 3, 1)


def _per_channel(value: float | list, channels: int) -> torch.Tensor:
    values = value if isinstance(value, (list, tuple)) else [value] * channels
    return torch.tensor(values, dtype=torch.float32).view(1, channels, 1, 1)
