"""What the AWS requests of this process cost, counted with botocore event hooks on the real clients.

`AwsMeter` hooks the shared clients (chalicelib.adapters.aws) and records every request by service and
operation. For DynamoDB it also computes the request units DynamoDB would bill on demand, since moto does not:

- writes (PutItem, UpdateItem, DeleteItem) cost ceil(size / 1 KB) write units, sized on the larger of the item
  before and after the write (a failed condition: the item as it stood); the images are read with a client of
  our own, outside the count;
- every global secondary index the write touches costs its own write units, sized on the projected
  attributes: one write when the item enters or leaves the index or a projected attribute changes, two (delete
  and put) when the index key changes, none otherwise;
- reads cost ceil(size / 4 KB) read units (half for an eventually consistent read, and every index query is
  one), a query or scan summed over the items it evaluated (filters do not reduce it), at least half a unit.

Item sizes follow DynamoDB's rules: attribute names and values in UTF-8, numbers one byte per two significant
digits plus one, lists and maps three bytes plus one per element.
"""

from __future__ import annotations

import base64
import math
import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

_WRITES = ("PutItem", "UpdateItem", "DeleteItem")
_READS = ("GetItem", "BatchGetItem", "Query", "Scan")
_PLACEHOLDER = re.compile(r"[:#][A-Za-z0-9_]+")


def value_size(value: dict[str, Any]) -> int:
    """Bytes DynamoDB counts for one typed value."""
    kind, raw = next(iter(value.items()))
    if kind == "S":
        return len(raw.encode())
    if kind == "N":
        return _number_size(raw)
    if kind == "B":
        return len(raw if isinstance(raw, bytes) else base64.b64decode(raw))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in raw)
    if kind == "NS":
        return sum(_number_size(n) for n in raw)
    if kind == "BS":
        return sum(len(b) for b in raw)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in raw)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in raw.items())
    raise ValueError(f"unknown DynamoDB type {kind}")


def _number_size(raw: str) -> int:
    digits = str(Decimal(raw).normalize()).lstrip("-").replace(".", "").lstrip("0") or "0"
    digits = digits.split("E")[0]
    return math.ceil(len(digits) / 2) + 1


def item_size(item: dict[str, Any] | None) -> int:
    """Bytes of a whole item in DynamoDB's typed JSON (0 for none)."""
    return sum(len(name.encode()) + value_size(val) for name, val in (item or {}).items())


@dataclass
class Index:
    name: str
    keys: tuple[str, ...]
    projection: str  # ALL | KEYS_ONLY | INCLUDE
    included: tuple[str, ...] = ()

    def holds(self, item: dict[str, Any] | None) -> bool:
        return item is not None and all(k in item for k in self.keys)

    def project(self, item: dict[str, Any], table_keys: tuple[str, ...]) -> dict[str, Any]:
        if self.projection == "ALL":
            return item
        names = set(table_keys) | set(self.keys) | set(self.included)
        return {k: v for k, v in item.items() if k in names}


@dataclass
class Table:
    keys: tuple[str, ...]
    indexes: dict[str, Index]


def index_writes(table: Table, old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, float]:
    """Write units each index of `table` consumes when an item goes from `old` to `new` (None: absent)."""
    out: dict[str, float] = {}
    for index in table.indexes.values():
        before = index.project(old, table.keys) if old is not None and index.holds(old) else None
        after = index.project(new, table.keys) if new is not None and index.holds(new) else None
        units = 0.0
        if before is not None and after is not None:
            if any(before.get(k) != after.get(k) for k in index.keys):
                units = _wru(before) + _wru(after)
            elif before != after:
                units = _wru(after)
        elif before is not None or after is not None:
            units = _wru(before if after is None else after)
        if units:
            out[index.name] = units
    return out


def _wru(item: dict[str, Any] | None) -> float:
    return float(max(1, math.ceil(item_size(item) / 1024)))


def _rru(size: int, consistent: bool) -> float:
    units = float(max(1, math.ceil(size / 4096)))
    return units if consistent else units / 2


@dataclass
class Usage:
    """What was sent, by `service.Operation`, and DynamoDB's request units by table (and index)."""

    requests: Counter[str] = field(default_factory=Counter)
    empty_receives: int = 0
    wru: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))  # "jobs", "jobs/index/x"
    rru: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def total_wru(self) -> float:
        return float(sum(self.wru.values()))

    def total_rru(self) -> float:
        return float(sum(self.rru.values()))


