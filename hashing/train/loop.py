"""Training: the whole split lives in one tensor on the device; batches are index lookups.

No DataLoader and no per-image host work: a batch is `images[perm[i:i+B]]`, normalised
on the device. A split over the memory budget (an image folder; hashing.images.folders) is a
read-only memory map of decoded uint8 instead, and each batch's rows are gathered from it
on the host (in file order within the batch) and copied to the device. On CUDA the forward/backward runs under bf16 autocast with channels_last
tensors. After every epoch the run dir is saved atomically, so an interrupted run keeps
the last complete epoch.

Under torchrun (hashing.train.distributed) each of the N processes trains on a disjoint share of
every global batch: all ranks draw the same permutation, global batch i is
`perm[i*N*B:(i+1)*N*B]` and rank r takes the r-th of its N equal parts, so N processes with
batch B see the batches of one process with batch N*B. DDP averages the gradients, the
contrastive negatives are gathered from every rank, and BatchNorm is synchronised on CUDA
(SyncBatchNorm); on CPU it stays per process, because torch's SyncBatchNorm runs on GPUs
only (docs/training.md, "Several processes", measures what that costs). Only rank 0
writes the run folder and shows progress.

`train()` trains on the data its caller hands it, under configs already resolved by
`hashing.train.recipes.resolve`; `train_on()` is the workflow behind `hashing train` (load the
dataset split or the image folder, choose the image geometry, resolve the recipe, train,
draw reconstructions).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hashing.model import checkpoint
from hashing.model import rotation
from hashing.images.datasets import ImageSet, check_source
from hashing.train.distributed import Group
from hashing.core.errors import HashingError, HashingWarning
from hashing.model.network import HashAutoencoder
from hashing.model.config import HashConfig, feature_dim
from hashing.train.neighbours import neighbour_table, partners
from hashing.train.objectives import Objective, compute, hadamard_centres
from hashing.train.config import TrainConfig, lr_at


class History:
    """Loss per epoch and, every few steps, the running loss of the epoch; saved as history.json."""

    def __init__(self):
        self.epoch_loss: list[float] = []
        self.step_loss: list[list] = []
        self.parts: list[dict] = []
        self.seconds: list[float] = []

    def step(self, step: int, running_loss: float) -> None:
        self.step_loss.append([step, round(running_loss, 6)])

    def epoch(self, loss: float, parts: dict[str, float], seconds: float) -> None:
        self.epoch_loss.append(round(loss, 6))
        self.parts.append({k: round(v, 6) for k, v in parts.items()})
        self.seconds.append(round(seconds, 3))

    def to_dict(self) -> dict:
        return {"epoch_loss": self.epoch_loss, "step_loss": self.step_loss, "parts": self.parts,
                "seconds": self.seconds}


@dataclass
class TrainResult:
    run_dir: Path
    history: dict
    seconds: float
    images_per_second: float
    device: str
    model: HashAutoencoder = field(repr=False)
    skipped: str = ""          # an image folder's unreadable files (hashing.images.folders.FolderRead.summary)
    rank: int = 0              # this process's rank under torchrun (only rank 0 wrote the run folder)
    world: int = 1             # training processes
    batch_size: int = 0        # images per step per process
    picture: str = ""          # the picture drawn into the run folder: reconstructions.png or neighbours.png
    calibration: dict | None = None   # the duplicate threshold measured after training (hashing.train.calibration)


def _check_resolved(tcfg: TrainConfig) -> None:
    if tcfg.device == "auto" or tcfg.batch_size is None or tcfg.scale_lr is None or tcfg.objective.views == "auto":
        raise ValueError("train() needs configs from hashing.train.recipes.resolve (device, batch and views decided)")


class Step(torch.nn.Module):
    """The loss of one batch, as one module: what DDP wraps. The objective calls the model
    several times per batch (two views, the decoder), and DDP must see a single forward."""

    def __init__(self, model: HashAutoencoder, objective: Objective, centres: torch.Tensor | None, group: Group):
        super().__init__()
        self.model = model
        self.objective = objective
        self.centres = centres          # (classes, bits) or None; a constant, not a buffer DDP would broadcast
        self.group = group

    def forward(self, x: torch.Tensor, labels: torch.Tensor,
                partner: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        loss, per_image, parts = compute(self.model, x, labels, self.objective, self.centres, self.group, partner)
        aux = self.model.binarizer.auxiliary_loss(per_image)
        return (loss if aux is None else loss + aux), parts


def shards(n: int, batch: int, world: int = 1, rank: int = 0) -> list[slice]:
    """This rank's positions in the epoch's permutation, one slice per step: n images, `batch`
    per rank, `world` ranks. Global batch i is positions [i*world*batch, (i+1)*world*batch)
    and rank r has the r-th of its `world` equal parts: together the ranks see exactly the
    batches of one process with batch world*batch.

    Every rank gets the same number of images in a step (the gathered negatives need equal
    shapes); a last global batch too small to give each rank 2 images (BatchNorm needs 2) is
    left out of the epoch, and its few images come back in the next epoch's permutation."""
    full, rest = divmod(n, batch * world)
    sizes = [batch] * full + ([rest // world] if rest // world >= 2 else [])
    return [slice(i * batch * world + rank * size, i * batch * world + (rank + 1) * size)
            for i, size in enumerate(sizes)]


def train(cfg: HashConfig, tcfg: TrainConfig, data: ImageSet, out: str | Path, progress: bool = True,
          group: Group | None = None) -> TrainResult:
    """Train the model described by `cfg` under `tcfg` on `data`, saving to `out` after every epoch.

    `group` is this process's place under torchrun (hashing.train.distributed.start); None = alone."""
    from tqdm import tqdm

    _check_resolved(tcfg)
    group = group or Group()
    if tcfg.world_size != group.world:
        raise ValueError(f"the config says {tcfg.world_size} processes, the process group has {group.world}")
    n = len(data)
    world, rank = group.world, group.rank
    if n < 2 * world:
        raise HashingError(f"{data.name} {data.split} split has {n} images; {world} process(es) need at least {2 * world}")
    device = torch.device(tcfg.device, group.local_rank) if tcfg.device == "cuda" and group.distributed \
        else torch.device(tcfg.device)
    torch.manual_seed(tcfg.seed)
    np.random.seed(tcfg.seed)
    if tuple(data.images.shape[1:]) != cfg.spec.shape:
        raise ValueError(f"images are {data.images.shape[1:]}, the model reads {cfg.spec.shape}")
    streamed = not data.in_memory
    # (N, H, W[, C]) uint8 on the device, or the memory map itself (gathered per batch below).
    images = data.images if streamed else torch.from_numpy(data.images).to(device)
    labels = torch.from_numpy(data.labels).to(device)          # (N,)
    if tcfg.objective.needs_labels and not bool((labels >= 0).any()):
        raise HashingError("the supervised term needs labels: put the training images in class folders "
                           "(FOLDER/CLASS/image.png), or use a recipe without supervised", settings=("supervised",))
    bs = min(tcfg.batch_size, n // world)
    if cfg.codes == "itq":
        rotation.check(n, cfg.bits, feature_dim(cfg))

    model = HashAutoencoder(cfg).to(device)
    cuda = device.type == "cuda"
    if group.distributed and cuda:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)   # the same parameters and buffers
    model = model.to(memory_format=torch.channels_last)   # faster convolutions on CPU (oneDNN) and GPU
    if cuda:
        torch.backends.cudnn.benchmark = True
    if rank:
        # Each rank its own random views; the weights above and the permutation below stay common.
        torch.manual_seed(tcfg.seed + 7919 * rank)
    # fused: one kernel per step for all parameters instead of a handful of ops per tensor.
    opt = torch.optim.Adam(model.parameters(), lr=lr_at(tcfg, 0.0), betas=tcfg.betas, fused=True)
    obj = tcfg.objective
    centres = hadamard_centres(int(labels.max()) + 1, cfg.bits, tcfg.seed).to(device) if obj.needs_labels else None
    step: torch.nn.Module = Step(model, obj, centres, group)
    if group.distributed:
        from torch.nn.parallel import DistributedDataParallel

        if cfg.codes == "itq":
            # Rank 0 alone fits and saves the rotation, and no step reads it: DDP need not broadcast
            # its (D, bits) projection before every forward (4.7 MB at 512 bits on 28 x 28 images).
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                step, [f"model.{name}" for name in rotation.BUFFERS])
        # The decoder has no gradient when the reconstruction weight is 0: DDP must not wait for it.
        step = DistributedDataParallel(step, device_ids=[device.index] if cuda else None,
                                       find_unused_parameters=not obj.reconstruction)
    if tcfg.compile and cuda:
        step = torch.compile(step)
    gen = torch.Generator(device=device).manual_seed(tcfg.seed)     # the same permutation on every rank

    plan = shards(n, bs, world, rank)
    steps = len(plan)
    history = History()
    total_steps = steps * tcfg.epochs
    t_start = time.perf_counter()
    seen = 0

    def fetch(idx: torch.Tensor) -> torch.Tensor:
        """(B,) positions -> uint8 (B, H, W[, C]) on the device."""
        if not streamed:
            return images[idx]
        # Read the rows in file order (sequential-ish reads of the map), then put them back
        # in the requested order: the same batches as the in-memory path, exactly.
        want = idx.cpu().numpy()
        order = np.argsort(want, kind="stable")
        rows = np.empty((len(want), *images.shape[1:]), np.uint8)
        rows[order] = images[want[order]]
        return torch.from_numpy(rows).to(device, non_blocking=True)

    def inputs(idx: torch.Tensor) -> torch.Tensor:
        """(B,) positions -> the model's float (B, C, H, W) input, channels_last."""
        return model.preprocess(fetch(idx)).contiguous(memory_format=torch.channels_last)

    table = None                # (N, k) nearest training images by the model's codes, from epoch 2 on
    for epoch in range(tcfg.epochs):
        t0 = time.perf_counter()
        if obj.neighbours and epoch >= 1:
            table = neighbour_table(model, inputs, n, min(obj.neighbours, n - 1), device)
        model.train()
        perm = torch.randperm(n, device=device, generator=gen)
        run_loss = torch.zeros((), device=device)
        parts_sum: dict[str, torch.Tensor] = {}
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{tcfg.epochs}", disable=not (progress and group.main),
                   unit="batch", leave=True, dynamic_ncols=True)
        for i in bar:
            done = (epoch * steps + i) / max(1, total_steps - 1)
            model.binarizer.set_progress(done)
            for g in opt.param_groups:
                g["lr"] = lr_at(tcfg, done)
            idx = perm[plan[i]]                                              # this rank's part of global batch i
            x = inputs(idx)
            partner = None if table is None else inputs(partners(table, idx))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda and tcfg.amp):
                loss, parts = step(x, labels[idx], partner)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run_loss += loss.detach()
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0) + v.detach()
            seen += len(idx) * world
            if group.main and (i % 25 == 0 or i == steps - 1):  # .item() syncs the GPU: not every step
                value = (run_loss / (i + 1)).item()
                history.step(epoch * steps + i, value)
                bar.set_postfix(loss=f"{value:.4f}")
        # One collective an epoch: the loss averaged over ranks, so every rank takes the same decisions.
        names = sorted(parts_sum)
        totals = group.mean(torch.stack([run_loss, *(parts_sum[k] for k in names)]).float()) / steps
        if not torch.isfinite(totals[0]):
            raise HashingError(f"training diverged (loss is {totals[0].item()}) in epoch {epoch + 1}; lower lr",
                               settings=("lr",))
        history.epoch(totals[0].item(), {k: v.item() for k, v in zip(names, totals[1:])}, time.perf_counter() - t0)
        if group.main:
            if cfg.codes == "itq":
                # every saved version has a rotation of its own features; the last one a full fit
                rotation.fit_rotation(model, inputs, n, device, seed=tcfg.seed, quick=epoch < tcfg.epochs - 1)
            checkpoint.save(out, model, tcfg.to_dict(), history.to_dict())
    seconds = time.perf_counter() - t_start
    return TrainResult(Path(out), history.to_dict(), seconds, seen / seconds, str(device), model.eval(), rank=rank,
                       world=world, batch_size=bs)


