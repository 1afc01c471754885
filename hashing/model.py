"""The convolutional hashing autoencoder and the one config it is built from.

`HashConfig` holds everything needed to rebuild the model and its preprocessing; the
checkpoint stores it as config.json beside the safetensors weights.

Encoder (the original design): Conv2d 1->64->128->256->bits, kernel 4, stride 2, padding 1
(28 -> 14 -> 7 -> 3 -> 1), BatchNorm after every conv but the first, ReLU between,
then the binarizer on the (B, bits) pre-activations.

`head="batchnorm"` (default) binarizes the last BatchNorm's output. `head="relu"` is the
original design's exact variant, a ReLU right before the binarizer: the forward bits are the same,
but ReLU's zero derivative blocks the gradient of every bit that is 0 for an image, so
a bit can be switched off by gradient descent but never back on.

Decoder: ConvTranspose2d bits->256 (k5), 256->128 (k5), 128->64 (k4), 64->1 (k4),
stride 2, padding 1 (1 -> 3 -> 7 -> 14 -> 28), BatchNorm+ReLU between, Tanh out.

The two layers at the 1x1 bottleneck (last encoder conv, first decoder deconv) only ever
use the central 3x3 taps of their kernels, so they are computed as the matrix products
they are (`CentreConv`, `CentreConvTranspose`): the same function as the original layers,
without the convolution backward that took half of a CPU training step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import math

import torch
from torch import nn

from hashing import estimators
from hashing import validation as V
from hashing.errors import HashingError

HEADS = ("batchnorm", "relu")
DOMAINS = ("01", "pm1")


@dataclass
class HashConfig:
    bits: int = 512
    estimator: str = "identity"
    estimator_options: dict = field(default_factory=dict)
    domain: str = "01"               # code values fed to the decoder: {0,1} or {-1,+1}
    head: str = "batchnorm"          # "relu" = the original design's ReLU before the binarizer
    width: int = 64                  # channels of the first conv; doubles per layer
    image_size: int = 28
    channels: int = 1
    mean: float = 0.5                # preprocessing: x/255 -> (x - mean) / std, i.e. [-1, 1]
    std: float = 0.5
    dataset: str = "mnist"           # what it was trained on (for the record and for queries)

    def __post_init__(self):
        V.code_bits(self.bits)
        V.choice("estimator", self.estimator, estimators.names())
        V.mapping("estimator_options", self.estimator_options)
        V.choice("domain", self.domain, DOMAINS)
        V.choice("head", self.head, HEADS)
        V.integer("width", self.width, 1, 1024)
        # The encoder's four stride-2 stages take 28 -> 1 and the decoder mirrors them.
        V.integer("image_size", self.image_size, 28, 28)
        V.integer("channels", self.channels, 1, 1)
        V.number("mean", self.mean)
        V.number("std", self.std, positive=True)
        V.string("dataset", self.dataset)
        estimators.get(self.estimator, domain=self.domain, **self.estimator_options)   # unknown options fail here

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HashConfig":
        """From config.json's "model" object; keys this version does not know are ignored."""
        V.mapping("model", d)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class CentreConv(nn.Module):
    r"""Conv2d(c_in, c_out, kernel 4, stride 2, padding 1) on a 3x3 map, as one matrix product.

    The single output pixel sees input rows/columns 0..2 through kernel taps 1..3; tap 0
    only ever meets padding. So y_o = sum_{c,i,j} W_{o,c,i,j} x_{c,i,j} + b_o with
    W = the original kernel's [:, :, 1:4, 1:4]: (B, c_in, 3, 3) -> (B, c_out, 1, 1).
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_out, c_in, 3, 3))
        self.bias = nn.Parameter(torch.empty(c_out))
        _init_like_conv(self.weight, self.bias, fan_in=c_in * 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.addmm(self.bias, x.flatten(1), self.weight.flatten(1).t())   # (B, c_out)
        return y[:, :, None, None]


class CentreConvTranspose(nn.Module):
    r"""ConvTranspose2d(c_in, c_out, kernel 5, stride 2, padding 1) on a 1x1 map, as one matrix product.

    The 5x5 output of a 1x1 input is the kernel itself; padding 1 crops its border, so
    y_{o,i,j} = sum_c x_c W_{c,o,i,j} + b_o with W = the original kernel's [:, :, 1:4, 1:4]:
    (B, c_in) -> (B, c_out, 3, 3).
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_in, c_out, 3, 3))
        self.bias = nn.Parameter(torch.empty(c_out))
        _init_like_conv(self.weight, self.bias, fan_in=c_out * 9)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        c_in, c_out = self.weight.shape[:2]
        y = (code @ self.weight.reshape(c_in, c_out * 9)).view(-1, c_out, 3, 3)   # (B, c_out, 3, 3)
        y = y + self.bias[:, None, None]
        return y.contiguous(memory_format=torch.channels_last)  # what the next deconvolution is fastest on


def _init_like_conv(weight: nn.Parameter, bias: nn.Parameter, fan_in: int) -> None:
    # torch's default Conv init: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1 / math.sqrt(fan_in)
    nn.init.uniform_(weight, -bound, bound)
    nn.init.uniform_(bias, -bound, bound)


def upgrade_state_dict(state: dict, model: nn.Module) -> dict:
    """Original-shaped kernels (4x4 / 5x5 at the 1x1 bottleneck) -> the 3x3 taps they use."""
    own = model.state_dict()
    out = dict(state)
    for k, v in state.items():
        if k in own and v.dim() == 4 and own[k].shape[-2:] == (3, 3) and v.shape[-2:] in ((4, 4), (5, 5)):
            out[k] = v[:, :, 1:4, 1:4].contiguous()
    return out


class Encoder(nn.Module):
    def __init__(self, cfg: HashConfig):
        super().__init__()
        w = cfg.width
        self.net = nn.Sequential(
            nn.Conv2d(cfg.channels, w, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
            CentreConv(4 * w, cfg.bits), nn.BatchNorm2d(cfg.bits),
        )
        self.head = nn.ReLU() if cfg.head == "relu" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, 28, 28) -> pre-activations (B, bits)."""
        return self.head(self.net(x)).flatten(1)


class Decoder(nn.Module):
    def __init__(self, cfg: HashConfig):
        super().__init__()
        w = cfg.width
        self.net = nn.Sequential(
            CentreConvTranspose(cfg.bits, 4 * w), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(4 * w, 2 * w, 5, 2, 1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(w, cfg.channels, 4, 2, 1), nn.Tanh(),
        )

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        """(B, bits) -> (B, C, 28, 28) in [-1, 1]."""
        return self.net(code)


class HashAutoencoder(nn.Module):
    def __init__(self, cfg: HashConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.binarizer = estimators.get(cfg.estimator, domain=cfg.domain, **cfg.estimator_options)
        self.decoder = Decoder(cfg)

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
        return (self.encoder(x) > 0).to(torch.uint8)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W) -> float (B, 1, H, W), (x / 255 - mean) / std with the config's mean/std.

        The second half of the one preprocessing path; hashing.data makes the uint8 images."""
        x = images.to(torch.float32).div_(255.0).unsqueeze(1)
        return x.sub_(self.cfg.mean).div_(self.cfg.std)
