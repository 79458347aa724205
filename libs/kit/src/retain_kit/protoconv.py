"""Conversions between protobuf well-known types and Python values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_timestamp(value: datetime | None) -> Timestamp | None:
    """Naive datetimes are taken as UTC. Integer arithmetic: protobuf's FromDatetime costs several times as
    much, and this runs for every timestamp of every message."""
    if value is None:
        return None
    delta = (value if value.tzinfo else value.replace(tzinfo=UTC)) - _EPOCH
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)


def from_timestamp(ts: Timestamp | None) -> datetime | None:
    """Unset (zero) timestamps read as None; nanoseconds are truncated to microseconds, as ToDatetime does."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def to_struct(value: dict[str, Any] | None) -> Struct:
    struct = Struct()
    if value:
        struct.update(value)
    return struct


def from_struct(struct: Struct | None) -> dict[str, Any]:
    if struct is None:
        return {}
    result: dict[str, Any] = json_format.MessageToDict(struct)
    return result


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
