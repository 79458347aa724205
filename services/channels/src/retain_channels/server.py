"""gRPC servicer: proto <-> domain translation only."""

from __future__ import annotations

from typing import Any

import grpc
from retain.channels.v1 import channels_pb2, channels_pb2_grpc
from retain_kit.enums import channel_name, channel_value, delivery_status_name, delivery_status_value
from retain_kit.protoconv import aware, from_struct, from_timestamp, to_timestamp

from retain_channels.domain.dispatch import Draft, provider_latency_ms
from retain_channels.models import MessageRow
from retain_channels.service import Channels


def _whole_numbers(value: Any) -> Any:
    """protobuf Struct carries every number as a double; 150 must render as "150", not "150.0"."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def message_to_proto(row: MessageRow) -> channels_pb2.Message:
    return channels_pb2.Message(
        message_id=row.message_id,
        idempotency_key=row.idempotency_key,
        workspace_id=row.workspace_id,
        customer_id=row.customer_id,
        channel=channel_value(row.channel),
        offer_id=row.offer_id,
        purpose=row.purpose,
        decision_id=row.decision_id,
        journey_id=row.journey_id,
        recipient=row.recipient,
        locale=row.locale,
        subject=row.subject,
        body=row.body,
        status=delivery_status_value(row.status),
        provider=row.provider,
        provider_message_id=row.provider_message_id,
        attempts=row.attempts,
        error=row.error,
        created_at=to_timestamp(aware(row.created_at)),
        updated_at=to_timestamp(aware(row.updated_at)),
        provider_called_at=to_timestamp(aware(row.provider_called_at)) if row.provider_called_at else None,
        dispatch_to_provider_ms=provider_latency_ms(row.created_at, row.provider_called_at),
    )


def draft_from_proto(m: channels_pb2.Message) -> Draft:
    return Draft(
        idempotency_key=m.idempotency_key,
        customer_id=m.customer_id,
        channel=channel_name(m.channel),
        recipient=m.recipient,
        offer_id=m.offer_id,
        purpose=m.purpose,
        decision_id=m.decision_id,
        journey_id=m.journey_id,
        locale=m.locale,
        subject=m.subject,
        body=m.body,
        variables=_whole_numbers(from_struct(m.variables)) if m.HasField("variables") else {},
    )


class ChannelServicer(channels_pb2_grpc.ChannelServiceServicer):
    def __init__(self, channels: Channels) -> None:
        self.channels = channels

    async def Dispatch(
        self, request: channels_pb2.DispatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> channels_pb2.DispatchResponse:
        row, duplicate = await self.channels.dispatch(request.workspace_id, draft_from_proto(request.message))
        return channels_pb2.DispatchResponse(message=message_to_proto(row), duplicate=duplicate)

    async def GetMessage(
        self, request: channels_pb2.GetMessageRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> channels_pb2.GetMessageResponse:
        row = await self.channels.get(
            request.workspace_id, message_id=request.message_id, idempotency_key=request.idempotency_key
        )
        return channels_pb2.GetMessageResponse(message=message_to_proto(row))

    async def ListMessages(
        self, request: channels_pb2.ListMessagesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> channels_pb2.ListMessagesResponse:
        rows, token = await self.channels.list_messages(
            request.workspace_id, request.customer_id, page_size=request.page_size, page_token=request.page_token
        )
        return channels_pb2.ListMessagesResponse(messages=[message_to_proto(r) for r in rows], next_page_token=token)

    async def RecordDeliveryEvent(
        self, request: channels_pb2.RecordDeliveryEventRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> channels_pb2.RecordDeliveryEventResponse:
        row = await self.channels.record_event(
            request.workspace_id,
            provider=request.provider,
            provider_message_id=request.provider_message_id,
            status=delivery_status_name(request.status),
            occurred_at=from_timestamp(request.occurred_at) if request.HasField("occurred_at") else None,
            raw=from_struct(request.raw) if request.HasField("raw") else {},
        )
        return channels_pb2.RecordDeliveryEventResponse(message=message_to_proto(row))
