"""`make cost` computes DynamoDB's request units itself (moto does not): item sizes and index writes by
DynamoDB's published rules (devtools/capacity.py)."""

from __future__ import annotations

from devtools.capacity import Index, Table, index_writes, item_size, value_size

TABLE = Table(
    keys=("id",),
    indexes={
        "by_owner": Index("by_owner", ("owner", "created_at"), "KEYS_ONLY"),
        "active": Index("active", ("active", "seq"), "INCLUDE", ("status", "due_at")),
        "everything": Index("everything", ("owner",), "ALL"),
    },
)


def item(**values: object) -> dict[str, dict[str, str]]:
    return {k: {"N": str(v)} if isinstance(v, int | float) else {"S": str(v)} for k, v in values.items()}


def test_sizes_follow_dynamodbs_rules() -> None:
    assert value_size({"S": "héllo"}) == 6  # UTF-8 bytes
    assert value_size({"N": "12345"}) == 4  # a byte per two significant digits, plus one
    assert value_size({"BOOL": True}) == value_size({"NULL": True}) == 1
    assert value_size({"L": [{"S": "ab"}, {"N": "1"}]}) == 3 + (1 + 2) + (1 + 2)
    assert value_size({"M": {"k": {"S": "v"}}}) == 3 + 1 + 1 + 1
    assert item_size({"id": {"S": "abc"}, "n": {"N": "7"}}) == (2 + 3) + (1 + 2)


def test_index_writes() -> None:
    queued = item(id="j", owner="acme", created_at=1, active="pro", seq=3, status="queued", due_at=9, big="x" * 2000)
    running = {**queued, **item(status="running", due_at=50, started_at=2)}
    done = {k: v for k, v in running.items() if k != "active"} | item(status="succeeded")
    put = index_writes(TABLE, None, queued)
    assert put == {"by_owner": 1.0, "active": 1.0, "everything": 3.0}  # sized by what each index projects
    start = index_writes(TABLE, queued, running)
    assert start == {"active": 1.0, "everything": 3.0}  # keys-only by_owner: untouched by the update
    end = index_writes(TABLE, running, done)
    assert end == {"active": 1.0, "everything": 3.0}  # leaves the sparse index: one delete
    moved = index_writes(TABLE, queued, {**queued, **item(seq=4)})
    assert moved["active"] == 2.0  # a new index key: a delete and a put
