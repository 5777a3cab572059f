"""JobStore on DynamoDB. Every status change is a conditional write on the expected current status."""

from __future__ import annotations

import base64
import json
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.aws import LazyClient
from chalicelib.adapters.dynamo import is_condition_failure, marshal, unmarshal, value
from chalicelib.adapters.job_events_dynamodb import unpublished_marker
from chalicelib.domain.errors import StaleState
from chalicelib.domain.jobs import Job, JobStatus, check_transition
from chalicelib.services.ports import Page

# Attributes that describe the job as a whole are stored as JSON; the ones conditions and indexes need are
# top-level attributes.
_JSON_FIELDS = ("spec", "result")
# Sparse index attributes: present only while the job is in the state the index is for.
#   queue_tier: while queued (position = queued jobs of the tier with a smaller seq)
#   active + due_at: while queued or running (the reaper's work list)


def to_item(job: Job, orphan_after_s: int = 60) -> dict[str, Any]:
    data = job.model_dump(mode="json", exclude=set(_JSON_FIELDS))
    data["spec"] = job.spec.model_dump_json()
    if job.result is not None:
        data["result"] = job.result.model_dump_json()
    data.update(index_fields(job.status, job.tier, job.created_at + orphan_after_s, job.lease_until))
    return data


def index_fields(status: JobStatus, tier: str, orphan_due: float | None, lease_until: float | None) -> dict[str, Any]:
    """Values of the sparse index attributes for a job in `status` (None means: remove)."""
    if status is JobStatus.QUEUED:
        return {"queue_tier": tier, "active": "queued", "due_at": orphan_due}
    if status is JobStatus.RUNNING:
        return {"queue_tier": None, "active": "running", "due_at": lease_until}
    return {"queue_tier": None, "active": None, "due_at": None}


def from_item(item: dict[str, Any]) -> Job:
    data = {k: v for k, v in item.items() if k not in ("queue_tier", "active", "due_at", "ttl")}
    for name in _JSON_FIELDS:
        if isinstance(data.get(name), str):
            data[name] = json.loads(data[name])
    return Job.model_validate(data)


class DynamoJobStore:
    """Jobs table: pk `id`; GSIs `by_owner` (owner, created_at), `queued_by_tier` (queue_tier, seq),
    `active_jobs` (active, due_at)."""

    def __init__(self, table: str, client: Any = None, orphan_after_s: int = 60, ttl_days: int = 7) -> None:
        self.table = table
        self._client = client
        self.orphan_after_s = orphan_after_s
        self.ttl_days = ttl_days

    client = LazyClient("dynamodb")

    def create(self, job: Job) -> None:
        item = to_item(job, self.orphan_after_s)
        item["ttl"] = int(job.created_at) + self.ttl_days * 86400
        self.client.put_item(TableName=self.table, Item=marshal(item), ConditionExpression="attribute_not_exists(id)")

    def get(self, job_id: str) -> Job | None:
        resp = self.client.get_item(TableName=self.table, Key={"id": {"S": job_id}}, ConsistentRead=True)
        item = unmarshal(resp.get("Item"))
        return from_item(item) if item else None

    def transition(
        self, job: Job, new: JobStatus, changes: dict[str, Any], *, expected_attempts: int | None = None
    ) -> Job:
        check_transition(job.status, new)
        updated = job.model_copy(update={**changes, "status": new})
        fields: dict[str, Any] = {k: getattr(updated, k) for k in changes}
        fields["status"] = new.value
        if "result" in fields and fields["result"] is not None:
            fields["result"] = updated.result.model_dump_json() if updated.result else None
        # Only a job that never started can have lost its message; a retried one's message is still in SQS.
        orphan_due = job.created_at + self.orphan_after_s if updated.attempts == 0 else None
        fields.update(index_fields(new, job.tier, orphan_due, updated.lease_until))
        if new.terminal:  # marked until its job.finished event is produced (services/delivery.py)
            fields.update(unpublished_marker(updated.finished_at))
        condition = "#status = :expected"
        values = {":expected": value(job.status.value)}
        if expected_attempts is not None:
            condition += " AND attempts = :attempts"
            values[":attempts"] = value(expected_attempts)
        self._update(job.id, fields, condition, values)
        return updated

    def set_fields(self, job_id: str, changes: dict[str, Any], expected: JobStatus) -> bool:
        try:
            self._update(job_id, changes, "#status = :expected", {":expected": value(expected.value)})
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
                values[f":v{i}"] = value(val.value if hasattr(val, "value") and not isinstance(val, str) else val)
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
        except ClientError as exc:
            if is_condition_failure(exc):
                raise StaleState(f"job {job_id}: {condition} did not hold") from exc
            raise

    def list_by_owner(self, owner: str, limit: int, cursor: str | None) -> Page:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "by_owner",
            "KeyConditionExpression": "#o = :o",
            "ExpressionAttributeNames": {"#o": "owner"},
            "ExpressionAttributeValues": {":o": {"S": owner}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        resp = self.client.query(**kwargs)
        items = [from_item(unmarshal(i) or {}) for i in resp.get("Items", [])]
        last = resp.get("LastEvaluatedKey")
        next_cursor = base64.urlsafe_b64encode(json.dumps(last).encode()).decode() if last else None
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
