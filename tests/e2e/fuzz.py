"""`make fuzz` (schemathesis): generated requests from the OpenAPI document against a local stack.

    python -m tests.e2e.fuzz [--examples 40] [--min-requests 1000] [--seed N] [--phases ...] [--workdir DIR]

Starts its own stack (own ports, own stage, as tests/e2e/stackproc.py does), loads `GET /v1/openapi.json` and
runs `schemathesis run` on it, valid and invalid data alike (`--mode all`), with an enterprise key as the
bearer auth, and these checks: every status documented for its route, documented content types and required
headers, every body valid against its schema. `?wait` is capped at `WAIT_CAP_S` (tests/e2e/fuzz_hooks.py) so
long-polls do not eat the budget. Every exchange is recorded (HAR) and counted here too:

- requests: how many were sent (at least --min-requests);
- server_errors: 5xx other than 503 (none allowed);
- documented_503 / undocumented_503: 503s on routes that document them with `Retry-After`, and any other
  (none allowed). The stack's enterprise queue holds 1 job, so generated submits do meet backpressure;
- schema_violations: answers that break the document (tests/conformance.py; none allowed).

Prints one line on stdout: `fuzz: requests=N server_errors=0 documented_503=N undocumented_503=0
schema_violations=0 schemathesis=ok`, with the statuses seen on stderr; exits non-zero when a rule is broken.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.conformance import documented_answer, problems, route_of
from tests.e2e.stackproc import StackProcess, start_stack

HOOKS = Path(__file__).with_name("fuzz_hooks.py")
# The enterprise queue (the fuzzer's key) holds 1 job: a burst of generated submits meets backpressure, so the
# run also checks the 503 `queue_full` answers (documented, with Retry-After), not only the happy paths.
FUZZ_SETTINGS = {"CODERUNNER_TIERS_JSON": '{"enterprise": {"queue_cap": 1}}'}
# schemathesis' own `not_a_server_error` counts every 5xx, a documented 503 (backpressure) too: the recount
# below holds 5xx to the rules instead (none but a documented 503 with Retry-After).
CHECKS = (
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


@dataclass
class FuzzReport:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_route: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    undocumented_503: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    schemathesis_code: int = 0
    schemathesis_tail: str = ""

    @property
    def ok(self) -> bool:
        return not (self.server_errors or self.undocumented_503 or self.violations or self.schemathesis_code)

    def line(self) -> str:
        verdict = "ok" if self.schemathesis_code == 0 else f"failed({self.schemathesis_code})"
        return (
            f"fuzz: requests={self.requests} server_errors={len(self.server_errors)} "
            f"documented_503={self.statuses[503] - len(self.undocumented_503)} "
            f"undocumented_503={len(self.undocumented_503)} schema_violations={len(self.violations)} "
            f"schemathesis={verdict}"
        )

    def details(self) -> str:
        lines = [f"statuses: {dict(sorted(self.statuses.items()))}", f"routes: {dict(sorted(self.by_route.items()))}"]
        for label, found in (
            ("server error", self.server_errors),
            ("undocumented 503", self.undocumented_503),
            ("schema violation", self.violations),
        ):
            lines += [f"{label}: {item}" for item in found[:20]]
        if self.schemathesis_code:
            lines.append(self.schemathesis_tail)
        return "\n".join(lines)


def _body(content: dict[str, Any]) -> bytes:
    text = content.get("text") or ""
    return base64.b64decode(text) if content.get("encoding") == "base64" else text.encode()


def documented_method(document: dict[str, Any], method: str, path: str) -> bool:
    route = route_of(document, path)
    return route is not None and method.lower() in document["paths"][route]


def house_error(body: bytes) -> bool:
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str)


def count(har: dict[str, Any], document: dict[str, Any], report: FuzzReport) -> None:
    """Count and check every recorded exchange."""
    for entry in har["log"]["entries"]:
        request, response = entry["request"], entry["response"]
        method, status = request["method"], int(response["status"])
        path = urlsplit(request["url"]).path
        headers = {h["name"]: h["value"] for h in response.get("headers", [])}
        where = f"{method} {path} -> {status}"
        report.requests += 1
        report.statuses[status] += 1
        report.by_route[f"{method} {route_of(document, path) or '(no route)'}"] += 1
        if status >= 500 and status != 503:
            report.server_errors.append(f"{where}: {_body(response.get('content', {}))[:300]!r}")
        if status == 503 and (
            documented_answer(document, method, path, 503) is None or "retry-after" not in {k.lower() for k in headers}
        ):
            report.undocumented_503.append(where)
        body = _body(response.get("content", {}))
        if not documented_method(document, method, path):
            # schemathesis also tries methods a route does not have: the house 404/405, nothing else (but
            # chalice local's empty answer to a CORS preflight, which API Gateway gives our 404 instead)
            preflight = method == "OPTIONS" and status == 200 and not body
            if not preflight and (status not in (404, 405) or not house_error(body)):
                report.violations.append(f"{where}: an undocumented method must be a house 404/405")
        elif status < 500 or status == 503:
            report.violations += problems(document, method, path, status, headers, body)


def run_schemathesis(stack: StackProcess, key: str, args: argparse.Namespace, har_path: Path) -> tuple[int, str]:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{stack.base_url}/v1/openapi.json",
        "--url",
        stack.base_url,
        "-H",
        f"Authorization: Bearer {key}",
        "--checks",
        ",".join(CHECKS),
        "--mode",
        "all",
        "--max-examples",
        str(args.examples),
        "--workers",
        "1",  # Hypothesis describes strategies with ast.parse, which CPython 3.11 can crash on from two threads
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--report",
        "har",
        "--report-har-path",
        str(har_path),
        "--report-dir",
        str(har_path.parent),
        "--output-truncate",
        "true",
    ]
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    if args.phases:
        command += ["--phases", args.phases]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "NO_COLOR": "1", "PYTHONPATH": str(Path.cwd())}
    # Its own working directory: schemathesis keeps a cache (.schemathesis/) there.
    done = subprocess.run(command, env=env, cwd=har_path.parent, capture_output=True, text=True, timeout=args.timeout)
    out = done.stdout + done.stderr
    return done.returncode, "\n".join(out.splitlines()[-60:])


def fuzz(args: argparse.Namespace, workdir: Path) -> tuple[FuzzReport, StackProcess]:
    """Start a stack, fuzz it, count; the stack is stopped before returning."""
    workdir = workdir.resolve()
    stack = start_stack(workdir / "stack", workers=1, settings=FUZZ_SETTINGS)
    report = FuzzReport()
    try:
        key = stack.keys["enterprise"]  # the largest quotas: the run is about answers, not limits
        document = stack.api().call("GET", "/v1/openapi.json").body
        har_path = workdir / "fuzz.har"
        report.schemathesis_code, report.schemathesis_tail = run_schemathesis(stack, key, args, har_path)
        if har_path.exists():
            count(json.loads(har_path.read_text()), document, report)
    finally:
        stack.stop()
    return report, stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=40, help="test cases per operation and phase")
    parser.add_argument("--min-requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--phases", default="", help="schemathesis phases (default: all of them)")
    parser.add_argument("--timeout", type=float, default=1500, help="seconds for the schemathesis run")
    parser.add_argument("--workdir", type=Path, default=None, help="keeps the HAR and the stack's output")
    args = parser.parse_args(argv)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="fuzz-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    report, _ = fuzz(args, workdir)
    print(report.details(), file=sys.stderr)
    print(f"fuzz: HAR and stack output in {workdir}", file=sys.stderr)
    print(report.line(), flush=True)
    enough = report.requests >= args.min_requests
    if not enough:
        print(f"fuzz: only {report.requests} requests (want {args.min_requests})", file=sys.stderr)
    return 0 if report.ok and enough else 1


if __name__ == "__main__":
    sys.exit(main())
