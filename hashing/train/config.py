"""How a model is trained, before any training happens: `TrainConfig` (schedule, batch, device,
seed, the objective) and the plan it implies: the batch size per process for a device and a
split (`batch_plan`) and the learning rate at every step (`effective_lr`, `lr_at`).

It sits below both `hashing.train.recipes` (whose `resolve` builds a TrainConfig and calls
`batch_plan`) and `hashing.train.loop` (whose loop runs it, and which re-exports these names), so
recipes and train no longer import each other: train -> recipes -> schedule.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from hashing.core import validation as V
from hashing.model.device import DEVICES
from hashing.core.errors import HashingError
from hashing.train.objectives import Objective

SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    dataset: str = "mnist"
    data_dir: str | None = None
    epochs: int = 5
    batch_size: int | None = None   # per process; None: chosen for the device by recipes.resolve (batch_plan)
    lr: float = 1e-3
    scale_lr: bool | None = None    # lr * sqrt(effective_batch / 64), the square-root rule for Adam; None: on with the GPU batch
    schedule: str = "constant"      # or "cosine": lr decays to 0 over the run (half a cosine)
    betas: tuple[float, float] = (0.5, 0.999)
    device: str = "auto"            # recipes.resolve turns "auto" into cpu or cuda
    seed: int = 0
    recipe: str = "default"
    objective: Objective = field(default_factory=Objective)
    max_images: int | None = None   # train on the first N images of the split (None = all)
    amp: bool = True                # bf16 autocast, CUDA only
    compile: bool = False           # torch.compile the model (CUDA; slow first epoch)
    world_size: int = 1             # training processes (torchrun); each step sees world_size * batch_size images

    def __post_init__(self):
        V.string("dataset", self.dataset)
        if self.data_dir is not None:
            V.string("data_dir", self.data_dir)
        V.integer("epochs", self.epochs, 1, 100_000)
        if self.batch_size is not None:
            V.integer("batch_size", self.batch_size, 2, 1 << 20)
        V.number("lr", self.lr, positive=True)
        V.choice("schedule", self.schedule, SCHEDULES)
        if not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2 \
                or not all(0 <= V.number("betas", b) < 1 for b in self.betas):
            raise HashingError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = tuple(float(b) for b in self.betas)
        V.choice("device", self.device, DEVICES)
        V.integer("seed", self.seed, 0, V.SEED_MAX)
        V.string("recipe", self.recipe)
        if isinstance(self.objective, dict):
            self.objective = Objective(**self.objective)
        if self.max_images is not None:
            V.integer("max_images", self.max_images, 2)
        V.integer("world_size", self.world_size, 1, 1 << 16)
        for flag in ("scale_lr", "amp", "compile"):
            value = getattr(self, flag)
            if not (isinstance(value, bool) or (flag == "scale_lr" and value is None)):
                raise HashingError(f"{flag} must be true or false, got {value!r}")

    @property
    def effective_batch(self) -> int:
        """Images per optimizer step over all processes."""
        return (self.batch_size or 0) * self.world_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        d["effective_batch"] = self.effective_batch
        if self.world_size > 1:
            d["batchnorm"] = "synchronised" if self.device == "cuda" else "per process"
        return d


# On a GPU, batch 64 leaves the step bound by kernel launches, so the automatic batch is
# larger there, with the square-root lr rule (docs/benchmarks.md, "Training throughput"). Small datasets
# keep at least MIN_STEPS steps an epoch: a few steps an epoch starve the supervised recipe.
AUTO_BATCH = {"cpu": 64, "cuda": 512}
MIN_STEPS = 32


def batch_plan(batch_size: int | None, scale_lr: bool | None, device_type: str, n: int,
               world: int = 1, auto: int | None = None) -> tuple[int, bool]:
    """(batch size per process, square-root lr scaling) for a split of n images on this kind
    of device, trained by `world` processes.

    None means "not given": the batch is `auto` (a recipe's own, recipes.Recipe.batch) or else
    AUTO_BATCH for the device, halved until an epoch has MIN_STEPS steps, and the lr is scaled
    exactly when the effective batch (all processes together) that this chose is not 64.
    """
    if batch_size is not None:
        return batch_size, bool(scale_lr)
    batch = auto or AUTO_BATCH.get(device_type, 64)
    while batch > 64 and n < batch * world * MIN_STEPS:
        batch //= 2
    return batch, (batch * world != 64) if scale_lr is None else scale_lr


def effective_lr(tcfg: TrainConfig) -> float:
    """The learning rate, scaled for an effective batch larger than the reference 64 when asked."""
    return tcfg.lr * (tcfg.effective_batch / 64) ** 0.5 if tcfg.scale_lr else tcfg.lr


def lr_at(tcfg: TrainConfig, progress: float) -> float:
    """The learning rate when `progress` (0..1) of all steps are done."""
    base = effective_lr(tcfg)
    if tcfg.schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * progress))
    return base
