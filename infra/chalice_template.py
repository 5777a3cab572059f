"""The template `chalice package` generates, built through Chalice's Python API without the deployment zip.

`chalice package` resolves pip requirements and zips them before it writes the template, which takes time and
the network. The template does not depend on the zip (every function's CodeUri is `./deployment.zip`), so the
merge can be built and tested against the very same generator, from the same config, in under a second.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REGION = "us-east-1"  # only used to look up service principals; the template holds no region


@dataclass(frozen=True)
class ChaliceTemplate:
    """The generated SAM template and, per function logical id, the name the app gave the function."""

    template: dict[str, Any]
    function_names: dict[str, str]  # e.g. {"WorkerFree": "worker_free", "APIHandler": "api_handler"}


@contextlib.contextmanager
def _app_for_stage(stage: str) -> Iterator[None]:
    """Make `import app` give the app as packaged for `stage` (app.py reads CODERUNNER_STAGE at import).

    An app module already imported for that stage is used as it is: importing app.py twice in one process
    fails (Powertools refuses to copy its logger config onto itself again). Only another stage's app is set
    aside for the build and put back after; a module imported here stays, as any import would.
    """
    loaded = sys.modules.get("app")
    saved = loaded if loaded is not None and getattr(loaded, "STAGE", None) != stage else None
    if saved is not None:
        del sys.modules["app"]
    saved_stage = os.environ.get("CODERUNNER_STAGE")
    os.environ["CODERUNNER_STAGE"] = stage
    try:
        yield
    finally:
        if saved is not None:
            sys.modules["app"] = saved
        if saved_stage is None:
            os.environ.pop("CODERUNNER_STAGE", None)
        else:
            os.environ["CODERUNNER_STAGE"] = saved_stage


def generate(stage: str, project_dir: Path = ROOT) -> ChaliceTemplate:
    """What `chalice package --stage <stage>` writes to sam.json, before any merge template is applied."""
    import botocore.session
    from chalice.awsclient import TypedAWSClient
    from chalice.cli.factory import CLIFactory
    from chalice.deploy import deployer, models
    from chalice.deploy.appgraph import ApplicationGraphBuilder, DependencyBuilder
    from chalice.deploy.swagger import CFNSwaggerGenerator
    from chalice.package import PackageOptions, ResourceBuilder, SAMTemplateGenerator
    from chalice.policy import AppPolicyGenerator
    from chalice.utils import OSUtils, to_cfn_resource_name

    class ZipPlaceholder(deployer.BaseDeployStep):  # type: ignore[misc]
        """Stands in for the pip + zip step: names the zip `chalice package` copies next to the template."""

        def handle_deploymentpackage(self, config: Any, resource: Any) -> None:
            resource.filename = "./deployment.zip"

    osutils = OSUtils()
    # The same steps as chalice.deploy.deployer.create_build_stage, with the packager swapped out.
    build_stage = deployer.BuildStage(
        steps=[
            deployer.InjectDefaults(),
            ZipPlaceholder(),
            deployer.PolicyGenerator(policy_gen=AppPolicyGenerator(osutils=osutils), osutils=osutils),
            deployer.SwaggerBuilder(swagger_generator=CFNSwaggerGenerator()),
            deployer.LambdaEventSourcePolicyInjector(),
            deployer.WebsocketPolicyInjector(),
        ]
    )
    session = botocore.session.get_session()
    if not session.get_config_variable("region"):
        session.set_config_variable("region", DEFAULT_REGION)
    with _app_for_stage(stage):
        config = CLIFactory(project_dir=str(project_dir)).create_config_obj(chalice_stage_name=stage)
        resources = ResourceBuilder(ApplicationGraphBuilder(), DependencyBuilder(), build_stage).construct_resources(
            config, stage
        )
        template = SAMTemplateGenerator(config, PackageOptions(TypedAWSClient(session=session))).generate(resources)
    names = {}
    for resource in resources:
        if isinstance(resource, models.LambdaFunction):
            logical_id = to_cfn_resource_name(resource.resource_name)
            # The generator moves the REST API's handler to the fixed id "APIHandler".
            names[logical_id if logical_id in template["Resources"] else "APIHandler"] = resource.resource_name
    return ChaliceTemplate(template=template, function_names=names)