def train_on(recipe: str, out: str | Path, *, dataset: str | None = None, images: str | Path | None = None,
             data_dir: str | None = None, progress: bool = True, **settings) -> TrainResult:
    """`hashing train`: the train split of a built-in `dataset` or of the image folder `images`,
    the recipe resolved with `settings`, training, and a picture from the test split:
    reconstructions.png, or neighbours.png when the recipe trains no decoder.

    For a folder, the image size, channels and resize rule not given in `settings` are chosen
    from the folder (hashing.images.folders.inspect), and the per-channel mean and std are measured
    on it; all of it is recorded in the checkpoint's config.

    Under torchrun this process joins the process group first (hashing.train.distributed) and
    leaves it at the end; a failed collective (a rank died or stalled) is a one-line error."""
    from hashing.train import distributed
    from hashing.core.atomic import check_output_folder
    from hashing.model.device import resolve_device

    check_output_folder(out, "out", marker=checkpoint.CONFIG, ours=checkpoint.OURS)   # before any data or epoch
    check_source(dataset, images)
    if settings.get("image_size") is not None:                  # before a folder is read at that size
        from hashing.images.reader import MAX_SIZE, MIN_SIZE
        from hashing.core.validation import integer

        integer("image_size", settings["image_size"], MIN_SIZE, MAX_SIZE, setting=True)
    group = distributed.start(resolve_device(settings.get("device") or "auto").type)
    existed = Path(out).exists()
    try:
        result = _train_on(recipe, out, dataset, images, data_dir, progress and group.main, group, settings)
    except Exception as e:
        if not existed and group.main:
            with contextlib.suppress(OSError):
                Path(out).rmdir()                  # a run folder this failed run created, if it is still empty
        if group.distributed and distributed.is_collective_error(e):
            raise HashingError(f"rank {group.rank} of {group.world}: another training process stopped or stalled "
                               f"({str(e).splitlines()[0][:200]}); nothing after the last complete epoch "
                               "was saved") from None
        raise
    finally:
        distributed.stop()
    return result


