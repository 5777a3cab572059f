"""JobStore on DynamoDB. Every status change is a conditional write on the expected current status.

The indexes are kept small, since every write of a job also writes each index whose projected attributes it
changes (one write unit per KB, per index): `by_owner` and `parked_jobs` hold keys only (the pages and the
wake-ups read the items they need), and `active_by_tier` holds a job from its submission to its end with only
its status and due time, so a job costs one index write when it is queued, one when it starts, one when it
ends, and a job's record is written whole three times (submitted, started, ended).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from chalicelib.adapters.aws import ConditionFailed, LazyClient
from chalicelib.adapters.dynamo import marshal, unmarshal, value
from chalicelib.domain.errors import AlreadyExists, StaleState
from chalicelib.domain.jobs import Job, JobStatus, check_transition
from chalicelib.services.ports import Page

# Attributes that describe the job as a whole are stored as JSON; the ones conditions and indexes need are
# top-level attributes.
_JSON_FIELDS = ("spec", "result")
# Sparse index attributes, present only while the job is in the state the index is for:
#   active (+ seq; status and due_at projected): the job's tier from its submission until its job.finished
#     event is produced (`active_by_tier`: the position of a queued job, the reaper's work lists, the tier
#     counters' reconciliation, and a terminal job still marked unpublished: adapters/job_events_dynamodb.py)
#   parked_key (+ seq): the owner's key while parked (`parked_jobs`: a key's parked jobs, oldest first)
_INDEX_ONLY = ("active", "parked_key", "ttl")
ACTIVE_INDEX = "active_by_tier"
_BATCH_GET = 100  # BatchGetItem's most keys per request
_JOB_FIELDS = frozenset(Job.model_fields)
_NUMBER = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")  # created_at: epoch seconds
# A listing filtered by status reads index pages of this many items, at most this many pages per request.
_FILTERED_PAGE = 100
_FILTERED_PAGES = 5


def to_item(job: Job) -> dict[str, Any]:
    data = job.model_dump(mode="json", exclude=set(_JSON_FIELDS))
    data["spec"] = job.spec.model_dump_json()
    if job.result is not None:
        data["result"] = job.result.model_dump_json()
    data.update(index_fields(job.status, job.tier, job.due_at))
    data["parked_key"] = job.key_id if job.parked and job.status is JobStatus.QUEUED else None
    return data


def index_fields(status: JobStatus, tier: str, due_at: float | None) -> dict[str, Any]:
    """Values of the sparse index attributes for a job in `status` (None means: remove)."""
    # A terminal job stays in the index, marked unpublished (a due time), until its event is produced
    # (JobEvents.published removes `active`): a job changes its index entry's projected status, never its key,
    # until then. A terminal job without a due time has no event to produce and leaves the index at once.
    return {"active": None if status.terminal and due_at is None else tier}


def from_item(item: dict[str, Any]) -> Job:
    data = {k: v for k, v in item.items() if k not in _INDEX_ONLY}
    for name in _JSON_FIELDS:
        if isinstance(data.get(name), str):
            data[name] = json.loads(data[name])
    return Job.model_validate(data)


def _stored(name: str, val: Any) -> Any:
    """A Job field's value as stored (JSON for the nested models, plain values otherwise)."""
    if name in _JSON_FIELDS and val is not None:
        return val.model_dump_json()
    return val.value if hasattr(val, "value") and not isinstance(val, str) else val


