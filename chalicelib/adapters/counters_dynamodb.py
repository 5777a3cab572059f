"""Counters on DynamoDB: tier queue depth and sequence, per-owner running slots, run-time stats and
idempotency claims. Each operation is one single-item conditional update (atomic on DynamoDB and on a moto
server)."""

from __future__ import annotations

from typing import Any

from chalicelib.adapters.aws import ConditionFailed, LazyClient
from chalicelib.adapters.dynamo import marshal, unmarshal, value
from chalicelib.domain.errors import QueueFull
from chalicelib.services.ports import KeyLoad, Slots

_STATS_BUCKET_S = 300  # run-time stats are kept per 5-minute bucket; "recent" = this bucket and the last


class DynamoCounters:
    """Counters table: pk `pk`. Items: `tier#T` (queued, running, seq; and the run-time statistics of the
    tier's last two 5-minute buckets, one slot per bucket parity: r0b/r1b the bucket, r0s/r1s the summed ms,
    r0n/r1n the runs, so that a job's end updates the counters and the statistics in one write),
    `slots#OWNER` (holders: string set; parked: how many of the owner's jobs wait for a slot; active: the
    owner's jobs in flight, string set; and the key's own run-time statistics, kept like a tier's, so that a
    job's end gives back its slot, leaves the jobs in flight and counts its run in one write),
    `idem#SCOPE` (body_hash, job_id)."""

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

    def adjust_tier(self, tier: str, queued: int = 0, running: int = 0, run: tuple[int, float] | None = None) -> None:
        adds = {name: delta for name, delta in (("queued", queued), ("running", running)) if delta}
        self._update_counting(f"tier#{tier}", adds, run)

    def _update_counting(
        self, pk: str, adds: dict[str, int], run: tuple[int, float] | None, tail: str = "", tail_values: Any = None
    ) -> dict[str, Any]:
        """One write of the `adds` deltas and the `tail` clauses (with their `tail_values`) that also counts
        `run` (ms, when) in the item's run-time statistics; the item after it ({} if nothing was written)."""
        counts = {f":{k}": v for k, v in adds.items()}
        plain = _clauses(_add(adds) if adds else "", tail)
        plain_values = {**counts, **(tail_values or {})}
        if run is None:
            return self._update(pk, plain, plain_values) if plain else {}
        run_ms, now = run
        bucket = int(now // _STATS_BUCKET_S)
        slot = f"r{bucket % 2}"
        stats = {f"{slot}s": run_ms, f"{slot}n": 1}
        values = {**plain_values, f":{slot}s": run_ms, f":{slot}n": 1, ":b": bucket}
        this_bucket = f"{slot}b = :b"
        tries = (
            (_clauses(_add({**adds, **stats}), tail), this_bucket),  # the usual case: this bucket's slot is current
            # the first run of a bucket takes over the slot of the bucket before last
            (
                _clauses(f"SET {slot}b = :b, {slot}s = :{slot}s, {slot}n = :{slot}n", plain),
                f"attribute_not_exists({slot}b) OR {slot}b < :b",
            ),
            (_clauses(_add({**adds, **stats}), tail), this_bucket),  # another writer took it over first
        )
        for expr, condition in tries:
            try:
                return self._update(pk, expr, values, condition)
            except ConditionFailed:
                continue
        # A clock ahead of ours rolled the slot past this bucket: the run is not counted, the rest is written.
        return self._update(pk, plain, plain_values) if plain else {}

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
    def acquire_slot(self, owner: str, holder: str, cap: int) -> Slots | None:
        try:
            item = self._update(
                f"slots#{owner}",
                "ADD holders :me",
                {":me": {holder}, ":id": holder, ":cap": cap},
                "attribute_not_exists(holders) OR size(holders) < :cap OR contains(holders, :id)",
            )
        except ConditionFailed:
            return None
        return _slots(item)

    def release_slot(
        self, owner: str, holder: str, ended: str | None = None, run: tuple[int, float] | None = None
    ) -> Slots:
        tail, values = "DELETE holders :me", {":me": {holder}}
        if ended is not None:
            tail, values = tail + ", active :id", {**values, ":id": {ended}}
        return _slots(self._update_counting(f"slots#{owner}", {}, run, tail, values))

    def count_parked(self, owner: str, delta: int) -> Slots:
        condition = None if delta >= 0 else "parked >= :least"
        values: dict[str, Any] = {":d": delta} if delta >= 0 else {":d": delta, ":least": -delta}
        try:
            return _slots(self._update(f"slots#{owner}", "ADD parked :d", values, condition))
        except ConditionFailed:  # already at zero (a drift the reaper set right): leave it there
            return self._slots_now(owner)

    def _slots_now(self, owner: str) -> Slots:
        return _slots(self._get(f"slots#{owner}"))

    def reset_parked(self, owner: str, seen: int) -> bool:
        try:
            self._update(f"slots#{owner}", "SET parked = :zero", {":zero": 0, ":seen": seen}, "parked = :seen")
            return True
        except ConditionFailed:
            return False

    def holders_of(self, owner: str) -> set[str]:
        """The slots one key holds now (one consistent GetItem)."""
        return set(self._slots_now(owner).holders)

    def slot_holders(self) -> dict[str, set[str]]:
        return {owner: set(slots.holders) for owner, slots in self.all_slots().items()}

    def all_slots(self) -> dict[str, Slots]:
        return {owner: _slots(item) for owner, item in self._slot_items()}

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

    # -- run-time statistics --------------------------------------------------------------------------------
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

    def record_run(self, tier: str, run_ms: int, now: float) -> None:
        self._update_counting(_stats_pk(tier), {}, (run_ms, now))

    def recent_run_ms(self, tier: str, now: float) -> float | None:
        bucket = int(now // _STATS_BUCKET_S)
        item = self._get(_stats_pk(tier))
        runs = total = 0
        for slot in ("r0", "r1"):
            if item.get(f"{slot}b") in (bucket, bucket - 1):
                runs += int(item.get(f"{slot}n", 0))
                total += int(item.get(f"{slot}s", 0))
        return total / runs if runs else None

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


def _load(item: dict[str, Any]) -> KeyLoad:
    return KeyLoad(frozenset(item.get("active", set())), len(item.get("holders", set())))


def _slots(item: dict[str, Any]) -> Slots:
    return Slots(frozenset(item.get("holders", set())), max(0, int(item.get("parked", 0))))


def _stats_pk(scope: str) -> str:
    """The item holding a statistics scope's runs: a tier's item, or for a key (`estimates.key_scope`:
    `key#<owner>`) the owner's slots item, where a job's end counts its run with the slot's release."""
    return f"slots#{scope.removeprefix('key#')}" if scope.startswith("key#") else f"tier#{scope}"


def _clauses(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _add(deltas: dict[str, int]) -> str:
    """`ADD a :a, b :b` for the attributes in `deltas` (their values named `:<attribute>`)."""
    return "ADD " + ", ".join(f"{name} :{name}" for name in deltas)
