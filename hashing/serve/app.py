"""`hashing serve`: the HTTP API and web page over one model and one index (FastAPI + uvicorn).

    GET  /                    the web page (hashing/serve/web/index.html; nothing from a CDN)
    GET  /health              {"status", "items", "bits", "backend", "model", ...}
    POST /search              multipart `image` files (+ ?k= or ?radius=, ?invert=) -> `hashing query --json`
    POST /search/codes        {"codes": [hex, ...], "k": K} -> the same, for clients that encode
    GET  /items/{id}          an item's id, label, class and source
    GET  /items/{id}/image    a PNG of an indexed item (?size= its longer side, at most)
    POST /items               multipart `image` files (+ `label`) -> new ids; needs the token
    DELETE /items/{id}        remove an item (its id is never given again); needs the token
    GET  /docs                the OpenAPI page (Swagger UI from the swagger-ui-bundle package)

The model and the index live in a hashing.serve.engine.Engine (one worker thread, batched);
uploads are decoded in the server's thread pool, never on the event loop. Every error is
JSON `{"detail": "one line"}` with its status: 400 an unreadable upload, 401/403 additions
without the right token, 404 an unknown id or path (any id outside int64 among them), 413 a body
over the limit, 422 a bad parameter, 503 a Milvus server that does not answer; an unexpected
failure is a 500 whose body names only its type (the traceback goes to the log, and the
connection stays open for the client's next request).
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations, which
# name classes imported inside create_app (fastapi stays out of `import hashing`).
import asyncio
import dataclasses
import contextlib
import hashlib
import hmac
import logging
import os
import socket
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Annotated

from hashing.core import validation as V
from hashing.serve.engine import Engine, Unavailable, UnknownItem
from hashing.serve.limits import MAX_IMAGES, MAX_MEGAPIXELS, MAX_UPLOAD_MB, TOKEN_ENV
from hashing.core.errors import HashingError, TooLarge, full_disk
from hashing.indexes.base import DEFAULT_K, search_terms
from hashing.workflows.query import QueryResult

WEB = Path(__file__).parent / "web"
LARGE_PIXELS = 2_000_000             # images above this are decoded one at a time (bounded memory)
THUMBNAIL_SIZES = (16, 1024)
HEALTH_WAIT = 0.5                    # seconds /health waits for the worker before it answers from what it knows
POLL = 0.25                          # seconds between a waiting request's looks at whether the server is away


def create_app(engine: Engine, *, token: str | None = None, read_only: bool = False,
               max_upload_mb: float = MAX_UPLOAD_MB, max_megapixels: float = MAX_MEGAPIXELS):
    """The FastAPI application over an open engine (which the caller closes)."""
    from fastapi import FastAPI, File, Form, Query, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from fastapi import UploadFile
    from pydantic import BaseModel
    from starlette.exceptions import HTTPException

    from hashing.images.datasets import dataset_image
    from hashing.images.reader import decode_image, give_back_memory, png_bytes, thumbnail_png

    app = FastAPI(title="hashing", version=_version(), docs_url=None, redoc_url=None,
                  description="Search images by the Hamming distance of their learned binary codes.")
    app.add_middleware(Unexpected)
    app.add_middleware(BodyLimit, limit=int(max_upload_mb * 1024 * 1024))

    # ---- errors: one line of JSON, the right status ---------------------------------------------

    @app.exception_handler(HashingError)
    async def _hashing_error(request: Request, e: HashingError):
        if isinstance(e, Unavailable):
            return JSONResponse({"detail": str(e)}, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"detail": str(e)}, status_code=413 if isinstance(e, TooLarge) else 400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        err = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path"))
        return JSONResponse({"detail": f"{where}: {err.get('msg')}" if where else str(err.get("msg"))},
                            status_code=422)

    @app.exception_handler(OSError)
    async def _os_error(request: Request, e: OSError):
        why = full_disk(e)
        if why is not None:                                # an addition on a full disk: nothing was committed
            return JSONResponse({"detail": f"{why} on the service's disk; the addition was not stored"},
                                status_code=507)
        return JSONResponse({"detail": f"internal error (OSError: {e.strerror}); see the service's log"},
                            status_code=500)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):
        return JSONResponse({"detail": f"internal error ({type(e).__name__}); see the service's log"},
                            status_code=500)

    def fail(status: int, message: str):
        return HTTPException(status, message)

    # ---- helpers ---------------------------------------------------------------------------------

    def check_search(k: int | None, radius: int | None) -> tuple[int | None, int | None]:
        k, radius = search_terms(k, radius)
        try:
            engine.check_search(k, radius)
        except HashingError as e:
            raise fail(422, str(e)) from None      # it names k and radius, as the request's fields are named
        return k, radius

    async def read_uploads(files: list[UploadFile]) -> tuple[list[bytes], list[str]]:
        if len(files) > MAX_IMAGES:
            raise fail(413, f"{len(files)} files in one request; send at most {MAX_IMAGES}")
        blobs = [await f.read() for f in files]
        return blobs, [f.filename or f"image {i}" for i, f in enumerate(files)]

    large_decode = threading.Lock()          # one large image decoded at a time; small ones never wait
    max_pixels = int(max_megapixels * 1e6)

    def decode_one(blob: bytes, name: str, invert: bool):
        gate = large_decode if pixels_of(blob) > LARGE_PIXELS else contextlib.nullcontext()
        with gate:
            try:
                return decode_image(blob, name, engine.spec, invert, max_pixels)
            finally:
                if gate is large_decode:
                    give_back_memory()

    def decode_all(blobs: list[bytes], names: list[str], invert: bool):
        import numpy as np
        import time

        t0 = time.perf_counter()
        arrays = np.stack([decode_one(b, n, invert) for b, n in zip(blobs, names)])
        return arrays, (time.perf_counter() - t0) * 1e3

    def results(names: list[str], hits) -> list[dict]:
        classes = engine.classes
        return [QueryResult(n, h, classes).to_dict() for n, h in zip(names, hits)]

    async def done(future, write: bool = False):
        """The result of an engine job. While the index's server is away (engine.down), a job the worker
        has not started is withdrawn and a read is not waited for: 503 now, not after the minutes
        pymilvus retries. A write already running is waited for: its outcome is what the client needs."""
        waiting = asyncio.wrap_future(future)
        if not engine.server:
            return await waiting
        waiting.add_done_callback(lambda f: f.cancelled() or f.exception())    # read, even when given up
        while True:
            finished, _ = await asyncio.wait({waiting}, timeout=POLL)
            if finished:
                return waiting.result()
            reason = engine.down
            if reason is not None and (future.cancel() or not write):
                raise Unavailable(reason)

    async def item(item_id: int):
        try:
            (hit,) = await done(engine.items([item_id]))
        except Unavailable:
            raise
        except HashingError as e:
            raise fail(404, str(e)) from None
        return hit

    # ---- endpoints -----------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.get("/health")
    async def health() -> dict:
        """Whether the service is up, and what it serves; within a second, whatever the worker is doing.
        503 with `"status": "unavailable"` and the reason in `detail` while the index's server is away."""
        count = engine.count
        if engine.down is None:
            try:        # after any version another writer committed, unless the worker is busy
                future = asyncio.wrap_future(engine.status())
                finished, _ = await asyncio.wait({future}, timeout=HEALTH_WAIT)
                if finished:
                    count = future.result()
            except Unavailable:
                pass
        rec = engine.index.info.model
        body = {"status": "ok", "items": count, "bits": engine.bits, "backend": engine.backend,
                "model": rec.run_dir, "fingerprint": rec.fingerprint,
                "image": dataclasses.asdict(engine.spec),
                "classes": engine.classes, "additions": "off" if read_only or not token or not engine.writer else "token",
                "k": DEFAULT_K}                                  # the neighbours a search without k or radius gets
        reason = engine.down
        if reason is not None:
            return JSONResponse({**body, "status": "unavailable", "detail": reason}, status_code=503,
                                headers={"Retry-After": "1"})
        return body

    @app.post("/search")
    async def search(image: Annotated[list[UploadFile], File(description="one or more image files")],
                     k: Annotated[int | None, Query(description=f"neighbours per image (default {DEFAULT_K})")] = None,
                     radius: Annotated[int | None, Query(description="every item within this Hamming distance, "
                                                                     "instead of k")] = None,
                     invert: Annotated[bool, Query(description="invert gray levels first")] = False):
        """The nearest indexed items of each uploaded image: the JSON of `hashing query --json`."""
        k, radius = check_search(k, radius)
        blobs, names = await read_uploads(image)
        arrays, decode_ms = await run_in_threadpool(decode_all, blobs, names, invert)
        hits, timing = await done(engine.search(arrays=arrays, k=k, radius=radius))
        timing.decode = decode_ms
        return JSONResponse(results(names, hits), headers={"Server-Timing": timing.header()})

    class CodesQuery(BaseModel):
        codes: list[str]
        k: int | None = None
        radius: int | None = None

    @app.post("/search/codes")
    async def search_codes(body: CodesQuery):
        """Search with packed codes (hex, bits/8 bytes each, bit order of hashing.codes.bits.pack)."""
        import numpy as np

        k, radius = check_search(body.k, body.radius)
        if not body.codes:
            raise fail(422, "codes: give at least one code")
        if len(body.codes) > 4096:
            raise fail(413, f"{len(body.codes)} codes in one request; send at most 4096")
        width = engine.bits // 4
        try:
            xq = np.frombuffer(b"".join(bytes.fromhex(c) for c in body.codes), np.uint8)
        except ValueError:
            raise fail(422, "codes: each code must be a hex string") from None
        if any(len(c) != width for c in body.codes):
            raise fail(422, f"codes: each code must be {width} hex digits ({engine.bits} bits)")
        hits, timing = await done(engine.search(codes=xq.reshape(len(body.codes), -1), k=k, radius=radius))
        classes = engine.classes
        out = [{"code": c, "results": QueryResult(c, h, classes).to_dict()["results"]} for c, h in zip(body.codes, hits)]
        return JSONResponse(out, headers={"Server-Timing": timing.header()})

    @app.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict:
        """An indexed item: id, label, class (for folder indexes) and source."""
        hit = await item(item_id)
        d = QueryResult("", [hit], engine.classes).to_dict()["results"][0]
        return {"id": d["id"], "label": d["label"], "class": d["class"], "source": d["source"],
                "image": f"/items/{item_id}/image"}

    # Thumbnails are cached by what the picture is, never by id: after another process rebuilds the
    # index, id 0 may be another file, and a file may be replaced under its name.
    thumbnails: OrderedDict[tuple, bytes] = OrderedDict()
    thumbnails_lock = threading.Lock()

    def picture(source: str) -> tuple:
        """What a source's picture is now: the source, its dataset's folder (for a dataset item) and the
        file's inode, size and modification time (for a file)."""
        try:
            st = os.stat(source)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except (OSError, ValueError):
            stamp = None
        return source, engine.datasets.get("/".join(source.split("/")[:2])), stamp

    def render(source: str, size: int) -> bytes:
        native = dataset_image(source, engine.datasets)
        return thumbnail_png(source, size) if native is None else png_bytes(native, size)

    @app.get("/items/{item_id}/image", response_class=Response,
             responses={200: {"content": {"image/png": {}}}, 304: {"description": "the picture is unchanged"}})
    async def get_item_image(request: Request, item_id: int,
                             size: Annotated[int, Query(ge=THUMBNAIL_SIZES[0], le=THUMBNAIL_SIZES[1],
                                                        description="longest side in pixels, at most")] = 256):
        """A PNG of an indexed item (never larger than the original). Only indexed items: the path
        comes from the index, never from the request. Its ETag names the picture (not the id), and
        browsers ask again each time (no-cache): an unchanged picture is a 304 without a body."""
        hit = await item(item_id)
        key = (await run_in_threadpool(picture, hit.source), size)
        etag = '"' + hashlib.sha256(repr(key).encode()).hexdigest()[:32] + '"'
        headers = {"Cache-Control": "private, no-cache", "ETag": etag}
        if etag in [t.strip().removeprefix("W/") for t in request.headers.get("if-none-match", "").split(",")]:
            return Response(status_code=304, headers=headers)
        with thumbnails_lock:
            png = thumbnails.get(key)
        if png is None:
            try:
                png = await run_in_threadpool(render, hit.source, size)
            except HashingError as e:
                raise fail(404, f"the image of item {item_id} cannot be read: {e}") from None
            with thumbnails_lock:
                thumbnails[key] = png
                while len(thumbnails) > 4096:
                    thumbnails.popitem(last=False)
        return Response(png, media_type="image/png", headers=headers)

    @app.post("/items", status_code=201)
    async def add_items(request: Request,
                        image: Annotated[list[UploadFile], File(description="one or more image files")],
                        label: Annotated[list[int] | None, Form(description="one label for all, or one per "
                                                                            "image; -1 = none")] = None,
                        invert: Annotated[bool, Query()] = False) -> dict:
        """Add images to the index. Needs `Authorization: Bearer TOKEN` (the service's --token). The
        files and the index's new version are on disk before the answer."""
        check_token(request, "additions")
        blobs, names = await read_uploads(image)
        labels = label or [-1]
        if len(labels) not in (1, len(blobs)):
            raise fail(422, f"label: give one label for all {len(blobs)} images or one per image, not {len(labels)}")
        if any(not -1 <= lab <= V.INT64_MAX for lab in labels):
            raise fail(422, f"label: labels are -1 (none) or from 0 to {V.INT64_MAX}")
        labels = labels * len(blobs) if len(labels) == 1 else labels
        arrays, _ = await run_in_threadpool(decode_all, blobs, names, invert)
        ids = await done(engine.add(arrays, blobs, names, labels), write=True)
        return {"ids": ids, "items": engine.count}

    def check_token(request: Request, what: str) -> None:
        """Changes need the service's token (and a service that takes them)."""
        if read_only:
            raise fail(403, f"the service is read-only (--read-only): {what} are off")
        if not token:
            raise fail(403, f"{what} are off: start the service with --token or {TOKEN_ENV} to allow them")
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, f"{what} need the header Authorization: Bearer TOKEN (the service's --token)",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.delete("/items/{item_id}")
    async def remove_item(request: Request, item_id: int) -> dict:
        """Remove an item. Needs `Authorization: Bearer TOKEN`; 404 for an unknown id. The index's new
        version is on disk before the answer, and then the item's uploaded file is deleted (unless
        another item names it); the other items keep their ids."""
        check_token(request, "removals")
        try:
            await done(engine.remove([item_id]), write=True)
        except UnknownItem as e:
            raise fail(404, str(e)) from None
        return {"removed": [item_id], "items": engine.count}

    # Swagger UI's files from the swagger-ui-bundle package: the page works offline.
    try:
        import swagger_ui_bundle
        app.mount("/static/swagger", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger")
        swagger = ("/static/swagger/swagger-ui-bundle.js", "/static/swagger/swagger-ui.css")
    except ImportError:
        swagger = None

    @app.get("/docs", include_in_schema=False)
    async def docs():
        if swagger is None:
            raise fail(404, "the API page needs the swagger-ui-bundle package (pip install '.[serve]'); "
                            "the API itself is described at /openapi.json")
        return get_swagger_ui_html(openapi_url="/openapi.json", title="hashing API", swagger_js_url=swagger[0],
                                   swagger_css_url=swagger[1], swagger_favicon_url="/static/swagger/favicon-32x32.png")

    return app


class Unexpected:
    """An unexpected exception: a 500 whose body names its type, the traceback to the log, and the
    connection kept. (Starlette's last-resort handler answers and then raises again, and uvicorn
    closes the connection on that: a client's next request on it would be reset.)"""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def sending(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as e:
            if started:
                raise
            logging.getLogger("uvicorn.error").error("%s %s failed", scope.get("method"), scope.get("path"),
                                                     exc_info=e)
            detail = f"OSError: {e.strerror}" if isinstance(e, OSError) and e.strerror else type(e).__name__
            await _json(send, 500, f"internal error ({detail}); see the service's log", close=False)


class BodyLimit:
    """Answer 413 to a request body over `limit` bytes, before the application parses any of it.

    A declared Content-Length over the limit is refused unread; a chunked body is read up to the
    limit and handed on whole (so a parser never sees half of an oversized upload)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.limit
            except ValueError:
                return await _json(send, 400, "Content-Length is not a number")
            if too_big:
                return await _json(send, 413, self.message())
            return await self.app(scope, receive, send)
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if seen > self.limit:
                return await _json(send, 413, self.message())
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        done = False

        async def replay():
            nonlocal done
            if not done:
                done = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def message(self) -> str:
        return f"the request is larger than the service's limit of {self.limit / 1024 / 1024:g} MB (--max-upload)"


async def _json(send, status: int, message: str, close: bool = True) -> None:
    import json

    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + ([(b"connection", b"close")] if close else [])})
    await send({"type": "http.response.body", "body": body})


def pixels_of(blob: bytes) -> int:
    """An image's pixel count from its header alone (0 when Pillow cannot tell: decoding reports why)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as im:
            return im.width * im.height
    except Exception:                       # noqa: BLE001 - the decode that follows names the problem
        return 0


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("hashing")
    except Exception:       # noqa: BLE001 - a source checkout without metadata
        return "0"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a one-line error (port in use, unknown host, no permission)."""
    if not 0 <= port <= 65535:
        raise HashingError(f"port must be from 0 to 65535, got {port}", settings=("port",))
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise HashingError(f"host {host!r} cannot be resolved ({e.strerror})", settings=("host",)) from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        why = "is in use; choose another port" if e.errno == 98 else f"cannot be used ({e.strerror})"
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"     # not "port", the setting's word
        raise HashingError(f"{where} {why}", settings=("port",)) from None
    sock.set_inheritable(True)
    return sock


def serve(index: str, *, collection: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          token: str | None = None, read_only: bool = False, max_upload_mb: float = MAX_UPLOAD_MB,
          uploads: str | None = None, device: str = "auto", on_ready=print, wait: float = 0.0,
          max_megapixels: float = MAX_MEGAPIXELS) -> None:
    """Load the model and the index once and answer HTTP until SIGINT or SIGTERM (then a clean exit).

    With a token (and not read-only) the service is the index's one writer: it holds the writer lock
    from start to stop (waiting up to `wait` seconds for another writer). Without, it only reads, and
    follows new versions that other processes commit."""
    import math
    import signal

    try:
        import uvicorn
        import fastapi  # noqa: F401
        import multipart  # noqa: F401
    except ImportError as e:
        raise HashingError(f"`hashing serve` needs the serve extra ({e.name} is missing): "
                           f"pip install 'hashing[serve]' (or -e '.[serve]' in a checkout)") from None
    if not math.isfinite(max_upload_mb) or max_upload_mb <= 0:
        raise HashingError(f"max_upload_mb must be a number of MB above 0, got {max_upload_mb}",
                           settings=("max_upload_mb",))
    if not math.isfinite(max_megapixels) or max_megapixels <= 0:
        raise HashingError(f"max_megapixels must be a number above 0, got {max_megapixels}",
                           settings=("max_megapixels",))
    sock = bind(host, port)
    try:
        engine = Engine(index, collection, device, uploads, writer=bool(token) and not read_only, wait=wait)
    except BaseException:
        sock.close()
        raise
    try:
        app = create_app(engine, token=token, read_only=read_only, max_upload_mb=max_upload_mb,
                         max_megapixels=max_megapixels)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                               timeout_graceful_shutdown=5))
        port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        writes = "read-only" if read_only else "additions with the token" if token else "additions off (no --token)"
        on_ready(f"serving {engine.count} items ({engine.bits} bits, {engine.backend}) at http://{shown}:{port}/ "
                 f"({writes}); Ctrl-C stops")
        if engine.uploads_note:
            import sys
            print(f"Note: {engine.uploads_note}", file=sys.stderr)
        # uvicorn stops gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler that was
        # there before it: for SIGTERM make that a no-op, so the process ends by returning (exit 0).
        previous = signal.signal(signal.SIGTERM, lambda *_: None)
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        engine.close()
        sock.close()
