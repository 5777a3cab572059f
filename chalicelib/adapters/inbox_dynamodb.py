"""Inbox on DynamoDB (the delivery table): one item per waiting event, pk `inbox#<key id>#<device>`, sk the
event id (so a Query returns the inbox in order), `ttl` for DynamoDB's expiry."""

from __future__ import annotations

from typing import Any

from chalicelib.adapters.aws import ConditionFailed, LazyClient
from chalicelib.adapters.dynamo import marshal, unmarshal
from chalicelib.domain.inbox import InboxEntry


def _pk(key_id: str, device: str) -> str:
    return f"inbox#{key_id}#{device}"


class DynamoInbox:
    def __init__(self, table: str, client: Any = None) -> None:
        self.table = table
        self._client = client

    client = LazyClient("dynamodb")

    def put(self, key_id: str, device: str, entry: InboxEntry) -> None:
        item = {
            "pk": _pk(key_id, device),
            "sk": entry.event_id,
            "body": entry.body,
            "expires_at": entry.expires_at,
            "ttl": int(entry.expires_at) + 1,
        }
        self.client.put_item(TableName=self.table, Item=marshal(item))

    def entries(self, key_id: str, device: str) -> list[InboxEntry]:
        out, start = [], None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": _pk(key_id, device)}},
                "ConsistentRead": True,
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            resp = self.client.query(**kwargs)
            for raw in resp.get("Items", []):
                item = unmarshal(raw) or {}
                out.append(InboxEntry(str(item["sk"]), str(item["body"]), float(item["expires_at"])))
            start = resp.get("LastEvaluatedKey")
            if not start:
                return out

    def remove(self, key_id: str, device: str, event_ids: list[str]) -> int:
        removed = 0
        for event in event_ids:
            try:
                self.client.delete_item(
                    TableName=self.table,
                    Key={"pk": {"S": _pk(key_id, device)}, "sk": {"S": event}},
                    ConditionExpression="attribute_exists(pk)",
                )
                removed += 1
            except ConditionFailed:
                pass
        return removed
