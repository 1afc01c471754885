"""SIGKILL `hashing index` (FAISS, Milvus Lite; rebuild and append), `hashing remove` and `hashing train`
right after every file-system change of their commit, and at a delay: the artefact is always wholly the
old version or wholly the new one (benchmarks/crash.py does the work).

Every killed command is a real process that a real SIGKILL stops, but not a new interpreter: it is a fork
of `ForkServer`, one process that imported torch, FAISS, pymilvus and the command once (a new interpreter
spends 3 to 7 s importing them, most of a kill's cost here). test_hostile.py and test_milvus_server.py
kill their commands the same way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

CRASH = Path(__file__).resolve().parents[1] / "benchmarks" / "crash.py"
sys.path.insert(0, str(CRASH.parent))

import crash  # noqa: E402
from crash import SCENARIOS  # noqa: E402

pytestmark = pytest.mark.system


# ---- a fork server: real processes of the `hashing` command without an interpreter start each ---------------

ZYGOTE = r'''
import atexit, importlib, json, os, sys, time, traceback

before = dict(os.environ)
import numpy, torch, PIL.Image
import hashing.cli.main
# what the commands import (torch._dynamo: the optimizer's first step, 1.7 s), none of which starts a thread
for name in ("faiss", "pymilvus", "milvus_lite.server_manager", "torch._dynamo", "hashing.workflows.index",
             "hashing.workflows.query", "hashing.workflows.sync", "hashing.workflows.inventory",
             "hashing.workflows.encode", "hashing.train.loop", "hashing.indexes.milvus.client",
             "hashing.indexes.milvus.server", "hashing.indexes.milvus.lite", "uvicorn", "fastapi",
             "hashing.serve.app"):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
# what the imports put into the environment (a new process's imports would set it too)
added = {k: v for k, v in os.environ.items() if before.get(k) != v}
requests, replies = os.fdopen(os.dup(0), "r"), os.fdopen(os.dup(1), "w")
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)
os.dup2(null, 1)


def child(req):
    code = 1
    try:
        requests.close()
        replies.close()
        if req["hostname"]:                 # another machine: a UTS namespace of its own, as `unshare --uts`
            import ctypes
            import socket

            if ctypes.CDLL(None, use_errno=True).unshare(0x04000000) != 0:      # CLONE_NEWUTS
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUTS)")
            socket.sethostname(req["hostname"])
        os.environ.clear()
        os.environ.update(added)
        os.environ.update(req["env"])
        if "OMP_NUM_THREADS" in req["env"]:
            torch.set_num_threads(int(req["env"]["OMP_NUM_THREADS"]))
        os.chdir(req["cwd"])
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        sys.argv = ["hashing", *req["args"]]
        try:
            hashing.cli.main.main()
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        atexit._run_exitfuncs()             # what the interpreter's exit runs (Milvus Lite's server stops)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


print("ready", file=replies, flush=True)
for line in requests:
    req = json.loads(line)
    if req["op"] == "run":
        pid = os.fork()
        if pid == 0:
            child(req)
        reply = pid
    else:                                   # wait: the exit code, or None at the timeout
        deadline, reply = time.monotonic() + (req["timeout"] if req["timeout"] is not None else 1e9), None
        while True:
            done, status = os.waitpid(req["pid"], os.WNOHANG)
            if done:
                reply = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
    print(json.dumps(reply), file=replies, flush=True)
'''


class Forked:
    """One command forked by a ForkServer: pid, wait(), kill(), and its output once it ended."""

    def __init__(self, server: "ForkServer", pid: int, args: list[str], out: str, err: str):
        self.server, self.pid, self.args, self._out, self._err = server, pid, args, out, err
        self.returncode: int | None = None
        self._texts: tuple[str, str] | None = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server._ask({"op": "wait", "pid": self.pid, "timeout": timeout})
            if self.returncode is None:
                raise subprocess.TimeoutExpired(["hashing", *self.args], timeout)
        return self.returncode

    def poll(self) -> int | None:
        """The exit code if it ended, else None."""
        try:
            return self.wait(0)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def stdout_so_far(self) -> str:
        return Path(self._out).read_text(errors="replace")

    def output(self) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) after it ended (-9: killed)."""
        code = self.wait()
        if self._texts is None:
            self._texts = tuple(Path(p).read_text(errors="replace") for p in (self._out, self._err))
            for p in (self._out, self._err):
                os.unlink(p)
        return code, *self._texts


