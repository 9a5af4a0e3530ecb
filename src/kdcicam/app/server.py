"""The page's HTTP server: the standard library's ``ThreadingHTTPServer`` and a handler of six routes.

Why not Gradio or Streamlit: the page needs an upload, a slider, a select and two downloads; a web
framework would add a large dependency tree (and its own server, telemetry and upload handling) to a
library whose users mostly run it headless. A few hundred lines of stdlib server and plain
HTML/JavaScript (``kdcicam/app/static``) do the job and ship inside the wheel.

Routes::

    GET  /                      the page (static/index.html; app.js and app.css under /static/)
    GET  /api/config            checkpoint, classes, slider thresholds and the val-chosen default, limits
    POST /api/localize?name=N   body: the raw bytes of one image → top-k classes, heatmaps, boxes per threshold
    POST /api/export?format=F   body: the page's choice (JSON) → the boxes as kdcicam JSON or COCO detections

Bad input is answered with a JSON ``{"error": message}`` (400, 411, 413 or 500) that the page shows;
the handler never lets an exception reach the server loop, so the page stays up. The server writes no
file. Inference runs under one lock (one model, bounded memory); requests are otherwise concurrent.
Bound to a loopback address (the default), the server also refuses requests whose ``Host`` is not a
loopback name, so a web page elsewhere cannot reach it through DNS rebinding.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .. import __version__
from ..errors import KdcicamError
from ..inference import Localizer
from .analysis import analyze, slider_thresholds
from .export import EXPORT_FORMATS, ExportError, boxes_document, coco_detections, parse_selection
from .uploads import MB, UploadError, UploadLimits, check_size, decode_upload

log = logging.getLogger(__name__)

STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/static/app.css": ("app.css", "text/css; charset=utf-8")}
#: the page loads only its own files; images arrive as data: URIs, downloads leave as blob: URLs
CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; object-src 'none'"
MAX_EXPORT_BYTES = 16 * MB
MAX_NAME_CHARS = 255


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _static(name: str) -> bytes:
    return (resources.files("kdcicam.app") / "static" / name).read_bytes()


def clean_name(raw: str | None) -> str:
    """The uploaded file's name as the page reports it: printable, bounded, never empty."""
    name = "".join(ch for ch in (raw or "") if ch.isprintable()).strip()[:MAX_NAME_CHARS]
    return name or "upload"


class LocalizerApp:
    """What the server serves: one :class:`Localizer`, the slider thresholds and the upload limits."""

    def __init__(self, localizer: Localizer, limits: UploadLimits | None = None):
        self.localizer = localizer
        self.limits = limits or UploadLimits()
        self.thresholds = slider_thresholds(localizer.threshold)
        self.lock = threading.Lock()
        self.model_runs = 0  #: images sent through the model (the slider must not add to it)

    def config(self) -> dict[str, Any]:
        loc = self.localizer
        return {"version": __version__, "checkpoint": None if loc.checkpoint is None else str(loc.checkpoint),
                "method": loc.method, "map_kind": loc.map_kind, "topk": loc.topk, "multi_contour": loc.multi_contour,
                "num_classes": len(loc.class_names), "thresholds": self.thresholds,
                "default_index": self.thresholds.index(loc.threshold), "threshold": loc.threshold,
                "threshold_source": loc.threshold_source,
                "max_bytes": self.limits.max_bytes, "max_pixels": self.limits.max_pixels}

    def localize(self, data: bytes, name: str) -> dict[str, Any]:
        image = decode_upload(data, name, self.limits)
        with self.lock:
            self.model_runs += 1
            return analyze(self.localizer, image, name, self.thresholds)

    def export(self, body: Any, fmt: str) -> tuple[bytes, str]:
        """The file the page downloads: (bytes, file name)."""
        if fmt not in EXPORT_FORMATS:
            raise ExportError(f"format: must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
        threshold, images = parse_selection(body, len(self.localizer.class_names))
        if fmt == "coco":
            doc: Any = coco_detections(images)
            filename = "kdcicam_coco_detections.json"
        else:
            about = {k: v for k, v in self.config().items()
                     if k in ("version", "checkpoint", "method", "map_kind", "multi_contour", "threshold_source")}
            about = {"kdcicam_version": about.pop("version"), **about, "val_threshold": self.localizer.threshold}
            doc = boxes_document(threshold, images, self.localizer.class_names, about)
            filename = "kdcicam_boxes.json"
        return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"), filename


class AppServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: LocalizerApp):
        self.app = app
        self.loopback_only = is_loopback(address[0])
        super().__init__(address, AppHandler)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), int(self.server_address[1])
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"


