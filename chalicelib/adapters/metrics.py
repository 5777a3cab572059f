"""Metric sinks: CloudWatch EMF through Powertools in the cloud, an in-memory tally locally and in tests."""

from __future__ import annotations

import threading

NAMESPACE = "CodeRunner"


class EmfMetrics:
    """Each point is flushed as one EMF log line (dimensions differ per point, so single_metric fits)."""

    def add(self, name: str, value: float, unit: str, dims: dict[str, str]) -> None:
        from aws_lambda_powertools.metrics import MetricUnit, single_metric

        with single_metric(name=name, unit=MetricUnit(unit), value=value, namespace=NAMESPACE) as metric:
            for key, val in dims.items():
                metric.add_dimension(name=key, value=str(val))


class InMemoryMetrics:
    """Counts and sums per (name, dimensions), kept in `totals` (the local stack and tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.totals: dict[str, float] = {}

    def add(self, name: str, value: float, unit: str, dims: dict[str, str]) -> None:
        label = name + "".join(f",{k}={v}" for k, v in sorted(dims.items()))
        with self._lock:
            self.totals[label] = self.totals.get(label, 0.0) + value


def emf_lines(points: list[tuple[str, float, str, dict[str, str]]], service: str = "code-runner") -> list[str]:
    """The EMF log lines `EmfMetrics` writes for `points` (one per point), as CloudWatch ingests them."""
    import json
    import time

    lines = []
    for name, value, unit, dims in points:
        dimensions = {**dims, "service": service}
        document = {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": NAMESPACE,
                        "Dimensions": [list(dimensions)],
                        "Metrics": [{"Name": name, "Unit": unit}],
                    }
                ],
            },
            **dimensions,
            name: [float(value)],
        }
        lines.append(json.dumps(document, separators=(",", ":")))
    return lines
