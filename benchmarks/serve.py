"""Load benchmark of `hashing serve`: C concurrent clients post real MNIST test images for T seconds.

    python benchmarks/serve.py --model runs/mnist --data-dir ../shared/data/mnist \
        [--clients 1,8,32] [--seconds 10] [--sizes 18k,1M] [--soak 600] [--out benchmarks/out/serve]

Indexes: "18k" is MNIST's training split encoded by the model (FAISS flat); "1M" adds codes made
by flipping 8 % of the bits of those real codes (random, seeded) up to 1,000,000, stored flat and
ivf (1,024 inverted lists, nprobe 16). For each index a real `hashing serve` process is started on a loopback port, then for each
C, C clients (asyncio, raw HTTP/1.1 keep-alive, one multipart upload of one PNG per request)
send requests back to back: requests/s, latency p50/p95/p99, errors, and the server's own
per-stage times (its Server-Timing header: decode, queue, encode, search, batch size). Beside it,
the same image through `hashing query` (a new process each time). `--soak S` runs 8 clients for
S seconds against the 1M ivf index and samples the server's resident memory every 10 s.

Bounded: every run stops after --seconds and at most --max-requests; loopback only. The client
shares the machine's cores with the server (on the 2-core VM it takes a real part of one),
so the numbers are what one machine gives with its load generator on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, markdown_table  # noqa: E402

TIMING = re.compile(rb"(\w+);dur=([\d.]+)")
BATCH = re.compile(rb"batch;desc=(\d+)")


def build_indexes(model: str, data_dir: str, out: Path, sizes: list[str]) -> dict[str, Path]:
    """{"18k flat": folder, "1M flat": ..., "1M ivf": ...}, built once and reused."""
    from hashing.indexes.base import IndexInfo
    from hashing.indexes.faiss import FaissIndex
    from hashing.workflows.index import build_index
    from hashing.model.checkpoint import load

    out.mkdir(parents=True, exist_ok=True)
    small = out / "mnist-18k-flat"
    if not (small / "meta.json").exists():
        build_index(model, str(small), dataset="mnist", split="train", data_dir=data_dir, progress=False)
    found = {"18k flat": small}
    if "1M" not in sizes:
        return found
    base = FaissIndex.open(str(small))
    xb = base.reconstruct_all()                                 # (18097, 64) the real codes
    labels, sources = base.lookup(np.arange(base.count))
    rng = np.random.default_rng(0)
    n = 1_000_000
    pick = rng.integers(0, len(xb), n - len(xb))
    flips = np.packbits(rng.random((len(pick), xb.shape[1] * 8)) < 0.08, axis=1)
    big = np.concatenate([xb, xb[pick] ^ flips])                # (1M, 64)
    big_labels = np.concatenate([labels, labels[pick]])
    big_sources = sources + [sources[i] for i in pick]          # a flipped code shows its original image
    record = load(model).record()
    # ivf with 1,024 lists (faiss trains on 256 per list): the default ivf would have 4,000 lists for
    # 1M items, whose k-means over 512-bit codes takes more than 10 minutes on 2 cores.
    for kind, index_type in (("flat", "flat"), ("ivf", "BIVF1024")):
        folder = out / f"mnist-1M-{kind}"
        if not (folder / "meta.json").exists():
            t0 = time.perf_counter()
            index = FaissIndex.create(str(folder), IndexInfo(bits=base.bits, model=record, index_type=index_type,
                                                             datasets=dict(base.info.datasets)))
            index.add(big, big_labels, big_sources)
            index.save()
            print(f"built {folder} in {time.perf_counter() - t0:.0f} s", flush=True)
        found[f"1M {kind}"] = folder
    return found


def query_bodies(data_dir: str, n: int = 200) -> tuple[list[bytes], bytes]:
    """Multipart bodies, each one real MNIST test image as PNG; and the boundary."""
    import io

    from PIL import Image

    from hashing.images.datasets import load_dataset

    test = load_dataset("mnist", "test", data_dir)
    boundary = b"hashingbenchmarkboundary"
    bodies = []
    for i in range(n):
        png = io.BytesIO()
        Image.fromarray(test.images[i]).save(png, "PNG")
        bodies.append(b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; filename="q%d.png"\r\n'
                      b"Content-Type: image/png\r\n\r\n" % i + png.getvalue() + b"\r\n--" + boundary + b"--\r\n")
    return bodies, boundary


async def client(port: int, bodies: list[bytes], boundary: bytes, stop: float, budget: list[int], out: list):
    """One keep-alive connection posting uploads back to back until `stop` or the shared budget runs out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = int.from_bytes(os.urandom(2), "little")
    try:
        while time.perf_counter() < stop and budget[0] > 0:
            budget[0] -= 1
            body = bodies[i % len(bodies)]
            i += 1
            head = (b"POST /search?k=10 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary="
                    + boundary + b"\r\nContent-Length: %d\r\n\r\n" % len(body))
            t0 = time.perf_counter()
            writer.write(head + body)
            status_line = await reader.readline()
            headers = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", headers).group(1))
            payload = await reader.readexactly(length)
            ms = (time.perf_counter() - t0) * 1e3
            ok = status_line.split()[1] == b"200" and payload.startswith(b'[{"image"')
            stages = {k.decode(): float(v) for k, v in TIMING.findall(headers)}
            batch = BATCH.search(headers)
            stages["batch"] = float(batch.group(1)) if batch else 1.0
            out.append((ms, ok, stages))
    finally:
        writer.close()


