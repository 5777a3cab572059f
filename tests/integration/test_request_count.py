"""The submit path's AWS budget: an accepted submit makes at most 4 requests (key UpdateItem: auth and quota;
tier UpdateItem: queue place; job PutItem; SQS SendMessage), counted with a botocore `before-send` hook."""

from __future__ import annotations

import time
from typing import Any

from tests.bench import RequestCounter

JOB = {"runtime": "python", "source": "print(1)"}


def test_an_accepted_submit_makes_at_most_four_aws_requests(stack_env: dict[str, Any]) -> None:
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
    assert counter.total <= 4, counter.by_operation()
    assert counter.by_operation().get("sqs.SendMessage") == 1, counter.by_operation()
