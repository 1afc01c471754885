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
    train_on("default", out, dataset="digits", progress=False, bits=64, epochs=3, seed=0)   # what `hashing train` runs
    return out


@pytest.fixture(scope="session")
def copies_run(tmp_path_factory):
    """A copies-recipe model on scikit-learn's digits (3 epochs; calibrated as `hashing train` does),
    shared by tests/test_copies.py and tests/test_duplicates.py."""
    from hashing.train.loop import train_on

    out = tmp_path_factory.mktemp("runs") / "digits-copies"
    train_on("copies", out, dataset="digits", progress=False, bits=64, epochs=3, seed=0)
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


def run_hashing_process(*args, **kwargs):
    """The real console script (as a user runs it), in a new process: (exit code, stdout, stderr).
    kwargs go to subprocess.run (env=, cwd=, input=, timeout=). For the tests where a real process is
    what is tested (kill -9, signals, the interpreter's start-up); mark those `system`."""
    import shutil
    import subprocess
    import sys

    cmd = [shutil.which("hashing")] if shutil.which("hashing") else [sys.executable, "-m", "hashing"]
    p = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, **kwargs)
    return p.returncode, p.stdout, p.stderr


class _OutOfTime(BaseException):
    """Raised by SIGALRM in an in-process run that passes its timeout= (a BaseException: neither the
    command's error handling nor click catches it)."""


def run_hashing(*args, env: dict | None = None, cwd=None, input=None, timeout: float | None = None):
    """The `hashing` command run in this process through click's CliRunner, as the console script
    would run it: (exit code, stdout, stderr), stderr with the traceback of an uncaught exception, as
    a real process prints it. env= (a whole environment, as for subprocess.run: only its differences
    from os.environ are applied), cwd=, input= and timeout= (subprocess.TimeoutExpired) mean what they
    mean to subprocess.run. What a command changes in this process and a process exit would undo is put
    back: sys.argv (a lock holder's command line is read from it), the working folder, environment,
    warnings filters and their once-registries, signal handlers, logging, torch's threads and random
    generators, the commit-step counter of HASHING_CRASH_LOG and Milvus Lite servers left running.
    HASHING_CRASH_AT kills the process that reaches its step, so a run with it is a real process."""
    import os

    environ = dict(os.environ) if env is None else {k: str(v) for k, v in env.items()}
    if "HASHING_CRASH_AT" in environ:
        return run_hashing_process(*args, env=environ, cwd=cwd, input=input, timeout=timeout)
    changes = {k: v for k, v in environ.items() if os.environ.get(k) != v}
    changes.update({k: None for k in os.environ if k not in environ})
    argv = [str(a) for a in args]
    with _as_a_process(argv, cwd, timeout):
        from click.testing import CliRunner

        from hashing.cli.main import cli

        runner = CliRunner(capture="fd")
        result = runner.invoke(cli, argv, prog_name="hashing", env=changes, input=input)
    err = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        err += "".join(traceback.format_exception(*result.exc_info))
    return result.exit_code, result.stdout, err


@contextlib.contextmanager
def _as_a_process(argv: list[str], cwd, timeout: float | None):
    """Around one in-process run: a process's fresh state on the way in, the test's own on the way out."""
    import logging
    import os
    import random
    import signal
    import subprocess
    import sys
    import warnings

    from hashing.core import atomic

    saved_argv, saved_cwd, saved_steps, saved_env = sys.argv, os.getcwd(), atomic._steps, dict(os.environ)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM)}
    root = logging.getLogger()
    loggers = {name: (lg.level, list(lg.handlers), lg.propagate, lg.disabled)
               for name, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    root_state, disabled = (root.level, list(root.handlers)), logging.root.manager.disable
    threads, torch_rng, py_rng, np_rng = torch.get_num_threads(), torch.get_rng_state(), random.getstate(), np.random.get_state()
    lite = sys.modules.get("hashing.indexes.milvus.lite")
    lite_before = set(lite._scratch) if lite else set()

    def out_of_time(*_):
        raise _OutOfTime
    sys.argv = ["hashing", *argv]
    atomic._steps = 0
    try:
        if cwd is not None:
            os.chdir(cwd)
        if timeout is not None:
            signal.signal(signal.SIGALRM, out_of_time)
            signal.setitimer(signal.ITIMER_REAL, timeout)
        with warnings.catch_warnings():
            # a new interpreter's filters (no -W, no PYTHONWARNINGS), and nothing "already shown"
            warnings.resetwarnings()
            for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning, DeprecationWarning):
                warnings.filterwarnings("ignore", category=category)
            warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
            for option in sys.warnoptions:
                warnings._setoption(option)
            try:
                yield
            except _OutOfTime:
                raise subprocess.TimeoutExpired(["hashing", *argv], timeout) from None
    finally:
        if timeout is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for s, h in handlers.items():
            if h is not None:                                   # None: not set from Python
                signal.signal(s, h)
        sys.argv, atomic._steps = saved_argv, saved_steps
        os.chdir(saved_cwd)
        for name in set(os.environ) - set(saved_env):         # what the command set for itself (os.environ.setdefault)
            del os.environ[name]
        os.environ.update({k: v for k, v in saved_env.items() if os.environ.get(k) != v})
        lite = sys.modules.get("hashing.indexes.milvus.lite")
        for path in set(lite._scratch) - lite_before if lite else ():
            lite.stop_server(path)                          # what the process's exit (atexit) would stop
        logging.disable(disabled)
        root.setLevel(root_state[0])
        root.handlers[:] = root_state[1]
        for name, lg in list(logging.Logger.manager.loggerDict.items()):
            if isinstance(lg, logging.Logger) and name in loggers:
                level, lg.handlers[:], lg.propagate, lg.disabled = loggers[name]
                lg.setLevel(level)
        torch.set_num_threads(threads)
        torch.set_rng_state(torch_rng)
        random.setstate(py_rng)
        np.random.set_state(np_rng)


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
