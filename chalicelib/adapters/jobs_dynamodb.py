"""JobStore on DynamoDB. Every status change is a conditional write on the expected current status."""

from __future__ import annotations

import base64
import binascii
import json
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
#   queue_tier: while queued (`queued_by_tier`: position = queued jobs of the tier with a smaller seq)
#   active (+ the job's own due_at): "queued", "running", or "unpublished" for a terminal job until its
#   job.finished event is produced (`active_jobs`: the reaper's work list; adapters/job_events_dynamodb.py)
_INDEX_ONLY = ("queue_tier", "active", "ttl")
UNPUBLISHED = "unpublished"
_JOB_FIELDS = frozenset(Job.model_fields)
# A listing filtered by status reads index pages of this many items, at most this many pages per request.
_FILTERED_PAGE = 100
_FILTERED_PAGES = 5


def to_item(job: Job) -> dict[str, Any]:
    data = job.model_dump(mode="json", exclude=set(_JSON_FIELDS))
    data["spec"] = job.spec.model_dump_json()
    if job.result is not None:
        data["result"] = job.result.model_dump_json()
    data.update(index_fields(job.status, job.tier))
    return data


def index_fields(status: JobStatus, tier: str) -> dict[str, Any]:
    """Values of the sparse index attributes for a job in `status` (None means: remove)."""
    if status is JobStatus.QUEUED:
        return {"queue_tier": tier, "active": "queued"}
    if status is JobStatus.RUNNING:
        return {"queue_tier": None, "active": "running"}
    return {"queue_tier": None, "active": UNPUBLISHED}


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
    """Jobs table: pk `id`; GSIs `by_owner` (owner, created_at), `queued_by_tier` (queue_tier, seq),
    `active_jobs` (active, due_at)."""

    def __init__(self, table: str, client: Any = None, ttl_days: int = 7) -> None:
        self.table = table
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

    def get(self, job_id: str) -> Job | None:
        resp = self.client.get_item(TableName=self.table, Key={"id": {"S": job_id}}, ConsistentRead=True)
        item = unmarshal(resp.get("Item"))
        return from_item(item) if item else None

    def transition(
        self, job: Job, new: JobStatus, changes: dict[str, Any], *, expected_attempts: int | None = None
    ) -> Job:
        check_transition(job.status, new)
        unknown = set(changes) - _JOB_FIELDS
        if unknown:
            raise ValueError(f"not job fields: {sorted(unknown)}")
        updated = job.model_copy(update={**changes, "status": new})
        fields: dict[str, Any] = {k: _stored(k, getattr(updated, k)) for k in changes}
        fields["status"] = new.value
        fields.update(index_fields(new, job.tier))
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
        """Newest first. With `status`, DynamoDB filters after reading (its `Limit` counts items read), so
        pages are read until `limit` match or `_FILTERED_PAGES` pages were read: a page may then hold fewer
        than `limit` jobs, and `cursor` goes on from where the reading stopped."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "by_owner",
            "KeyConditionExpression": "#o = :o",
            "ExpressionAttributeNames": {"#o": "owner"},
            "ExpressionAttributeValues": {":o": {"S": owner}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if status is not None:
            kwargs["FilterExpression"] = "#s = :s"
            kwargs["ExpressionAttributeNames"]["#s"] = "status"
            kwargs["ExpressionAttributeValues"][":s"] = {"S": status.value}
            kwargs["Limit"] = max(limit, _FILTERED_PAGE)
        start = _decode_cursor(cursor) if cursor else None
        found: list[dict[str, Any]] = []
        for _ in range(_FILTERED_PAGES):
            if start:
                kwargs["ExclusiveStartKey"] = start
            resp = self.client.query(**kwargs)
            found += resp.get("Items", [])
            start = resp.get("LastEvaluatedKey")
            if len(found) >= limit or not start:
                break
        if len(found) > limit or (len(found) == limit and start):
            found = found[:limit]
            start = {name: found[-1][name] for name in ("id", "owner", "created_at")}
        items = [from_item(unmarshal(i) or {}) for i in found]
        next_cursor = base64.urlsafe_b64encode(json.dumps(start).encode()).decode() if start else None
        return Page(items, next_cursor)

    def count_queued_ahead(self, tier: str, seq: int) -> int:
        return self._count(
            IndexName="queued_by_tier",
            KeyConditionExpression="queue_tier = :t AND seq < :s",
            ExpressionAttributeValues={":t": {"S": tier}, ":s": {"N": str(seq)}},
        )

    def due(self, status: JobStatus, now: float, limit: int = 100) -> list[Job]:
        resp = self.client.query(
            TableName=self.table,
            IndexName="active_jobs",
            KeyConditionExpression="active = :a AND due_at <= :now",
            ExpressionAttributeValues={":a": {"S": status.value}, ":now": value(now)},
            Limit=limit,
        )
        return [from_item(unmarshal(i) or {}) for i in resp.get("Items", [])]

    def count_active(self, status: JobStatus, tier: str) -> int:
        """Jobs of `tier` in `status` (the reaper reconciles the tier counters with this)."""
        return self._count(
            IndexName="active_jobs",
            KeyConditionExpression="active = :a",
            FilterExpression="tier = :t",
            ExpressionAttributeValues={":a": {"S": status.value}, ":t": {"S": tier}},
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


def _decode_cursor(cursor: str) -> dict[str, Any]:
    """The page key a cursor names; ValueError for anything this store did not issue."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise ValueError("not a cursor this API issued") from exc
    if not isinstance(key, dict):
        raise ValueError("not a cursor this API issued")
    return key
