"""KeyStore on DynamoDB. A key's quota counters live on the key's own item, so one conditional UpdateItem
authenticates the caller and consumes one submit atomically."""

from __future__ import annotations

import random
import time
from typing import Any

from chalicelib.adapters.aws import ConditionFailed, LazyClient
from chalicelib.adapters.dynamo import marshal, unmarshal, value
from chalicelib.config import TierPolicy
from chalicelib.domain.errors import DependencyThrottled, Unauthorized
from chalicelib.domain.quotas import QuotaState, charged, day_window, minute_window, refunded
from chalicelib.services.ports import ApiKey

_MAX_RACES = 20  # optimistic retries when many submits roll a window over at once


def _key_from_item(item: dict[str, Any]) -> ApiKey:
    quota = QuotaState(
        int(item.get("m_win", -1)), int(item.get("m_n", 0)), str(item.get("d_win", "")), int(item.get("d_n", 0))
    )
    return ApiKey(
        key_hash=item["key_hash"],
        key_id=item["key_id"],
        owner=item["owner"],
        tier=item["tier"],
        created_at=float(item["created_at"]),
        revoked=bool(item.get("revoked", False)),
        total=int(item.get("total", 0)),
        quota=quota,
        scopes=tuple(item.get("scopes") or ("*",)),  # keys made before scopes existed may run everything
    )