class DynamoJobStore:
    """Jobs table: pk `id`; GSIs `by_owner` (owner, created_at; keys only), `active_by_tier` (active, seq;
    status and due_at), `parked_jobs` (parked_key, seq; keys only). `tiers`: the partitions of
    `active_by_tier` the reaper walks."""

    def __init__(self, table: str, tiers: Sequence[str], client: Any = None, ttl_days: int = 7) -> None:
        self.table = table
        self.tiers = tuple(tiers)
        self._client = client
        self.ttl_days = ttl_days

    client = LazyClient("dynamodb")

    def create(self, job: Job) -> None:
        item = to_item(job)
        item["ttl"] = int(job.created_at) + self.ttl_days * 86400
        try:
            self.client.put_item(
                TableName=self.table, Item=marshal(item), ConditionExpression="attribute_not_exists(id)"
            )
        except ConditionFailed as exc:
            raise AlreadyExists(f"job {job.id} exists") from exc

    def get(self, job_id: str, consistent: bool = True) -> Job | None:
        resp = self.client.get_item(TableName=self.table, Key={"id": {"S": job_id}}, ConsistentRead=consistent)
        item = unmarshal(resp.get("Item"))
        return from_item(item) if item else None

    def transition(
        self, job: Job, new: JobStatus, changes: dict[str, Any], *, expected_attempts: int | None = None
    ) -> Job:
        check_transition(job.status, new)
        unknown = set(changes) - _JOB_FIELDS
        if unknown:
            raise ValueError(f"not job fields: {sorted(unknown)}")
        # A state change ends any wait for a slot: a parked job that is cancelled, or started once woken.
        updated = job.model_copy(update={**changes, "status": new, "parked": False})
        fields: dict[str, Any] = {k: _stored(k, getattr(updated, k)) for k in changes}
        fields["status"] = new.value
        fields.update(index_fields(new, job.tier, updated.due_at))
        if job.parked:
            fields.update(parked=None, parked_key=None)
        condition = "#status = :expected"
        values = {":expected": value(job.status.value)}
        if expected_attempts is not None:
            condition += " AND attempts = :attempts"
            values[":attempts"] = value(expected_attempts)
        self._update(job.id, fields, condition, values)
        return updated

    def record_task(self, job_id: str, attempts: int, task_arn: str) -> bool:
        return self._set_if(
            job_id,
            {"task_arn": task_arn},
            "#status = :running AND attempts = :attempts",
            {":running": value(JobStatus.RUNNING.value), ":attempts": value(attempts)},
        )

    def set_due(self, job_id: str, status: JobStatus, due_at: float | None) -> bool:
        return self._set_if(job_id, {"due_at": due_at}, "#status = :expected", {":expected": value(status.value)})

    def mark_redriven_late(self, job_id: str) -> bool:
        return self._set_if(
            job_id,
            {"redriven_late": True, "due_at": None},
            "#status = :queued AND redriven_late = :false",
            {":queued": value(JobStatus.QUEUED.value), ":false": value(False)},
        )

    def park(self, job: Job) -> Job | None:
        parks = job.parks + 1
        ok = self._set_if(
            job.id,
            {"parked": True, "parked_key": job.key_id, "parks": parks, "due_at": None},
            "#status = :queued AND attempts = :attempts AND attribute_not_exists(parked_key)",
            {":queued": value(JobStatus.QUEUED.value), ":attempts": value(job.attempts)},
        )
        return job.model_copy(update={"parked": True, "parks": parks, "due_at": None}) if ok else None

    def unpark(self, job_id: str, due_at: float) -> Job | None:
        try:
            resp = self.client.update_item(
                TableName=self.table,
                Key={"id": {"S": job_id}},
                UpdateExpression="SET due_at = :due REMOVE parked, parked_key",
                ConditionExpression="#status = :queued AND attribute_exists(parked_key)",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":queued": value(JobStatus.QUEUED.value), ":due": value(due_at)},
                ReturnValues="ALL_NEW",
            )
        except ConditionFailed:
            return None
        item = unmarshal(resp.get("Attributes"))
        return from_item(item) if item else None

    def parked_of(self, key_id: str, limit: int) -> list[tuple[int, str]]:
        resp = self.client.query(
            TableName=self.table,
            IndexName="parked_jobs",
            KeyConditionExpression="parked_key = :k",
            ExpressionAttributeValues={":k": {"S": key_id}},
            Limit=limit,
        )
        return [(int(i["seq"]["N"]), str(i["id"]["S"])) for i in resp.get("Items", [])]

    def parked_keys(self) -> set[str]:
        keys: set[str] = set()
        start = None
        while True:
            kwargs: dict[str, Any] = {"TableName": self.table, "IndexName": "parked_jobs"}
            if start:
                kwargs["ExclusiveStartKey"] = start
            resp = self.client.scan(**kwargs)
            keys.update(str(i["parked_key"]["S"]) for i in resp.get("Items", []))
            start = resp.get("LastEvaluatedKey")
            if not start:
                return keys

    def _set_if(self, job_id: str, fields: dict[str, Any], condition: str, values: dict[str, Any]) -> bool:
        """Set `fields` if `condition` holds; False if it did not (never a status change: see transition)."""
        try:
            self._update(job_id, fields, condition, values)
            return True
        except StaleState:
            return False

    def _update(self, job_id: str, fields: dict[str, Any], condition: str, values: dict[str, Any]) -> None:
        sets, removes = [], []
        names = {"#status": "status"}
        for i, (name, val) in enumerate(fields.items()):
            names[f"#f{i}"] = name
            if val is None:
                removes.append(f"#f{i}")
            else:
                sets.append(f"#f{i} = :v{i}")
                values[f":v{i}"] = value(val)
        expr = ("SET " + ", ".join(sets) if sets else "") + (" REMOVE " + ", ".join(removes) if removes else "")
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"id": {"S": job_id}},
                UpdateExpression=expr.strip(),
                ConditionExpression="attribute_exists(id) AND " + condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ConditionFailed as exc:
            raise StaleState(f"job {job_id}: {condition} did not hold") from exc

    def list_by_owner(self, owner: str, limit: int, cursor: str | None, status: JobStatus | None = None) -> Page:
        """Newest first. The `by_owner` index holds keys only (a job's status changes never rewrite it), so the
        items are read by id, and with `status` filtered here: pages are read until `limit` match or
        `_FILTERED_PAGES` pages were read; a page may then hold fewer than `limit` jobs, and `cursor` goes on
        from where the reading stopped."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "by_owner",
            "KeyConditionExpression": "#o = :o",
            "ExpressionAttributeNames": {"#o": "owner"},
            "ExpressionAttributeValues": {":o": {"S": owner}},
            "ScanIndexForward": False,
            "Limit": limit if status is None else max(limit, _FILTERED_PAGE),
        }
        start = _decode_cursor(cursor, owner) if cursor else None
        found: list[tuple[dict[str, Any], Job]] = []
        for _ in range(_FILTERED_PAGES):
            if start:
                kwargs["ExclusiveStartKey"] = start
            resp = self.client.query(**kwargs)
            keys = resp.get("Items", [])
            jobs = {job.id: job for job in self._get_many(str(k["id"]["S"]) for k in keys)}
            found += [(k, jobs[k["id"]["S"]]) for k in keys if k["id"]["S"] in jobs]
            found = [(k, job) for k, job in found if status is None or job.status is status]
            start = resp.get("LastEvaluatedKey")
            if len(found) >= limit or not start:
                break
        if len(found) > limit or (len(found) == limit and start):
            found = found[:limit]
            start = {name: found[-1][0][name] for name in ("id", "owner", "created_at")}
        next_cursor = base64.urlsafe_b64encode(json.dumps(start).encode()).decode() if start else None
        return Page([job for _, job in found], next_cursor)

    def _get_many(self, ids: Iterable[str]) -> list[Job]:
        return get_jobs(self.client, self.table, ids)

    def count_queued_ahead(self, tier: str, seq: int) -> int:
        return self._count(
            IndexName=ACTIVE_INDEX,
            KeyConditionExpression="active = :t AND seq < :s",
            FilterExpression="#st = :queued",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={":t": {"S": tier}, ":s": {"N": str(seq)}, ":queued": {"S": "queued"}},
        )

    def due(self, status: JobStatus, now: float, limit: int = 100) -> list[Job]:
        wanted = {":s": value(status.value), ":now": value(now)}
        ids = active_ids(self.client, self.table, self.tiers, "#st = :s AND due_at <= :now", wanted, limit)
        # The index lags the table by a moment: keep only what the items themselves say is due.
        jobs = self._get_many(ids)
        return [j for j in jobs if j.status is status and j.due_at is not None and j.due_at <= now]

    def count_active(self, status: JobStatus, tier: str) -> int:
        """Jobs of `tier` in `status` (the reaper reconciles the tier counters with this)."""
        return self._count(
            IndexName=ACTIVE_INDEX,
            KeyConditionExpression="active = :t",
            FilterExpression="#st = :s",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={":t": {"S": tier}, ":s": value(status.value)},
        )

    def _count(self, **query: Any) -> int:
        """How many items a query matches, over every page."""
        total, start = 0, None
        while True:
            kwargs: dict[str, Any] = {"TableName": self.table, "Select": "COUNT", **query}
            if start:
                kwargs["ExclusiveStartKey"] = start
            resp = self.client.query(**kwargs)
            total += resp.get("Count", 0)
            start = resp.get("LastEvaluatedKey")
            if not start:
                return total


def get_jobs(client: Any, table: str, ids: Iterable[str]) -> list[Job]:
    """The jobs with these ids, in that order (those that vanished meanwhile left out), read consistently."""
    wanted = list(dict.fromkeys(ids))
    found: dict[str, Job] = {}
    for start in range(0, len(wanted), _BATCH_GET):
        keys = [{"id": {"S": job_id}} for job_id in wanted[start : start + _BATCH_GET]]
        while keys:
            resp = client.batch_get_item(RequestItems={table: {"Keys": keys, "ConsistentRead": True}})
            for raw in resp.get("Responses", {}).get(table, []):
                job = from_item(unmarshal(raw) or {})
                found[job.id] = job
            keys = resp.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
    return [found[job_id] for job_id in wanted if job_id in found]


def active_ids(
    client: Any, table: str, tiers: Sequence[str], condition: str, values: dict[str, Any], limit: int
) -> list[str]:
    """Ids of up to `limit` jobs in `active_by_tier` (every tier's partition) whose projected status and due
    time meet `condition` (`#st` names the status)."""
    ids: list[str] = []
    for tier in tiers:
        start = None
        while len(ids) < limit:
            kwargs: dict[str, Any] = {
                "TableName": table,
                "IndexName": ACTIVE_INDEX,
                "KeyConditionExpression": "active = :t",
                "FilterExpression": condition,
                "ExpressionAttributeNames": {"#st": "status"},
                "ExpressionAttributeValues": {":t": {"S": tier}, **values},
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            resp = client.query(**kwargs)
            ids += [str(i["id"]["S"]) for i in resp.get("Items", [])]
            start = resp.get("LastEvaluatedKey")
            if not start:
                break
    return ids[:limit]


def _decode_cursor(cursor: str, owner: str) -> dict[str, Any]:
    """The page key a cursor names; ValueError for anything but a `by_owner` page key of `owner`'s jobs (any
    other start key is a ValidationException from DynamoDB: our bug, so never passed on)."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise ValueError("not a cursor this API issued") from exc
    shape = {"id": "S", "owner": "S", "created_at": "N"}
    if not isinstance(key, dict) or set(key) != set(shape):
        raise ValueError("not a cursor this API issued")
    for name, kind in shape.items():
        typed = key[name]
        if not isinstance(typed, dict) or set(typed) != {kind} or not isinstance(typed[kind], str):
            raise ValueError("not a cursor this API issued")
    if key["owner"]["S"] != owner or not _NUMBER.fullmatch(key["created_at"]["N"]):
        raise ValueError("not a cursor this API issued")
    if not 0 < len(key["id"]["S"].encode()) <= 1024:  # a job id, within what DynamoDB takes as a key
        raise ValueError("not a cursor this API issued")
    return key
