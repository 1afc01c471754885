"""Training throughput: the original design's plain loop beside `hashing train`'s loop, in one run.

The original loop: torchvision MNIST with ToTensor + Normalize per image, a shuffling
DataLoader (batch 64), the original design's model as it was written (plain Conv2d/ConvTranspose2d
at the 1x1 bottleneck, ReLU before an identity straight-through binarizer), Adam, MSE.
Ours: hashing.train.loop's loop (the whole split in one device tensor, index batches,
channels_last, fused Adam, the bottleneck layers as matrix products; bf16 autocast on
CUDA) with the same objective (reconstruction only) and code length (512 bits).

    python benchmarks/train.py --data-dir ../shared/data/mnist [--device cpu|cuda] [--quick]
                               [--batch-size B --scale-lr] [--compile] [--recipe default]

Prints images/s of each and their ratio, and the seconds of one epoch of our loop (on CUDA a
60,000-image epoch, the shared split tiled to that size). The original loop is timed over the
same number of images after a warm-up; our loop over its second epoch.
"""

from __future__ import annotations

import argparse
import time

import torch


class OriginalAutoencoder(torch.nn.Module):
    """The original design's model, verbatim in structure: what the plain loop trains."""

    def __init__(self, bits: int = 512):
        super().__init__()
        from torch import nn
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 64, 4, 2, 1), nn.ReLU(True),
            nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.ReLU(True),
            nn.Conv2d(128, 256, 4, 2, 1), nn.BatchNorm2d(256), nn.ReLU(True),
            nn.Conv2d(256, bits, 4, 2, 1), nn.BatchNorm2d(bits), nn.ReLU(True))
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(bits, 256, 5, 2, 1), nn.BatchNorm2d(256), nn.ReLU(True),
            nn.ConvTranspose2d(256, 128, 5, 2, 1), nn.BatchNorm2d(128), nn.ReLU(True),
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(True),
            nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh())

    def forward(self, x):
        z = self.encoder(x)
        code = z + ((z > 0).float() - z).detach()     # straight-through sign
        return z, code, self.decoder(code)


def original_loop(data_dir: str, device: torch.device, images: int, warmup: int) -> float:
    import torchvision
    from torchvision import transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    ds = torchvision.datasets.MNIST(data_dir, train=True, download=False, transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, drop_last=True)
    model = OriginalAutoencoder().to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    crit = torch.nn.MSELoss()
    seen, t0 = 0, None
    while True:
        for x, _ in loader:
            if seen >= warmup and t0 is None:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0, seen = time.perf_counter(), 0
            x = x.to(device)
            _, _, recon = model(x)
            loss = crit(recon, x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(x)
            if t0 is not None and seen >= images:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                return seen / (time.perf_counter() - t0)


def our_loop(data_dir: str, device: torch.device, n: int, batch_size: int, lr: float,
             compile: bool, scale_lr: bool, recipe: str) -> tuple[float, float]:
    """-> (images/s, seconds) of the second of two epochs over `n` images (the split tiled
    when it holds fewer: the shared MNIST has 18,097, a full epoch is 60,000)."""
    import tempfile

    import numpy as np

    from hashing.images.datasets import load_dataset
    from hashing.train.recipes import resolve
    from hashing.train.loop import train

    data = load_dataset("mnist", "train", data_dir)
    reps = -(-n // len(data))
    data.images, data.labels = np.tile(data.images, (reps, 1, 1))[:n], np.tile(data.labels, reps)[:n]
    cfg, tcfg = resolve(recipe, "mnist", n, data_dir=data_dir, epochs=2, batch_size=batch_size, lr=lr,
                        scale_lr=scale_lr, device=str(device.type), compile=compile)
    with tempfile.TemporaryDirectory() as out:
        r = train(cfg, tcfg, data, out, progress=False)
    seconds = r.history["seconds"][-1]   # the second epoch: no warm-up, no compile
    return n / seconds, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="fewer images (a smoke run)")
    p.add_argument("--batch-size", type=int, default=64, help="our loop's batch size")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--scale-lr", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--recipe", default="autoencoder",
                   help="our loop's recipe: autoencoder = the original design's objective (reconstruction); default = hashing train's")
    p.add_argument("--images", type=int, default=None,
                   help="images per timed epoch of our loop (default 60,000 on CUDA, 6,400 on CPU)")
    a = p.parse_args()
    device = torch.device(a.device)
    images = 1280 if a.quick else (a.images or (60_000 if device.type == "cuda" else 6400))
    warmup = 256 if a.quick else 1280
    orig = original_loop(a.data_dir, device, images, warmup)
    ours, seconds = our_loop(a.data_dir, device, images, a.batch_size, a.lr, a.compile, a.scale_lr, a.recipe)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(f"device: {name}")
    print(f"original loop (DataLoader, batch 64):      {orig:10.0f} images/s")
    print(f"hashing train loop (batch {a.batch_size:<5}):       {ours:10.0f} images/s"
          f"  (recipe {a.recipe}{', compiled' if a.compile else ''}; one {images}-image epoch {seconds:.2f} s)")
    print(f"ratio: {ours / orig:.2f}x")


if __name__ == "__main__":
    main()
