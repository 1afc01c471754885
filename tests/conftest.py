import contextlib

import numpy as np

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def image_cache(tmp_path_factory):
    """Decoded-folder caches go to a temporary folder, for this process and the CLIs it starts."""
    import os

    os.environ["HASHING_CACHE"] = str(tmp_path_factory.mktemp("image-cache"))
    return os.environ["HASHING_CACHE"]


def write_digit_folder(root, colour: bool = False, random_sizes: bool = False, limit: int | None = None,
                       seed: int = 0, suffix: str = ".png"):
    """scikit-learn's digits as an ImageFolder tree root/{train,test}/<digit name>/<i>.png.

    colour: each digit gets a random foreground and background colour (so hue carries no
    label); random_sizes: each file is resized to a random width and height in 20..90 (so
    the resize path is really exercised). Returns (root, {split: (N,) labels in file order})."""
    from pathlib import Path

    from PIL import Image

    from hashing.images.datasets import load_dataset

    root = Path(root)
    rng = np.random.default_rng(seed)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for split in ("train", "test"):
        ds = load_dataset("digits", split).head(limit)
        for i, (im, label) in enumerate(zip(ds.images, ds.labels)):
            folder = root / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            if colour:
                fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
                a = im[..., None].astype(np.float32) / 255
                arr = np.clip(a * fg + (1 - a) * bg, 0, 255).astype(np.uint8)           # (28, 28, 3)
                pic = Image.fromarray(arr)
            else:
                pic = Image.fromarray(im)
            if random_sizes:
                pic = pic.resize((int(rng.integers(20, 91)), int(rng.integers(20, 91))), Image.BILINEAR)
            pic.save(folder / f"{i:05d}{suffix}")
    return root


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A small model trained briefly on scikit-learn's digits, shared by the tests that need one."""
    from hashing.train.loop import train_on

    out = tmp_path_factory.mktemp("runs") / "digits64"
    train_on("default", out, "digits", progress=False, bits=64, epochs=3, seed=0)   # what `hashing train` runs
    return out


@pytest.fixture(scope="session")
def copies_run(tmp_path_factory):
    """A copies-recipe model on scikit-learn's digits (3 epochs; calibrated as `hashing train` does),
    shared by tests/test_copies.py and tests/test_duplicates.py."""
    from hashing.train.loop import train_on

    out = tmp_path_factory.mktemp("runs") / "digits-copies"
    train_on("copies", out, "digits", progress=False, bits=64, epochs=3, seed=0)
    return out


@pytest.fixture(scope="session")
def digits_index(digits_run, tmp_path_factory):
    from hashing.workflows.index import build_index

    out = tmp_path_factory.mktemp("idx") / "digits"
    build_index(digits_run, str(out), dataset="digits", split="train", progress=False)
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def run_hashing(*args, **kwargs):
    """The real console script (as a user runs it): (exit code, stdout, stderr)."""
    import shutil
    import subprocess
    import sys

    cmd = [shutil.which("hashing")] if shutil.which("hashing") else [sys.executable, "-m", "hashing"]
    p = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, **kwargs)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture
def hashing_cli():
    return run_hashing


@contextlib.contextmanager
def small_tmpfs(tmp_path, size: str):
    """A tmpfs of `size` (e.g. "1m") under tmp_path, for full-disk tests (root only; skipped where
    mounting is not allowed), unmounted afterwards."""
    import os
    import subprocess

    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount permission)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def error_of(r, status: int) -> str:
    """Assert an HTTP response of the service is `status` with one line of JSON `{"detail"}`; that line."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str), body
    assert "\n" not in body["detail"] and "Traceback" not in body["detail"]
    return body["detail"]


def one_line_error(code: int, err: str) -> str:
    """Assert the user saw one `Error:` line (click's usage errors add a usage hint) and a non-zero exit."""
    assert code != 0, err
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines and lines[-1].startswith("Error") and sum(x.startswith("Error") for x in lines) == 1, err
    assert len(lines) == 1 or lines[0].startswith("Usage"), err
    return lines[-1]


class Server:
    """`hashing serve ... --port 0` as a real process: its URL once it listens; stop() sends SIGTERM."""

    def __init__(self, *args, env: dict | None = None, timeout: float = 120):
        import os
        import subprocess
        import sys
        import threading

        self.proc = subprocess.Popen([sys.executable, "-m", "hashing", "serve", *map(str, args), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.url = None
        found = threading.Event()

        def read():
            line = self.proc.stdout.readline()
            if line.startswith("serving"):
                self.url = line.split(" at ", 1)[1].split()[0].rstrip("/")
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(timeout) or self.url is None:
            self.proc.kill()
            raise RuntimeError(f"hashing serve did not start: {self.proc.stderr.read()}")

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM, then (exit code, rest of stdout, stderr)."""
        import signal

        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.stop()


@pytest.fixture
def serve_process():
    return Server


def in_ci() -> bool:
    """Whether this run is CI's (CI=true, as GitHub Actions, GitLab and most others set it)."""
    import os

    return os.environ.get("CI") == "true"


def skip_or_fail(reason: str):
    """Skip, saying why, where a test cannot run here (no Chromium, no Milvus server); in CI fail
    instead: CI installs all of it, so a green run there must mean the page and the server were tested."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: in CI this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def importorskip_or_fail(module: str):
    """pytest.importorskip, under skip_or_fail's rule: a missing optional package fails in CI."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        skip_or_fail(f"could not import {module!r}: {e}")


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """A real Milvus standalone server (PyPI `milvus`, the milvus-server extra) on free ports in a temporary
    folder, with authentication on (a client needs `server.token`, root:Milvus, in HASHING_MILVUS_TOKEN),
    started once for the session (about 10 s) and killed, process group and all, at its end. Skips,
    saying why, only where it cannot start (not installed, or it fails here), and fails there in CI."""
    import sys
    from pathlib import Path

    importorskip_or_fail("pymilvus")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from milvus_server import MilvusServer

    if MilvusServer.executable() is None:
        skip_or_fail("no milvus-server: pip install '.[milvus-server]' to run the Milvus server tests")
    server = MilvusServer(tmp_path_factory.mktemp("milvus-server"), auth=True)
    try:
        server.start()
    except RuntimeError as e:      # "milvus-server did not answer within 180 s: ..." among them
        skip_or_fail(f"the Milvus server cannot start here: {e}")
    yield server
    server.stop()
