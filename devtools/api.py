"""The local stack's API process: `python -m devtools.api PORT`.

Chalice's own local request handling (`chalice.local`: the same routes, the same API Gateway event shape as
`chalice local`) on chalice's threaded HTTP server, in a process of its own so the API has a core's worth of
GIL apart from moto and the workers. One thing differs from `chalice local`: a listen backlog of 128 instead
of socketserver's 5, which a burst of clients opening connections at once overflows (connection resets).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from devtools import logs
from devtools.children import exit_with_parent
from devtools.local_gateway import answer_unknown_routes
from devtools.stack import ROOT


def local_server(app: Any, host: str, port: int) -> Any:
    """What `chalice.local.create_local_server` builds, on a server with a deeper listen backlog."""
    from chalice.config import Config
    from chalice.local import CustomLocalChalice, LocalChalice, LocalDevServer, ThreadedHTTPServer

    class Server(ThreadedHTTPServer):
        request_queue_size = 128

    config = Config.create(chalice_stage=os.environ.get("CODERUNNER_STAGE", "dev"), app_name="code-runner")
    CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)  # a thread-local current_request
    app.__class__ = CustomLocalChalice
    return LocalDevServer(app, config, host, port, server_cls=Server)


def main() -> None:
    logs.configure("api")
    port = int(sys.argv[1])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the stack, which stops its pieces in order
    exit_with_parent()
    sys.path.insert(0, str(ROOT))
    from app import app, logger
    from chalicelib.adapters.aws import client

    # The app's Powertools Logger (built here rather than by the first request) hands its JSON handler and
    # INFO level to every registered logger (botocore's and werkzeug's too): give them back to this process's
    # handler and quiet the libraries again.
    logger.append_keys()
    logs.take_back_from_powertools()
    for service in ("dynamodb", "sqs"):  # build the clients now rather than in the first request
        client(service)
    server = local_server(app, "127.0.0.1", port)
    answer_unknown_routes(server)  # the house 404, as app.http_api answers it in the cloud
    server.server.serve_forever()


if __name__ == "__main__":
    main()
