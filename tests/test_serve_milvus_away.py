"""`hashing serve` over a Milvus server that goes away and comes back: every request is a 503 with a
one-line reason within seconds (not a hang behind pymilvus's minutes of retries), /health answers
within a second throughout, and the service reconnects by itself once the server answers again,
with no error in between.

The server goes away behind a TCP forwarder: stopping it refuses new connections and drops the open
ones, as a kill -9 of the server does, and starting it again on the same port is the server's return.
(A second milvus-server cannot run beside the session's: both bind the embedded etcd's fixed ports
2379 and 2380.)

The service is a real process, stopped with SIGTERM as conftest.Server stops one, but forked by
test_crash.ForkServer: no 5 to 8 s of imports before it listens."""

import contextlib
import socket
import struct
import threading
import time
from urllib.parse import urlsplit

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from test_crash import shared_fork_server  # noqa: E402

pytestmark = pytest.mark.system


class Service:
    """`hashing serve ARGS --port 0`, forked: its URL once it listens; stop() sends SIGTERM and gives
    (exit code, the rest of stdout, stderr)."""

    def __init__(self, *args, timeout: float = 120):
        import re

        self.job = shared_fork_server().start("serve", *args, "--port", "0")
        deadline = time.monotonic() + timeout
        while not (found := re.search(r"^serving .*? at (\S+)", self.job.stdout_so_far(), re.M)):
            if self.job.poll() is not None or time.monotonic() > deadline:
                self.job.kill()
                raise RuntimeError(f"hashing serve did not start: {self.job.output()[2]}")
            time.sleep(0.05)
        self.url = found.group(1).rstrip("/")

    def stop(self) -> tuple[int, str, str]:
        import signal

        self.job.send_signal(signal.SIGTERM)
        self.job.wait(60)
        return self.job.output()

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc) -> None:
        if self.job.poll() is None:
            self.stop()


class Forwarder:
    """127.0.0.1:port -> target, one thread pair per connection; stop() and start() again on one port."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.listener: socket.socket | None = None
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()

    def start(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def stop(self) -> None:
        """Nothing listens on the port any more, and every open connection is reset."""
        with self.lock:
            socks, self.open = [self.listener, *self.open], set()
        for s in socks:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))   # RST, as a dead peer
                s.shutdown(socket.SHUT_RDWR)                                                # wakes its thread
            s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def test_a_service_answers_503_at_once_while_its_milvus_server_is_away_and_reconnects(
        milvus_server, digits_run, monkeypatch, tmp_path):
    from PIL import Image

    from hashing.images.datasets import load_dataset
    from hashing.workflows.index import build_index

    monkeypatch.setenv("HASHING_MILVUS_TOKEN", milvus_server.token)
    build_index(digits_run, milvus_server.uri, dataset="digits", split="test", collection="away", progress=False)
    query = tmp_path / "q.png"
    Image.fromarray(load_dataset("digits", "test").images[3]).save(query)
    image = [("image", ("q.png", query.read_bytes(), "image/png"))]
    target = urlsplit(milvus_server.uri)
    forwarder = Forwarder((target.hostname, target.port))
    forwarder.start()
    try:
        with Service("--index", f"http://127.0.0.1:{forwarder.port}", "--collection", "away") as server, \
                httpx.Client(base_url=server.url, timeout=30) as c:
            want = c.post("/search", files=image, params={"k": 5})
            assert want.status_code == 200, want.text
            forwarder.stop()                                                   # the server goes away

            t0 = time.monotonic()
            r = c.post("/search", files=image, params={"k": 5})
            took = time.monotonic() - t0
            assert r.status_code == 503 and took < 10, (r.status_code, r.text, took)
            for _ in range(3):
                t0 = time.monotonic()
                h = c.get("/health")
                assert time.monotonic() - t0 < 1.0
                assert h.status_code == 503 and h.json()["status"] == "unavailable", h.text
                assert h.json()["items"] == 360 and "\n" not in h.json()["detail"]
                t0 = time.monotonic()
                r = c.post("/search", files=image, params={"k": 5})
                assert r.status_code == 503 and time.monotonic() - t0 < 1.0
                detail = r.json()["detail"]
                assert set(r.json()) == {"detail"} and "\n" not in detail and "Milvus at" in detail, detail
                assert "reconnects" in detail and r.headers["retry-after"]
                assert c.get("/items/3").status_code == 503
                time.sleep(0.5)

            forwarder.start()                                                  # and comes back
            statuses, deadline = [], time.monotonic() + 60
            while time.monotonic() < deadline:
                r = c.post("/search", files=image, params={"k": 5})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    break
                time.sleep(0.2)
            assert statuses[-1] == 200 and set(statuses) <= {200, 503}, statuses
            assert r.json() == want.json()
            for _ in range(5):                                                 # no stale connection's 400 after it
                r = c.post("/search", files=image, params={"k": 5})
                assert r.status_code == 200 and r.json() == want.json(), r.text
            assert c.get("/health").json()["status"] == "ok"
            assert c.get("/items/3").json()["source"] == "digits/test/3"
            code, _, err = server.stop()
        assert code == 0 and "Traceback" not in err, err
    finally:
        forwarder.stop()
