"""GPU Hamming search (hashing.model.knn) beside FAISS IndexBinaryFlat, in one run.

    python benchmarks/gpu_search.py [--sizes 1000000,10000000] [--nq 1000] [--bits 512] [--quick]

For N random codes (exact search costs the same on any codes): each torch method's
batched latency (nq queries at once, per query), single-query latency (median of 20),
comparisons/s, and FAISS's flat index on all CPU threads for scale. Correctness: for
--check queries the distances equal FAISS's exactly and every returned id sits at its
reported distance (ties may pick different ids).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    import faiss

    from hashing.codes.hamming import distances as hamming
    from hashing.model.knn import METHODS, TorchFlat

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000000,10000000")
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--bits", type=int, default=512)
    p.add_argument("--check", type=int, default=50, help="queries checked against FAISS")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    device = torch.device(a.device)
    sizes = [20000] if a.quick else [int(s) for s in a.sizes.split(",")]
    nq = 50 if a.quick else a.nq
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device: {name}; FAISS on {faiss.omp_get_max_threads()} CPU threads; {a.bits}-bit random codes, k=10")
    print("| N | method | batched ms/query | single ms | G comparisons/s | matches FAISS |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for n in sizes:
        xb = rng.integers(0, 256, (n, a.bits // 8), dtype=np.uint8)
        xq = rng.integers(0, 256, (nq, a.bits // 8), dtype=np.uint8)
        index = faiss.IndexBinaryFlat(a.bits)
        index.add(xb)
        chk = min(a.check, nq)
        t = time.perf_counter()
        D_ref, _ = index.search(xq[:chk], 10)
        faiss_s = (time.perf_counter() - t) / chk
        print(f"| {n:,} | faiss flat (CPU) | {faiss_s * 1e3:.3f} | | {n / faiss_s / 1e9:.2f} | |", flush=True)
        tb, tq = torch.from_numpy(xb).to(device), torch.from_numpy(xq).to(device)
        for method, compile in [(m, False) for m in METHODS] + [("popcount", True)]:
            flat = TorchFlat(tb, method, compile=compile)
            flat.search(tq[:2], 10)                                   # warm-up: kernels, handles
            D, I = flat.search(tq[:chk], 10)
            D, I = D.cpu().numpy(), I.cpu().numpy()
            ok = np.array_equal(D, D_ref) and all(
                np.array_equal(hamming(xq[i:i + 1], xb[I[i]])[0], D[i]) for i in range(chk))
            batched = statistics.median(timed(lambda: flat.search(tq, 10), device) for _ in range(3)) / nq
            single = statistics.median(timed(lambda i=i: flat.search(tq[i:i + 1], 10), device) for i in range(20))
            print(f"| {n:,} | torch {method}{'+compile' if compile else ''} ({device.type}) | {batched * 1e3:.4f} | {single * 1e3:.3f} | "
                  f"{n / batched / 1e9:.1f} | {'yes' if ok else 'NO'} |", flush=True)
            del flat
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
