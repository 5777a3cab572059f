"""WebhookStore on DynamoDB (the delivery table): the key's settings item `key#<key id>` / `settings` (url,
secret, previous_secret, previous_until, disabled: string set; event_n is JobEvents' counter), and the
WebSocket tickets `ticket#<sha256>` / `ticket` (single use: a conditional delete that returns the item)."""

from __future__ import annotations

from typing import Any

from chalicelib.adapters.aws import ConditionFailed, LazyClient
from chalicelib.adapters.dynamo import marshal, unmarshal, value
from chalicelib.adapters.job_events_dynamodb import settings_key
from chalicelib.domain.webhooks import WebhookConfig


def _config(key_id: str, item: dict[str, Any]) -> WebhookConfig:
    return WebhookConfig(
        key_id=key_id,
        url=item.get("url"),
        secret=item.get("secret"),
        previous_secret=item.get("previous_secret"),
        previous_until=float(item.get("previous_until", 0)),
        disabled=frozenset(item.get("disabled", set())),
    )


def _ticket_key(ticket_hash: str) -> dict[str, Any]:
    return {"pk": {"S": f"ticket#{ticket_hash}"}, "sk": {"S": "ticket"}}


class DynamoWebhookStore:
    def __init__(self, table: str, client: Any = None) -> None:
        self.table = table
        self._client = client

    client = LazyClient("dynamodb")

    def _set(self, key_id: str, expr: str, values: dict[str, Any]) -> WebhookConfig:
        resp = self.client.update_item(
            TableName=self.table,
            Key=settings_key(key_id),
            UpdateExpression=expr,
            ExpressionAttributeValues={k: value(v) for k, v in values.items()},
            ReturnValues="ALL_NEW",
        )
        return _config(key_id, unmarshal(resp.get("Attributes")) or {})

    def get(self, key_id: str) -> WebhookConfig | None:
        resp = self.client.get_item(TableName=self.table, Key=settings_key(key_id), ConsistentRead=True)
        item = unmarshal(resp.get("Item"))
        return _config(key_id, item) if item else None

    def create_secret(self, key_id: str, secret: str) -> WebhookConfig:
        return self._set(key_id, "SET secret = if_not_exists(secret, :s)", {":s": secret})

    def rotate(self, key_id: str, secret: str, previous_until: float) -> WebhookConfig:
        # Every SET reads the item as it was before the update: the old secret becomes the previous one.
        return self._set(
            key_id,
            "SET previous_secret = secret, secret = :s, previous_until = :u",
            {":s": secret, ":u": previous_until},
        )

    def set_url(self, key_id: str, url: str | None) -> WebhookConfig:
        if url is None:
            resp = self.client.update_item(
                TableName=self.table,
                Key=settings_key(key_id),
                UpdateExpression="REMOVE #u",
                ExpressionAttributeNames={"#u": "url"},
                ReturnValues="ALL_NEW",
            )
            return _config(key_id, unmarshal(resp.get("Attributes")) or {})
        resp = self.client.update_item(
            TableName=self.table,
            Key=settings_key(key_id),
            UpdateExpression="SET #u = :u DELETE disabled :set",
            ExpressionAttributeNames={"#u": "url"},
            ExpressionAttributeValues={":u": value(url), ":set": value({url})},
            ReturnValues="ALL_NEW",
        )
        return _config(key_id, unmarshal(resp.get("Attributes")) or {})

    def disable(self, key_id: str, url: str) -> None:
        self.client.update_item(
            TableName=self.table,
            Key=settings_key(key_id),
            UpdateExpression="ADD disabled :set",
            ExpressionAttributeValues={":set": value({url})},
        )

    def put_ticket(self, ticket_hash: str, key_hash: str, expires_at: float) -> None:
        item = {"pk": f"ticket#{ticket_hash}", "sk": "ticket", "key_hash": key_hash, "expires_at": expires_at}
        self.client.put_item(TableName=self.table, Item=marshal({**item, "ttl": int(expires_at) + 60}))

    def take_ticket(self, ticket_hash: str, now: float) -> str | None:
        try:
            resp = self.client.delete_item(
                TableName=self.table,
                Key=_ticket_key(ticket_hash),
                ConditionExpression="expires_at > :now",
                ExpressionAttributeValues={":now": value(now)},
                ReturnValues="ALL_OLD",
            )
        except ConditionFailed:
            return None  # unknown, already used, or expired
        item = unmarshal(resp.get("Attributes")) or {}
        return str(item["key_hash"]) if item else None