class ForkServer:
    """`hashing ARGS` as real processes forked from one that imported everything once.

    run() is subprocess.run's counterpart: (exit code, stdout, stderr), -9 for a SIGKILL (at a
    HASHING_CRASH_AT step, or kill_after seconds after the start); start() gives a Forked to wait
    for or kill. `hostname` runs it as on another machine (a UTS namespace of its own, needs root).
    env is a whole environment, as subprocess's (default: this process's)."""

    def __init__(self, env: dict | None = None):
        self.log = tempfile.TemporaryFile("w+")          # its own errors (the commands' go to their files)
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env={**os.environ, **(env or {})})
        self.lock = threading.Lock()
        if self.proc.stdout.readline().strip() != "ready":
            self.log.seek(0)
            raise RuntimeError(f"the fork server did not start (exit code {self.proc.wait()}): "
                               f"{self.log.read()[-2000:]}")

    def _ask(self, request: dict):
        with self.lock:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            raise RuntimeError(f"the fork server is gone: {self.log.read()[-2000:]}")
        return json.loads(line)

    def start(self, *args, env: dict | None = None, cwd=None, hostname: str | None = None) -> Forked:
        args = [str(a) for a in args]
        out, err = (tempfile.mkstemp(prefix=f"hashing-{kind}-")[1] for kind in ("out", "err"))
        pid = self._ask({"op": "run", "args": args, "env": dict(os.environ if env is None else env),
                         "cwd": str(cwd or os.getcwd()), "stdout": out, "stderr": err, "hostname": hostname})
        return Forked(self, pid, args, out, err)

    def run(self, *args, env: dict | None = None, cwd=None, hostname: str | None = None,
            kill_after: float | None = None, timeout: float | None = 600) -> tuple[int, str, str]:
        job = self.start(*args, env=env, cwd=cwd, hostname=hostname)
        try:
            job.wait(kill_after if kill_after is not None else timeout)
        except subprocess.TimeoutExpired:
            job.kill()
            if kill_after is None:
                job.output()
                raise
        return job.output()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


_shared: ForkServer | None = None


def shared_fork_server() -> ForkServer:
    """One ForkServer for the whole session (started at the first use, about 5 s; closed at exit)."""
    global _shared
    if _shared is None or _shared.proc.poll() is not None:
        import atexit

        _shared = ForkServer()
        atexit.register(_shared.close)
    return _shared


@pytest.fixture
def forks():
    return shared_fork_server()


