"""Search speed and recall of each index type, on random and on real-image codes.

    python benchmarks/search.py [--quick] [--sizes 10000,100000,1000000,10000000] [--model RUN_DIR --data-dir DIR]

For each N: build time, bytes per code, batched latency per query (1,000 queries in one
call) and single-query latency (one call per query), one thread, Gcmp/s = N / batched time
per query (codes scanned per second; for approximate indexes an effective rate, as they
touch only part of the database), and recall@10 against exact search (tie-aware: a returned item
counts when its distance is within the exact 10th distance). "numpy" is a plain NumPy
popcount brute force, the reference; "torch-cpu"/"torch-cuda" is hashing.model.knn.
Above --max-graph-n (10^6) only flat and ivf are built (HNSW/MIH builds take hours here).

The popcount limit: benchmarks/popcount_limit.c (gcc -O3 -march=native), XOR+POPCNT
(scalar, and AVX2 nibble lookup) of 512-bit codes held in cache with nothing else to do, one
core. Printed beside faiss's flat index measured on the same terms (8192 codes in cache, k =
10, best of 15, interleaved with the limit's runs), so "within 2x of the limit" can be read off.

Real codes: the model's codes of the shared MNIST train split and of random affine
views of it (rotation, scale, shift, shear: new images, encoded by the model) up to
--max-images; beyond that, copies of those codes with 2 % of their bits flipped.
Queries are codes of MNIST *test* images, which the database never contains.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, markdown_table  # noqa: E402

# The index types `hashing index` offers, with its own factory strings and search knobs
# (imported, so this measures what an index really uses), plus multi-index hashing for comparison.
MIH = "BHash{nhash}x{b}"


def all_types() -> list[str]:
    from hashing.indexes.faiss import INDEX_TYPES
    return [*INDEX_TYPES, "mih"]


def build(name: str, xb: np.ndarray, bits: int):
    import faiss

    from hashing.indexes.faiss import factory_string, tune

    n = len(xb)
    spec = MIH.format(nhash=bits // 32, b=min(24, int(np.log2(n)) + 2)) if name == "mih" else factory_string(name, n)
    t0 = time.perf_counter()
    index = faiss.index_binary_factory(bits, spec)
    if not index.is_trained:
        index.train(xb[: min(n, 100_000)])   # the library trains on what it is given; a sample here at 10^7
    index.add(xb)
    tune(index)
    if name == "mih":
        index.nflip = 2
    build_s = time.perf_counter() - t0
    size = faiss.serialize_index_binary(index).size
    return index, build_s, size / n


def recall_at_10(D_exact: np.ndarray, D: np.ndarray) -> float:
    kth = D_exact[:, -1:]
    return float(np.minimum((D <= kth).sum(1), 10).mean() / 10)


def codes_real(model_dir: str, data_dir: str, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(codes of the train split and of random views of it, (n, B/8); codes of 1,000 MNIST test images)."""
    import torch
    from tqdm import tqdm

    from hashing.model import checkpoint
    from hashing.train.views import random_affine
    from hashing.codes.bits import pack
    from hashing.model.encode import encode_array
    from hashing.images.datasets import load_dataset

    torch.manual_seed(0)
    model = checkpoint.load(model_dir).model
    train = load_dataset("mnist", "train", data_dir).images
    xq = encode_array(model, load_dataset("mnist", "test", data_dir).images[:1000], progress=False).codes
    parts = [encode_array(model, train, progress=False).codes]
    have, want = len(train), n
    with tqdm(total=want, initial=have, desc="encoding augmented MNIST", unit="img", leave=False) as bar:
        while have < want:
            idx = torch.from_numpy(rng.integers(0, len(train), min(4096, want - have)))
            with torch.inference_mode():
                x = random_affine(model.preprocess(torch.from_numpy(train)[idx]))
                parts.append(pack(model.binarize(x).numpy()))
            have += len(idx)
            bar.update(len(idx))
    return np.concatenate(parts)[:n], xq


