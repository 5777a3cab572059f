"""Metric sinks: CloudWatch EMF in the cloud, an in-memory tally locally and in tests.

In Lambda every log line is billed by the byte (CloudWatch Logs ingestion), so the points an invocation
records are buffered and written as one EMF document when it ends (`flush`, called by app.py's handlers):
points that share dimension values share the document, each dimension set is one directive, and a metric
recorded twice keeps both values. That is one line where one line per point was written before.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import TextIO

NAMESPACE = "CodeRunner"
SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "code-runner")  # a dimension of every point (dashboards)
_MAX_METRICS = 100  # EMF's most metrics in one document

Point = tuple[str, float, str, dict[str, str]]  # name, value, unit, dimensions


def emf_lines(points: list[Point], service: str = SERVICE, now: float | None = None) -> list[str]:
    """EMF documents (one JSON line each) that carry `points`: as few as their dimension values allow."""
    stamp = int((time.time() if now is None else now) * 1000)
    documents: list[_Document] = []
    for name, value, unit, dims in points:
        members = {**{k: str(v) for k, v in dims.items()}, "service": service}
        document = next((d for d in documents if d.takes(name, members)), None)
        if document is None:
            document = _Document()
            documents.append(document)
        document.add(name, float(value), unit, members)
    return [d.line(stamp) for d in documents]


class _Document:
    """One EMF document: root members (dimension values and metric values) and a directive per dimension set."""

    def __init__(self) -> None:
        self.members: dict[str, str] = {}
        self.values: dict[str, list[float]] = {}
        self.units: dict[str, str] = {}
        self.dimensions_of: dict[str, tuple[str, ...]] = {}

    def takes(self, name: str, members: dict[str, str]) -> bool:
        """No dimension has another value here, the metric (if present) has the same dimensions, room is left."""
        if any(self.members.get(key, val) != val for key, val in members.items()):
            return False
        if name in self.dimensions_of:
            return self.dimensions_of[name] == tuple(sorted(members))
        return len(self.values) < _MAX_METRICS and name not in self.members

    def add(self, name: str, value: float, unit: str, members: dict[str, str]) -> None:
        self.members.update(members)
        self.values.setdefault(name, []).append(value)
        self.units[name] = unit
        self.dimensions_of[name] = tuple(sorted(members))

    def line(self, stamp: int) -> str:
        directives: dict[tuple[str, ...], list[dict[str, str]]] = {}
        for name, dimensions in self.dimensions_of.items():
            directives.setdefault(dimensions, []).append({"Name": name, "Unit": self.units[name]})
        aws = {
            "Timestamp": stamp,
            "CloudWatchMetrics": [
                {"Namespace": NAMESPACE, "Dimensions": [list(dims)], "Metrics": metrics}
                for dims, metrics in directives.items()
            ],
        }
        return json.dumps({"_aws": aws, **self.members, **self.values}, separators=(",", ":"))


class EmfMetrics:
    """Buffers each thread's points until `flush`, then writes them to stdout as EMF (see the module doc)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out
        self._local = threading.local()

    def _points(self) -> list[Point]:
        if not hasattr(self._local, "points"):
            self._local.points = []
        points: list[Point] = self._local.points
        return points

    def add(self, name: str, value: float, unit: str, dims: dict[str, str]) -> None:
        self._points().append((name, value, unit, dict(dims)))

    def flush(self) -> None:
        points = self._points()
        if not points:
            return
        lines = emf_lines(points)
        points.clear()
        out = self._out or sys.stdout
        out.write("".join(line + "\n" for line in lines))
        out.flush()


class InMemoryMetrics:
    """Counts and sums per (name, dimensions), kept in `totals` (the local stack and tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.totals: dict[str, float] = {}

    def add(self, name: str, value: float, unit: str, dims: dict[str, str]) -> None:
        label = name + "".join(f",{k}={v}" for k, v in sorted(dims.items()))
        with self._lock:
            self.totals[label] = self.totals.get(label, 0.0) + value

    def flush(self) -> None:
        """Nothing to write: the totals are the record."""
