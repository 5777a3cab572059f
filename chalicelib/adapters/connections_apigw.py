"""Connections through API Gateway's management API (`POST /@connections/{id}`), or the local WebSocket
server's copy of it (devtools/wsserver.py): the same adapter posts through both.

Chalice's own `app.websocket_api.send` needs `app.websocket_api.session` assigned to a boto3 session, which
its examples do at import time, and it learns its endpoint from the event being handled. Here the worker and
webhook functions post too (a job's event pushed live), outside any WebSocket event, so the endpoint comes
from the settings and the client is built on first use, never at import.
"""

from __future__ import annotations

import threading
from typing import Any

from chalicelib.adapters.aws import TranslatingClient
from chalicelib.domain.errors import BackendRejected
from chalicelib.services.delivery_ports import ConnectionGone

SERVICE = "apigatewaymanagementapi"


def _gone(exc: BackendRejected) -> bool:
    return exc.aws_code == "GoneException"


class ApiGatewayConnections:
    def __init__(self, endpoint: str, client: Any = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        wrapped = client is None or isinstance(client, TranslatingClient)
        self._client = client if wrapped else TranslatingClient(client, SERVICE)
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import boto3
                    from botocore.config import Config

                    config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=3, read_timeout=5)
                    session: Any = boto3.session.Session()
                    raw = session.client("apigatewaymanagementapi", endpoint_url=self.endpoint, config=config)
                    self._client = TranslatingClient(raw, SERVICE)
        return self._client

    def post(self, connection_id: str, data: str) -> None:
        try:
            self.client.post_to_connection(ConnectionId=connection_id, Data=data.encode())
        except BackendRejected as exc:
            if _gone(exc):
                raise ConnectionGone(connection_id) from exc
            raise

    def alive(self, connection_id: str) -> bool:
        try:
            self.client.get_connection(ConnectionId=connection_id)
            return True
        except BackendRejected as exc:
            if _gone(exc):
                return False
            raise


class NoConnections:
    """A deployment without a WebSocket endpoint configured: no connection is ever alive."""

    def post(self, connection_id: str, data: str) -> None:
        raise ConnectionGone(connection_id)

    def alive(self, connection_id: str) -> bool:
        return False
