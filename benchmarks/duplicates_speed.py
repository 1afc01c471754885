"""Grouping speed at 1,000,000 codes: `hashing duplicates`' grouping against brute force and faiss's hash index.

    python benchmarks/duplicates_speed.py [--n 1000000] [--thresholds 6,8,10] [--sample 20000]

Codes: --n random 64-bit codes of which 10 % are planted copies of others (each bit flipped with
probability 0.05: copies at distance ~3, up to ~10). Encoding is not part of it. For each threshold T:

- ours: hashing.codes.grouping.pairs_within (the method its cost model picks; multi-index hashing at small T)
  and star_groups, timed end to end;
- brute force: faiss IndexBinaryFlat range search of --sample of the codes against all of them, timed
  and scaled by n / sample (the whole scan would take that long; it is the same work per query);
- faiss IndexBinaryMultiHash (the hash index faiss has, tables and flips set to be exact at T) on the
  same sample, scaled the same way;
- recall: the pairs ours found that touch a sampled code, against the brute force's pairs of those
  codes (1.0: exact).

Writes benchmarks/results/duplicates_speed.md. Uniform random codes are the kind hash tables like
best: a model's codes are less even, and their buckets fuller.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine  # noqa: E402


LOAD = os.getloadavg()[0]


def make_codes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    k = n // 10
    src = rng.choice(n - k, k)
    bits = np.unpackbits(codes[src], axis=1) ^ (rng.random((k, 64)) < 0.05)
    codes[n - k:] = np.packbits(bits.astype(np.uint8), axis=1)
    return codes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--thresholds", default="6,8,10")
    p.add_argument("--sample", type=int, default=20_000)
    p.add_argument("--out", type=Path, default=HERE / "results" / "duplicates_speed.md")
    a = p.parse_args()
    import faiss

    from hashing.codes.grouping import pairs_within, plan, star_groups

    codes = make_codes(a.n)
    rng = np.random.default_rng(1)
    sample = np.sort(rng.choice(a.n, a.sample, replace=False))
    flat = faiss.IndexBinaryFlat(64)
    flat.add(codes)
    rows = []
    for t in (int(x) for x in a.thresholds.split(",")):
        method, m, b, estimate = plan(a.n, 64, t)
        t0 = time.perf_counter()
        i, j, d = pairs_within(codes, t, progress=True)
        t_pairs = time.perf_counter() - t0
        groups = star_groups(a.n, i, j)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        lims, D, I = flat.range_search(codes[sample], t + 1)
        t_flat = (time.perf_counter() - t0) * a.n / a.sample
        q = np.repeat(sample, np.diff(lims).astype(np.int64))
        truth = {(min(x, y), max(x, y)) for x, y in zip(q.tolist(), I.tolist()) if x != y}
        insample = np.isin(i, sample) | np.isin(j, sample)
        got = set(zip(i[insample].tolist(), j[insample].tolist()))
        recall = len(got & truth) / max(1, len(truth))
        nh = max(1, min(8, t // 2 + 1)) if t < 12 else 4
        nh = 3 if t >= 6 else nh
        bb, nflip = 64 // nh, t // nh
        mh = faiss.IndexBinaryMultiHash(64, nh, bb)
        mh.nflip = nflip
        mh.add(codes)
        few = sample[:max(1, a.sample // 10)]
        t0 = time.perf_counter()
        mh.range_search(codes[few], t + 1)
        t_mh = (time.perf_counter() - t0) * a.n / len(few)
        rows.append((t, method, m, b, len(i), len(groups), t_pairs, t_ours, t_flat, t_mh, nh, bb, nflip, recall))
        print(rows[-1], flush=True)
    lines = [f"# Grouping speed, {a.n:,} codes of 64 bits", "",
             f"`python benchmarks/duplicates_speed.py --n {a.n} --thresholds {a.thresholds} --sample {a.sample}` on "
             f"`{machine()}`, {time.strftime('%Y-%m-%d')}, load average {LOAD:.1f} at the start (compare times within a row).",
             "", "| T | ours: method | pairs | groups | ours: pairs s | ours: pairs + groups s | brute force "
             "(faiss IndexBinaryFlat range search) s | faiss IndexBinaryMultiHash s | speed-up over brute force | "
             "recall vs brute force |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t, method, m, b, npairs, ngroups, tp, to, tf, tmh, nh, bb, nflip, rec in rows:
        how = f"mih, {m} x {b} bits, r {t // m}" if method == "mih" else "flat"
        lines.append(f"| {t} | {how} | {npairs:,} | {ngroups:,} | {tp:.1f} | {to:.1f} | {tf:.0f} (scaled from "
                     f"{a.sample:,} queries) | {tmh:.0f} ({nh} x {bb} bits, nflip {nflip}; scaled from "
                     f"{max(1, a.sample // 10):,} queries) | {tf / to:.1f}x | {rec:.4f} |")
    a.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