def _train_on(recipe: str, out: str | Path, dataset: str | None, images: str | Path | None, data_dir: str | None,
              progress: bool, group: Group, settings: dict) -> TrainResult:
    from hashing.images.datasets import folder_spec, load_split
    from hashing.images.reader import DEFAULT_RESIZE, ImageSpec
    from hashing.train.recipes import get as get_recipe
    from hashing.train.recipes import resolve

    if images is not None:
        folder = get_recipe(recipe).folder
        channels = settings.get("channels") or folder.get("channels")
        trim = settings.get("trim") if settings.get("trim") is not None else folder.get("trim", False)
        resize = settings.get("resize") or folder.get("resize")
        spec = group.main_first(lambda: folder_spec(images, settings.get("image_size"), channels, resize, trim))
    elif any(settings.get(k) is not None for k in ("image_size", "channels")) or settings.get("trim"):
        spec = ImageSpec(settings.get("image_size") or 28, settings.get("channels") or 1,
                         settings.get("resize") or DEFAULT_RESIZE, trim=bool(settings.get("trim")))
    else:
        spec = None                                        # the dataset as it is: 28x28 grayscale
    # Rank 0 first: it decodes an image folder into the cache, the other ranks then read the cache.
    data = group.main_first(lambda: load_split(dataset, images, None, "train", data_dir, spec, progress=progress))
    data = data.head(settings.get("max_images"))
    if images is not None:
        mean, std = channel_stats(data.images)
        settings = {**settings, "image_size": spec.size, "channels": spec.channels, "resize": spec.resize,
                    "trim": spec.trim, "mean": mean, "std": std}
    name = dataset if dataset is not None else "images"
    cfg, tcfg = resolve(recipe, name, len(data), data_dir=data.data_dir if images is not None else data_dir,
                        **settings)
    result = train(cfg, tcfg, data, out, progress, group)
    if group.main and (note := small_data_note(len(data), cfg.bits)):
        import warnings

        # after train()'s own checks: never beside an error
        warnings.warn(HashingWarning(note, settings=("bits",)), stacklevel=2)
    if group.main and tcfg.objective.views == "copies":
        from hashing.train.calibration import calibrate

        fp = checkpoint.read_config(out)["fingerprint"]
        refs = data.sources if data.sources is not None else list(data.images)
        result.calibration = calibrate(result.model, data.images, refs, fp, tcfg.seed, progress=progress)
        checkpoint.annotate(out, "calibration", result.calibration)
    if group.main:
        shown = _picture_images(dataset, images, data_dir, cfg.spec, data)
        if tcfg.objective.reconstruction:
            save_reconstructions(result.model, np.array(shown.images), out)   # a copy: a memory map is read-only
            result.picture = "reconstructions.png"
        else:                   # no decoder was trained: show what the codes find instead
            save_neighbours(result.model, shown.head(8), data.head(10_000), out)
            result.picture = "neighbours.png"
    result.skipped = data.skipped
    return result


