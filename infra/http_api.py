"""The deployed API is the HTTP API of infra/cfn/api.json; the REST API Chalice generates for the app's routes
is removed from the packaged template.

Chalice 1.34 can only package its routes as a REST API (`RestAPI`, an AWS::Serverless::Api whose swagger names
every route), and a merge template cannot remove a resource. So, like the sandbox's image (infra/
sandbox_function.py), the packaged template is rewritten after `chalice package` (`without_rest_api`), and the
checks compare against the same rewrite. What pointed at the REST API is re-pointed by the merge template
(infra/cfn/api.json): the API function's invoke permission and the `EndpointURL` output. The routing the REST
API did is done by the API function's handler, app.http_api (chalicelib/edge/httpapi.py).
"""

from __future__ import annotations

import copy
from typing import Any

REST_API = "RestAPI"
# Chalice's outputs that name the REST API and nothing else.
REST_OUTPUTS = ("RestAPIId",)


def without_rest_api(template: dict[str, Any]) -> dict[str, Any]:
    """`template` without Chalice's REST API and its outputs (a copy; idempotent)."""
    out = copy.deepcopy(template)
    out["Resources"].pop(REST_API, None)
    for name in REST_OUTPUTS:
        out.get("Outputs", {}).pop(name, None)
    return out
