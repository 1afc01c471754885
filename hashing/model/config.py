"""`HashConfig`: the one config a hashing model is built from, and what its codes mean.

It holds everything needed to rebuild the network (hashing.model.network) and its preprocessing
(image size, channels, resize rule, background, EXIF, trim, per-channel mean and std, what an index
stores); the checkpoint stores it as config.json beside the safetensors weights, so an old run keeps
reading images the way it was trained to.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from hashing.core import validation as V
from hashing.core.errors import HashingError
from hashing.images.reader import BACKGROUNDS, CHANNELS, DEFAULT_RESIZE, LEGACY_RESIZE, MAX_SIZE, MIN_SIZE, RESIZE, ImageSpec
from hashing.model import estimators

HEADS = ("batchnorm", "relu")
DOMAINS = ("01", "pm1")
CODES = ("layer", "itq")


@dataclass
class HashConfig:
    bits: int = 512
    estimator: str = "identity"
    estimator_options: dict = field(default_factory=dict)
    domain: str = "01"               # code values fed to the decoder: {0,1} or {-1,+1}
    head: str = "batchnorm"          # "relu" = the original design's ReLU before the binarizer
    width: int = 64                  # channels of the first conv; doubles per stage up to 8x
    image_size: int = 28             # images are size x size (hashing.images.reader.fit_image makes them so)
    channels: int = 1                # 1: grayscale, 3: RGB
    resize: str = DEFAULT_RESIZE     # how another shape becomes square: hashing.images.reader.RESIZE
    background: str = "white"        # what transparency is composited on: hashing.images.reader.BACKGROUNDS
    exif: bool = True                # apply a photo's EXIF orientation before anything else
    trim: bool = False               # cut plain margins before the resize (hashing.images.reader.trimmed)
    mean: float | list = 0.5         # preprocessing: x/255 -> (x - mean) / std, per channel when a list
    std: float | list = 0.5
    dataset: str = "mnist"           # what it was trained on (a built-in dataset's name, or "images")
    standardise: bool = False        # each image zero-mean, unit-variance before the encoder (Encoder.forward)
    lowpass: float = 0.0             # Gaussian blur (sigma, pixels at image_size) before the encoder; 0 = none
    codes: str = "layer"             # what an index stores: "layer" = the trained code layer's signs, "itq" = an
                                     # ITQ rotation of the conv features fitted after each epoch (hashing.model.rotation)

    def __post_init__(self):
        V.code_bits(self.bits)
        V.choice("estimator", self.estimator, estimators.names())
        V.mapping("estimator_options", self.estimator_options)
        V.choice("domain", self.domain, DOMAINS)
        V.choice("head", self.head, HEADS)
        V.integer("width", self.width, 1, 1024)
        V.integer("image_size", self.image_size, MIN_SIZE, MAX_SIZE)
        V.choice("channels", self.channels, CHANNELS)
        V.choice("resize", self.resize, RESIZE)
        V.choice("background", self.background, BACKGROUNDS)
        for name in ("exif", "trim"):
            if not isinstance(getattr(self, name), bool):
                raise HashingError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                if len(value) != self.channels:
                    raise HashingError(f"{name} needs one number per channel ({self.channels}), got {list(value)!r}")
                setattr(self, name, [V.number(name, v, positive=name == "std") for v in value])
            else:
                V.number(name, value, positive=name == "std")
        V.string("dataset", self.dataset)
        if not isinstance(self.standardise, bool):
            raise HashingError(f"standardise must be true or false, got {self.standardise!r}")
        self.lowpass = V.number("lowpass", self.lowpass, lo=0)
        if self.lowpass > self.image_size / 4:
            raise HashingError(f"lowpass sigma {self.lowpass} blurs a {self.image_size}-pixel image away: "
                               f"at most {self.image_size / 4:g}")
        V.choice("codes", self.codes, CODES)
        if self.codes == "itq" and self.bits > feature_dim(self):
            raise HashingError(f"codes 'itq' projects the {feature_dim(self)} conv features: at most "
                               f"{feature_dim(self)} bits at width {self.width}, got {self.bits}")
        estimators.get(self.estimator, domain=self.domain, **self.estimator_options)   # unknown options fail here

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def spec(self) -> ImageSpec:
        """How an image file becomes this model's uint8 input (hashing.images.reader)."""
        return ImageSpec(self.image_size, self.channels, self.resize, self.background, self.exif, self.trim)

    @classmethod
    def from_dict(cls, d: dict) -> "HashConfig":
        """From config.json's "model" object; keys this version does not know are ignored.
        A config keeps reading images the way it did when it was written: those from before the
        resize rule was recorded stretched every image, those from before the background and EXIF
        rules were recorded put transparency on black and ignored EXIF orientation; they still do."""
        V.mapping("model", d)
        known = {f.name for f in fields(cls)}
        return cls(**{**LEGACY_IMAGE_RULES, **{k: v for k, v in d.items() if k in known}})


# How configs that do not record an image rule read images: the rules before each was recorded.
LEGACY_IMAGE_RULES = {"resize": LEGACY_RESIZE, "background": "black", "exif": False}


def stages(size: int) -> list[int]:
    """The encoder's feature-map sizes, input first: halved (floor) until at most 4 (28 -> [28, 14, 7, 3])."""
    sizes = [size]
    while sizes[-1] > 4:
        sizes.append(sizes[-1] // 2)
    return sizes


def stage_channels(cfg: HashConfig) -> list[int]:
    """Channels after each stride-2 stage: width doubling per stage, at most 8 x width."""
    return [cfg.width * 2 ** min(i, 3) for i in range(len(stages(cfg.image_size)) - 1)]


def feature_dim(cfg: HashConfig) -> int:
    """Values in the last conv map, the features the code layer reads (2,304 at 28 x 28, width 64)."""
    return stage_channels(cfg)[-1] * stages(cfg.image_size)[-1] ** 2