class _Reply(Exception):
    """An answer decided early (an error); carries the status and the message for the page."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(message)


class AppHandler(BaseHTTPRequestHandler):
    server: AppServer
    server_version = f"kdcicam-app/{__version__}"
    timeout = 60  # seconds a client may stall mid-request before its thread gives up

    # ------------------------------------------------------------------ plumbing
    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def _check_host(self) -> None:
        if not self.server.loopback_only:
            return
        host = urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        if not is_loopback(host):
            raise _Reply(HTTPStatus.FORBIDDEN, f"Host {host!r} refused: this page answers only on a loopback address")

    def _content_length(self, name: str) -> int:
        raw = self.headers.get("Content-Length")
        self.close_connection = True  # until the body is read, the connection cannot carry another request
        if raw is None:
            raise _Reply(HTTPStatus.LENGTH_REQUIRED, f"{name}: the request has no Content-Length")
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            raise _Reply(HTTPStatus.BAD_REQUEST, f"{name}: bad Content-Length {raw!r}")
        return length

    def _read(self, length: int, name: str) -> bytes:
        data = self.rfile.read(length)
        if len(data) != length:
            raise _Reply(HTTPStatus.BAD_REQUEST, f"{name}: the upload was cut off ({len(data)} of {length} bytes)")
        return data

    def _guarded(self, route: Any) -> None:
        """Run one route; any failure becomes a JSON error for the page, never a dead server."""
        try:
            self._check_host()
            route()
        except _Reply as r:
            self._json(r.status, {"error": r.message})
        except UploadError as e:
            self._json(e.status, {"error": str(e)})
        except ExportError as e:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
        except KdcicamError as e:
            log.warning("request failed: %s", e)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(e)})
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client went away; nothing to answer
        except Exception as e:  # the page must stay up whatever one request does
            log.exception("internal error on %s %s", self.command, self.path)
            try:
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {type(e).__name__}: {e}"})
            except OSError:
                self.close_connection = True

    # ------------------------------------------------------------------ routes
    def do_GET(self) -> None:
        self._guarded(self._get)

    do_HEAD = do_GET

    def do_POST(self) -> None:
        self._guarded(self._post)

    def _get(self) -> None:
        path = urlsplit(self.path).path
        if path in STATIC:
            name, content_type = STATIC[path]
            self._send(HTTPStatus.OK, _static(name), content_type)
        elif path == "/api/config":
            self._json(HTTPStatus.OK, self.server.app.config())
        else:
            raise _Reply(HTTPStatus.NOT_FOUND, f"{path}: no such page")

    def _post(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        app = self.server.app
        if url.path == "/api/localize":
            name = clean_name(query.get("name", [None])[0])
            length = self._content_length(name)
            check_size(name, length, app.limits)  # refused before a byte of it is read
            data = self._read(length, name)
            self._json(HTTPStatus.OK, app.localize(data, name))
        elif url.path == "/api/export":
            fmt = query.get("format", ["json"])[0]
            length = self._content_length("download request")
            if length > MAX_EXPORT_BYTES:
                raise _Reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"download request: {length} bytes is over "
                             f"{MAX_EXPORT_BYTES // MB} MB; download fewer images at once")
            data = self._read(length, "download request")
            try:
                body = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise ExportError(f"download request: not JSON ({e})") from None
            payload, filename = app.export(body, fmt)
            self._send(HTTPStatus.OK, payload, "application/json; charset=utf-8",
                       {"Content-Disposition": f'attachment; filename="{filename}"'})
        else:
            raise _Reply(HTTPStatus.NOT_FOUND, f"{url.path}: no such endpoint")


def make_server(localizer: Localizer, host: str = "127.0.0.1", port: int = 8765,
                limits: UploadLimits | None = None) -> AppServer:
    """A server ready to ``serve_forever()`` (``port=0``: any free port, see ``server.url``)."""
    try:
        return AppServer((host, int(port)), LocalizerApp(localizer, limits))
    except OSError as e:
        raise KdcicamError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None


__all__ = ["AppServer", "LocalizerApp", "make_server"]
