"""The submit path's AWS budget: an accepted submit makes at most 5 requests (key UpdateItem: auth and quota;
tier UpdateItem: queue place; job PutItem; slots UpdateItem: the key's jobs in flight, for the wait estimate;
SQS SendMessage), counted with a botocore `before-send` hook."""

from __future__ import annotations

import time
from typing import Any

from tests.bench import RequestCounter

JOB = {"runtime": "python", "source": "print(1)"}


def test_an_accepted_submit_makes_at_most_five_aws_requests(stack_env: dict[str, Any]) -> None:
    from chalicelib.adapters.aws import client
    from chalicelib.bootstrap import get_deps
    from chalicelib.services.keys import create_key
    from chalicelib.services.submit import submit_job

    deps = get_deps()
    key = create_key(deps, "acme", "pro")[0]
    for _ in range(2):  # again if a minute began in between: a key's first submit in a minute costs two more
        minute = int(time.time() // 60)
        submit_job(deps, key, JOB)  # warm: the queue URL lookup, the run-time stats read, this minute's window
        with RequestCounter(client("dynamodb"), client("sqs")) as counter:
            accepted = submit_job(deps, key, JOB)
        if int(time.time() // 60) == minute:
            break
    assert accepted.job.status.value == "queued"
    assert counter.total <= 5, counter.by_operation()
    assert counter.by_operation().get("sqs.SendMessage") == 1, counter.by_operation()


def test_a_keys_first_submit_in_a_minute_and_a_refusal_need_no_extra_read(stack_env: dict[str, Any]) -> None:
    """A stale minute window fails the one-request fast path; the failure returns the item (ALL_OLD), so the
    rollover costs one more UpdateItem and no GetItem, and a refused submit costs only the failed update."""
    from chalicelib.adapters.aws import client
    from chalicelib.bootstrap import get_deps
    from chalicelib.domain.errors import QuotaExceeded
    from chalicelib.services.keys import create_key
    from chalicelib.services.submit import submit_job

    deps = get_deps()
    key = create_key(deps, "acme", "free")[0]
    submit_job(deps, key, JOB)  # warm the process-wide lookups; the key has no window yet
    fresh = create_key(deps, "beta", "free")[0]
    with RequestCounter(client("dynamodb"), client("sqs")) as counter:
        submit_job(deps, fresh, JOB)  # no window stored yet: the same path as a new minute
    ops = counter.by_operation()
    assert ops.get("dynamodb.GetItem") is None and ops.get("dynamodb.UpdateItem") == 4, ops
    for _ in range(20):
        try:
            submit_job(deps, key, JOB)
        except QuotaExceeded:
            break
    with RequestCounter(client("dynamodb"), client("sqs")) as counter:
        try:
            submit_job(deps, key, JOB)
        except QuotaExceeded as exc:
            assert exc.code == "rate_limited"
    assert counter.by_operation() == {"dynamodb.UpdateItem": 1}, counter.by_operation()
