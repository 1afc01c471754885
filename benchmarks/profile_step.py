"""Where a training step's time goes: torch.profiler over `hashing.train.loop`'s own loop.

    python benchmarks/profile_step.py --data-dir ../shared/data/mnist                 # CPU
    python benchmarks/profile_step.py --data-dir data/mnist --device cuda --batch-size 512 --scale-lr

Trains the recipe (default: `default`, 512 bits) for one warm-up epoch and then profiles
`--steps` steps of a second one. The library's pieces are labelled from outside (no profiler
code in the library): the random views (hashing.train.views), the encoder, the binarizer, the
decoder, the loss terms; autograd's backward and Adam's step are labelled by torch itself.
Prints, per part: self time (CPU and, on CUDA, the GPU's kernel time), the number of kernel
launches per step, and the top operators; writes a Chrome trace (chrome://tracing,
https://ui.perfetto.dev) to --trace. What the numbers decide (docs/benchmarks.md, "Where a step's time goes"): a step bound
by launches wants CUDA graphs / torch.compile / larger batches; one bound by a part wants
that part made cheaper.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from collections import defaultdict

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function, schedule

PARTS = ("views", "encoder", "binarizer", "decoder", "loss")


def label(fn, name: str):
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with record_function(f"part::{name}"):
            return fn(*args, **kwargs)
    return wrapped


def instrument() -> None:
    """Wrap the library's pieces in profiler ranges (classes and module-level functions)."""
    from hashing.train import views as augment
    from hashing.model import network as model
    from hashing.train import objectives
    from hashing.model import estimators

    for name, fn in list(augment.VIEWS.items()):
        augment.VIEWS[name] = label(fn, "views")
    model.Encoder.forward = label(model.Encoder.forward, "encoder")
    model.Decoder.forward = label(model.Decoder.forward, "decoder")
    estimators.Estimator.__call__ = label(torch.nn.Module.__call__, "binarizer")
    for fn in ("nt_xent", "reconstruction_term", "centre_term", "balance_term", "decorrelation_term"):
        setattr(objectives, fn, label(getattr(objectives, fn), "loss"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--recipe", default="default")
    p.add_argument("--bits", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--scale-lr", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--trace", default="profile_step.json")
    a = p.parse_args()
    instrument()

    from hashing.images.datasets import load_dataset
    from hashing.train.recipes import resolve
    from hashing.train.loop import train

    data = load_dataset("mnist", "train", a.data_dir)
    n = a.batch_size * (a.steps + 8)                     # epoch 2 = 8 steps of wait/warm-up + the profiled steps
    reps = -(-n // len(data))
    data.images, data.labels = np.tile(data.images, (reps, 1, 1))[:n], np.tile(data.labels, reps)[:n]
    cfg, tcfg = resolve(a.recipe, "mnist", n, data_dir=a.data_dir, epochs=2, bits=a.bits, batch_size=a.batch_size,
                        scale_lr=a.scale_lr, device=a.device, compile=a.compile)
    cuda = tcfg.device == "cuda"
    steps_per_epoch = n // a.batch_size
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    # Skip epoch 1 and the first 8 steps of epoch 2; record `steps` steps. The loop's optimizer
    # step is the step boundary: Adam.step is patched to advance the profiler's schedule.
    prof = profile(activities=activities, schedule=schedule(wait=steps_per_epoch + 6, warmup=2, active=a.steps),
                   record_shapes=False)
    step = torch.optim.Adam.step

    def counted(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        prof.step()
        return out
    torch.optim.Adam.step = counted
    with prof, tempfile.TemporaryDirectory() as out:
        train(cfg, tcfg, data, out, progress=False)
    torch.optim.Adam.step = step
    prof.export_chrome_trace(a.trace)

    events = prof.key_averages()
    device_time = "self_device_time_total" if cuda else None
    parts = {e.key[len("part::"):]: e for e in events if e.key.startswith("part::")}
    total_cpu = sum(e.self_cpu_time_total for e in events)
    print(f"device {tcfg.device}, recipe {a.recipe}, {a.bits} bits, batch {a.batch_size}, {a.steps} steps profiled")
    print(f"{'part':<12} {'CPU ms/step (incl.)':>20}" + (f" {'GPU ms/step':>12}" if cuda else ""))
    for name in PARTS:
        e = parts.get(name)
        if e is None:
            continue
        line = f"{name:<12} {e.cpu_time_total / 1e3 / a.steps:>20.2f}"
        if cuda:
            line += f" {e.device_time_total / 1e3 / a.steps:>12.2f}"
        print(line)
    backward = [e for e in events if e.key.startswith("autograd::engine::evaluate_function")]
    opt = [e for e in events if "Optimizer.step" in e.key]
    print(f"{'backward':<12} {sum(e.cpu_time_total for e in backward) / 1e3 / a.steps:>20.2f}")
    print(f"{'optimizer':<12} {sum(e.cpu_time_total for e in opt) / 1e3 / a.steps:>20.2f}")
    print(f"all ops, self CPU: {total_cpu / 1e3 / a.steps:.2f} ms/step")
    if cuda:
        kernels = sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        gpu = sum(getattr(e, device_time) for e in events)
        print(f"GPU kernel time {gpu / 1e3 / a.steps:.2f} ms/step, {kernels / a.steps:.0f} kernels/step")
        launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
        print(f"kernel launches {launches / a.steps:.0f}/step")
    by = defaultdict(float)
    for e in events:
        if not e.key.startswith(("part::", "autograd::", "Optimizer", "ProfilerStep")):
            by[e.key] += getattr(e, device_time) if cuda else e.self_cpu_time_total
    print("top operators (self " + ("GPU" if cuda else "CPU") + " ms/step):")
    for key, t in sorted(by.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {t / 1e3 / a.steps:8.3f}  {key}")
    print(f"wrote {a.trace}")


if __name__ == "__main__":
    main()
