"""The sandbox functions (one per memory class) as container images of the sandbox image
(infra/sandbox/Dockerfile), not zips.

The python3.11 Lambda runtime is Amazon Linux 2 (glibc 2.26), where no official Node.js from 18 on runs, and the
zip carries the API's dependencies (boto3) the sandbox must not need. So the function runs the same image as
the Fargate task (the same `SandboxImageRepository` and `SandboxImageDigest`), with Lambda's runtime interface
client as its entry point: both sandboxes offer the same runtimes at the same versions. Chalice generates a zip
function, and a merge template cannot remove keys, so the packaged template is rewritten (`as_image`) after
`chalice package`, and the checks compare against the same rewrite.
"""

from __future__ import annotations

import copy
from typing import Any

from chalicelib.sandbox.selection import SANDBOX_MEMORY_CLASSES

SANDBOX_FUNCTIONS = tuple(f"Sandbox{size}" for size in SANDBOX_MEMORY_CLASSES)  # app.py's sandbox_<mb>
IMAGE_URI = {
    "Fn::Sub": "${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/"
    "${SandboxImageRepository}@${SandboxImageDigest}"
}
# The image's ENTRYPOINT is the Fargate task's; the function starts Lambda's runtime client on our handler.
IMAGE_CONFIG = {
    "EntryPoint": ["python", "-m", "awslambdaric"],
    "Command": ["chalicelib.sandbox.lambda_entry.handle"],
    "WorkingDirectory": "/app",
}
ZIP_ONLY = ("Runtime", "Handler", "CodeUri", "Layers")


def as_image(template: dict[str, Any]) -> dict[str, Any]:
    """`template` with every sandbox function packaged as the sandbox image (a copy; idempotent)."""
    out = copy.deepcopy(template)
    for function_id in SANDBOX_FUNCTIONS:
        properties = out["Resources"][function_id]["Properties"]
        for key in ZIP_ONLY:
            properties.pop(key, None)
        properties.update({"PackageType": "Image", "ImageUri": IMAGE_URI, "ImageConfig": IMAGE_CONFIG})
    return out
