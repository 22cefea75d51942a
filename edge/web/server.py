"""The gate's web server: live view, kiosk screen, HTTP API, event stream and metrics.

Built on aiohttp: one well-kept asyncio library that serves static files, streams MJPEG and
Server-Sent Events and bounds request sizes on its own, without an ASGI server to run it
(Starlette needs uvicorn on top; Flask's threads would give each slow viewer a thread).

It runs in a thread of its own with its own event loop, and only reads the gate's ``LiveState``:
the gate never waits on it. The live picture is drawn, scaled and JPEG-encoded here, in a worker
thread, only while someone watches, at most ``stream_fps`` times a second and once per frame
however many watch; a slow viewer is sent the newest frame when it is ready for one, and misses
the others. Nothing is written to disk.

Security: it listens on 127.0.0.1 unless told otherwise, and any other address needs an access
token (config validation enforces it). With a token every path but /healthz wants
``Authorization: Bearer TOKEN`` or the cookie that a one-time ``?token=TOKEN`` sets (HttpOnly,
SameSite=Strict), and clients off loopback must come from ``web.allow`` (403 otherwise). Every
endpoint is a GET that reads; none moves the door or any output. Request bodies and headers are
capped; requests at once are capped at ``max_clients`` and open connections (idle keep-alive ones
too) at twice that, 503 beyond; an idle connection is closed after ``IDLE_S``. Unknown paths are
404, a bad token 401, and a failing handler logs one line, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from importlib import resources
from pathlib import Path

from ..core.errors import ConfigError
from ..core.settings import read_private_file
from ..gate.config import WebConfig, split_listen
from ..gate.live import LiveState

logger = logging.getLogger("maskgate.web")

STATIC = resources.files("maskgate.edge.web") / "static"
COOKIE = "maskgate_session"
BOUNDARY = "maskgate-frame"
FRESH_S = 5.0  # /healthz: frames flow while the latest is younger than this
POLL_S = 0.05  # how often a stream looks for a new frame or event
HEARTBEAT_S = 15.0  # an SSE comment this often keeps proxies from closing an idle stream
MAX_BODY = 4096  # no endpoint takes a body: anything larger is refused
MAX_HEADER = 4096  # longest request line or header field
IDLE_S = 10.0  # a connection with no request in flight is closed after this (aiohttp's default: an hour)


def read_token(cfg: WebConfig) -> str | None:
    """The access token from the config or its file; a file others may read is refused."""
    if cfg.token is not None:
        return cfg.token.get_secret_value()
    if cfg.token_file is None:
        return None
    path = Path(cfg.token_file)
    text = read_private_file(path, "web.token_file").strip()
    if len(text) < 16:
        raise ConfigError(f"web.token_file {path}: the token needs at least 16 characters")
    return text


class WebServer:
    """The HTTP server over a ``LiveState``, in its own thread and event loop; ``start``/``stop``."""

    def __init__(self, cfg: WebConfig, live: LiveState, *, port: int | None = None) -> None:
        self.cfg = cfg
        self.live = live
        self.host, self.port = split_listen(cfg.listen)
        if port is not None:
            self.port = port
        self.token = read_token(cfg)
        self._session = (
            hmac.new(self.token.encode(), b"maskgate-session", hashlib.sha256).hexdigest()
            if self.token
            else None
        )
        self._networks = [ipaddress.ip_network(n) for n in cfg.allow]
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._closing: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._active = 0
        self._jpeg: tuple[int, bytes] | None = None  # the latest encoded frame, shared by all viewers
        self._encoding: asyncio.Future | None = None

    # --- life cycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> WebServer:
        """Bind and serve in a new thread; raises if the address cannot be bound."""
        self._thread = threading.Thread(target=self._serve, name="maskgate-web", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise ConfigError(f"web.listen {self.cfg.listen}: the server did not start in {timeout:g} s")
        if self._error is not None:
            raise ConfigError(f"web.listen {self.cfg.listen}: {self._error}") from None
        logger.info(
            "web: serving on http://%s:%d/%s", self.host, self.port, " (token required)" * bool(self.token)
        )
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every stream and the listener; idempotent."""
        loop, thread = self._loop, self._thread
        if loop is not None and self._closing is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._closing.set)
        if thread is not None:
            thread.join(timeout)
        self._thread = None

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:  # reported by start(), or logged in one line
            self._error = e
            if self._started.is_set():
                logger.error("web: server stopped: %s", e)
        finally:
            self._started.set()
            loop.close()

    async def _main(self) -> None:
        from aiohttp import web

        self._closing = asyncio.Event()
        app = self._app()
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            keepalive_timeout=IDLE_S,
            max_line_size=MAX_HEADER,
            max_field_size=MAX_HEADER,
        )
        await runner.setup()
        listener = None
        try:
            # Our own listener rather than aiohttp's TCPSite, for one thing TCPSite lacks: a bound on open
            # connections, idle ones included. The connection beyond it is answered 503 and closed.
            http, limit = runner.server, self.cfg.max_clients * 2
            try:
                listener = await asyncio.get_running_loop().create_server(
                    lambda: http() if len(http.connections) < limit else _Refused(),
                    self.host,
                    self.port,
                    backlog=limit,
                    reuse_address=True,
                )
            except OSError as e:
                raise OSError(e.strerror or str(e)) from None
            if self.port == 0:  # an ephemeral port (tests): learn which
                self.port = listener.sockets[0].getsockname()[1]
            self._started.set()
            await self._closing.wait()
        finally:
            if listener is not None:
                listener.close()
            await runner.cleanup()

    # --- the application ----------------------------------------------------------------------

    def _app(self):
        from aiohttp import web

        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard_factory()])
        r = app.router
        r.add_get("/", self._page("index.html"))
        r.add_get("/kiosk", self._page("kiosk.html"))
        r.add_get("/static/{name}", self._static)
        r.add_get("/api/state", self._state)
        r.add_get("/api/events", self._events)
        r.add_get("/stream.mjpg", self._stream)
        r.add_get("/healthz", self._healthz)
        r.add_get("/metrics", self._metrics)
        return app

    def _allowed(self, remote: str | None) -> bool:
        """Loopback always; others only from ``web.allow`` (the unit's IPAddressAllow says the same)."""
        try:
            address = ipaddress.ip_address((remote or "").split("%")[0])
        except ValueError:
            return False
        if address.is_loopback:
            return True
        if getattr(address, "ipv4_mapped", None):
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)

    def _authorized(self, request) -> bool:
        if self.token is None:
            return True
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and hmac.compare_digest(
            header[7:].strip().encode(), self.token.encode()
        ):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self._session.encode())

    def _guard_factory(self):
        from aiohttp import web

        @web.middleware
        async def guard(request, handler):
            if not self._allowed(request.remote):
                return web.Response(status=403, text="403: not from an allowed network\n")
            if request.method not in ("GET", "HEAD"):
                return web.Response(status=405, text="405: read-only\n", headers={"Allow": "GET, HEAD"})
            if self.token is not None and request.path != "/healthz":
                given = request.query.get("token")
                if given is not None:  # the one-time link: a cookie, then the same page without it
                    if not hmac.compare_digest(given.encode(), self.token.encode()):
                        return web.Response(status=401, text="401: bad token\n")
                    query = {k: v for k, v in request.query.items() if k != "token"}
                    target = request.rel_url.with_query(query) if query else request.rel_url.with_query(None)
                    response = web.Response(status=303, headers={"Location": str(target)})
                    response.set_cookie(COOKIE, self._session, httponly=True, samesite="Strict", path="/")
                    return response
                if not self._authorized(request):
                    return web.Response(
                        status=401, text="401: token required\n", headers={"WWW-Authenticate": "Bearer"}
                    )
            if self._active >= self.cfg.max_clients:
                return web.Response(status=503, text="503: too many clients\n", headers={"Retry-After": "5"})
            self._active += 1
            try:
                return await handler(request)
            except web.HTTPException:
                raise
            except (ConnectionError, asyncio.CancelledError):
                raise
            except Exception as e:  # one line, never a traceback
                logger.error("web: %s %s failed: %s: %s", request.method, request.path, type(e).__name__, e)
                return web.Response(status=500, text="500: internal error\n")
            finally:
                self._active -= 1

        return guard

    def _page(self, name: str):
        from aiohttp import web

        async def page(request):
            return web.Response(body=(STATIC / name).read_bytes(), content_type="text/html", charset="utf-8")

        return page

    async def _static(self, request):
        from aiohttp import web

        name = request.match_info["name"]
        types = {".css": "text/css", ".js": "text/javascript", ".json": "application/json"}
        suffix = os.path.splitext(name)[1]
        # the static folder's own files by name only: no sub-paths, no dot files, no .py
        if "/" in name or name.startswith(".") or suffix not in types or not (STATIC / name).is_file():
            raise web.HTTPNotFound()
        return web.Response(body=(STATIC / name).read_bytes(), content_type=types[suffix], charset="utf-8")

    def _state_json(self) -> dict:
        state = self.live.snapshot()
        state["healthy"] = self._healthy(state)
        state["kiosk"] = {"mirror": self.cfg.kiosk_mirror, "language": self.cfg.language}
        state["stream"] = {"fps": self.cfg.stream_fps, "width": self.cfg.stream_width}
        return state

    async def _state(self, request):
        from aiohttp import web

        return web.json_response(self._state_json(), headers={"Cache-Control": "no-store"})

    def _healthy(self, state: dict | None = None) -> bool:
        """Frames flow: the camera is up and its latest frame is fresh (``state``: a snapshot in hand)."""
        age = self.live.frame_age()
        return (state or self.live.snapshot())["camera"] == "up" and age is not None and age < FRESH_S

    async def _healthz(self, request):
        from aiohttp import web

        ok = self._healthy()
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else "no frames\n")

    async def _metrics(self, request):
        from aiohttp import web

        from .metrics import exposition

        body, content_type = exposition(self.live)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _events(self, request):
        """Server-Sent Events of decisions; a reconnecting client resumes after Last-Event-ID."""
        from aiohttp import web

        raw = request.headers.get("Last-Event-ID") or request.query.get("last_id") or "0"
        last = int(raw) if raw.isdigit() else 0
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        beat = time.monotonic()
        while not self._closing.is_set() and not _gone(request):
            events = self.live.events_after(last)
            for ev in events:
                data = json.dumps(ev.as_json(), separators=(",", ":"))
                await response.write(f"id: {ev.id}\nevent: decision\ndata: {data}\n\n".encode())
                last = ev.id
            if not events and time.monotonic() - beat > HEARTBEAT_S:
                await response.write(b": keep-alive\n\n")
                beat = time.monotonic()
            elif events:
                beat = time.monotonic()
            await self._sleep(POLL_S * 4)
        return response

    async def _stream(self, request):
        """MJPEG: the annotated live picture, at most ``stream_fps`` a second and ``stream_width`` wide."""
        from aiohttp import web

        response = web.StreamResponse(
            headers={
                "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                "Cache-Control": "no-store",
            }
        )
        await response.prepare(request)
        interval = 1.0 / self.cfg.stream_fps
        sent = -1
        while not self._closing.is_set() and not _gone(request):
            started = time.monotonic()
            seq = self.live.latest()[0]
            if seq != sent and seq > 0:
                jpeg = await self._encoded(seq)
                if jpeg is not None:
                    sent, data = jpeg
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                    await response.write(head.encode() + data + b"\r\n")  # waits for a slow client
                await self._sleep(max(0.0, interval - (time.monotonic() - started)))
            else:
                await self._sleep(POLL_S)
        return response

    async def _encoded(self, seq: int) -> tuple[int, bytes] | None:
        """The newest frame as JPEG, encoded once in a worker thread however many viewers want it."""
        if self._jpeg is not None and self._jpeg[0] >= seq:
            return self._jpeg
        if self._encoding is None or self._encoding.done():
            self._encoding = asyncio.get_running_loop().run_in_executor(None, self._encode)
        result = await asyncio.shield(self._encoding)
        if result is not None:
            self._jpeg = result
        return self._jpeg

    def _encode(self) -> tuple[int, bytes] | None:
        import cv2

        from ..gate.draw import annotate

        seq, image, faces = self.live.latest()
        if image is None:
            return None
        out = annotate(image, faces, by_decision=True)  # a copy: the gate's frame is never written into
        h, w = out.shape[:2]
        if w > self.cfg.stream_width:
            out = cv2.resize(out, (self.cfg.stream_width, round(h * self.cfg.stream_width / w)),
                             interpolation=cv2.INTER_AREA)  # fmt: skip
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, 80])
        return (seq, buf.tobytes()) if ok else None

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the server closes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)


class _Refused(asyncio.Protocol):
    """The connection beyond the bound: one 503 and closed, before a byte of its request is read."""

    def connection_made(self, transport) -> None:
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n"
        )
        transport.close()


def _gone(request) -> bool:
    """The client hung up: its stream ends, and its slot is free for another."""
    transport = request.transport
    return transport is None or transport.is_closing()
