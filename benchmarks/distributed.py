"""One process against torchrun's N processes with the same effective batch: time and retrieval.

    python benchmarks/distributed.py --data-dir ../shared/data/mnist            # MNIST, default recipe
    python benchmarks/distributed.py --dataset digits --epochs 3                 # a quick check

Runs, one after the other (never side by side: they share the cores),
  1. `hashing train ... --batch-size N*B`                         (one process)
  2. `torchrun --standalone --nproc_per_node=N -m hashing train ... --batch-size B`
then `hashing evaluate --json` on each (database = train split, queries = test split), and
writes benchmarks/results/distributed_<dataset>.md. On a CPU every torchrun process gets
cores / N threads (OMP_NUM_THREADS), so the ratio shows what the Gloo collectives and the
smaller per-process steps cost on one machine; the point of N processes is N machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--recipe", default="default")
    p.add_argument("--bits", type=int, default=512)
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--batch", type=int, default=32, help="per process; one process gets nproc x this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="/tmp/bench-distributed")
    args = p.parse_args()

    import torch

    from common import machine, markdown_table

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    source = ["--dataset", args.dataset] + (["--data-dir", args.data_dir] if args.data_dir else [])
    common = ["train", *source, "--recipe", args.recipe, "--bits", str(args.bits), "--seed", str(args.seed),
              "--device", "cpu", "--quiet"] + (["--epochs", str(args.epochs)] if args.epochs else [])
    hashing = [sys.executable, "-m", "hashing"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}"]
    threads = max(1, (os.cpu_count() or 1) // args.nproc)
    plans = [("1 process", hashing, args.nproc * args.batch, dict(os.environ)),
             (f"{args.nproc} processes (torchrun, Gloo)", torchrun + ["-m", "hashing"], args.batch,
              {**os.environ, "OMP_NUM_THREADS": str(threads)})]
    rows = []
    for name, launcher, batch, env in plans:
        out = work / f"{args.dataset}-{name.split()[0]}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        wall = run(launcher + common + ["--batch-size", str(batch), "--out", str(out)], env)
        report = work / f"{out.name}.json"
        subprocess.run(hashing + ["evaluate", "--model", str(out), *source, "--baselines", "", "--device", "cpu",
                                  "--json", str(report), "--quiet"], check=True, stdout=subprocess.DEVNULL)
        cfg = json.loads((out / "config.json").read_text())
        hist = json.loads((out / cfg["files"]["history"]).read_text())
        m = json.loads(report.read_text())["model"]
        rows.append({"run": name, "batch per process": batch, "effective batch": cfg["train"]["effective_batch"],
                     "epochs": cfg["train"]["epochs"], "s/epoch": sum(hist["seconds"]) / len(hist["seconds"]),
                     "wall s": wall, "mAP": m["mAP"], "P@100": m["precision@100"], "mAP@1000": m["mAP@1000"]})
        print(rows[-1], flush=True)
    base = rows[0]["s/epoch"]
    for r in rows:
        r["time ratio"] = r["s/epoch"] / base
    text = (f"# One process vs torchrun, {args.dataset}, recipe {args.recipe}, {args.bits} bits\n\n"
            f"Machine: {machine()}. Command: `python benchmarks/distributed.py "
            f"{' '.join(sys.argv[1:])}`. BatchNorm: per process on CPU (torch's SyncBatchNorm is CUDA-only); "
            f"contrastive negatives gathered from every process. torch {torch.__version__}.\n\n"
            + markdown_table(rows, ["run", "batch per process", "effective batch", "epochs", "s/epoch", "time ratio",
                                    "wall s", "mAP", "P@100", "mAP@1000"]) + "\n")
    out = HERE / "results" / f"distributed_{args.dataset}.md"
    out.write_text(text)
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
