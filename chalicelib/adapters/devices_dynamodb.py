"""DeviceRegistry on DynamoDB (the delivery table).

Items: the device `key#<key id>` / `device#<name>` (connection_id, connected_at, ready, seen_at, sent: string
set, dropped, lease_until), and per connection `conn#<id>` / `conn` (key_id, device, and `check` + `check_at`
for the sparse `connections_to_check` index the sweep reads). Every change of a device's connection is a
conditional write naming the connection it expects.
"""

from __future__ import annotations

from typing import Any

from chalicelib.adapters.aws import ConditionFailed, LazyClient
from chalicelib.adapters.dynamo import marshal, unmarshal, value
from chalicelib.domain.inbox import Device

CONNECTION_TTL_S = 3 * 3600  # API Gateway closes every connection after 2 h


def _device_key(key_id: str, device: str) -> dict[str, Any]:
    return {"pk": {"S": f"key#{key_id}"}, "sk": {"S": f"device#{device}"}}


def _conn_key(connection_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"conn#{connection_id}"}, "sk": {"S": "conn"}}


def _device(item: dict[str, Any]) -> Device:
    return Device(
        key_id=str(item["pk"]).removeprefix("key#"),
        name=str(item["sk"]).removeprefix("device#"),
        connection_id=item.get("connection_id"),
        connected_at=item.get("connected_at"),
        ready=bool(item.get("ready", False)),
        seen_at=item.get("seen_at"),
        sent=frozenset(item.get("sent", set())),
        dropped=int(item.get("dropped", 0)),
        lease_until=item.get("lease_until"),
    )


class DynamoDeviceRegistry:
    def __init__(self, table: str, client: Any = None) -> None:
        self.table = table
        self._client = client

    client = LazyClient("dynamodb")

    def _update(
        self, key: dict[str, Any], expr: str, values: dict[str, Any], condition: str = "", ret: str = "NONE"
    ) -> dict[str, Any] | None:
        """One UpdateItem; None when its condition did not hold, else the attributes asked for."""
        kwargs: dict[str, Any] = {"TableName": self.table, "Key": key, "UpdateExpression": expr, "ReturnValues": ret}
        if values:
            kwargs["ExpressionAttributeValues"] = {k: value(v) for k, v in values.items()}
        if condition:
            kwargs["ConditionExpression"] = condition
        try:
            return unmarshal(self.client.update_item(**kwargs).get("Attributes")) or {}
        except ConditionFailed:
            return None

    def devices(self, key_id: str) -> list[Device]:
        resp = self.client.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :d)",
            ExpressionAttributeValues={":pk": {"S": f"key#{key_id}"}, ":d": {"S": "device#"}},
            ConsistentRead=True,
        )
        return [_device(unmarshal(i) or {}) for i in resp.get("Items", [])]

    def get(self, key_id: str, device: str) -> Device | None:
        resp = self.client.get_item(TableName=self.table, Key=_device_key(key_id, device), ConsistentRead=True)
        item = unmarshal(resp.get("Item"))
        return _device(item) if item else None

    def seen(self, key_id: str, device: str, now: float, handed_out: list[str]) -> int:
        expr = "SET seen_at = :now, dropped = :zero"
        values: dict[str, Any] = {":now": now, ":zero": 0}
        if handed_out:
            expr += " ADD sent :ids"
            values[":ids"] = set(handed_out)
        old = self._update(_device_key(key_id, device), expr, values, ret="UPDATED_OLD") or {}
        return int(old.get("dropped", 0))

    def add_dropped(self, key_id: str, device: str, count: int) -> None:
        self._update(_device_key(key_id, device), "ADD dropped :n", {":n": count})

    def forget_sent(self, key_id: str, device: str, event_ids: list[str]) -> None:
        if event_ids:
            self._update(_device_key(key_id, device), "DELETE sent :ids", {":ids": set(event_ids)})

    def register(self, key_id: str, device: str, connection_id: str, now: float, replacing: str | None) -> bool:
        values: dict[str, Any] = {":c": connection_id, ":now": now, ":f": False}
        if replacing is None:
            condition = "attribute_not_exists(connection_id)"
        else:
            condition, values[":old"] = "connection_id = :old", replacing
        expr = "SET connection_id = :c, connected_at = :now, seen_at = :now, ready = :f REMOVE sent, lease_until"
        return self._update(_device_key(key_id, device), expr, values, condition) is not None

    def set_ready(self, key_id: str, device: str, connection_id: str) -> int | None:
        old = self._update(
            _device_key(key_id, device),
            "SET ready = :t, dropped = :zero",
            {":t": True, ":zero": 0, ":c": connection_id},
            "connection_id = :c",
            ret="UPDATED_OLD",
        )
        return None if old is None else int(old.get("dropped", 0))

    def unregister(self, key_id: str, device: str, connection_id: str) -> None:
        self._update(
            _device_key(key_id, device),
            "REMOVE connection_id, connected_at, ready, lease_until",
            {":c": connection_id},
            "connection_id = :c",
        )

    def acquire_drain(self, key_id: str, device: str, now: float, lease_s: float) -> Device | None:
        item = self._update(
            _device_key(key_id, device),
            "SET lease_until = :until",
            {":until": now + lease_s, ":now": now, ":t": True},
            "attribute_exists(connection_id) AND ready = :t"
            " AND (attribute_not_exists(lease_until) OR lease_until < :now)",
            ret="ALL_NEW",
        )
        return _device(item) if item else None

    def release_drain(self, key_id: str, device: str, connection_id: str, sent: list[str]) -> None:
        expr = "REMOVE lease_until"
        values: dict[str, Any] = {":c": connection_id}
        if sent:
            expr += " ADD sent :ids"
            values[":ids"] = set(sent)
        # A connection that replaced this one meanwhile got nothing of what this drain sent.
        self._update(_device_key(key_id, device), expr, values, "connection_id = :c")

    def save_connection(self, connection_id: str, key_id: str, device: str, check_at: float) -> None:
        item = {
            "pk": f"conn#{connection_id}",
            "sk": "conn",
            "key_id": key_id,
            "device": device,
            "check": "conn",
            "check_at": check_at,
            "ttl": int(check_at) + CONNECTION_TTL_S,
        }
        self.client.put_item(TableName=self.table, Item=marshal(item))

    def connection(self, connection_id: str) -> tuple[str, str] | None:
        resp = self.client.get_item(TableName=self.table, Key=_conn_key(connection_id), ConsistentRead=True)
        item = unmarshal(resp.get("Item"))
        return (str(item["key_id"]), str(item["device"])) if item else None

    def forget_connection(self, connection_id: str) -> None:
        self.client.delete_item(TableName=self.table, Key=_conn_key(connection_id))

    def due_checks(self, now: float, limit: int = 100) -> list[tuple[str, str, str]]:
        resp = self.client.query(
            TableName=self.table,
            IndexName="connections_to_check",
            KeyConditionExpression="#c = :c AND check_at <= :now",
            ExpressionAttributeNames={"#c": "check"},
            ExpressionAttributeValues={":c": {"S": "conn"}, ":now": value(now)},
            Limit=limit,
        )
        out = []
        for raw in resp.get("Items", []):
            item = unmarshal(raw) or {}
            out.append((str(item["pk"]).removeprefix("conn#"), str(item["key_id"]), str(item["device"])))
        return out

    def checked(self, connection_id: str, next_check: float) -> None:
        self._update(_conn_key(connection_id), "SET check_at = :n", {":n": next_check}, "attribute_exists(pk)")
