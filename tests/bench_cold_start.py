"""A function's cold start as Lambda runs it: a fresh interpreter imports app.py, then serves its first event.

`import app` alone can be made fast by deferring work to the first request; this measures both, so that a
saving which only moves cost into every first request shows as such. Each sample is a fresh interpreter
against a moto server of this process (over HTTP, as in AWS), and reports its own CPU time (all threads of
the process, not the sandbox's children) for: the import, the first event, and a second event (warm).

- api: `POST /v1/jobs` through the Chalice app (an API Gateway proxy event), then a second one.
- worker: the enterprise worker's handler with the message of one job the api sample submitted, then the
  other's (another key's).

`python -m tests.bench_cold_start [ROOT ...]` measures the app of each ROOT (default: this checkout) in turn
against the same server, so that two checkouts compare in one run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Run in the fresh interpreter: argv[1] is "api" or "worker", argv[2] a JSON file of two events, argv[3] where
# to write the figures.
_CHILD = r"""
import json, sys, time
kind, events, out = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]

class Context:
    aws_request_id = "bench"
    function_name = "code-runner-bench"
    memory_limit_in_mb = 1769
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:code-runner-bench"
    def get_remaining_time_in_millis(self):
        return 60_000

marks = [time.process_time()]
import app
marks.append(time.process_time())
handler = app.app if kind == "api" else app.worker_enterprise
answers = []
for event in events:
    answers.append(handler(event, Context()))
    marks.append(time.process_time())
json.dump({"cpu_ms": [round((b - a) * 1000, 1) for a, b in zip(marks, marks[1:])], "app": app.__file__,
           "answers": answers}, open(out, "w"), default=str)
"""


def _api_event(key: str) -> dict[str, Any]:
    body = json.dumps({"runtime": "python", "source": "print(1)"})
    return {
        "resource": "/v1/jobs",
        "path": "/v1/jobs",
        "httpMethod": "POST",
        "headers": {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/v1/jobs",
            "httpMethod": "POST",
            "requestId": "bench",
            "path": "/api/v1/jobs",
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": body,
        "isBase64Encoded": False,
    }


def _sqs_events(deps: Any, jobs: int) -> list[dict[str, Any]]:
    """The jobs the API sample submitted (one per key), each message as the worker's Lambda event carries it."""
    from chalicelib.adapters.aws import client
    from devtools.worker import lambda_sqs_record

    sqs, url = client("sqs"), deps.queue.url("enterprise")
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"])
    records = [lambda_sqs_record(m, arn) for m in got["Messages"]]
    assert len(records) == jobs, records
    return [{"Records": [record]} for record in records]


def _sample(root: Path, kind: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        given, out = Path(tmp) / "events.json", Path(tmp) / "out.json"
        given.write_text(json.dumps(events))
        env = {**os.environ, "PYTHONPATH": str(root), "AWS_LAMBDA_FUNCTION_NAME": "code-runner-bench"}
        env.pop("POWERTOOLS_METRICS_DISABLED", None)  # as deployed: EMF metrics on (printed to stdout)
        subprocess.run(
            [sys.executable, "-c", _CHILD, kind, str(given), str(out)],
            cwd=root,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        figures: dict[str, Any] = json.loads(out.read_text())
    assert Path(figures["app"]).resolve().parent == root.resolve(), figures["app"]
    return figures


def first_invocation(roots: list[Path], runs: int = 5) -> dict[str, Any]:
    """Median CPU ms of import, first and second event, per root and kind (samples interleaved by root)."""
    from chalicelib.services.keys import create_key
    from tests.bench import _moto_stack

    samples: dict[str, dict[str, list[list[float]]]] = {str(r): {"api": [], "worker": []} for r in roots}
    with _moto_stack() as deps:
        os.environ["CODERUNNER_SANDBOX_POOL_SIZE"] = "0"  # no pool warming in the background of a sample
        for _ in range(runs):
            for root in roots:
                keys = [create_key(deps, f"cold-{n}", "enterprise")[0] for n in range(2)]
                api = _sample(root, "api", [_api_event(keys[0]), _api_event(keys[1])])
                assert all(a["statusCode"] == 202 for a in api["answers"]), api["answers"]
                worker = _sample(root, "worker", _sqs_events(deps, len(keys)))
                assert all(a == {"batchItemFailures": []} for a in worker["answers"]), worker["answers"]
                samples[str(root)]["api"].append(api["cpu_ms"])
                samples[str(root)]["worker"].append(worker["cpu_ms"])
    out: dict[str, Any] = {}
    for root, kinds in samples.items():
        out[root] = {
            kind: dict(
                zip(
                    ("import_cpu_ms", "first_event_cpu_ms", "second_event_cpu_ms"),
                    (round(statistics.median(column), 1) for column in zip(*rows, strict=True)),
                    strict=True,
                )
            )
            for kind, rows in kinds.items()
        }
        for kind in out[root].values():
            kind["import_plus_first_cpu_ms"] = round(kind["import_cpu_ms"] + kind["first_event_cpu_ms"], 1)
    return out


def figure(runs: int = 5) -> dict[str, Any]:
    """`make bench`'s `first_invocation`: this checkout's API and worker cold starts, import and first event."""
    return {
        **first_invocation([ROOT], runs)[str(ROOT)],
        "note": "CPU ms of a fresh interpreter (all its threads; not the sandbox's children), median: `import app`, "
        "then the first and a second event: POST /v1/jobs through the Chalice app, the enterprise worker with one "
        "job's SQS message; against a moto server over HTTP, EMF metrics on as deployed. Work deferred from the "
        "import to the first event shows in import_plus_first_cpu_ms",
    }


if __name__ == "__main__":
    given = [Path(arg).resolve() for arg in sys.argv[1:]] or [ROOT]
    print(json.dumps(first_invocation(given, int(os.environ.get("RUNS", "5"))), indent=2))
