"""Search speed and recall of each index type, on random and on real-image codes.

    python benchmarks/search.py [--quick] [--sizes 10000,100000,1000000] [--model RUN_DIR --data-dir DIR]

For each N: build time, bytes per code, batched latency per query (1,000 queries in one
call) and single-query latency (one call per query), one thread, and recall@10 against
exact search (tie-aware: a returned item counts when its distance is within the exact
10th distance). "numpy" is a plain NumPy popcount brute force, the reference.
Real codes: the model's codes of the shared MNIST train split, grown to N by copies
with 2% of their bits flipped (cheap augmentation in code space).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, markdown_table  # noqa: E402

TYPES = {"flat": "BFlat", "hnsw": "BHNSW32", "ivf": "BIVF{nlist}", "mih": "BHash{nhash}x{b}"}


def build(name: str, xb: np.ndarray, bits: int):
    import faiss

    n = len(xb)
    spec = TYPES[name].format(nlist=int(4 * np.sqrt(n)), nhash=bits // 32, b=min(24, int(np.log2(n)) + 2))
    t0 = time.perf_counter()
    index = faiss.index_binary_factory(bits, spec)
    if not index.is_trained:
        index.train(xb[: min(n, 100_000)])
    index.add(xb)
    if name == "ivf":
        index.nprobe = 16
    if name == "hnsw":
        index.hnsw.efSearch = 64
    if name == "mih":
        index.nflip = 2
    build_s = time.perf_counter() - t0
    size = faiss.serialize_index_binary(index).size
    return index, build_s, size / n


def recall_at_10(D_exact: np.ndarray, D: np.ndarray) -> float:
    kth = D_exact[:, -1:]
    return float(np.minimum((D <= kth).sum(1), 10).mean() / 10)


def codes_real(model_dir: str, data_dir: str, n: int, rng) -> np.ndarray:
    from hashing import checkpoint
    from hashing.codes import encode_array
    from hashing.data import load_dataset

    model, _ = checkpoint.load(model_dir)
    base = encode_array(model, load_dataset("mnist", "train", data_dir).images, progress=False).codes
    bits = base.shape[1] * 8
    reps = -(-n // len(base))
    out = np.concatenate([base] * reps)[:n]
    flip = np.packbits(rng.random((len(out), bits)) < 0.02, axis=1)
    flip[: len(base)] = 0
    return out ^ flip


def run(kind: str, xb: np.ndarray, xq: np.ndarray, bits: int, types: list[str]) -> list[dict]:
    import faiss

    faiss.omp_set_num_threads(1)
    rows = []
    exact = None
    # numpy reference
    t0 = time.perf_counter()
    from hashing.bits import hamming
    d = hamming(xq[:50], xb)
    np_ms = (time.perf_counter() - t0) / 50 * 1e3
    rows.append({"codes": kind, "N": len(xb), "index": "numpy", "build_s": 0.0, "bytes/code": bits / 8,
                 "batched_ms": np_ms, "single_ms": np_ms, "recall@10": 1.0})
    del d
    import torch

    from hashing import torch_search
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tb, tq = torch.from_numpy(xb).to(dev), torch.from_numpy(xq[:100]).to(dev)
    torch_search.search(tq[:2], tb, 10)
    t0 = time.perf_counter()
    Dt, _ = torch_search.search(tq, tb, 10, query_chunk=max(1, (1 << 26) // max(1, xb.size)))
    if dev == "cuda":
        torch.cuda.synchronize()
    rows.append({"codes": kind, "N": len(xb), "index": f"torch-{dev}", "build_s": 0.0, "bytes/code": bits / 8,
                 "batched_ms": (time.perf_counter() - t0) / len(tq) * 1e3, "single_ms": float("nan"),
                 "recall@10": 1.0})
    for name in types:
        index, build_s, per = build(name, xb, bits)
        t0 = time.perf_counter()
        D, _ = index.search(xq, 10)
        batched = (time.perf_counter() - t0) / len(xq) * 1e3
        t0 = time.perf_counter()
        for q in xq[:100]:
            index.search(q[None], 10)
        single = (time.perf_counter() - t0) / 100 * 1e3
        if name == "flat":
            exact = D
        rows.append({"codes": kind, "N": len(xb), "index": name, "build_s": build_s, "bytes/code": per,
                     "batched_ms": batched, "single_ms": single,
                     "recall@10": 1.0 if exact is None or name == "flat" else recall_at_10(exact, D)})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N = 10^4 and 10^5 only")
    p.add_argument("--sizes", default=None)
    p.add_argument("--bits", type=int, default=512)
    p.add_argument("--model", default=None, help="run dir for real-image codes (else random codes only)")
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--types", default="flat,hnsw,ivf,mih")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")] if a.sizes else ([10**4, 10**5] if a.quick else
                                                                   [10**4, 10**5, 10**6, 10**7])
    rng = np.random.default_rng(0)
    rows = []
    types = a.types.split(",")
    for n in sizes:
        xb = rng.integers(0, 256, (n, a.bits // 8), dtype=np.uint8)
        xq = rng.integers(0, 256, (1000, a.bits // 8), dtype=np.uint8)
        rows += run("random", xb, xq, a.bits, types)
        if a.model:
            real = codes_real(a.model, a.data_dir, n + 1000, rng)
            rows += run("mnist", real[1000:], real[:1000], real.shape[1] * 8, types)
    table = markdown_table(rows, ["codes", "N", "index", "build_s", "bytes/code", "batched_ms", "single_ms",
                                  "recall@10"])
    print(f"one thread; {machine()}")
    print(table)
    if a.out:
        Path(a.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