def load_run(port: int, clients: int, seconds: float, bodies, boundary, max_requests: int) -> dict:
    async def main():
        out: list = []
        budget = [max_requests]
        t0 = time.perf_counter()
        await asyncio.gather(*(client(port, bodies, boundary, t0 + seconds, budget, out) for _ in range(clients)))
        return out, time.perf_counter() - t0

    out, wall = asyncio.run(main())
    ms = np.array([o[0] for o in out])
    stages = {k: float(np.mean([o[2].get(k, 0.0) for o in out])) for k in ("decode", "queue", "encode", "search",
                                                                           "batch")}
    return {"clients": clients, "requests": len(out), "req/s": len(out) / wall,
            "p50 ms": float(np.percentile(ms, 50)), "p95 ms": float(np.percentile(ms, 95)),
            "p99 ms": float(np.percentile(ms, 99)), "errors": int(sum(not o[1] for o in out)),
            **{f"{k} ms": v for k, v in stages.items() if k != "batch"}, "mean batch": stages["batch"]}


def start_server(index: Path, env: dict | None = None) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen([sys.executable, "-m", "hashing", "serve", "--index", str(index), "--port", "0"],
                         stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    line = p.stdout.readline()
    if not line.startswith("serving"):
        p.kill()
        raise RuntimeError(f"the server did not start: {line}")
    return p, int(re.search(r":(\d+)/", line).group(1))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cli_seconds(index: Path, image: Path, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "hashing", "query", str(image), "--index", str(index), "--json"],
                       check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="runs/mnist")
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--max-requests", type=int, default=100_000)
    p.add_argument("--sizes", default="18k,1M")
    p.add_argument("--batching", action="store_true", help="also run C=8 with batching off (HASHING_MAX_BATCH=1)")
    p.add_argument("--soak", type=float, default=0, help="seconds of 8 clients against 1M ivf, sampling memory")
    p.add_argument("--out", default="benchmarks/out/serve")
    a = p.parse_args()
    out = Path(a.out)
    indexes = build_indexes(a.model, a.data_dir, out, a.sizes.split(","))
    bodies, boundary = query_bodies(a.data_dir)
    image = out / "q0.png"
    image.write_bytes(bodies[0].split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0])
    rows, cli = [], []
    print(f"machine: {machine()}", flush=True)
    for name, folder in indexes.items():
        server, port = start_server(folder)
        try:
            load_run(port, 4, 2, bodies, boundary, 2000)                       # warm-up: first requests, caches
            for c in [int(x) for x in a.clients.split(",")]:
                r = {"index": name, **load_run(port, c, a.seconds, bodies, boundary, a.max_requests)}
                rows.append(r)
                print(json.dumps(r), flush=True)
            rss = rss_mb(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait()
        if a.batching and name == "18k flat":
            server, port = start_server(folder, {"HASHING_MAX_BATCH": "1"})
            try:
                load_run(port, 4, 2, bodies, boundary, 2000)
                r = {"index": name + " (no batching)", **load_run(port, 8, a.seconds, bodies, boundary, a.max_requests)}
                rows.append(r)
                print(json.dumps(r), flush=True)
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait()
        cli.append({"index": name, "hashing query (s)": cli_seconds(folder, image), "server RSS MB": rss})
        print(json.dumps(cli[-1]), flush=True)
    cols = ["index", "clients", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "decode ms",
            "queue ms", "encode ms", "search ms", "mean batch"]
    text = [f"machine: {machine()}; {a.seconds:g} s per row; command: python {' '.join(sys.argv)}", "",
            markdown_table(rows, cols), "", markdown_table(cli, ["index", "hashing query (s)", "server RSS MB"])]
    if a.soak and "1M ivf" in indexes:
        server, port = start_server(indexes["1M ivf"])
        samples = []
        try:
            t_end = time.perf_counter() + a.soak
            total = {"requests": 0, "errors": 0}
            while time.perf_counter() < t_end:
                r = load_run(port, 8, min(10.0, t_end - time.perf_counter()), bodies, boundary, a.max_requests)
                total["requests"] += r["requests"]
                total["errors"] += r["errors"]
                samples.append(rss_mb(server.pid))
                print(f"soak {len(samples) * 10:>4} s: RSS {samples[-1]:.0f} MB, {r['req/s']:.0f} req/s", flush=True)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait()
        text += ["", f"soak: {a.soak:g} s, 8 clients, 1M ivf: {total['requests']} requests, {total['errors']} errors; "
                 f"server RSS first {samples[0]:.0f} MB, after 1 min {samples[min(5, len(samples) - 1)]:.0f} MB, "
                 f"last {samples[-1]:.0f} MB, max {max(samples):.0f} MB"]
    report = "\n".join(text)
    print(report)
    (out / "serve.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
