"""Memory of `hashing serve` under large uploads, and whether it still answers meanwhile.

    python benchmarks/serve_memory.py [--index IDX] [--uploads 8] [--sides 9000,6000] [--out FILE]

For each side S: a real server process (read-only, over IDX, or over a small digits index this
script builds) gets `--uploads` concurrent POST /search of an S x S RGBA PNG (smooth
gradients: a few MB, like the hostile case), while a second client sends small queries. Reported: the
statuses, the server's peak RSS (VmHWM) and its RSS after the burst, and the small queries'
latency during the burst. The service refuses images over --max-megapixels (40) from their
header; images over LARGE_PIXELS are decoded one at a time (hashing/serve/app.py).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def rss_kb(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def big_png(side: int) -> bytes:
    from PIL import Image

    x = np.linspace(0, 255, side, dtype=np.float32)
    img = np.stack([np.add.outer(x, x) / 2, np.add.outer(x, x[::-1]) / 2, np.add.outer(x[::-1], x) / 2], -1)
    alpha = np.full((side, side, 1), 255, np.float32)
    alpha[side // 4:3 * side // 4] = 128                        # RGBA: the most memory per pixel to decode
    img = np.concatenate([img, alpha], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def small_png() -> bytes:
    from PIL import Image

    from hashing.images.datasets import load_dataset

    buf = io.BytesIO()
    Image.fromarray(load_dataset("digits", "test").images[0]).save(buf, "PNG")
    return buf.getvalue()


def start(index: str) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-m", "hashing", "serve", "--index", index, "--port", "0",
                          "--max-upload", "200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("serving"):
        p.kill()
        raise SystemExit(f"the server did not start: {p.stderr.read()}")
    return p, line.split(" at ", 1)[1].split()[0].rstrip("/")


def burst(url: str, pid: int, blob: bytes, n: int, small: bytes) -> dict:
    import httpx

    latencies, stop = [], threading.Event()

    def small_queries():
        with httpx.Client(timeout=120) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                r = c.post(f"{url}/search", files=[("image", ("q.png", small, "image/png"))], params={"k": 5})
                assert r.status_code == 200, r.text
                latencies.append(time.perf_counter() - t0)

    def upload(_):
        with httpx.Client(timeout=300) as c:
            return c.post(f"{url}/search", files=[("image", ("big.png", blob, "image/png"))], params={"k": 5})

    t = threading.Thread(target=small_queries)
    t.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(upload, range(n)))
    wall = time.perf_counter() - t0
    stop.set()
    t.join()
    time.sleep(1.0)
    return {"statuses": sorted({a.status_code for a in answers}), "detail": answers[0].json()
            if answers[0].status_code != 200 else "", "wall_s": wall, "peak_mb": rss_kb(pid, "VmHWM") / 1024,
            "after_mb": rss_kb(pid, "VmRSS") / 1024, "small_n": len(latencies),
            "small_p50_ms": 1e3 * float(np.median(latencies)) if latencies else float("nan"),
            "small_max_ms": 1e3 * max(latencies) if latencies else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default=None)
    ap.add_argument("--uploads", type=int, default=8)
    ap.add_argument("--sides", default="9000,4000")
    ap.add_argument("--out", default="benchmarks/results/serve_memory.md")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="serve-memory-"))
    index = a.index
    if index is None:
        from hashing.workflows.index import build_index
        from hashing.train.loop import train_on

        train_on("default", work / "run", dataset="digits", progress=False, bits=64, epochs=1, seed=0)
        index = str(work / "idx")
        build_index(work / "run", index, dataset="digits", split="train", progress=False)
    small = small_png()
    rows = []
    for side in (int(s) for s in a.sides.split(",")):
        blob = big_png(side)
        proc, url = start(index)
        try:
            base = rss_kb(proc.pid, "VmRSS") / 1024
            r = burst(url, proc.pid, blob, a.uploads, small)
        finally:
            proc.terminate()
            proc.wait(30)
        rows.append((side, len(blob) / 1e6, base, r))
        print(side, r, flush=True)
    lines = ["# Service memory under large uploads (benchmarks/serve_memory.py)", "",
             f"`python benchmarks/serve_memory.py --uploads {a.uploads} --sides {a.sides}` on {platform.node()} "
             f"({os.cpu_count()} cores, {platform.processor() or platform.machine()}), "
             f"{time.strftime('%Y-%m-%d')}; a read-only server over a 1,437-item digits index, default limits "
             f"(--max-megapixels 16; images over 2 megapixels decoded one at a time), --max-upload 200.", "",
             f"| image | PNG MB | uploads at once | statuses | RSS before MB | peak RSS MB | RSS after MB | "
             f"small queries during | their p50 / max ms |", "|---|---|---|---|---|---|---|---|---|"]
    for side, mb, base, r in rows:
        lines.append(f"| {side} x {side} | {mb:.1f} | {a.uploads} | {r['statuses']} | {base:.0f} | "
                     f"{r['peak_mb']:.0f} | {r['after_mb']:.0f} | {r['small_n']} | "
                     f"{r['small_p50_ms']:.0f} / {r['small_max_ms']:.0f} |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
