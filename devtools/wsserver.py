"""The WebSocket channel for `make dev` (chalice local serves only the REST API).

A `websockets` server on 127.0.0.1 plays API Gateway's WebSocket API: it calls the app's own $connect,
message and $disconnect handlers with API Gateway's event shapes (a refused $connect refuses the handshake
with its status and body), and a small HTTP server plays its management API (`POST /@connections/{id}` to
send, `GET` to probe, `DELETE` to close; 410 GoneException for a connection that is not open), so the same
Connections adapter that posts through API Gateway in the cloud posts through this one locally.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

log = logging.getLogger("coderunner.ws")
Handler = Callable[[dict[str, Any], Any], Any]
STAGE = "local"


def _context(connection_id: str, route: str, event_type: str, port: int) -> dict[str, Any]:
    now = time.time()
    return {
        "routeKey": route,
        "eventType": event_type,
        "messageDirection": "IN",
        "connectionId": connection_id,
        "connectedAt": int(now * 1000),
        "requestTimeEpoch": int(now * 1000),
        "requestId": uuid.uuid4().hex,
        "domainName": f"127.0.0.1:{port}",
        "stage": STAGE,
        "apiId": "local",
        "identity": {"sourceIp": "127.0.0.1"},
    }


def connect_event(connection_id: str, path: str, headers: dict[str, str], port: int) -> dict[str, Any]:
    """API Gateway's $connect event for a handshake on `path` with `headers`."""
    query = dict(parse_qsl(urlsplit(path).query))
    return {
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} or None,
        "requestContext": _context(connection_id, "$connect", "CONNECT", port),
        "isBase64Encoded": False,
    }


def message_event(connection_id: str, body: str, port: int) -> dict[str, Any]:
    return {
        "requestContext": _context(connection_id, "$default", "MESSAGE", port),
        "body": body,
        "isBase64Encoded": False,
    }


def disconnect_event(connection_id: str, port: int) -> dict[str, Any]:
    context = {**_context(connection_id, "$disconnect", "DISCONNECT", port), "disconnectStatusCode": 1001}
    return {"headers": {}, "requestContext": context, "isBase64Encoded": False}


class LocalWebSocketApi:
    """The WebSocket server and its management API, each on a free port of 127.0.0.1 (or the ones given)."""

    def __init__(self, on_connect: Handler, on_message: Handler, on_disconnect: Handler, port: int = 0) -> None:
        self.handlers = {"connect": on_connect, "message": on_message, "disconnect": on_disconnect}
        self.open: dict[str, ServerConnection] = {}  # API Gateway connection id -> an open connection
        self.ids: dict[uuid.UUID, str] = {}
        self.lock = threading.Lock()
        self.server: Server = serve(self._serve, "127.0.0.1", port, process_request=self._handshake)
        self.port = int(self.server.socket.getsockname()[1])
        self.management = _ManagementServer(self)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management.server_address[1]}"

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, name="ws-server", daemon=True).start()
        threading.Thread(target=self.management.serve_forever, name="ws-management", daemon=True).start()

    def shutdown(self) -> None:
        self.server.shutdown()
        self.management.shutdown()

    def _handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        connection_id = secrets.token_urlsafe(12)
        with self.lock:
            self.ids[connection.id] = connection_id
        headers = {k: v for k, v in request.headers.raw_items()}
        answer = self.handlers["connect"](connect_event(connection_id, request.path, headers, self.port), None) or {}
        status = int(answer.get("statusCode", 200))
        if status == 200:
            return None
        response = connection.respond(status, str(answer.get("body") or ""))
        response.headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(response.body)))])
        return response

    def _serve(self, connection: ServerConnection) -> None:
        connection_id = self.ids[connection.id]
        with self.lock:
            self.open[connection_id] = connection  # only now can the management API post to it
        try:
            for message in connection:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                try:
                    self.handlers["message"](message_event(connection_id, text, self.port), None)
                except Exception:  # noqa: BLE001 - like API Gateway: a failed handler does not close the socket
                    log.exception("message handler failed")
        except ConnectionClosed:
            pass
        finally:
            with self.lock:
                self.open.pop(connection_id, None)
                self.ids.pop(connection.id, None)
            self.handlers["disconnect"](disconnect_event(connection_id, self.port), None)

    def send(self, connection_id: str, data: bytes) -> bool:
        connection = self.open.get(connection_id)
        if connection is None:
            return False
        try:
            connection.send(data.decode("utf-8", "replace"))
            return True
        except ConnectionClosed:
            return False

    def close(self, connection_id: str) -> bool:
        connection = self.open.get(connection_id)
        if connection is not None:
            connection.close()
        return connection is not None


class _ManagementServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: LocalWebSocketApi) -> None:
        super().__init__(("127.0.0.1", 0), _Management)
        self.api = api


class _Management(BaseHTTPRequestHandler):
    """API Gateway's management API for the local connections: 410 GoneException for one that is not open."""

    server: _ManagementServer

    def _connection_id(self) -> str | None:
        path = urlsplit(self.path).path
        prefix = "/@connections/"
        return unquote(path[len(prefix) :]) if path.startswith(prefix) else None

    def _answer(self, status: int, body: dict[str, Any] | None = None, error: str | None = None) -> None:
        raw = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        if error:
            self.send_header("x-amzn-ErrorType", error)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _gone(self) -> None:
        self._answer(410, {"message": "the connection is gone"}, "GoneException")

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        connection_id = self._connection_id()
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if connection_id is None or not self.server.api.send(connection_id, data):
            return self._gone()
        self._answer(200, {})

    def do_GET(self) -> None:  # noqa: N802
        connection_id = self._connection_id()
        if connection_id is None or connection_id not in self.server.api.open:
            return self._gone()
        self._answer(200, {"connectedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def do_DELETE(self) -> None:  # noqa: N802
        connection_id = self._connection_id()
        if connection_id is None or not self.server.api.close(connection_id):
            return self._gone()
        self._answer(204)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet, like werkzeug
        return
