"""Start a real Milvus standalone server on this machine (no Docker), for the tests and benchmarks.

    python benchmarks/milvus_server.py [--data DIR]     # prints its URI, runs until Ctrl-C

PyPI's `milvus` package (the extra `pip install '.[milvus-server]'`) ships Milvus 2.3.5 standalone
with an embedded etcd and local storage: the same gRPC protocol and server-side behaviour as a
cluster. `milvus-server` binds a fixed default port for each of its ten services unless told
otherwise, so every port is chosen free here. It does not stop on SIGTERM within 10 s, so it
runs in its own process group and `stop()` kills the whole group (SIGKILL): nothing is left
running, whatever happened.

Its internal clocks are set faster than Milvus's defaults (QUICK): a flush answers in about 0.5 s
instead of 2.5 to 3 s, a Strong read waits for a 50 ms time tick instead of a 200 ms one, and a load
is seen a little sooner. A client sees the same behaviour, sooner; `settings={}` keeps the defaults.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Milvus settings (config keys, as `milvus-server --extra-config KEY=VALUE` takes them) that make it answer sooner.
QUICK = {
    # A flush waits until every segment allocation it seals has expired: 2000 ms by default. An allocation
    # expires after the end timestamp of the insert it was made for, and a segment is flushed only once its
    # channel's time tick passed that expiry (so after every message of the insert), whatever the value.
    "dataCoord.segment.assignmentExpiration": 200,
    "proxy.timeTickInterval": 50,            # ms (200): how far a Strong read may wait for the time tick
    "queryCoord.checkInterval": 200,         # ms (1000): the load checkers
    "queryCoord.distPullInterval": 200,      # ms (500): query nodes' segment distribution
}

PORTS = ("etcd-port", "root-coord-port", "proxy-port", "proxy-internal-port", "query-coord-port", "query-node-port",
         "index-coord-port", "index-node-port", "data-coord-port", "data-node-port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MilvusServer:
    """One milvus-server process group with its data in `data` (a temporary folder by default). With
    `auth`, the server requires a user: its built-in root (`token`: "root:Milvus"). `settings`: Milvus
    config keys and values (default QUICK; {} for Milvus's own defaults)."""

    def __init__(self, data: str | os.PathLike | None = None, auth: bool = False, settings: dict | None = None):
        self.own_data = data is None
        self.auth = auth
        self.settings = dict(QUICK if settings is None else settings)
        self.token = "root:Milvus" if auth else ""
        self.data = Path(tempfile.mkdtemp(prefix="milvus-")) if data is None else Path(data)
        self.ports = {name: free_port() for name in PORTS}
        self.uri = f"http://127.0.0.1:{self.ports['proxy-port']}"
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def executable() -> str | None:
        found = shutil.which("milvus-server")
        if found is None and (Path(sys.executable).parent / "milvus-server").exists():
            found = str(Path(sys.executable).parent / "milvus-server")
        return found

    def start(self, timeout: float = 180.0) -> "MilvusServer":
        """Start it and wait until a client can list collections; RuntimeError (with its log's tail) if
        it does not come up."""
        exe = self.executable()
        if exe is None:
            raise RuntimeError("milvus-server is not installed (pip install '.[milvus-server]')")
        self.data.mkdir(parents=True, exist_ok=True)
        args = [exe, "--data", str(self.data)] + [a for k, v in self.ports.items() for a in (f"--{k}", str(v))]
        if self.auth:
            args += ["--authorization-enabled", "true"]
        for key, value in self.settings.items():
            args += ["--extra-config", f"{key}={value}"]
        self.log = self.data / "server.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"milvus-server exited with {self.proc.returncode}: {self.tail()}")
            if self.ready():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"milvus-server did not answer within {timeout:.0f} s: {self.tail()}")
            time.sleep(0.5)

    def ready(self) -> bool:
        import logging

        logging.disable(logging.CRITICAL)               # pymilvus logs every refused connection
        try:
            from pymilvus import MilvusClient

            client = MilvusClient(uri=self.uri, timeout=2, token=self.token)
            client.list_collections()
            client.close()
            return True
        except Exception:                               # noqa: BLE001 - not up yet
            return False
        finally:
            logging.disable(logging.NOTSET)

    def tail(self, n: int = 800) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:].strip().replace("\n", " | ")
        except OSError:
            return "(no log)"

    def pids(self) -> list[int]:
        """The server's processes (its group), for memory measurements."""
        if self.proc is None:
            return []
        out = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    if os.getpgid(int(p.name)) == self.proc.pid:
                        out.append(int(p.name))
                except OSError:
                    continue
        return out

    def stop(self) -> None:
        """Kill the whole process group for sure, then remove a temporary data folder."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(30)
            self.proc = None
        if self.own_data:
            shutil.rmtree(self.data, ignore_errors=True)

    def __enter__(self) -> "MilvusServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="data folder (default: a temporary one, removed on exit)")
    a = p.parse_args()
    with MilvusServer(a.data) as server:
        print(f"Milvus {server.uri} (data in {server.data}); Ctrl-C stops it", flush=True)
        try:
            while server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
