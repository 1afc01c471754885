"""Training: the whole split lives in one tensor on the device; batches are index lookups.

No DataLoader and no per-image host work: a batch is `images[perm[i:i+B]]`, normalised
on the device. On CUDA the forward/backward runs under bf16 autocast with channels_last
tensors. After every epoch the run dir is saved atomically, so an interrupted run keeps
the last complete epoch.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from hashing import checkpoint
from hashing.augment import resolve_views
from hashing.data import load_dataset
from hashing.errors import HashingError
from hashing.model import HashAutoencoder, HashConfig
from hashing.objectives import Objective, compute, hadamard_centres


@dataclass
class TrainConfig:
    dataset: str = "mnist"
    data_dir: str | None = None
    epochs: int = 5
    batch_size: int | None = None   # None: 64 on CPU, 512 on CUDA (see resolve_batch)
    lr: float = 1e-3
    scale_lr: bool | None = None    # lr * sqrt(batch_size / 64), the square-root rule for Adam; None: on with the CUDA batch
    schedule: str = "constant"      # or "cosine": lr decays to 0 over the run (half a cosine)
    betas: tuple[float, float] = (0.5, 0.999)
    device: str = "auto"
    seed: int = 0
    recipe: str = "default"
    objective: Objective = field(default_factory=Objective)
    max_images: int | None = None  # train on the first N images of the split (None = all)
    amp: bool = True                # bf16 autocast, CUDA only
    compile: bool = False           # torch.compile the model (CUDA; slow first epoch)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


# Named recipes: overrides of (HashConfig, Objective). "seed" is the original recipe, kept for
# comparison; "default" is what `hashing train` uses (measured in README: the best
# unsupervised codes per CPU second we found).
RECIPES: dict[str, dict] = {
    "seed": {"model": {"head": "relu"}, "objective": {"reconstruction": 1.0}},
    "autoencoder": {"model": {}, "objective": {"reconstruction": 1.0}},
    "contrastive": {"model": {"estimator": "saturated"}, "objective": {"contrastive": 1.0, "reconstruction": 0.5}},
    "contrastive-fast": {"model": {"estimator": "saturated"}, "objective": {"contrastive": 1.0, "reconstruction": 0.0}},
    # Hash centres alone, on augmented views, with a cosine decay: MNIST 64 bits mAP 0.981 at
    # 3 constant epochs, 0.990 at 8 cosine, 0.992 at 15 cosine; adding contrastive 0.3 cost 0.025.
    "supervised": {"model": {}, "objective": {"supervised": 1.0, "contrastive": 0.0, "reconstruction": 0.0},
                   "train": {"epochs": 15, "schedule": "cosine"}},
}
RECIPES["default"] = RECIPES["contrastive"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HashingError("--device cuda was asked for but no CUDA GPU is available; use --device auto or cpu")
    if name not in ("cpu", "cuda"):
        raise HashingError(f"unknown device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def recipe_train(name: str) -> dict:
    """Training settings a recipe changes (e.g. epochs, schedule); the caller's flags win."""
    return dict(RECIPES.get(name, {}).get("train", {}))


# On a GPU, batch 64 leaves the step bound by kernel launches; 512 with the square-root lr
# rule trains at 5x the images/s for the same codes (H100, MNIST 512 bits, 5 epochs, mAP
# 0.933 at 64, 0.940 at 256, 0.930 at 512; README "Training throughput"). Small datasets
# keep at least MIN_STEPS steps an epoch: on digits (1,797 images) batch 512 means 3
# steps an epoch, and the supervised recipe fell from mAP 0.99 to 0.93.
AUTO_BATCH = {"cpu": 64, "cuda": 512}
MIN_STEPS = 32


def resolve_batch(tcfg: TrainConfig, device: torch.device, n: int) -> TrainConfig:
    """Fill in the batch size and lr scaling left to the device (None) for a split of n images."""
    if tcfg.batch_size is None:
        batch = AUTO_BATCH.get(device.type, 64)
        while batch > 64 and n < batch * MIN_STEPS:
            batch //= 2
        return replace(tcfg, batch_size=batch, scale_lr=batch != 64 if tcfg.scale_lr is None else tcfg.scale_lr)
    return replace(tcfg, scale_lr=bool(tcfg.scale_lr))


def effective_lr(tcfg: TrainConfig) -> float:
    """The learning rate, scaled for a batch larger than the reference 64 when asked."""
    return tcfg.lr * (tcfg.batch_size / 64) ** 0.5 if tcfg.scale_lr else tcfg.lr


def apply_recipe(name: str, model: dict, objective: dict) -> tuple[HashConfig, Objective]:
    """Recipe defaults, then the caller's explicit settings on top."""
    if name not in RECIPES:
        raise HashingError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}")
    r = RECIPES[name]
    return HashConfig(**{**r["model"], **model}), Objective(**{**r["objective"], **objective})


@dataclass
class TrainResult:
    run_dir: Path
    history: dict
    seconds: float
    images_per_second: float
    device: str