def test_a_forked_command_is_a_real_process_with_its_own_exit_code_output_and_environment(forks, tmp_path):
    """What the kill tests rely on: the fork server's commands exit, print and see their environment as
    a new `hashing` process would, and HASHING_CRASH_AT kills them at their step with a real SIGKILL."""
    code, out, err = forks.run("info", tmp_path / "nothing-here")
    assert code == 1 and out == "" and err.startswith("Error:") and "nothing-here" in err, (code, out, err)
    code, out, err = forks.run("--help")
    assert code == 0 and "Usage: hashing" in out and err == ""
    log = tmp_path / "points.log"
    run = tmp_path / "probe"
    args = ["remove", "--index", run, "0"]
    from hashing.indexes import IndexInfo, create
    import numpy as np

    index = create(str(run), IndexInfo(bits=8, model={"run_dir": "/x", "fingerprint": "f", "bits": 8}))
    index.add(np.zeros((2, 1), np.uint8), None, ["a", "b"])
    index.save()
    code, out, err = forks.run(*args, env={**os.environ, "HASHING_CRASH_LOG": str(log)})
    assert code == 0 and "removed 1 item" in out, err
    assert len(log.read_text().splitlines()) >= 3          # the step counter starts at 0 in every fork
    log.unlink()
    index = create(str(tmp_path / "again"), IndexInfo(bits=8, model={"run_dir": "/x", "fingerprint": "f", "bits": 8}))
    index.add(np.zeros((2, 1), np.uint8), None, ["a", "b"])
    index.save()
    code, _, _ = forks.run("remove", "--index", tmp_path / "again", "0",
                           env={**os.environ, "HASHING_CRASH_LOG": str(log), "HASHING_CRASH_AT": "2"})
    assert code == -signal.SIGKILL and len(log.read_text().splitlines()) == 2
    job = forks.start("train", "--dataset", "digits", "--epochs", "50", "--out", tmp_path / "long", "--quiet")
    with pytest.raises(subprocess.TimeoutExpired):
        job.wait(0.5)
    job.kill()
    assert job.output()[0] == -signal.SIGKILL


# ---- the crash scenarios ------------------------------------------------------------------------------------


# The retraining of the train scenario on the first 128 digits (two steps), not all 1,437: its commit is
# what is tested, and every kill at a step of it retrains from the start.
TRAIN_IMAGES = ["--max-images", "128"]


def run_scenario(name: str, work: Path, forks: ForkServer, monkeypatch) -> crash.Outcome:
    """crash.py's scenario `name`, its commands run by the fork server; its delayed kill at half the
    time its whole command took (mid-work, whatever the machine's speed; crash.py's fixed delays were
    chosen for a new interpreter's start-up)."""
    delays: list[float] = []
    real_crash_points = crash.crash_points

    def run_cli(args, env=None, kill_after=None):
        extra = (["--quiet"] if args[0] != "remove" else []) + (TRAIN_IMAGES if args[0] == "train" else [])
        return forks.run(*args, *extra, env={**os.environ, **(env or {})}, kill_after=kill_after)[0]

    def crash_points(args, log):
        t0 = time.monotonic()
        points = real_crash_points(args, log)
        delays.append(round((time.monotonic() - t0) / 2, 2))     # exercise() reads `delays` after this
        return points

    monkeypatch.setattr(crash, "run_cli", run_cli)
    monkeypatch.setattr(crash, "crash_points", crash_points)
    run_a, run_b = work / "model_a", work / "model_b"
    if name == "train":
        return crash.train_scenario(work, run_a, delays)
    where, options = crash.INDEX_SCENARIOS[name]
    return crash.index_scenario(name, work, run_a, run_b, crash.query_images_of(work), delays, str(work / where),
                                **options)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The two models of every scenario, trained once: crash.py's (16 bits, one epoch, seeds 0 and 1) on
    the first 300 digits (A and B need only answer differently)."""
    from hashing.train.loop import train_on

    pytest.importorskip("milvus_lite")
    work = tmp_path_factory.mktemp("crash")
    for name, seed in (("model_a", 0), ("model_b", 1)):
        train_on("default", work / name, dataset="digits", progress=False, bits=16, epochs=1, seed=seed, max_images=300)
    return work


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_kill_at_any_point_leaves_the_old_or_the_new_version(models, forks, scenario, monkeypatch):
    r = run_scenario(scenario, models, forks, monkeypatch)
    assert r.points >= 3, f"{scenario}: too few crash points seen ({r.points})"
    assert r.kills >= r.points                # every point really killed the process
    assert r.bad == [], "\n".join(r.bad)
    assert r.old > 0 and r.new > 0            # kills early and late: both outcomes are exercised
    assert r.old + r.new == r.points + 1
