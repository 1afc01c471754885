"""Image folders, measured through the console script as a user runs it.

    python benchmarks/folders.py same        # Fashion-MNIST as 70,000 PNG files vs --dataset fashion-mnist
    python benchmarks/folders.py throughput  # decode + train and encode images/s: in memory vs streamed
    python benchmarks/folders.py colour      # a colour folder at 32x32 and 64x64 vs ITQ

Fashion-MNIST comes from Debian's dataset-fashion-mnist (benchmarks/prepare_fashion_mnist.sh
lays it out for --dataset). The folders are written once under --work:
- fashion-png: FOLDER/{train,test}/<class name>/<i>.png, the 28x28 grayscale images as they are.
- fashion-colour: each garment tinted with a random colour on a random dark background, resized
  to a random width and height in 28..96 pixels (so the colour, resize and crop paths all work),
  as JPEG (quality 90); --colour-train / --colour-test images.

Writes benchmarks/results/folders_<task>.md. Timings: run alone, the machine has 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine  # noqa: E402

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def hashing(*args, env=None) -> tuple[str, float]:
    """Run the console script; (stdout, wall seconds). Fails loudly."""
    t0 = time.perf_counter()
    p = subprocess.run(["hashing", *map(str, args)], capture_output=True, text=True, env={**os.environ, **(env or {})})
    if p.returncode:
        raise SystemExit(f"hashing {' '.join(map(str, args))} failed:\n{p.stderr[-2000:]}")
    return p.stdout, time.perf_counter() - t0


def fashion(data_dir: Path, split: str):
    from hashing.images.datasets import load_dataset

    ds = load_dataset("fashion-mnist", split, str(data_dir))
    return ds.images, ds.labels


def write_png_folder(data_dir: Path, root: Path) -> Path:
    from PIL import Image

    if (root / "done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for split in ("train", "test"):
        images, labels = fashion(data_dir, split)
        for i, (im, y) in enumerate(zip(images, labels)):
            d = root / split / CLASSES[y]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).save(d / f"{i:05d}.png")
    (root / "done").touch()
    return root


def write_colour_folder(data_dir: Path, root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    from PIL import Image

    if (root / "done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = fashion(data_dir, split)
        for i in range(n):
            a = images[i][..., None].astype(np.float32) / 255                       # (28, 28, 1) coverage
            fg = rng.integers(64, 256, 3)
            bg = rng.integers(0, 64, 3)
            arr = np.clip(a * fg + (1 - a) * bg, 0, 255).astype(np.uint8)
            w, h = (int(v) for v in rng.integers(28, 97, 2))
            d = root / split / CLASSES[labels[i]]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).resize((w, h), Image.BILINEAR).save(d / f"{i:05d}.jpg", quality=90)
    (root / "done").touch()
    return root


def scores(run: Path, *source, baselines: str = "") -> tuple[dict, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        _, secs = hashing("evaluate", "--model", run, *source, "--baselines", baselines, "--json", out, "--quiet")
        report = json.loads(out.read_text())
    return report, secs


def per_second(text: str) -> float:
    return float(re.findall(r"([\d.]+) images/s", text)[-1])


def clothing_flags() -> list:
    """The default recipe's own settings for fashion-mnist (recipes.Recipe.datasets) as flags, so
    that the folder, which is not that dataset by name, trains with exactly the same ones."""
    from hashing.train.recipes import RECIPES

    flags: list = []
    for key, value in RECIPES["default"].datasets["fashion-mnist"].items():
        if key == "batch":
            flags += ["--batch-size", value, "--scale-lr"]
        elif key != "epochs":                                 # --epochs is the benchmark's own
            flags += [f"--{key.replace('_', '-')}", json.dumps(value) if isinstance(value, dict) else value]
    return flags


def task_same(a) -> str:
    folder = write_png_folder(a.fashion_dir, a.work / "fashion-png")
    rows = []
    common = ["--bits", a.bits, "--epochs", a.epochs, "--quiet", *clothing_flags()]
    for name, source, seed in (("--dataset fashion-mnist", ["--dataset", "fashion-mnist", "--data-dir", a.fashion_dir], 0),
                               ("--dataset fashion-mnist (seed 1: noise)", ["--dataset", "fashion-mnist", "--data-dir",
                                                                            a.fashion_dir], 1),
                               ("--images fashion-png/", ["--images", folder], 0)):
        run = a.work / f"run-same-{len(rows)}"
        shutil.rmtree(run, ignore_errors=True)
        out, secs = hashing("train", *source, "--out", run, "--seed", seed, *common)
        report, _ = scores(run, *source)
        m = report["model"]
        rows.append(f"| {name} | {seed} | {m['mAP']:.4f} | {m['precision@100']:.4f} | {m['precision@1']:.4f} | "
                    f"{secs:.0f} |")
        print(rows[-1], flush=True)
    return "\n".join([
        f"Fashion-MNIST, default recipe, {a.bits} bits, {a.epochs} epochs, CPU; database = train (60,000), "
        f"queries = test (10,000). Same command but the source; `{machine()}`.", "",
        "| source | seed | mAP | P@100 | P@1 | train wall s |", "|---|---|---|---|---|---|", *rows])


def task_throughput(a) -> str:
    folder = write_png_folder(a.fashion_dir, a.work / "fashion-png")
    rows = []
    for label, budget in (("in memory", None), ("streamed (HASHING_MEMORY_BUDGET=0)", "0")):
        cache = a.work / f"cache-{'mem' if budget is None else 'stream'}"
        shutil.rmtree(cache, ignore_errors=True)
        env = {"HASHING_CACHE": str(cache)}
        if budget is not None:
            env["HASHING_MEMORY_BUDGET"] = budget
        run = a.work / "run-throughput"
        shutil.rmtree(run, ignore_errors=True)
        # cold: decodes 60,000 files into the cache, then trains one epoch
        cold, cold_s = hashing("train", "--images", folder, "--out", run, "--epochs", 1, "--bits", a.bits, "--quiet",
                               env=env)
        shutil.rmtree(run)
        warm, warm_s = hashing("train", "--images", folder, "--out", run, "--epochs", 1, "--bits", a.bits, "--quiet",
                               env=env)
        idx = a.work / "idx-throughput"
        shutil.rmtree(idx, ignore_errors=True)
        cached_idx, cached_s = hashing("index", "--model", run, "--images", folder, "--out", idx, "--quiet", env=env)
        shutil.rmtree(idx)
        shutil.rmtree(cache)
        fresh_idx, fresh_s = hashing("index", "--model", run, "--images", folder, "--out", idx, "--quiet", env=env)
        shutil.rmtree(idx)
        n = 60_000
        rows.append(f"| {label} | {n / cold_s:.0f} | {per_second(warm):.0f} | {n / warm_s:.0f} | "
                    f"{per_second(cached_idx):.0f} | {per_second(fresh_idx):.0f} | {n / fresh_s:.0f} |")
        print(rows[-1], flush=True)
    return "\n".join([
        f"Fashion-MNIST as 60,000 PNG files (train split), default recipe, {a.bits} bits, one epoch, CPU; "
        f"`{machine()}`. images/s; wall = the whole command (Python start, torch import, decode, train/encode).", "",
        "| path | train, cold cache: wall img/s (decode + 1 epoch) | train: training img/s | train, warm cache: "
        "wall img/s | index from the cache: encode img/s | index, no cache: decode+encode img/s | index, no "
        "cache: wall img/s |", "|---|---|---|---|---|---|---|", *rows])


def task_colour(a) -> str:
    folder = write_colour_folder(a.fashion_dir, a.work / "fashion-colour", a.colour_train, a.colour_test)
    rows = []
    for size in a.sizes:
        run = a.work / f"run-colour-{size}"
        shutil.rmtree(run, ignore_errors=True)
        out, secs = hashing("train", "--images", folder, "--out", run, "--image-size", size, "--bits", a.colour_bits,
                            "--epochs", a.colour_epochs, "--quiet")
        report, _ = scores(run, "--images", folder, baselines="lsh,itq,l2")
        for method, m in (("model", report["model"]), *report["baselines"].items()):
            rows.append(f"| {size} | {method} | {m['mAP']:.4f} | {m['precision@100']:.4f} | {m['precision@1']:.4f} |"
                        + (f" {secs:.0f} |" if method == "model" else " |"))
            print(rows[-1], flush=True)
    return "\n".join([
        f"Colour Fashion-MNIST folder (random tint and size, JPEG; {a.colour_train} train / {a.colour_test} test "
        f"images), default recipe with the folder defaults (colour, crop, photo views), {a.colour_bits} bits, "
        f"{a.colour_epochs} epochs, CPU; baselines hash the same {{size}}x{{size}}x3 pixels at the same bit count; "
        f"`{machine()}`.", "",
        "| size | method | mAP | P@100 | P@1 | train wall s |", "|---|---|---|---|---|---|", *rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=["same", "throughput", "colour"])
    p.add_argument("--fashion-dir", type=Path, default=Path("data"),
                   help="torchvision layout of Fashion-MNIST (benchmarks/prepare_fashion_mnist.sh)")
    p.add_argument("--work", type=Path, default=Path("bench-folders"), help="folders, runs and caches go here")
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--colour-train", type=int, default=10_000)
    p.add_argument("--colour-test", type=int, default=2_000)
    p.add_argument("--colour-bits", type=int, default=64)
    p.add_argument("--colour-epochs", type=int, default=5)
    p.add_argument("--out", type=Path, default=HERE / "results")
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    table = {"same": task_same, "throughput": task_throughput, "colour": task_colour}[a.task](a)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"folders_{a.task}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
