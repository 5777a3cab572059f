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

_MAX_RACES = 20  # optimistic retries of a refund
_MAX_STEPS = 6  # a charge: fast path, rollover lost to another writer, fast path (twice over, to spare)


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
        """One submit: the fast path counts in the current windows. When the stored minute is stale, one
        conditional write rolls both windows over; it can succeed for one writer per window only, and every
        writer that lost it counts on the fast path again, so a crowd at a rollover is never refused while
        under quota. Each step that fails does so because another writer moved the windows, which happens at
        most once per minute: the loop is short, and ends in a charge or a refusal on the stored counts."""
        windows = (minute_window(now), day_window(now))
        for _ in range(_MAX_STEPS):
            try:
                return self._charge_in_windows(key_hash, *windows)
            except ConditionFailed as exc:
                # The refused update hands back the item as it stood: no read is needed to decide.
                old = unmarshal(exc.item)
            key = _key_from_item(old) if old else None
            if key is None or key.revoked:
                raise Unauthorized("the API key is not valid")
            stored = key.quota
            if stored.m_win > windows[0]:  # a writer whose clock is a little ahead opened the next minute
                windows = (stored.m_win, stored.d_win)
                continue
            policy = self.tiers[key.tier]
            charged(stored, max(now, windows[0] * 60.0), policy)  # QuotaExceeded names the quota that refuses
            if stored.m_win == windows[0]:  # under the limits after all (the tier changed meanwhile): again
                continue
            try:
                return self._roll_over(key, windows, policy)
            except ConditionFailed:
                pass  # another writer rolled this window over first: count in it
        raise DependencyThrottled("the key's counters kept changing; retry shortly")

    def _charge_in_windows(self, key_hash: str, minute: int, day: str) -> tuple[ApiKey, QuotaState]:
        """The fast path: both stored windows are the given ones and below their tier's limits (one request)."""
        values: dict[str, Any] = {":mw": value(minute), ":dw": value(day), ":one": value(1), ":f": value(False)}
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

    def _roll_over(self, key: ApiKey, windows: tuple[int, str], policy: TierPolicy) -> tuple[ApiKey, QuotaState]:
        """Open the minute `windows[0]` with this submit as its first, and the day too when it is new.

        The condition is "the stored minute is older than this one", so only one writer per minute can pass
        it; the day's count is added to, never recomputed, so a refund racing with it loses nothing."""
        minute, day = windows
        values: dict[str, Any] = {":mw": value(minute), ":dw": value(day), ":one": value(1), ":f": value(False)}
        values[":t"] = value(key.tier)
        condition = "(attribute_not_exists(m_win) OR m_win < :mw) AND revoked = :f AND tier = :t AND "
        if key.quota.d_win == day:
            update = "SET m_win = :mw, m_n = :one, d_n = d_n + :one, #total = #total + :one"
            condition += "d_win = :dw AND d_n < :dl"
            values[":dl"] = value(policy.per_day)
        else:
            update = "SET m_win = :mw, m_n = :one, d_win = :dw, d_n = :one, #total = #total + :one"
            condition += "(attribute_not_exists(d_win) OR d_win < :dw)"
        resp = self.client.update_item(
            TableName=self.table,
            Key={"key_hash": {"S": key.key_hash}},
            UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeNames={"#total": "total"},
            ExpressionAttributeValues=values,
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
