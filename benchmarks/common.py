"""Helpers shared by the benchmark scripts: train a config, score its codes, print a table."""

from __future__ import annotations

import platform
import tempfile
import time

import numpy as np


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    import os
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"


def train_and_score(recipe: str, db, qs, ks=(100,), train_images: int | None = None, **settings) -> dict:
    """Train `recipe` with explicit `settings` (hashing.train.recipes.resolve, as `hashing train` does) on the
    first `train_images` of db, encode database and queries, return scores, epochs and timings."""
    from hashing.model import checkpoint
    from hashing.model.encode import encode_array
    from hashing.evaluate.classes import score_codes
    from hashing.train.recipes import resolve
    from hashing.train.loop import train

    data = db.head(train_images)
    cfg, tcfg = resolve(recipe, db.name, len(data), data_dir=db.data_dir, max_images=train_images, **settings)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        r = train(cfg, tcfg, data, out, progress=False)
        seconds = time.perf_counter() - t0
        model = checkpoint.load(out).model
    xb = encode_array(model, db.images, progress=False).codes
    xq = encode_array(model, qs.images, progress=False).codes
    scores, _ = score_codes(xb, xq, db.labels, qs.labels, cfg.bits, ks, progress=False)
    used = np.unpackbits(xb, axis=1)
    frac_used = float(((used.min(0) == 0) & (used.max(0) == 1)).mean())   # bits that vary over the database
    # Exact ties: with ties broken by lower id, a database image comes back first for its own code only
    # when it is the lowest id of its code's group, so distinct/N is also that self-first rate.
    _, counts = np.unique(xb, axis=0, return_counts=True)
    return {**scores, "bits_used": frac_used, "distinct_codes": len(counts) / len(xb),
            "largest_tie": int(counts.max()), "final_loss": r.history["epoch_loss"][-1], "epochs": tcfg.epochs,
            "seconds": seconds}


def score_baseline(name: str, bits: int, db, qs, ks=(100,)) -> dict:
    from hashing.codes import baselines
    from hashing.evaluate.classes import score_codes

    fdb = db.images.reshape(len(db), -1).astype(np.float32) / 255
    fq = qs.images.reshape(len(qs), -1).astype(np.float32) / 255
    t0 = time.perf_counter()
    h = baselines.make(name, bits).fit(fdb)
    scores, _ = score_codes(h.codes(fdb), h.codes(fq), db.labels, qs.labels, bits, ks, progress=False)
    return {**scores, "seconds": time.perf_counter() - t0}


def score_l2(db, qs, ks=(100,)) -> dict:
    """Exact float L2 kNN on the raw pixels: the reference the codes compress away from."""
    from hashing.evaluate.classes import l2_search, pixels, rank_all

    t0 = time.perf_counter()
    s = rank_all(l2_search(pixels(db.images)), pixels(qs.images), qs.labels, db.labels, ks, None, progress=False)
    return {**s.result(), "seconds": time.perf_counter() - t0}


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def cell(column, v):
        if not isinstance(v, float):
            return str(v)
        return f"{v:.4f}" if abs(v) < 10 and column != "seconds" else f"{v:.1f}"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