def train(cfg: HashConfig, tcfg: TrainConfig, out: str | Path, progress: bool = True) -> TrainResult:
    """Train the model described by `cfg` under `tcfg`, saving to `out` after every epoch."""
    from tqdm import tqdm

    device = resolve_device(tcfg.device)
    if tcfg.schedule not in ("constant", "cosine"):
        raise HashingError(f"unknown schedule {tcfg.schedule!r}: choose constant or cosine")
    torch.manual_seed(tcfg.seed)
    np.random.seed(tcfg.seed)
    train_set = load_dataset(tcfg.dataset, "train", tcfg.data_dir)
    if tcfg.max_images is not None:
        train_set.images, train_set.labels = train_set.images[:tcfg.max_images], train_set.labels[:tcfg.max_images]
    tcfg = resolve_batch(tcfg, device, len(train_set))
    cfg = replace(cfg, dataset=tcfg.dataset)
    # Record the view family actually used, not "auto".
    tcfg = replace(tcfg, objective=replace(tcfg.objective, views=resolve_views(tcfg.objective.views, tcfg.dataset)))
    images = torch.from_numpy(train_set.images).to(device)          # (N, 28, 28) uint8
    labels = torch.from_numpy(train_set.labels).to(device)          # (N,)
    n = len(train_set)
    if n < 2:
        raise HashingError(f"{tcfg.dataset} train split has {n} images; need at least 2")
    bs = min(tcfg.batch_size, n)

    model = HashAutoencoder(cfg).to(device)
    cuda = device.type == "cuda"
    model = model.to(memory_format=torch.channels_last)   # faster convolutions on CPU (oneDNN) and GPU
    if cuda:
        torch.backends.cudnn.benchmark = True
    step_model = torch.compile(model) if (tcfg.compile and cuda) else model
    # fused: one kernel per step for all parameters instead of a handful of ops per tensor.
    base_lr = effective_lr(tcfg)
    opt = torch.optim.Adam(model.parameters(), lr=base_lr, betas=tuple(tcfg.betas), fused=True)
    obj = tcfg.objective
    centres = hadamard_centres(int(labels.max()) + 1, cfg.bits, tcfg.seed).to(device) if obj.needs_labels else None
    gen = torch.Generator(device=device).manual_seed(tcfg.seed)

    # Batches of one break BatchNorm: fold a last batch of 1 into nothing.
    steps = n // bs + (1 if n % bs >= 2 else 0)
    history: dict = {"epoch_loss": [], "step_loss": [], "parts": [], "seconds": []}
    total_steps = steps * tcfg.epochs
    t_start = time.perf_counter()
    seen = 0
    for epoch in range(tcfg.epochs):
        model.train()
        perm = torch.randperm(n, device=device, generator=gen)
        t0 = time.perf_counter()
        run_loss = torch.zeros((), device=device)
        parts_sum: dict[str, torch.Tensor] = {}
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{tcfg.epochs}", disable=not progress,
                   unit="batch", leave=True, dynamic_ncols=True)
        for i in bar:
            progress_frac = (epoch * steps + i) / max(1, total_steps - 1)
            model.binarizer.set_progress(progress_frac)
            if tcfg.schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = base_lr * 0.5 * (1 + math.cos(math.pi * progress_frac))
            idx = perm[i * bs:(i + 1) * bs]
            x = model.preprocess(images[idx]).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda and tcfg.amp):
                loss, per_image, parts = compute(step_model, x, labels[idx], obj, centres)
                aux = model.binarizer.auxiliary_loss(per_image)
                if aux is not None:
                    loss = loss + aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run_loss += loss.detach()
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0) + v.detach()
            seen += len(idx)
            if i % 25 == 0 or i == steps - 1:  # .item() syncs the GPU: not every step
                value = (run_loss / (i + 1)).item()
                history["step_loss"].append([epoch * steps + i, round(value, 6)])
                bar.set_postfix(loss=f"{value:.4f}")
        if not torch.isfinite(run_loss):
            raise HashingError(f"training diverged (loss is {run_loss.item()}) in epoch {epoch + 1}; lower --lr")
        history["epoch_loss"].append(round((run_loss / steps).item(), 6))
        history["parts"].append({k: round((v / steps).item(), 6) for k, v in parts_sum.items()})
        history["seconds"].append(round(time.perf_counter() - t0, 3))
        checkpoint.save(out, model, tcfg.to_dict(), history)
    seconds = time.perf_counter() - t_start
    save_reconstructions(model, tcfg, out, device)
    return TrainResult(Path(out), history, seconds, seen / seconds, str(device))


@torch.inference_mode()
def save_reconstructions(model: HashAutoencoder, tcfg: TrainConfig, out: str | Path, device, count: int = 32) -> None:
    """reconstructions.png: test originals above their reconstructions from the binary codes."""
    from hashing.plots import reconstructions

    model.eval()
    test = load_dataset(tcfg.dataset, "test", tcfg.data_dir)
    imgs = torch.from_numpy(test.images[:count]).to(device)
    _, _, recon = model(model.preprocess(imgs))
    recon_u8 = ((recon.float().squeeze(1) * model.cfg.std + model.cfg.mean).clamp(0, 1) * 255).round()
    reconstructions(test.images[:count], recon_u8.to(torch.uint8).cpu().numpy(), Path(out) / "reconstructions.png")

