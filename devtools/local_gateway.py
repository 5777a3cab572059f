"""The local API server answers an unknown route as the deployed API does: the house JSON error.

`chalice local` answers a path no route matches itself, before the app, with API Gateway's REST default 403
(and, when the request has an `Authorization` header, a SigV4 message that echoes it: the caller's key). In the
cloud the API function's handler answers such a path (chalicelib/edge/httpapi.py `not_found`); `HouseGateway`
gives the same answer here, so both say 404 `not_found` with the same body. (Unknown methods of a known path
reach the app, whose middleware answers the house 405: chalicelib/edge/house.py.)

`answer_unknown_routes(server)` puts it in a server made by `chalice.local.create_local_server`; another
server uses `HouseGateway` wherever it builds Chalice's `LocalGateway`.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

from chalice.local import ChaliceRequestHandler, LocalDevServer, LocalGateway, LocalGatewayException

from chalicelib.edge.httpapi import not_found


class RouteNotFound(LocalGatewayException):
    CODE = 404


def unknown_route_answer(request_id: str) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of the deployed API's answer to a path no route matches."""
    answer = not_found(request_id)
    return int(answer["statusCode"]), dict(answer["headers"]), str(answer["body"]).encode()


class HouseGateway(LocalGateway):
    """Chalice's local API Gateway, with the cloud's answer for a path that no route matches."""

    def handle_request(self, method: str, path: str, headers: Any, body: bytes | None) -> Any:
        try:
            self.event_converter._route_matcher.match_route(path)
        except ValueError:
            _, out_headers, out_body = unknown_route_answer(str(uuid.uuid4()))
            raise RouteNotFound(out_headers, out_body) from None
        return super().handle_request(method, path, headers, body)


class HouseRequestHandler(ChaliceRequestHandler):
    """Chalice's request handler on a `HouseGateway` (pass as `handler_cls` to `LocalDevServer`)."""

    def __getattr__(self, name: str) -> Any:
        # Chalice's handler has do_GET, do_POST, ...; any other method (TRACE, CONNECT) would get the standard
        # library's HTML 501. Route it like the others: the app answers the house 405 (404 if no route).
        if name.startswith("do_"):
            return self._generic_handle
        raise AttributeError(name)

    def setup(self) -> None:  # runs inside Chalice's __init__, after it built its LocalGateway
        super().setup()
        self.local_gateway = HouseGateway(self.local_gateway._app_object, self.local_gateway._config)


def answer_unknown_routes(server: LocalDevServer) -> None:
    """Make a `create_local_server` server handle its requests with `HouseRequestHandler`."""
    handler = server.server.RequestHandlerClass
    keywords = handler.keywords if isinstance(handler, functools.partial) else {}
    server.server.RequestHandlerClass = functools.partial(HouseRequestHandler, **keywords)  # type: ignore[assignment]
