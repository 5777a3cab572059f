"""Counters on DynamoDB: tier queue depth and sequence, per-owner running slots, run-time stats and
idempotency claims. Each operation is one single-item conditional update (atomic on DynamoDB and on a moto
server)."""

from __future__ import annotations

from typing import Any

from chalicelib.adapters.aws import ConditionFailed, LazyClient
from chalicelib.adapters.dynamo import marshal, unmarshal, value
from chalicelib.domain.errors import QueueFull
from chalicelib.services.ports import KeyLoad

_STATS_BUCKET_S = 300  # run-time stats are kept per 5-minute bucket; "recent" = this bucket and the last


def _load(item: dict[str, Any]) -> KeyLoad:
    return KeyLoad(frozenset(item.get("active", set())), len(item.get("holders", set())))


class DynamoCounters:
    """Counters table: pk `pk`. Items: `tier#T` (queued, running, seq), `slots#OWNER` (holders: string set;
    active: the owner's jobs in flight, string set),
    `stats#T#BUCKET` (sum_ms, n), `idem#SCOPE` (body_hash, job_id)."""

    def __init__(self, table: str, client: Any = None) -> None:
        self.table = table
        self._client = client

    client = LazyClient("dynamodb")

    def _update(self, pk: str, expr: str, values: dict[str, Any], condition: str | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"pk": {"S": pk}},
            "UpdateExpression": expr,
            "ReturnValues": "ALL_NEW",
        }
        if values:  # DynamoDB rejects an empty map (e.g. for a bare REMOVE)
            kwargs["ExpressionAttributeValues"] = {k: value(v) for k, v in values.items()}
        if condition:
            kwargs["ConditionExpression"] = condition
        return unmarshal(self.client.update_item(**kwargs).get("Attributes")) or {}

    # -- tier queue --------------------------------------------------------------------------------------
    def reserve_queue_place(self, tier: str, cap: int) -> tuple[int, int]:
        try:
            item = self._update(
                f"tier#{tier}",
                "ADD queued :one, seq :one",
                {":one": 1, ":cap": cap},
                "attribute_not_exists(queued) OR queued < :cap",
            )
        except ConditionFailed as exc:
            raise QueueFull(tier, cap) from exc
        return int(item["seq"]), int(item["queued"]) - 1

    def adjust_tier(self, tier: str, queued: int = 0, running: int = 0) -> None:
        parts, values = [], {}
        if queued:
            parts.append("queued :q")
            values[":q"] = queued
        if running:
            parts.append("running :r")
            values[":r"] = running
        if parts:
            self._update(f"tier#{tier}", "ADD " + ", ".join(parts), values)

    def tier_counts(self, tier: str) -> tuple[int, int]:
        item = self._get(f"tier#{tier}")
        return max(0, int(item.get("queued", 0))), max(0, int(item.get("running", 0)))

    def set_tier_counts(self, tier: str, queued: int, running: int) -> None:
        self._update(f"tier#{tier}", "SET queued = :q, running = :r", {":q": queued, ":r": running})

    def correct_tier_counts(self, tier: str, counted: tuple[int, int]) -> bool:
        pk = f"tier#{tier}"
        item = self._get(pk)
        observed = (int(item.get("queued", 0)), int(item.get("running", 0)))
        if observed == counted:
            if "suspect" in item:
                self._update(pk, "REMOVE suspect", {})
            return False
        sighting = f"{observed[0]},{observed[1]}->{counted[0]},{counted[1]}"
        try:
            self._update(
                pk,
                "SET queued = :cq, running = :cr REMOVE suspect",
                {":cq": counted[0], ":cr": counted[1], ":s": sighting, ":oq": observed[0], ":or": observed[1]},
                "suspect = :s AND queued = :oq AND running = :or",
            )
            return True
        except ConditionFailed:
            pass
        self._update(pk, "SET suspect = :s", {":s": sighting})
        return False

    def _get(self, pk: str) -> dict[str, Any]:
        resp = self.client.get_item(TableName=self.table, Key={"pk": {"S": pk}}, ConsistentRead=True)
        return unmarshal(resp.get("Item")) or {}

    # -- per-owner running slots ---------------------------------------------------------------------------
    def acquire_slot(self, owner: str, holder: str, cap: int) -> bool:
        try:
            self._update(
                f"slots#{owner}",
                "ADD holders :me",
                {":me": {holder}, ":id": holder, ":cap": cap},
                "attribute_not_exists(holders) OR size(holders) < :cap OR contains(holders, :id)",
            )
            return True
        except ConditionFailed:
            return False

    def release_slot(self, owner: str, holder: str) -> None:
        self._update(f"slots#{owner}", "DELETE holders :me", {":me": {holder}})

    def holders_of(self, owner: str) -> set[str]:
        """The slots one key holds now (one consistent GetItem)."""
        return set(self._get(f"slots#{owner}").get("holders", set()))

    def slot_holders(self) -> dict[str, set[str]]:
        return {owner: set(item.get("holders", set())) for owner, item in self._slot_items()}

    def _slot_items(self) -> list[tuple[str, dict[str, Any]]]:
        """Every `slots#OWNER` item (a consistent scan)."""
        out: list[tuple[str, dict[str, Any]]] = []
        start = None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "FilterExpression": "begins_with(pk, :p)",
                "ExpressionAttributeValues": {":p": {"S": "slots#"}},
                "ConsistentRead": True,
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            resp = self.client.scan(**kwargs)
            for raw in resp.get("Items", []):
                item = unmarshal(raw) or {}
                out.append((item["pk"].removeprefix("slots#"), item))
            start = resp.get("LastEvaluatedKey")
            if not start:
                return out

    # -- per-owner jobs in flight (on the slots item: one read gives the whole load) -------------------------
    def track_active(self, owner: str, job_id: str) -> KeyLoad:
        item = self._update(f"slots#{owner}", "ADD active :id", {":id": {job_id}})
        return _load(item)

    def key_load(self, owner: str) -> KeyLoad:
        return _load(self._get(f"slots#{owner}"))

    def forget_active(self, owner: str, job_id: str) -> None:
        self._update(f"slots#{owner}", "DELETE active :id", {":id": {job_id}})

    def active_by_owner(self) -> dict[str, set[str]]:
        return {owner: set(item["active"]) for owner, item in self._slot_items() if item.get("active")}

    # -- run-time statistics --------------------------------------------------------------------------------
    def record_run(self, tier: str, run_ms: int, now: float) -> None:
        bucket = int(now // _STATS_BUCKET_S)
        self.client.update_item(
            TableName=self.table,
            Key={"pk": {"S": f"stats#{tier}#{bucket}"}},
            UpdateExpression="ADD sum_ms :ms, n :one SET #ttl = :ttl",
            ExpressionAttributeNames={"#ttl": "ttl"},
            ExpressionAttributeValues={":ms": value(run_ms), ":one": value(1), ":ttl": value(int(now) + 3600)},
        )

    def recent_run_ms(self, tier: str, now: float) -> float | None:
        bucket = int(now // _STATS_BUCKET_S)
        resp = self.client.batch_get_item(
            RequestItems={self.table: {"Keys": [{"pk": {"S": f"stats#{tier}#{b}"}} for b in (bucket, bucket - 1)]}}
        )
        items = [unmarshal(i) or {} for i in resp.get("Responses", {}).get(self.table, [])]
        n = sum(int(i.get("n", 0)) for i in items)
        return sum(float(i.get("sum_ms", 0)) for i in items) / n if n else None

    # -- idempotency ----------------------------------------------------------------------------------------
    def claim_idempotency(self, scope: str, body_hash: str, job_id: str, now: float) -> tuple[str, str] | None:
        item = {"pk": f"idem#{scope}", "body_hash": body_hash, "job_id": job_id, "ttl": int(now) + 86400}
        try:
            self.client.put_item(
                TableName=self.table, Item=marshal(item), ConditionExpression="attribute_not_exists(pk)"
            )
            return None
        except ConditionFailed:
            stored = self._get(f"idem#{scope}")
        return str(stored.get("body_hash", "")), str(stored.get("job_id", ""))

    def drop_idempotency(self, scope: str) -> None:
        self.client.delete_item(TableName=self.table, Key={"pk": {"S": f"idem#{scope}"}})
