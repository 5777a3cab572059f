"""JobEvents on DynamoDB: the delivery bookkeeping on the job records, and each key's event counter.

The marker: a terminal job carries `active = "unpublished"` and `due_at = finished_at + PUBLISH_GRACE_S`
(domain/events.py)
(the jobs table's sparse `active_jobs` index, which the reaper already reads for running and queued jobs),
written by the same conditional update that makes the job terminal (adapters/jobs_dynamodb.py). It is
removed once the event reached its destinations. The cleanup queries the index for marked jobs past their
grace, so a job whose worker died between the terminal write and the fan-out still gets its event.
"""

from __future__ import annotations

from typing import Any

from chalicelib.adapters.aws import ConditionFailed, LazyClient
from chalicelib.adapters.dynamo import unmarshal, value
from chalicelib.adapters.jobs_dynamodb import UNPUBLISHED, from_item
from chalicelib.domain.events import event_id
from chalicelib.domain.jobs import Job
from chalicelib.domain.webhooks import WebhookDelivery


def settings_key(key_id: str) -> dict[str, Any]:
    """The key's delivery settings item in the delivery table (event counter, webhook URL and secrets)."""
    return {"pk": {"S": f"key#{key_id}"}, "sk": {"S": "settings"}}


class DynamoJobEvents:
    def __init__(self, jobs_table: str, delivery_table: str, client: Any = None) -> None:
        self.jobs_table, self.delivery_table = jobs_table, delivery_table
        self._client = client

    client = LazyClient("dynamodb")

    def allocate(self, job: Job) -> str:
        if job.event_id:
            return job.event_id
        counter = self.client.update_item(
            TableName=self.delivery_table,
            Key=settings_key(job.key_id),
            UpdateExpression="ADD event_n :one",
            ExpressionAttributeValues={":one": value(1)},
            ReturnValues="UPDATED_NEW",
        )
        allocated = event_id(int(unmarshal(counter["Attributes"])["event_n"]))  # type: ignore[index]
        try:
            self.client.update_item(
                TableName=self.jobs_table,
                Key={"id": {"S": job.id}},
                UpdateExpression="SET event_id = :e",
                ConditionExpression="attribute_exists(id) AND attribute_not_exists(event_id)",
                ExpressionAttributeValues={":e": value(allocated)},
            )
            return allocated
        except ConditionFailed:
            pass
        # Someone allocated first (a racing re-publish): theirs is the job's id; ours stays unused.
        stored = self.client.get_item(
            TableName=self.jobs_table, Key={"id": {"S": job.id}}, ConsistentRead=True, ProjectionExpression="event_id"
        )
        return str((unmarshal(stored.get("Item")) or {})["event_id"])

    def published(self, job_id: str, inbox: list[str], webhook: WebhookDelivery | None) -> None:
        values: dict[str, Any] = {":i": value(inbox)}
        expr = "SET inbox_devices = :i"
        if webhook is not None:
            # The first attempt may already have recorded its outcome: never overwrite it with "pending".
            expr += ", webhook_delivery = if_not_exists(webhook_delivery, :w)"
            values[":w"] = value(webhook.model_dump(mode="json", exclude_none=True))
        self.client.update_item(
            TableName=self.jobs_table,
            Key={"id": {"S": job_id}},
            UpdateExpression=expr + " REMOVE active, due_at",
            ConditionExpression="attribute_exists(id)",
            ExpressionAttributeValues=values,
        )

    def set_webhook(self, job_id: str, state: WebhookDelivery) -> None:
        self.client.update_item(
            TableName=self.jobs_table,
            Key={"id": {"S": job_id}},
            UpdateExpression="SET webhook_delivery = :w",
            ConditionExpression="attribute_exists(id)",
            ExpressionAttributeValues={":w": value(state.model_dump(mode="json", exclude_none=True))},
        )

    def unpublished(self, now: float, limit: int = 100) -> list[Job]:
        resp = self.client.query(
            TableName=self.jobs_table,
            IndexName="active_jobs",
            KeyConditionExpression="active = :a AND due_at <= :now",
            ExpressionAttributeValues={":a": {"S": UNPUBLISHED}, ":now": value(now)},
            Limit=limit,
        )
        return [from_item(unmarshal(i) or {}) for i in resp.get("Items", [])]
