"""Shared DynamoDB plumbing: (de)serialisation between plain Python values and DynamoDB's typed JSON."""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer


@functools.cache
def _ser() -> TypeSerializer:
    from boto3.dynamodb.types import TypeSerializer  # on first use: importing an adapter stays cheap

    return TypeSerializer()


@functools.cache
def _de() -> TypeDeserializer:
    from boto3.dynamodb.types import TypeDeserializer

    return TypeDeserializer()


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    if isinstance(value, set):
        return {_from_dynamo(v) for v in value}
    return value


def marshal(item: dict[str, Any]) -> dict[str, Any]:
    """Plain Python values (floats included) to DynamoDB's typed JSON; None values are dropped."""
    return {k: _ser().serialize(_to_dynamo(v)) for k, v in item.items() if v is not None}


def value(v: Any) -> Any:
    """One plain value to DynamoDB's typed JSON."""
    return _ser().serialize(_to_dynamo(v))


def unmarshal(item: dict[str, Any] | None) -> dict[str, Any] | None:
    """DynamoDB's typed JSON to plain Python values (integral numbers as int)."""
    if item is None:
        return None
    return {k: _from_dynamo(_de().deserialize(v)) for k, v in item.items()}