# Images per code bit below which a training split is too small for its code length: contrastive codes
# of 512 bits over 200 images have far more bits than the images can give signal to (every image is its
# own class; most bits end up constant or noise), and the nearest neighbours of a code mean little.
MIN_IMAGES_PER_BIT = 2


def small_data_note(n_images: int, bits: int) -> str:
    """'' when a split of `n_images` is enough for `bits`-bit codes, else what to do about it (naming the
    setting bits, as HashingError.settings do)."""
    if n_images >= MIN_IMAGES_PER_BIT * bits:
        return ""
    fitting = max(8, 8 * (n_images // MIN_IMAGES_PER_BIT // 8))
    return (f"{n_images} training images for {bits}-bit codes (fewer than {MIN_IMAGES_PER_BIT} per bit): much of "
            f"each code will be constant or noise; use bits {min(fitting, bits)} or fewer, or train on more images")


def _picture_images(dataset, images, data_dir, spec, data: ImageSet, n: int = 32) -> ImageSet:
    """Up to n images to draw: the test split's, or the training images' when the folder has
    no test split."""
    from hashing.images.datasets import load_split
    from hashing.images import folders

    if images is None or folders.layout(images).has_splits:
        try:
            return load_split(dataset, images, "test", "test", data_dir, spec, progress=False).head(n)
        except HashingError:
            pass                           # a test split with no readable image: draw the training images
    return data.head(n)


def channel_stats(images: np.ndarray, sample: int = 10_000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, H, W[, C]) images in [0, 1], from an even sample."""
    step = max(1, len(images) // sample)
    x = np.asarray(images[::step][:sample], dtype=np.float64) / 255.0
    x = x.reshape(len(x), -1, 1) if x.ndim == 3 else x.reshape(len(x), -1, x.shape[-1])
    mean = x.mean((0, 1))
    std = np.maximum(x.std((0, 1)), 1e-3)            # a constant folder would divide by 0
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


@torch.inference_mode()
def save_reconstructions(model: HashAutoencoder, images: np.ndarray, out: str | Path) -> None:
    """reconstructions.png: uint8 (N, H, W[, C]) originals above their reconstructions from the binary codes."""
    from hashing.images.plots import reconstructions

    model.eval()
    device = next(model.parameters()).device
    _, _, recon = model(model.preprocess(torch.from_numpy(images).to(device)))
    reconstructions(images, model.unprocess(recon).cpu().numpy(), Path(out) / "reconstructions.png")


def save_neighbours(model: HashAutoencoder, queries: ImageSet, database: ImageSet, out: str | Path,
                    k: int = 10) -> None:
    """neighbours.png: each query image, then its k nearest database images by Hamming distance
    of the codes (ties by lower id), framed green/red where both labels are known."""
    from hashing.model.encode import encode_array
    from hashing.images.plots import retrieval_grid
    from hashing.model.knn import knn

    xq, xb = (torch.from_numpy(encode_array(model, s.images, progress=False).codes) for s in (queries, database))
    _, I = knn(xq, xb, k)
    I = I.numpy()                                                          # (Q, k)
    match = [[None if min(queries.labels[q], database.labels[j]) < 0 else bool(queries.labels[q] == database.labels[j])
              for j in row] for q, row in enumerate(I)]
    retrieval_grid(list(queries.images), [[database.images[j] for j in row] for row in I],
                   Path(out) / "neighbours.png", match)
