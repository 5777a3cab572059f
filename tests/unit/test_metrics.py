"""The cloud's metrics sink writes an invocation's points as one EMF document (CloudWatch Logs bills by the
byte), with a directive per dimension set, as CloudWatch's embedded metric format reads them."""

from __future__ import annotations

import io
import json

from chalicelib.adapters.metrics import NAMESPACE, EmfMetrics, emf_lines


def test_an_invocations_points_become_one_document() -> None:
    out = io.StringIO()
    sink = EmfMetrics(out)
    sink.add("QueueWait", 40, "Milliseconds", {"tier": "pro"})
    sink.add("JobsFinished", 1, "Count", {"tier": "pro", "status": "succeeded"})
    sink.add("RunTime", 12, "Milliseconds", {"tier": "pro"})
    sink.add("SandboxOverhead", 5, "Milliseconds", {"tier": "pro", "sandbox": "lambda"})
    assert out.getvalue() == ""  # nothing until the invocation ends
    sink.flush()
    (line,) = out.getvalue().splitlines()
    doc = json.loads(line)
    directives = {
        tuple(d["Dimensions"][0]): [m["Name"] for m in d["Metrics"]] for d in doc["_aws"]["CloudWatchMetrics"]
    }
    assert directives == {
        ("service", "tier"): ["QueueWait", "RunTime"],
        ("service", "status", "tier"): ["JobsFinished"],
        ("sandbox", "service", "tier"): ["SandboxOverhead"],
    }
    assert {d["Namespace"] for d in doc["_aws"]["CloudWatchMetrics"]} == {NAMESPACE}
    assert doc["tier"] == "pro" and doc["status"] == "succeeded" and doc["service"] == "code-runner"
    assert doc["QueueWait"] == [40.0] and doc["JobsFinished"] == [1.0]
    sink.flush()
    assert len(out.getvalue().splitlines()) == 1  # flushed once: nothing left


def test_conflicting_dimension_values_and_repeated_points() -> None:
    lines = emf_lines(
        [
            ("JobsSubmitted", 1, "Count", {"tier": "free"}),
            ("JobsSubmitted", 1, "Count", {"tier": "free"}),
            ("JobsSubmitted", 1, "Count", {"tier": "pro"}),  # another value of `tier`: another document
        ],
        now=0,
    )
    first, second = (json.loads(line) for line in lines)
    assert first["tier"] == "free" and first["JobsSubmitted"] == [1.0, 1.0]
    assert second["tier"] == "pro" and second["JobsSubmitted"] == [1.0]
