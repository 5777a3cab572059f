"""The local stack's moto speedups change nothing a client sees: DynamoDB item responses written by `json.dumps`
equal moto's own serializer's, cached expressions evaluate as fresh ones, and the keep-alive server answers
like werkzeug's while keeping its connections."""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.dynamodb.responses import DynamoHandler

from devtools.keepalive import start
from devtools.motoserver import _ITEM_OPERATIONS


@pytest.fixture
def ddb(moto_endpoint: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def table(ddb: Any) -> Iterator[str]:
    name = "motoserver-" + uuid.uuid4().hex[:8]
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    yield name
    ddb.delete_table(TableName=name)


@pytest.fixture
def both_serializers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any, Any]]:
    """Every DynamoDB response is rendered both ways; returns (operation, fast, moto's) for each."""
    fast = DynamoHandler.serialized
    slow = fast.__wrapped__  # type: ignore[attr-defined]
    seen: list[tuple[str, Any, Any]] = []

    def compare(self: Any, action_result: Any) -> Any:
        quick = fast(self, action_result)
        status, headers, body = quick
        seen.append((self._get_action(), (status, dict(headers), body), slow(self, action_result)))
        return quick  # moto adds the request id and checksum to these headers afterwards

    monkeypatch.setattr(DynamoHandler, "serialized", compare)
    return seen


def _item(pk: str, sk: str) -> dict[str, Any]:
    return {
        "pk": {"S": pk},
        "sk": {"S": sk},
        "n": {"N": "1.50"},
        "big": {"N": "12345678901234567890"},
        "b": {"B": b"\x00\xffbinary"},
        "bs": {"BS": [b"a", b"\x01"]},
        "ss": {"SS": ["x", "y"]},
        "ns": {"NS": ["1", "2.5"]},
        "bool": {"BOOL": True},
        "null": {"NULL": True},
        "m": {"M": {"inner": {"L": [{"S": "é ☃"}, {"N": "0"}, {"M": {}}]}}},
        "quote": {"S": 'a "quoted" \\ line\n'},
    }


def test_item_responses_equal_motos_own_serializer(
    ddb: Any, table: str, both_serializers: list[tuple[str, Any, Any]]
) -> None:
    ddb.put_item(TableName=table, Item=_item("a", "1"))
    ddb.put_item(TableName=table, Item=_item("a", "2"), ReturnValues="ALL_OLD", ReturnConsumedCapacity="TOTAL")
    ddb.put_item(TableName=table, Item=_item("a", "2"), ReturnValues="ALL_OLD")
    ddb.get_item(TableName=table, Key={"pk": {"S": "a"}, "sk": {"S": "1"}}, ConsistentRead=True)
    ddb.get_item(TableName=table, Key={"pk": {"S": "nobody"}, "sk": {"S": "1"}})
    for returns in ("NONE", "ALL_OLD", "ALL_NEW", "UPDATED_OLD", "UPDATED_NEW"):
        ddb.update_item(
            TableName=table,
            Key={"pk": {"S": "a"}, "sk": {"S": "1"}},
            UpdateExpression="SET #n = #n + :one, tags = :tags ADD hits :one REMOVE quote",
            ConditionExpression="attribute_exists(pk) AND #n >= :zero",
            ExpressionAttributeNames={"#n": "n"},
            ExpressionAttributeValues={":one": {"N": "1"}, ":zero": {"N": "0"}, ":tags": {"L": [{"B": b"\x02"}]}},
            ReturnValues=returns,
        )
    ddb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "a"}},
        Limit=1,
        ReturnConsumedCapacity="TOTAL",
    )
    ddb.scan(TableName=table, FilterExpression="attribute_exists(b)")
    ddb.batch_get_item(RequestItems={table: {"Keys": [{"pk": {"S": "a"}, "sk": {"S": s}} for s in ("1", "2", "3")]}})
    ddb.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": _item("b", "1")}}]})
    ddb.transact_write_items(
        TransactItems=[
            {
                "Update": {
                    "TableName": table,
                    "Key": {"pk": {"S": "b"}, "sk": {"S": "1"}},
                    "UpdateExpression": "SET x = :x",
                    "ExpressionAttributeValues": {":x": {"S": "y"}},
                }
            }
        ]
    )
    ddb.transact_get_items(TransactItems=[{"Get": {"TableName": table, "Key": {"pk": {"S": "b"}, "sk": {"S": "1"}}}}])
    ddb.delete_item(TableName=table, Key={"pk": {"S": "b"}, "sk": {"S": "1"}}, ReturnValues="ALL_OLD")

    assert {operation for operation, _, _ in both_serializers} >= _ITEM_OPERATIONS
    for operation, (status, headers, body), (slow_status, slow_headers, slow_body) in both_serializers:
        assert (status, headers) == (slow_status, slow_headers), operation
        assert json.loads(body) == json.loads(slow_body), operation


