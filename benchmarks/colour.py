"""Real colour collections: does a model trained on a folder learn what is drawn, not its colours?

    python benchmarks/colour.py build                  # the three folders, once, under --work
    python benchmarks/colour.py run [--collections digits fashion clipart] [--bits 64] [-- train flags]

Three collections, each FOLDER/{train,test}/<class>/<file>, made from pictures nobody here drew:
- digits:  MNIST digits from ../shared/data/mnist, each drawn in a random foreground colour on a
           random background colour (at least 60 grey levels of luma apart, so the digit stays
           visible), resized to a random side of 20..72 px, saved as PNG or (one in
           three) JPEG quality 85; 4,000 train / 1,000 test.
- fashion: Fashion-MNIST (Debian's dataset-fashion-mnist) recoloured the same way; 4,000 / 1,000.
- clipart: Debian's openclipart-png by its 22 category folders (real clip art, most of it
           transparent; categories are weak labels): per category 80 % train / 20 % test in a
           seeded shuffle, at most 250 / 60, the files copied as they are.

`run` trains with `hashing train --images FOLDER/` (the folder defaults plus the flags after --),
scores with `hashing evaluate --baselines itq,l2` (database = train, queries = test), and writes
benchmarks/results/colour.md: model against ITQ and L2 of the same pixels, and the training time.
Timings: run alone, the machine has 2 cores.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
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

MNIST = HERE.parent.parent / "shared" / "data" / "mnist" / "MNIST" / "raw"
FASHION = Path("/usr/share/datasets/fashion-mnist")
CLIPART = Path("/usr/share/openclipart/png")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
LUMA = np.array([0.299, 0.587, 0.114])


def idx(path: Path) -> np.ndarray:
    data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def recoloured(root: Path, images: dict, names: list[str], n: dict, seed: int) -> None:
    """Each grey image drawn in a random colour on a random colour, random size, PNG or JPEG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, (x, y) in images.items():
        for i in range(n[split]):
            while True:
                fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
                if abs(float(fg @ LUMA) - float(bg @ LUMA)) >= 60:
                    break
            a = x[i][..., None].astype(np.float32) / 255
            arr = np.clip(a * fg + (1 - a) * bg, 0, 255).astype(np.uint8)
            side = int(rng.integers(20, 73))
            d = root / split / names[y[i]]
            d.mkdir(parents=True, exist_ok=True)
            im = Image.fromarray(arr).resize((side, side), Image.BILINEAR)
            if rng.random() < 1 / 3:
                im.save(d / f"{i:05d}.jpg", quality=85)
            else:
                im.save(d / f"{i:05d}.png")


def build_digits(root: Path) -> None:
    images = {"train": (idx(MNIST / "train-images-idx3-ubyte"), idx(MNIST / "train-labels-idx1-ubyte")),
              "test": (idx(MNIST / "t10k-images-idx3-ubyte"), idx(MNIST / "t10k-labels-idx1-ubyte"))}
    recoloured(root, images, [str(d) for d in range(10)], {"train": 4000, "test": 1000}, seed=0)


def build_fashion(root: Path) -> None:
    images = {"train": (idx(FASHION / "train-images-idx3-ubyte.gz"), idx(FASHION / "train-labels-idx1-ubyte.gz")),
              "test": (idx(FASHION / "t10k-images-idx3-ubyte.gz"), idx(FASHION / "t10k-labels-idx1-ubyte.gz"))}
    recoloured(root, images, FASHION_CLASSES, {"train": 4000, "test": 1000}, seed=1)


def build_clipart(root: Path, most_train: int = 250, most_test: int = 60) -> None:
    rng = random.Random(2)
    for category in sorted(p for p in CLIPART.iterdir() if p.is_dir()):
        files = sorted(category.rglob("*.png"))
        rng.shuffle(files)
        cut = max(1, round(0.8 * len(files)))
        for split, chosen in (("train", files[:cut][:most_train]), ("test", files[cut:][:most_test])):
            d = root / split / category.name
            d.mkdir(parents=True, exist_ok=True)
            for i, f in enumerate(chosen):
                shutil.copyfile(f, d / f"{i:04d}-{f.name}")


BUILDERS = {"digits": build_digits, "fashion": build_fashion, "clipart": build_clipart}


def build(work: Path, names: list[str]) -> None:
    for name in names:
        root = work / name
        if (root / "done").exists():
            continue
        shutil.rmtree(root, ignore_errors=True)
        BUILDERS[name](root)
        (root / "done").touch()
        print(f"built {root}: {sum(1 for _ in root.rglob('*.*'))} files", flush=True)


def hashing(*args) -> tuple[str, float]:
    t0 = time.perf_counter()
    p = subprocess.run(["hashing", *map(str, args)], capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"hashing {' '.join(map(str, args))} failed:\n{p.stderr[-2000:]}")
    return p.stdout + p.stderr, time.perf_counter() - t0


def run(a) -> None:
    build(a.work, a.collections)
    rows = []
    for name in a.collections:
        folder = a.work / name
        run_dir = a.work / f"run-{name}-{a.tag}"
        shutil.rmtree(run_dir, ignore_errors=True)
        _, secs = hashing("train", "--images", folder, "--out", run_dir, "--bits", a.bits, "--quiet", *a.train)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "report.json"
            hashing("evaluate", "--model", run_dir, "--images", folder, "--baselines", "itq,l2", "--k", "10,100",
                    "--json", out, "--quiet")
            report = json.loads(out.read_text())
        for method, m in (("model", report["model"]), *report["baselines"].items()):
            rows.append(f"| {name} | {a.tag} | {method} | {m['mAP']:.3f} | {m['precision@10']:.3f} | "
                        f"{m['precision@100']:.3f} | " + (f"{secs:.0f} |" if method == "model" else "|"))
            print(rows[-1], flush=True)
    table = "\n".join([
        f"{a.bits} bits; train flags: `{' '.join(a.train) or '(folder defaults)'}`; `{machine()}`.", "",
        "| collection | setting | method | mAP | P@10 | P@100 | train wall s |", "|---|---|---|---|---|---|---|", *rows])
    print(table)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        with open(a.out, "a") as f:
            f.write(table + "\n\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=["build", "run"])
    p.add_argument("--collections", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    p.add_argument("--work", type=Path, default=Path(os.environ.get("COLOUR_WORK", "bench-colour")))
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--tag", default="default", help="a name for the setting, in the table")
    p.add_argument("--out", type=Path, default=None, help="append the table to this file")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    a = p.parse_args(argv[:cut])
    a.train = argv[cut + 1:]                         # flags for hashing train, after --
    a.work.mkdir(parents=True, exist_ok=True)
    if a.task == "build":
        build(a.work, a.collections)
    else:
        run(a)


if __name__ == "__main__":
    main()