def grow(base: np.ndarray, n: int, rng) -> np.ndarray:
    """The first n codes of base; past its end, copies of it with 2 % of their bits flipped."""
    if n <= len(base):
        return base[:n]
    reps = -(-n // len(base))
    out = np.concatenate([base] * reps)[:n]
    for start in range(len(base), n, 1 << 20):            # flip 2 % of the bits of the copies, in chunks
        stop = min(n, start + (1 << 20))
        out[start:stop] ^= np.packbits(rng.random((stop - start, out.shape[1] * 8)) < 0.02, axis=1)
    return out


def popcount_limit() -> float | None:
    """Comparisons/s of benchmarks/popcount_limit.c on one core, or None without a C compiler."""
    import shutil
    import subprocess
    import tempfile

    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    src = Path(__file__).resolve().parent / "popcount_limit.c"
    with tempfile.TemporaryDirectory() as d:
        exe = str(Path(d) / "popcount_limit")
        subprocess.run([cc, "-O3", "-march=native", "-o", exe, str(src)], check=True)
        runs = [float(subprocess.run([exe, "8192", "2000"], check=True, capture_output=True, text=True)
                      .stdout.split()[0]) for _ in range(3)]
    return max(runs)


def flat_in_cache(bits: int = 512, n: int = 8192, nq: int = 2000, repeats: int = 5) -> float:
    """Comparisons/s of faiss IndexBinaryFlat (k = 10, one thread) on the limit kernel's terms:
    8192 random codes held in cache, best of `repeats` (this shared machine's speed wanders)."""
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(1)
    index = faiss.IndexBinaryFlat(bits)
    index.add(rng.integers(0, 256, (n, bits // 8), dtype=np.uint8))
    xq = rng.integers(0, 256, (nq, bits // 8), dtype=np.uint8)
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        index.search(xq, 10)
        best = max(best, n * nq / (time.perf_counter() - t0))
    return best


def run(kind: str, xb: np.ndarray, xq: np.ndarray, bits: int, types: list[str], max_graph_n: int) -> list[dict]:
    import faiss

    faiss.omp_set_num_threads(1)
    rows = []
    exact = None
    # numpy reference
    nq_np = int(np.clip(10**8 // len(xb), 3, 50))     # NumPy is slow: fewer queries at large N
    t0 = time.perf_counter()
    from hashing.codes.hamming import distances as hamming
    d = hamming(xq[:nq_np], xb)
    np_ms = (time.perf_counter() - t0) / nq_np * 1e3
    rows.append({"codes": kind, "N": len(xb), "index": "numpy", "build_s": 0.0, "bytes/code": bits / 8,
                 "batched_ms": np_ms, "single_ms": np_ms, "recall@10": 1.0})
    del d
    import torch

    from hashing.model import knn as torch_search
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tb, tq = torch.from_numpy(xb).to(dev), torch.from_numpy(xq[:max(3, min(100, 10**8 // len(xb)))]).to(dev)
    torch_search.knn(tq[:2], tb, 10)
    t0 = time.perf_counter()
    Dt, _ = torch_search.knn(tq, tb, 10, query_chunk=max(1, (1 << 26) // max(1, xb.size)))
    if dev == "cuda":
        torch.cuda.synchronize()
    rows.append({"codes": kind, "N": len(xb), "index": f"torch-{dev}", "build_s": 0.0, "bytes/code": bits / 8,
                 "batched_ms": (time.perf_counter() - t0) / len(tq) * 1e3, "single_ms": float("nan"),
                 "recall@10": 1.0})
    for name in types:
        if name in ("hnsw", "mih") and len(xb) > max_graph_n:
            continue
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
        del index
    for r in rows:
        r["Gcmp/s"] = len(xb) / (r["batched_ms"] * 1e-3) / 1e9
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N = 10^4 and 10^5 only")
    p.add_argument("--sizes", default=None)
    p.add_argument("--bits", type=int, default=512)
    p.add_argument("--model", default=None, help="run dir for real-image codes (else random codes only)")
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--types", default=None, help="comma-separated; default: every `hashing index` type, and mih")
    p.add_argument("--max-graph-n", type=int, default=10**6, help="largest N for hnsw and mih")
    p.add_argument("--max-images", type=int, default=10**6, help="augmented images to encode for real codes")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")] if a.sizes else ([10**4, 10**5] if a.quick else
                                                                   [10**4, 10**5, 10**6, 10**7])
    rng = np.random.default_rng(0)
    rows = []
    types = a.types.split(",") if a.types else all_types()
    if a.model:   # encode once, for the largest size; smaller sizes take a prefix
        base, real_q = codes_real(a.model, a.data_dir, min(max(sizes), a.max_images), rng)
    for n in sizes:
        xb = rng.integers(0, 256, (n, a.bits // 8), dtype=np.uint8)
        xq = rng.integers(0, 256, (1000, a.bits // 8), dtype=np.uint8)
        rows += run("random", xb, xq, a.bits, types, a.max_graph_n)
        del xb
        if a.model:
            real = grow(base, n, rng)
            rows += run("mnist", real, real_q, real.shape[1] * 8, types, a.max_graph_n)
            del real
    table = markdown_table(rows, ["codes", "N", "index", "build_s", "bytes/code", "batched_ms", "single_ms",
                                  "Gcmp/s", "recall@10"])
    limit = popcount_limit() if a.bits == 512 else None
    lines = [f"one thread; {machine()}"]
    if limit:
        flat = flat_in_cache()
        for _ in range(2):   # interleaved, best of each: a shared machine's speed wanders for seconds at a time
            limit, flat = max(limit, popcount_limit()), max(flat, flat_in_cache())
        lines.append(f"popcount limit (benchmarks/popcount_limit.c, 8192 codes in cache, one core, best of 9): "
                     f"{limit / 1e9:.3f} G comparisons/s; faiss flat on the same terms (best of 15): "
                     f"{flat / 1e9:.3f} G/s = {limit / flat:.2f}x below the limit")
    print("\n".join(lines))
    print(table)
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n\n" + table + "\n")


if __name__ == "__main__":
    main()
