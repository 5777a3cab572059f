"""Build the template merged into `chalice package` (--merge-template), and check the result.

    python -m infra.build_template --stage dev --out build/merge-template.json
    python -m infra.build_template --stage dev --check build/sam.json

The merge template is the state (infra/state.py: the tables of infra/resources.json and one queue and DLQ per
tier of chalicelib/deployment.py TIER_NAMES, the same definitions the local stack creates its resources from),
every infra/cfn/*.json fragment, and what infra/wiring.py, infra/alarms.py and infra/dashboard.py derive from
the tiers and the functions Chalice generates. Chalice deep-merges it over its own template: objects merge key
by key, anything else (lists included) is replaced.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chalicelib.config import APP_NAME, TIER_NAMES
from chalicelib.tier_resources import missing_functions
from infra import chalice_template, checks, dashboard, http_api, sandbox_function, state, wiring

INFRA = Path(__file__).resolve().parent
FRAGMENTS = INFRA / "cfn"
SECTIONS = ("Parameters", "Conditions", "Resources", "Outputs")


def load(path: Path) -> dict[str, Any]:
    """One JSON document; a syntax error names the file."""
    try:
        return dict(json.loads(path.read_text()))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _is_patch(section: str, value: Any) -> bool:
    """A resource without a Type only adds properties to one that Chalice generates."""
    return section == "Resources" and isinstance(value, dict) and "Type" not in value


def combine(parts: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Union of the fragments' sections. Patches to the same Chalice resource merge; any other logical id
    defined twice is an error, not a silent overwrite."""
    out: dict[str, Any] = {section: {} for section in SECTIONS}
    origin: dict[tuple[str, str], str] = {}
    for name, part in parts:
        unknown = set(part) - set(SECTIONS) - {"AWSTemplateFormatVersion", "Description"}
        if unknown:
            raise ValueError(f"{name}: unexpected sections {sorted(unknown)}")
        for section in SECTIONS:
            for key, value in part.get(section, {}).items():
                if (section, key) not in origin:
                    origin[section, key] = name
                    out[section][key] = value
                elif _is_patch(section, value) and _is_patch(section, out[section][key]):
                    out[section][key] = deep_merge(value, out[section][key])
                else:
                    raise ValueError(f"{name}: {section}.{key} is already defined in {origin[section, key]}")
    return out


def fragments(stage: str, tiers: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """The state first (infra/state.py), then the hand-written infra/cfn/*.json in name order."""
    return [("infra/state.py", state.state_template(stage, tiers))] + [
        (p.name, load(p)) for p in sorted(FRAGMENTS.glob("*.json"))
    ]


def alarm_ids(resources: dict[str, Any]) -> list[str]:
    return [lid for lid, spec in resources.items() if spec.get("Type") == "AWS::CloudWatch::Alarm"]


def merge_template(
    stage: str, chalice: chalice_template.ChaliceTemplate, tiers: Sequence[str] | None = None
) -> dict[str, Any]:
    """The --merge-template document for `stage` and `tiers` (default: TIER_NAMES). wiring.WiringError when
    app.py lacks a tier's functions."""
    tiers = tuple(TIER_NAMES if tiers is None else tiers)
    parts = fragments(stage, tiers)
    parts.append(("infra/wiring.py", wiring.generate(chalice, parts[0][1], stage, tiers)))
    merged = combine(parts)
    # The app names its queues and event rule from the stage at package time, so the template is for that
    # stage only; the parameter stays for the fragments' ${Stage} and is pinned to it.
    merged["Parameters"]["Stage"] = {
        "Type": "String",
        "Default": stage,
        "AllowedValues": [stage],
        "Description": "The Chalice stage this template was packaged for (make package STAGE=...).",
    }
    labels = {fid: name for fid, name in chalice.function_names.items()}
    merged["Resources"]["OperationsDashboard"] = dashboard.dashboard(labels, alarm_ids(merged["Resources"]), tiers)
    merged["Outputs"]["DashboardUrl"] = {
        "Value": {
            "Fn::Sub": "https://${AWS::Region}.console.aws.amazon.com/cloudwatch/home"
            "?region=${AWS::Region}#dashboards:name=${OperationsDashboard}"
        }
    }
    merged["Description"] = (
        f"{APP_NAME}: API, {', '.join(tiers)} queues and workers, Lambda and Fargate sandboxes "
        "(packaged by infra/package.sh; see infra/DEPLOY.md)"
    )
    return merged


def deep_merge(merge: dict[str, Any], chalice: dict[str, Any]) -> dict[str, Any]:
    """What `chalice package --merge-template` does with the two documents (the same merger class)."""
    from chalice.package import TemplateDeepMerger

    return dict(TemplateDeepMerger().merge(merge, chalice))


def build(stage: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(merge template, the packaged template it yields) for `stage`, without building the zip."""
    chalice = chalice_template.generate(stage)
    merge = merge_template(stage, chalice)
    return merge, packaged(merge, chalice.template)


def finalize(template: dict[str, Any]) -> dict[str, Any]:
    """What `chalice package` wrote, rewritten where a merge cannot reach: the sandbox functions as the sandbox
    image, and Chalice's REST API removed (the HTTP API of infra/cfn/api.json serves the routes)."""
    return http_api.without_rest_api(sandbox_function.as_image(template))


def packaged(merge: dict[str, Any], chalice: dict[str, Any]) -> dict[str, Any]:
    """What `make package` ships: chalice's merge, then `finalize`."""
    return finalize(deep_merge(merge, chalice))


def _report(label: str, found: list[str]) -> int:
    for line in found:
        print(f"{label}: {line}", file=sys.stderr)
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stage", default="dev", help="Chalice stage (.chalice/config.json)")
    parser.add_argument("--out", type=Path, help="write the merge template here")
    parser.add_argument("--check", type=Path, help="check a packaged template (build/sam.json)")
    parser.add_argument(
        "--finalize", type=Path, help="rewrite what chalice packaged: the sandbox as an image, no REST API"
    )
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except wiring.WiringError as exc:
        return _report("make package", exc.problems)


def _run(args: argparse.Namespace) -> int:
    if args.finalize:
        args.finalize.write_text(json.dumps(finalize(load(args.finalize)), indent=2) + "\n")
    if args.out:
        merge, packaged = build(args.stage)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(merge, indent=2) + "\n")
        if _report(str(args.out), checks.problems(packaged)):
            return 1
    if args.check:
        template = load(args.check)
        found = checks.problems(template)
        if template != build(args.stage)[1]:
            # The tests check the Python-API build; they must be checking what ships.
            found.append("differs from what infra/chalice_template.py generates: the infra tests miss it")
        import app  # what Lambda imports: every function's handler must be there

        found += checks.missing_handlers(template, app) + missing_functions(TIER_NAMES, app)
        return _report(str(args.check), found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
