"""A living index: store, search and remove at scale on FAISS and a Milvus server; sync against a full build.

    python benchmarks/living.py --part store [--n 1000000] [--out benchmarks/results/living.md]
    python benchmarks/living.py --part sync [--files 20000]

store: the same N 64-bit codes (clustered: 1,000 centres, 8% of bits flipped, so that approximate
search has neighbourhoods to find) in FAISS flat, FAISS IVF and a Milvus 2.3.5 server (BIN_FLAT,
started here by benchmarks/milvus_server.py): build time, query latency p50/p99 with 1 and 8
clients (one query per request), recall@10 against exact search (tie-aware: a hit counts when
its exact distance is within the exact 10th), memory (FAISS: this process's RSS growth; Milvus:
the server's processes) and disk; then 10,000 items removed (time) and the query latency after.
HNSW cannot remove in place: its removal rebuilds the graph, timed on the same codes.

sync: a folder of F PNG files (digits with noise, all different) and a small model: a full
`hashing index` (fresh image cache) against `hashing index --sync` after 1% of the files changed
(a third deleted, a third edited, a third added), in one process side by side.

Results go to --out (markdown) and print; numbers on a shared machine are noisy: compare the
rows of one run.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODEL = {"run_dir": "/benchmark", "fingerprint": "benchmark", "bits": 64}


def clustered_codes(n: int, bits: int = 64, centres: int = 1000, flip: float = 0.08, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 2, (centres, bits), dtype=np.uint8)
    out = np.empty((n, bits // 8), np.uint8)
    for s in range(0, n, 100_000):
        m = min(n, s + 100_000) - s
        b = c[rng.integers(0, centres, m)] ^ (rng.random((m, bits)) < flip)
        out[s:s + m] = np.packbits(b.astype(bool), axis=1)
    return out


def rss_mb(pids=None) -> float:
    pids = [os.getpid()] if pids is None else pids
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def latencies(index, xq: np.ndarray, clients: int, k: int = 10) -> tuple[float, float]:
    """p50, p99 in ms of single-query searches from `clients` threads at once."""
    times: list[float] = []
    lock = threading.Lock()
    per = len(xq) // clients

    def work(part):
        mine = []
        for q in part:
            t0 = time.perf_counter()
            index.search(q[None], k)
            mine.append((time.perf_counter() - t0) * 1e3)
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=work, args=(xq[i * per:(i + 1) * per],)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def recall_at_10(index, xq: np.ndarray, xb: np.ndarray, alive: np.ndarray | None = None) -> float:
    from hashing.codes.hamming import distances as hamming_distances

    D, I = index.search(xq, 10)
    full = hamming_distances(xq, xb)
    if alive is not None:
        full[:, ~alive] = 1 << 20
    kth = np.sort(full, axis=1)[:, 9]
    got = [(full[q][I[q][I[q] >= 0]] <= kth[q]).sum() for q in range(len(xq))]
    return float(np.mean(np.minimum(got, 10)) / 10)


def disk_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e6


def store_part(n: int, queries: int, removals: int, work: Path) -> list[str]:
    from milvus_server import MilvusServer

    from hashing.indexes import IndexInfo, create, open_index

    xb = clustered_codes(n)
    rng = np.random.default_rng(1)
    xq = xb[rng.choice(n, queries, replace=False)] ^ (rng.random((queries, 8)) < 0.02).astype(np.uint8)
    gone = np.sort(rng.choice(n, removals, replace=False))
    alive = np.ones(n, bool)
    alive[gone] = False
    rows = []
    labels, sources = np.full(n, -1, np.int64), [f"item{i}" for i in range(n)]

    def measure(name, location, make, disk, mem_pids=None):
        base = rss_mb(mem_pids)
        t0 = time.perf_counter()
        index = make()
        build = time.perf_counter() - t0
        mem = rss_mb(mem_pids) - base
        r = recall_at_10(index, xq[:200], xb)
        p1 = latencies(index, xq, 1)
        p8 = latencies(index, xq, 8)
        t0 = time.perf_counter()
        index.remove(gone)
        index.save()
        removal = time.perf_counter() - t0
        after = latencies(index, xq, 1)
        r_after = recall_at_10(index, xq[:200], xb, alive)
        _, I = index.search(xq[:200], 10)
        assert not set(I.ravel().tolist()) & set(gone.tolist()), f"{name}: a removed item answered"
        rows.append(f"| {name} | {build:.1f} | {p1[0]:.2f} / {p1[1]:.2f} | {p8[0]:.2f} / {p8[1]:.2f} | {r:.4f} | "
                    f"{mem:.0f} | {disk():.1f} | {removal:.2f} | {after[0]:.2f} / {after[1]:.2f} | {r_after:.4f} |")
        print(rows[-1], flush=True)
        index.close()

    for kind in ("flat", "ivf"):
        loc = work / f"faiss-{kind}"

        def make(kind=kind, loc=loc):
            index = create(str(loc), IndexInfo(bits=64, model=MODEL, index_type=kind))
            index.add(xb, labels, sources)
            index.save()
            return open_index(str(loc))

        measure(f"FAISS {kind}", loc, make, lambda loc=loc: disk_mb(loc))
    with MilvusServer(work / "milvus") as server:
        def make_milvus():
            index = create(server.uri, IndexInfo(bits=64, model=MODEL, index_type="flat"))
            index.add(xb, labels, sources)
            index.save()
            index.close()
            return open_index(server.uri)

        measure("Milvus 2.3.5 server, BIN_FLAT", server.uri, make_milvus, lambda: disk_mb(server.data),
                mem_pids=server.pids())
    # HNSW: a removal rebuilds the graph (on fewer codes when N is large: the rebuild is the build)
    m = min(n, 200_000)
    index = create(str(work / "faiss-hnsw"), IndexInfo(bits=64, model=MODEL, index_type="hnsw"))
    t0 = time.perf_counter()
    index.add(xb[:m], labels[:m], sources[:m])
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.remove(gone[gone < m][:removals])
    rebuild = time.perf_counter() - t0
    rows.append(f"\nHNSW ({m:,} codes): build {build:.1f} s; removing {len(gone[gone < m]):,} items rebuilds the "
                f"graph in {rebuild:.1f} s (FAISS HNSW has no in-place removal).")
    print(rows[-1], flush=True)
    return rows


def noisy_digits(folder: Path, files: int, seed: int = 0) -> list[Path]:
    from PIL import Image

    from hashing.images.datasets import load_dataset

    rng = np.random.default_rng(seed)
    ds = load_dataset("digits", "train")
    paths = []
    for i in range(files):
        im = ds.images[i % len(ds.images)].astype(np.int16) + rng.integers(-25, 26, ds.images[0].shape)
        d = folder / f"c{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        paths.append(d / f"{i:06d}.png")
        Image.fromarray(np.clip(im, 0, 255).astype(np.uint8)).save(paths[-1])
    return paths


def sync_part(files: int, work: Path) -> list[str]:
    from PIL import Image

    from hashing.workflows.index import build_index
    from hashing.workflows.sync import sync_index
    from hashing.train.loop import train_on

    folder = work / "photos"
    shutil.rmtree(folder, ignore_errors=True)
    paths = noisy_digits(folder, files)
    run = work / "run"
    if not (run / "config.json").exists():
        train_on("default", run, dataset="digits", progress=False, bits=64, epochs=1, seed=0)
    os.environ["HASHING_CACHE"] = tempfile.mkdtemp(prefix="living-cache-")     # the full build decodes everything
    shutil.rmtree(work / "idx", ignore_errors=True)
    t0 = time.perf_counter()
    r = build_index(run, str(work / "idx"), images=folder, progress=False)
    full = time.perf_counter() - t0
    rng = np.random.default_rng(2)
    k = files // 100 // 3
    picks = rng.choice(len(paths), 2 * k, replace=False)
    for p in [paths[i] for i in picks[:k]]:
        p.unlink()
    for p in [paths[i] for i in picks[k:]]:
        Image.open(p).rotate(90).save(p)
    noisy_digits(folder / "new", k, seed=5)
    t0 = time.perf_counter()
    s = sync_index(run, str(work / "idx"), images=folder, progress=False)
    sync = time.perf_counter() - t0
    t0 = time.perf_counter()
    s2 = sync_index(run, str(work / "idx"), images=folder, progress=False)
    noop = time.perf_counter() - t0
    rows = [f"| {files:,} files | {r.added:,} | {full:.1f} | {s.added} added, {s.removed} removed, {s.changed} "
            f"changed, {s.unchanged:,} unchanged | {sync:.2f} | {100 * sync / full:.1f}% | {noop:.2f} |"]
    assert (s2.added, s2.removed, s2.changed) == (0, 0, 0)
    print(rows[-1], flush=True)
    return rows


def run_line(args: str) -> str:
    load = os.getloadavg()[0]
    return (f"`python benchmarks/living.py {args}` on {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')} "
            f"(load average {load:.1f} at the start; compare the rows of one run).")


def kept_sections(out: Path) -> dict[str, list[str]]:
    """The sections ('store', 'sync') of an earlier result file, each as its lines."""
    if not out.exists():
        return {}
    sections: dict[str, list[str]] = {}
    name = None
    for line in out.read_text().splitlines():
        if line.startswith("## "):
            name = "sync" if line.startswith("## Sync") else "store"
            sections[name] = []
        if name:
            sections[name].append(line)
    return sections


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["store", "sync", "both"], default="both")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=800)
    p.add_argument("--removals", type=int, default=10_000)
    p.add_argument("--files", type=int, default=20_000)
    p.add_argument("--work", default="benchmarks/out/living")
    p.add_argument("--out", default="benchmarks/results/living.md")
    a = p.parse_args()
    work = Path(a.work)
    shutil.rmtree(work / "faiss-flat", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    lines = ["# Living index: store, search, remove, sync", ""]
    kept = kept_sections(Path(a.out))              # a part not run keeps its section from the last run
    if a.part in ("store", "both"):
        for d in ("faiss-flat", "faiss-ivf", "faiss-hnsw", "milvus"):
            shutil.rmtree(work / d, ignore_errors=True)
        lines += [f"## {a.n:,} 64-bit codes ({a.queries} queries, k = 10; then {a.removals:,} removed)", "",
                  run_line(f"--part store --n {a.n}"), "",
                  "| store | build s | 1 client p50 / p99 ms | 8 clients p50 / p99 ms | recall@10 | memory MB | "
                  "disk MB | remove s | after: 1 client p50 / p99 ms | recall@10 after |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        lines += store_part(a.n, a.queries, a.removals, work)
        lines += ["", f"peak RSS of the benchmark process: "
                      f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB", ""]
    else:
        lines += kept.get("store", [])
    if a.part in ("sync", "both"):
        lines += ["## Sync against a full build (1% of the files changed)", "",
                  run_line(f"--part sync --files {a.files}"), "",
                  "| folder | indexed | full build s | sync found | sync s | sync / full | sync, nothing changed s |",
                  "|---|---|---|---|---|---|---|"]
        lines += sync_part(a.files, work)
        lines.append("")
    else:
        lines += kept.get("sync", [])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