class DynamoKeyStore:
    """Keys table: pk `key_hash`. Quota attributes: m_win, m_n (minute), d_win, d_n (UTC day), total."""

    def __init__(self, table: str, tiers: dict[str, TierPolicy], client: Any = None) -> None:
        self.table = table
        self.tiers = tiers
        self._client = client

    client = LazyClient("dynamodb")

    def put(self, key: ApiKey) -> None:
        item = {
            "key_hash": key.key_hash,
            "key_id": key.key_id,
            "owner": key.owner,
            "tier": key.tier,
            "created_at": key.created_at,
            "revoked": key.revoked,
            "total": 0,
            "scopes": list(key.scopes),
        }
        self.client.put_item(
            TableName=self.table, Item=marshal(item), ConditionExpression="attribute_not_exists(key_hash)"
        )

    def get(self, key_hash: str) -> ApiKey | None:
        resp = self.client.get_item(TableName=self.table, Key={"key_hash": {"S": key_hash}}, ConsistentRead=True)
        item = unmarshal(resp.get("Item"))
        return _key_from_item(item) if item else None

    def list(self) -> list[ApiKey]:
        keys, start = [], None
        while True:
            kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
            if start:
                kwargs["ExclusiveStartKey"] = start
            resp = self.client.scan(**kwargs)
            keys += [_key_from_item(unmarshal(i) or {}) for i in resp.get("Items", [])]
            start = resp.get("LastEvaluatedKey")
            if not start:
                return sorted(keys, key=lambda k: k.created_at)

    def update(self, key_id: str, **changes: Any) -> ApiKey | None:
        match = next((k for k in self.list() if k.key_id == key_id), None)
        if match is None:
            return None
        names = {f"#f{i}": n for i, n in enumerate(changes)}
        values = {f":v{i}": value(v) for i, v in enumerate(changes.values())}
        resp = self.client.update_item(
            TableName=self.table,
            Key={"key_hash": {"S": match.key_hash}},
            UpdateExpression="SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(changes))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return _key_from_item(unmarshal(resp["Attributes"]) or {})

    def charge(self, key_hash: str, now: float) -> tuple[ApiKey, QuotaState]:
        try:
            return self._charge_in_current_windows(key_hash, now)
        except ConditionFailed as exc:
            # The refused fast path hands back the item as it stood: no read is needed to decide.
            old = unmarshal(exc.item)
            key: ApiKey | None = _key_from_item(old) if old else None
        for attempt in range(_MAX_RACES):
            if attempt:
                _back_off(attempt)
                key = self.get(key_hash)
            if key is None or key.revoked:
                raise Unauthorized("the API key is not valid")
            new = charged(key.quota, now, self.tiers[key.tier])  # QuotaExceeded names the quota
            try:
                return self._store_charge(key, new)
            except ConditionFailed:
                continue
        raise DependencyThrottled("too many concurrent submits on one key; retry shortly")

    def _charge_in_current_windows(self, key_hash: str, now: float) -> tuple[ApiKey, QuotaState]:
        """The fast path: both windows are current and below their tier's limits (one request)."""
        values: dict[str, Any] = {
            ":mw": value(minute_window(now)),
            ":dw": value(day_window(now)),
            ":one": value(1),
            ":f": value(False),
        }
        per_tier = []
        for i, (name, policy) in enumerate(self.tiers.items()):
            per_tier.append(f"(tier = :t{i} AND m_n < :m{i} AND d_n < :d{i})")
            values.update({f":t{i}": value(name), f":m{i}": value(policy.per_minute), f":d{i}": value(policy.per_day)})
        resp = self.client.update_item(
            TableName=self.table,
            Key={"key_hash": {"S": key_hash}},
            UpdateExpression="SET m_n = m_n + :one, d_n = d_n + :one, #total = #total + :one",
            ConditionExpression=(
                "attribute_exists(key_hash) AND revoked = :f AND m_win = :mw AND d_win = :dw AND ("
                + " OR ".join(per_tier)
                + ")"
            ),
            ExpressionAttributeNames={"#total": "total"},
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        key = _key_from_item(unmarshal(resp["Attributes"]) or {})
        return key, key.quota

    def _store_charge(self, key: ApiKey, new: QuotaState) -> tuple[ApiKey, QuotaState]:
        """Write counters computed from what we read, if nobody changed them since (optimistic)."""
        old = key.quota
        resp = self.client.update_item(
            TableName=self.table,
            Key={"key_hash": {"S": key.key_hash}},
            UpdateExpression="SET m_win = :mw, m_n = :mn, d_win = :dw, d_n = :dn, #total = #total + :one",
            ConditionExpression=_unchanged(old) + " AND revoked = :f",
            ExpressionAttributeNames={"#total": "total"},
            ExpressionAttributeValues={
                ":mw": value(new.m_win),
                ":mn": value(new.m_n),
                ":dw": value(new.d_win),
                ":dn": value(new.d_n),
                ":one": value(1),
                ":f": value(False),
                **_old_values(old),
            },
            ReturnValues="ALL_NEW",
        )
        stored = _key_from_item(unmarshal(resp["Attributes"]) or {})
        return stored, stored.quota

    def refund(self, key_hash: str, charged_minute: int | None, charged_day: str | None) -> None:
        for attempt in range(_MAX_RACES):
            if attempt:
                _back_off(attempt)
            key = self.get(key_hash)
            if key is None:
                return
            new = refunded(key.quota, charged_minute, charged_day)
            if new == key.quota:
                return
            try:
                self.client.update_item(
                    TableName=self.table,
                    Key={"key_hash": {"S": key_hash}},
                    UpdateExpression="SET m_n = :mn, d_n = :dn",
                    ConditionExpression=_unchanged(key.quota),
                    ExpressionAttributeValues={":mn": value(new.m_n), ":dn": value(new.d_n), **_old_values(key.quota)},
                )
                return
            except ConditionFailed:
                continue


def _back_off(attempt: int) -> None:
    """After a lost optimistic race, wait a little (jittered) so a crowd of writers spreads out."""
    time.sleep(random.uniform(0, 0.004 * attempt))


def _unchanged(old: QuotaState) -> str:
    if old.m_win == -1:  # never charged: the counters do not exist yet
        return "attribute_exists(key_hash) AND attribute_not_exists(m_win)"
    return "m_win = :omw AND m_n = :omn AND d_win = :odw AND d_n = :odn"


def _old_values(old: QuotaState) -> dict[str, Any]:
    if old.m_win == -1:
        return {}
    return {":omw": value(old.m_win), ":omn": value(old.m_n), ":odw": value(old.d_win), ":odn": value(old.d_n)}
