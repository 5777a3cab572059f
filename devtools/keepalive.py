"""A small threaded WSGI server that keeps HTTP/1.1 connections open, for the local stack's moto processes.

werkzeug's development server (what moto's server uses) closes the connection after every response, so each
AWS request of the platform paid a TCP connect, a new server thread and a new client connection in botocore:
about a third of the moto process's CPU per request, and as much again in the API and the workers. Here a
connection is served by one thread for as long as the client keeps it (botocore pools them), each response is
written in one send (no Nagle stall between headers and body), and the WSGI application is called exactly as
werkzeug calls it, so moto's Flask app behaves as it does behind werkzeug.

Only what the platform's clients send is supported: request bodies with Content-Length or chunked
transfer-encoding, responses buffered whole (moto's are).
"""

from __future__ import annotations

import contextlib
import io
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote_to_bytes

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_NO_BODY = {204, 304}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: KeepAliveServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # one line per request is noise here; failures are answered with a 500 that names them

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _environ(self, body: bytes) -> dict[str, Any]:
        path, _, query = self.path.partition("?")
        host, port = self.server.server_address[:2]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin1"),  # as werkzeug does (PEP 3333)
            "QUERY_STRING": query,
            "REQUEST_URI": self.path,
            "RAW_URI": self.path,
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": self.client_address[1],
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING"):
                continue
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _serve(self) -> None:
        body = self._read_body()
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            started[:] = [status, headers]
            return lambda data: None  # moto never uses the write() callable

        try:
            result = self.server.app(self._environ(body), start_response)
            try:
                payload = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            status, headers = started
        except Exception as exc:  # noqa: BLE001 - answer as werkzeug would: a 500, the server goes on
            status, headers = "500 Internal Server Error", [("Content-Type", "text/plain")]
            payload = f"{type(exc).__name__}: {exc}".encode()
        code = int(status.split(" ", 1)[0])
        if self.command == "HEAD" or code in _NO_BODY or code < 200:
            payload = b""
        given = next((v for k, v in headers if k.lower() == "content-length"), None)
        lines = [f"HTTP/1.1 {status}"]
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("content-length", "connection")]
        lines.append(f"Content-Length: {given if self.command == 'HEAD' and given is not None else len(payload)}")
        if self.close_connection:
            lines.append("Connection: close")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin1") + payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _serve


class KeepAliveServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    block_on_close = False

    def __init__(self, host: str, port: int, app: WsgiApp) -> None:
        self.app = app
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that went away mid-request (the chaos test kills workers): nothing to report
        super().handle_error(request, client_address)

    def stop(self) -> None:
        """Stop accepting, and end the kept connections too (a stopped server serves nobody)."""
        self.shutdown()
        self.server_close()
        with self._open_lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def serve(app: WsgiApp, host: str, port: int) -> KeepAliveServer:
    """Bind `app` on host:port; call `serve_forever()` (or use `start`) to serve."""
    return KeepAliveServer(host, port, app)


def start(app: WsgiApp, host: str, port: int) -> KeepAliveServer:
    """Serve `app` from a daemon thread; `stop()` stops it."""
    server = serve(app, host, port)
    threading.Thread(target=server.serve_forever, name=f"wsgi-{port}", daemon=True).start()
    return server