class AwsMeter:
    """Hooks botocore events on the given clients (raw boto3 clients); `usage` accumulates until `reset`.

    `inspector` is a separate DynamoDB client, never hooked: the meter reads item images and table
    descriptions through it, so its own reads are not counted."""

    def __init__(self, clients: dict[str, Any], inspector: Any) -> None:
        self.clients, self.inspector = clients, inspector
        self.usage = Usage()
        self._tables: dict[str, Table] = {}
        self._lock = threading.Lock()
        self._by_thread: dict[int, Counter[str]] = {}
        self._overhead: dict[int, float] = {}  # CPU seconds the meter itself spent in a thread (its own reads)

    def __enter__(self) -> AwsMeter:
        for client in self.clients.values():
            client.meta.events.register("provide-client-params", self._params)
            client.meta.events.register("after-call", self._called)
        return self

    def __exit__(self, *_: Any) -> None:
        for client in self.clients.values():
            client.meta.events.unregister("provide-client-params", self._params)
            client.meta.events.unregister("after-call", self._called)

    def reset(self) -> Usage:
        """The usage so far, and start again from nothing."""
        with self._lock:
            usage, self.usage = self.usage, Usage()
        return usage

    def take_thread_requests(self) -> tuple[Counter[str], float]:
        """Requests this thread made since it last asked, by service (one Lambda invocation's round trips), and
        the CPU time the meter's own work took in it (not the invocation's)."""
        me = threading.get_ident()
        with self._lock:
            return self._by_thread.pop(me, Counter()), self._overhead.pop(me, 0.0)

    def _spent(self, started: float) -> None:
        me = threading.get_ident()
        with self._lock:
            self._overhead[me] = self._overhead.get(me, 0.0) + time.thread_time() - started

    # -- hooks -----------------------------------------------------------------------------------------------
    def _params(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        started = time.thread_time()
        context["meter_params"] = dict(params)
        service = model.service_model.service_name
        if service == "dynamodb" and model.name in _WRITES:
            context["meter_before"] = self._image(params["TableName"], self._key_of(params))
        self._spent(started)

    def _called(self, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        started = time.thread_time()
        try:
            self._count(parsed, model, context)
        finally:
            self._spent(started)

    def _count(self, parsed: dict[str, Any], model: Any, context: dict[str, Any]) -> None:
        service, operation = model.service_model.service_name, model.name
        params = context.get("meter_params", {})
        with self._lock:
            if service == "sqs" and operation == "ReceiveMessage" and not parsed.get("Messages"):
                self.usage.empty_receives += 1  # idle polling: the event source mapping's, not a job's
                return
            self.usage.requests[f"{service}.{operation}"] += 1
            self._by_thread.setdefault(threading.get_ident(), Counter())[service] += 1
        if service != "dynamodb" or "Error" in parsed and operation not in _WRITES:
            return
        if operation in _WRITES:
            self._write(params, parsed, context.get("meter_before"))
        elif operation in _READS:
            self._read(operation, params, parsed)

    # -- DynamoDB capacity ------------------------------------------------------------------------------------
    def table(self, name: str) -> Table:
        if name not in self._tables:
            desc = self.inspector.describe_table(TableName=name)["Table"]
            indexes = {
                gsi["IndexName"]: Index(
                    gsi["IndexName"],
                    tuple(k["AttributeName"] for k in gsi["KeySchema"]),
                    gsi["Projection"]["ProjectionType"],
                    tuple(gsi["Projection"].get("NonKeyAttributes", [])),
                )
                for gsi in desc.get("GlobalSecondaryIndexes", [])
            }
            self._tables[name] = Table(tuple(k["AttributeName"] for k in desc["KeySchema"]), indexes)
        return self._tables[name]

    def _key_of(self, params: dict[str, Any]) -> dict[str, Any]:
        if "Key" in params:
            return dict(params["Key"])
        keys = self.table(params["TableName"]).keys
        return {k: params["Item"][k] for k in keys}

    def _image(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        item = self.inspector.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        return dict(item) if item else None

    def _write(self, params: dict[str, Any], parsed: dict[str, Any], before: dict[str, Any] | None) -> None:
        name = params["TableName"]
        short = _short(name)
        if "Error" in parsed:  # a failed condition is billed on the item as it stood
            with self._lock:
                self.usage.wru[short] += _wru(before)
            return
        after = self._image(name, self._key_of(params))
        units = {short: max(_wru(before), _wru(after))}
        for index, wru in index_writes(self.table(name), before, after).items():
            units[f"{short}/index/{index}"] = wru
        with self._lock:
            for target, value in units.items():
                self.usage.wru[target] += value

    def _read(self, operation: str, params: dict[str, Any], parsed: dict[str, Any]) -> None:
        units: list[tuple[str, float]] = []
        if operation == "GetItem":
            consistent = bool(params.get("ConsistentRead"))
            units.append((_short(params["TableName"]), _rru(item_size(parsed.get("Item")), consistent)))
        elif operation == "BatchGetItem":
            for table, items in parsed.get("Responses", {}).items():
                consistent = bool(params["RequestItems"][table].get("ConsistentRead"))
                units += [(_short(table), _rru(item_size(item), consistent)) for item in items]
        else:
            units.append((self._query_target(params), self._query_units(operation, params)))
        with self._lock:
            for target, value in units:
                self.usage.rru[target] += value

    @staticmethod
    def _query_target(params: dict[str, Any]) -> str:
        short = _short(params["TableName"])
        return f"{short}/index/{params['IndexName']}" if params.get("IndexName") else short

    def _query_units(self, operation: str, params: dict[str, Any]) -> float:
        """The same query again, unfiltered and unprojected, through the inspector: what DynamoDB read."""
        again = {k: v for k, v in params.items() if k not in ("Select", "FilterExpression", "ProjectionExpression")}
        used = set(_PLACEHOLDER.findall(" ".join(str(again.get(k, "")) for k in ("KeyConditionExpression",))))
        for name in ("ExpressionAttributeNames", "ExpressionAttributeValues"):
            kept = {k: v for k, v in again.get(name, {}).items() if k in used}
            if kept:
                again[name] = kept
            else:
                again.pop(name, None)
        resp = getattr(self.inspector, "query" if operation == "Query" else "scan")(**again)
        size = sum(item_size(i) for i in resp.get("Items", []))
        consistent = bool(params.get("ConsistentRead")) and not params.get("IndexName")
        return _rru(size, consistent)


def _short(table: str) -> str:
    """`code-runner-dev-jobs` -> `jobs`."""
    return table.rsplit("-", 1)[-1]


def by_table(counts: dict[str, float]) -> dict[str, float]:
    """Units summed per table (indexes folded into their table)."""
    out: dict[str, float] = defaultdict(float)
    for name, units in counts.items():
        out[name.split("/", 1)[0]] += units
    return dict(out)