def test_errors_and_table_operations_keep_motos_serializer(
    ddb: Any, table: str, both_serializers: list[tuple[str, Any, Any]]
) -> None:
    ddb.put_item(TableName=table, Item=_item("a", "1"))
    with pytest.raises(ddb.exceptions.ConditionalCheckFailedException) as failed:
        ddb.put_item(
            TableName=table,
            Item=_item("a", "1"),
            ConditionExpression="attribute_not_exists(pk)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert failed.value.response["Item"]["b"] == {"B": b"\x00\xffbinary"}
    assert ddb.describe_table(TableName=table)["Table"]["TableName"] == table
    for operation, fast, slow in both_serializers:
        assert fast == slow, operation


def test_cached_expressions_evaluate_each_requests_own_values(ddb: Any, table: str) -> None:
    """The same update and condition text with other values: the cache holds the text's parse, not a result."""
    key = {"pk": {"S": "c"}, "sk": {"S": "1"}}
    update = "SET #c = if_not_exists(#c, :zero) + :inc"
    condition = "attribute_not_exists(#c) OR #c < :cap"

    def add(inc: str, cap: str) -> None:
        ddb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeNames={"#c": "count"},
            ExpressionAttributeValues={":zero": {"N": "0"}, ":inc": {"N": inc}, ":cap": {"N": cap}},
        )

    for inc, cap in (("1", "10"), ("5", "10"), ("2", "10")):
        add(inc, cap)
    assert ddb.get_item(TableName=table, Key=key)["Item"]["count"] == {"N": "8"}
    with pytest.raises(ddb.exceptions.ConditionalCheckFailedException):
        add("1", "8")
    with pytest.raises(ddb.exceptions.ClientError, match="ValidationException"):
        ddb.update_item(TableName=table, Key=key, UpdateExpression="SET = broken")


# -- the keep-alive WSGI server ------------------------------------------------------------------------------
def _echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    answer = json.dumps(
        {
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"],
            "type": environ["CONTENT_TYPE"],
            "target": environ.get("HTTP_X_AMZ_TARGET"),
            "body": body.decode(),
            "thread": threading.get_ident(),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
    return [answer]


@pytest.fixture
def echo_server() -> Iterator[int]:
    from devtools.stack import free_port

    port = free_port()
    server = start(_echo, "127.0.0.1", port)
    yield port
    server.stop()


def test_keep_alive_server_serves_many_requests_on_one_connection(echo_server: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", echo_server, timeout=10)
    answers, sockets = [], set()
    for i in range(3):
        conn.request("POST", f"/a%20b?i={i}", body=b"x" * i, headers={"X-Amz-Target": "S.Op", "Content-Type": "t/x"})
        resp = conn.getresponse()
        answers.append(json.loads(resp.read()))
        sockets.add(id(conn.sock))
        assert resp.status == 200 and resp.getheader("Connection") is None
    assert len(sockets) == 1 and len({a["thread"] for a in answers}) == 1  # one connection, one server thread
    assert answers[2] == {
        **answers[2],
        "method": "POST",
        "path": "/a b",
        "query": "i=2",
        "type": "t/x",
        "target": "S.Op",
        "body": "xx",
    }
    conn.request("HEAD", "/")
    head = conn.getresponse()
    assert head.read() == b"" and int(head.getheader("Content-Length")) > 0
    conn.close()


def test_keep_alive_server_reads_chunked_bodies_and_honours_connection_close(echo_server: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", echo_server, timeout=10)
    conn.request("PUT", "/", body=iter([b"hello ", b"world"]), encode_chunked=True, headers={"Connection": "close"})
    resp = conn.getresponse()
    assert json.loads(resp.read())["body"] == "hello world"
    assert resp.getheader("Connection") == "close"
    conn.close()


def test_a_long_poll_gets_the_next_message_of_a_group_freed_by_a_delete(moto_endpoint: str) -> None:
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    url = sqs.create_queue(
        QueueName=f"motoserver-{uuid.uuid4().hex[:8]}.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true", "VisibilityTimeout": "60"},
    )["QueueUrl"]
    for body in ("first", "second"):
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId="g")
    first = sqs.receive_message(QueueUrl=url)["Messages"][0]
    assert first["Body"] == "first"
    got: list[Any] = []
    poll = threading.Thread(target=lambda: got.append(sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20)))
    poll.start()
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])  # the group is free again
    poll.join(30)
    assert [m["Body"] for m in got[0].get("Messages", [])] == ["second"]
    sqs.delete_queue(QueueUrl=url)
