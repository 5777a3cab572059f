"""The webhook's HTTP side: resolve a host, and POST to an address that was checked.

The connection goes to the checked address, not to the name (which could resolve elsewhere a moment later:
DNS rebinding), while the request carries the name in its Host header and, for https, in SNI and the
certificate check. No redirect is followed (http.client never follows one), each socket operation times out
after 5 s, and at most MAX_RESPONSE_BYTES of the answer are read.
"""

from __future__ import annotations

import http.client
import socket
import ssl

from chalicelib.domain.webhooks import MAX_RESPONSE_BYTES, TIMEOUT_S
from chalicelib.services.delivery_ports import HttpAnswer


class SocketResolver:
    def resolve(self, host: str, port: int) -> list[str]:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            return []
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, address: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, address: str, host: str, port: int, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.address, self.tls = address, context

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)


class HttpWebhookSender:
    def __init__(self, timeout_s: float = TIMEOUT_S, context: ssl.SSLContext | None = None) -> None:
        self.timeout_s = timeout_s
        self.context = context or ssl.create_default_context()

    def post(
        self, address: str, scheme: str, host: str, port: int, path: str, headers: dict[str, str], body: bytes
    ) -> HttpAnswer:
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = _PinnedHTTPS(address, host, port, self.timeout_s, self.context)
        else:
            conn = _PinnedHTTP(address, host, port, self.timeout_s)
        try:
            conn.request("POST", path, body=body, headers=headers)  # "host" in headers: sent as given
            response = conn.getresponse()
            response.read(MAX_RESPONSE_BYTES)  # never more: the answer's content does not matter
            return HttpAnswer(response.status)
        except (OSError, http.client.HTTPException) as exc:
            return HttpAnswer(None, f"{type(exc).__name__}: {exc}"[:300])
        finally:
            conn.close()
