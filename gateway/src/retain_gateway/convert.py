"""Proto <-> JSON for the REST surface: enums as lower-case names without their prefix (`sms`, `at_risk`)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from retain_kit.protoconv import from_struct, from_timestamp

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


# How a field is read: a plain value, a repeated field, a map, a singular message (None when unset) or a
# singular Struct ({} when unset).
_PLAIN, _REPEATED, _MAP, _MESSAGE, _STRUCT_MESSAGE = range(5)
Converter = Callable[[Any], Any] | None


class _Field(NamedTuple):
    name: str
    shape: int
    convert: Converter  # None: the value as it is


def _converter(fd: Any) -> Converter:
    """How a value of field `fd` (a pure-Python or upb FieldDescriptor; their stubs differ) becomes JSON:
    enums by name (their names worked out once), timestamps as datetimes, structs as dicts, messages nested."""
    if fd.type == FieldDescriptor.TYPE_ENUM:
        assert fd.enum_type is not None
        names = {v.number: enum_name(fd.enum_type, v.number) for v in fd.enum_type.values}
        return lambda number: names[number] if number in names else str(number)
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        name = fd.message_type.full_name
        return from_timestamp if name == _TIMESTAMP else from_struct if name == _STRUCT else to_json
    return None


@functools.cache
def _fields(descriptor: Any) -> tuple[_Field, ...]:
    """The reading plan of a message type, worked out from its descriptor on first use."""
    plan = []
    for fd in descriptor.fields:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            plan.append(_Field(fd.name, _MAP, _converter(fd.message_type.fields_by_name["value"])))
        elif fd.is_repeated:
            plan.append(_Field(fd.name, _REPEATED, _converter(fd)))
        elif fd.message_type is not None:
            struct = fd.message_type.full_name == _STRUCT
            plan.append(_Field(fd.name, _STRUCT_MESSAGE if struct else _MESSAGE, _converter(fd)))
        else:
            plan.append(_Field(fd.name, _PLAIN, _converter(fd)))
    return tuple(plan)


def to_json(msg: Message) -> dict[str, Any]:
    """Every field of `msg` (defaults included), keyed by its proto name; unset messages are None."""
    out: dict[str, Any] = {}
    for name, shape, convert in _fields(msg.DESCRIPTOR):
        value = getattr(msg, name)
        if shape == _PLAIN:
            out[name] = value if convert is None else convert(value)
        elif shape == _REPEATED:
            out[name] = list(value) if convert is None else [convert(v) for v in value]
        elif shape == _MAP:
            out[name] = dict(value.items()) if convert is None else {k: convert(v) for k, v in value.items()}
        else:
            assert convert is not None
            out[name] = convert(value) if msg.HasField(name) else {} if shape == _STRUCT_MESSAGE else None
    return out
