"""Lower-case names for the shared proto enums (what the REST API and the databases use)."""

from __future__ import annotations

from retain.common.v1 import common_pb2

CHANNELS = ("email", "sms", "push", "line", "in_app")
CONSENT_STATUSES = ("granted", "denied", "withdrawn")
LIFECYCLE_STAGES = ("new", "active", "at_risk", "lapsed", "churned", "reactivated")
DELIVERY_STATUSES = ("queued", "sent", "delivered", "failed", "opened", "clicked", "bounced", "suppressed")


def _name(enum_name: str, prefix: str) -> str:
    return enum_name[len(prefix) :].lower() if enum_name.startswith(prefix) else ""


def channel_name(value: int) -> str:
    return _name(common_pb2.Channel.DESCRIPTOR.values_by_number[value].name, "CHANNEL_") if value else ""


def channel_value(name: str) -> common_pb2.Channel.ValueType:
    """Raises ValueError for unknown names (callers turn that into a 4xx naming the field)."""
    if name not in CHANNELS:
        raise ValueError(f"unknown channel {name!r}; expected one of {', '.join(CHANNELS)}")
    return common_pb2.Channel.Value("CHANNEL_" + name.upper())


def consent_status_name(value: int) -> str:
    return _name(common_pb2.ConsentStatus.DESCRIPTOR.values_by_number[value].name, "CONSENT_STATUS_") if value else ""


def consent_status_value(name: str) -> common_pb2.ConsentStatus.ValueType:
    if name not in CONSENT_STATUSES:
        raise ValueError(f"unknown consent status {name!r}; expected one of {', '.join(CONSENT_STATUSES)}")
    return common_pb2.ConsentStatus.Value("CONSENT_STATUS_" + name.upper())


def lifecycle_name(value: int) -> str:
    return _name(common_pb2.LifecycleStage.DESCRIPTOR.values_by_number[value].name, "LIFECYCLE_STAGE_") if value else ""


def lifecycle_value(name: str) -> common_pb2.LifecycleStage.ValueType:
    if name not in LIFECYCLE_STAGES:
        raise ValueError(f"unknown lifecycle stage {name!r}")
    return common_pb2.LifecycleStage.Value("LIFECYCLE_STAGE_" + name.upper())


def delivery_status_name(value: int) -> str:
    return _name(common_pb2.DeliveryStatus.DESCRIPTOR.values_by_number[value].name, "DELIVERY_STATUS_") if value else ""


def delivery_status_value(name: str) -> common_pb2.DeliveryStatus.ValueType:
    if name not in DELIVERY_STATUSES:
        raise ValueError(f"unknown delivery status {name!r}")
    return common_pb2.DeliveryStatus.Value("DELIVERY_STATUS_" + name.upper())
