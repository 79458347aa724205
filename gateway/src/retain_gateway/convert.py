"""Proto <-> JSON for the REST surface: enums as lower-case names without their prefix (`sms`, `at_risk`)."""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from retain_kit.protoconv import from_struct

_TIMESTAMP = Timestamp.DESCRIPTOR.full_name
_STRUCT = Struct.DESCRIPTOR.full_name


def _enum_prefix(enum: EnumDescriptor) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


def enum_name(enum: EnumDescriptor, number: int) -> str:
    """`CHANNEL_SMS` -> `sms`; the unspecified zero value reads as ""."""
    if number == 0:
        return ""
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    return value.name.removeprefix(_enum_prefix(enum)).lower()


def enum_names(enum: EnumDescriptor) -> tuple[str, ...]:
    return tuple(enum_name(enum, v.number) for v in enum.values if v.number)


def enum_value(enum: EnumDescriptor, name: str) -> int:
    """Raises ValueError for names the enum does not have; "" maps to the unspecified value."""
    if not name:
        return 0
    value = enum.values_by_name.get(_enum_prefix(enum) + name.upper())
    if value is None or value.number == 0:
        raise ValueError(f"unknown value {name!r}; expected one of {', '.join(enum_names(enum))}")
    return int(value.number)


def _value(fd: Any, value: Any) -> Any:
    # `fd` is a FieldDescriptor (pure-Python or upb; their stubs differ).
    if fd.type == FieldDescriptor.TYPE_ENUM:
        assert fd.enum_type is not None
        return enum_name(fd.enum_type, value)
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return message_value(value)
    return value


def message_value(msg: Message) -> Any:
    name = msg.DESCRIPTOR.full_name
    if name == _TIMESTAMP:
        assert isinstance(msg, Timestamp)
        return msg.ToDatetime(tzinfo=UTC) if (msg.seconds or msg.nanos) else None
    if name == _STRUCT:
        assert isinstance(msg, Struct)
        return from_struct(msg)
    return to_json(msg)


def to_json(msg: Message) -> dict[str, Any]:
    """Every field of `msg` (defaults included), keyed by its proto name; unset messages are None."""
    out: dict[str, Any] = {}
    for fd in msg.DESCRIPTOR.fields:
        value = getattr(msg, fd.name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            out[fd.name] = {k: _value(value_fd, v) for k, v in value.items()}
        elif fd.is_repeated:
            out[fd.name] = [_value(fd, v) for v in value]
        elif fd.message_type is not None and not msg.HasField(fd.name):
            out[fd.name] = {} if fd.message_type.full_name == _STRUCT else None
        else:
            out[fd.name] = _value(fd, value)
    return out
