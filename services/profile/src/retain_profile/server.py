"""gRPC servicer: proto <-> domain translation only."""

from __future__ import annotations

from typing import Any

import grpc
from retain.common.v1 import common_pb2
from retain.profile.v1 import profile_pb2, profile_pb2_grpc
from retain_kit.enums import channel_name, channel_value, consent_status_name, consent_status_value, lifecycle_value
from retain_kit.protoconv import aware, from_struct, from_timestamp, to_struct, to_timestamp

from retain_profile.domain.consent import ConsentRecord
from retain_profile.domain.events import IncomingEvent
from retain_profile.domain.features import Features
from retain_profile.domain.identity import Identifier
from retain_profile.models import EventRow
from retain_profile.service import ConsentChangeInput, ItemResult, Profiles

_STATUS = {
    "accepted": profile_pb2.INGEST_STATUS_ACCEPTED,
    "duplicate": profile_pb2.INGEST_STATUS_DUPLICATE,
    "rejected": profile_pb2.INGEST_STATUS_REJECTED,
}


def _enum_name(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def event_type_name(value: profile_pb2.EventType.ValueType) -> str:
    return _enum_name(profile_pb2.EventType.Name(value), "EVENT_TYPE_") if value else ""


def event_type_value(name: str) -> profile_pb2.EventType.ValueType:
    return profile_pb2.EventType.Value("EVENT_TYPE_" + name.upper())


def identifier_kind_name(value: profile_pb2.IdentifierKind.ValueType) -> str:
    return _enum_name(profile_pb2.IdentifierKind.Name(value), "IDENTIFIER_KIND_") if value else ""


def identifier_kind_value(name: str) -> profile_pb2.IdentifierKind.ValueType:
    return profile_pb2.IdentifierKind.Value("IDENTIFIER_KIND_" + name.upper())


def incoming_event(event: profile_pb2.Event) -> IncomingEvent:
    return IncomingEvent(
        message_id=event.message_id,
        type=event_type_name(event.type),
        event=event.event,
        user_id=event.user_id,
        anonymous_id=event.anonymous_id,
        previous_id=event.previous_id,
        properties=from_struct(event.properties) if event.HasField("properties") else {},
        traits=from_struct(event.traits) if event.HasField("traits") else {},
        context=from_struct(event.context) if event.HasField("context") else {},
        timestamp=from_timestamp(event.timestamp) if event.HasField("timestamp") else None,
    )


def event_to_proto(row: EventRow) -> profile_pb2.Event:
    return profile_pb2.Event(
        message_id=row.message_id,
        type=event_type_value(row.type),
        event=row.event,
        user_id=row.user_id,
        anonymous_id=row.anonymous_id,
        previous_id=row.previous_id,
        properties=to_struct(row.properties),
        traits=to_struct(row.traits),
        context=to_struct(row.context),
        timestamp=to_timestamp(aware(row.timestamp)),
        received_at=to_timestamp(aware(row.received_at)),
        customer_id=row.customer_id,
    )


def result_to_proto(result: ItemResult) -> profile_pb2.EventResult:
    return profile_pb2.EventResult(
        index=result.index,
        message_id=result.message_id,
        status=_STATUS[result.status],
        customer_id=result.customer_id,
        field=result.field,
        error=result.error,
    )


def features_to_proto(f: Features) -> profile_pb2.Features:
    return profile_pb2.Features(
        recency_days=f.recency_days,
        frequency=f.frequency,
        monetary_total=f.monetary_total,
        average_order_value=f.average_order_value,
        tenure_days=f.tenure_days,
        orders_30d=f.orders_30d,
        spend_30d=f.spend_30d,
        orders_90d=f.orders_90d,
        spend_90d=f.spend_90d,
        activity_level=f.activity_level,
        activity_change=f.activity_change,
        category_affinity=f.category_affinity,
        negative_feedback_streak=f.negative_feedback_streak,
        open_tickets=f.open_tickets,
        lifecycle_stage=lifecycle_value(f.lifecycle_stage),
        segments=list(f.segments),
        first_seen=to_timestamp(f.first_seen),
        last_seen=to_timestamp(f.last_seen),
        last_order_at=to_timestamp(f.last_order_at),
        first_order_at=to_timestamp(f.first_order_at),
        repeat_transactions=f.repeat_transactions,
        recency_weeks=f.recency_weeks,
        age_weeks=f.age_weeks,
        as_of=to_timestamp(f.as_of),
    )


def consent_to_proto(record: ConsentRecord) -> common_pb2.Consent:
    return common_pb2.Consent(
        channel=channel_value(record.channel),
        purpose=record.purpose,
        status=consent_status_value(record.status),
        source=record.source,
        lawful_basis=record.lawful_basis,
        policy_version=record.policy_version,
        updated_at=to_timestamp(record.updated_at),
    )


class ProfileServicer(profile_pb2_grpc.ProfileServiceServicer):
    def __init__(self, profiles: Profiles) -> None:
        self.profiles = profiles

    async def IngestEvents(
        self, request: profile_pb2.IngestEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> profile_pb2.IngestEventsResponse:
        results = await self.profiles.ingest(request.workspace_id, [incoming_event(e) for e in request.events])
        return profile_pb2.IngestEventsResponse(
            results=[result_to_proto(r) for r in results],
            accepted=sum(r.status == "accepted" for r in results),
            duplicates=sum(r.status == "duplicate" for r in results),
            rejected=sum(r.status == "rejected" for r in results),
        )

    async def Identify(
        self, request: profile_pb2.IdentifyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> profile_pb2.IdentifyResponse:
        customer_id = await self.profiles.identify(
            request.workspace_id,
            user_id=request.user_id,
            anonymous_id=request.anonymous_id,
            traits=from_struct(request.traits) if request.HasField("traits") else {},
            timestamp=from_timestamp(request.timestamp) if request.HasField("timestamp") else None,
            message_id=request.message_id,
        )
        return profile_pb2.IdentifyResponse(customer_id=customer_id)

    async def Alias(
        self, request: profile_pb2.AliasRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> profile_pb2.AliasResponse:
        result = await self.profiles.alias(
            request.workspace_id, previous_id=request.previous_id, user_id=request.user_id,
            message_id=request.message_id,
        )
        return profile_pb2.AliasResponse(customer_id=result.customer_id, merged_customer_ids=list(result.merged))

    async def GetProfile(
        self, request: profile_pb2.GetProfileRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> profile_pb2.GetProfileResponse:
        identifier = None
        if request.HasField("identifier") and request.identifier.kind:
            identifier = Identifier(identifier_kind_name(request.identifier.kind), request.identifier.value)
        view = await self.profiles.profile(request.workspace_id, request.customer_id, identifier)
        return profile_pb2.GetProfileResponse(
            profile=profile_pb2.Profile(
                customer_id=view.customer_id,
                workspace_id=view.workspace_id,
                identifiers=[
                    profile_pb2.Identifier(kind=identifier_kind_value(i.kind), value=i.value)
                    for i in view.identifiers
                ],
                traits=to_struct(view.traits),
                events_count=view.events_count,
                first_seen=to_timestamp(view.first_seen),
                last_seen=to_timestamp(view.last_seen),
                features=features_to_proto(view.features),
                consents=[consent_to_proto(c) for c in view.consents],
                time_zone=view.time_zone,
                locale=view.locale,
            )
        )

    async def GetFeatures(
        self, request: profile_pb2.GetFeaturesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> profile_pb2.GetFeaturesResponse:
        customer_id, features = await self.profiles.features(request.workspace_id, request.customer_id)
        return profile_pb2.GetFeaturesResponse(customer_id=customer_id, features=features_to_proto(features))

    async def ListEvents(
        self, request: profile_pb2.ListEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> profile_pb2.ListEventsResponse:
        _, rows, token = await self.profiles.list_events(
            request.workspace_id, request.customer_id, page_size=request.page_size, page_token=request.page_token
        )
        return profile_pb2.ListEventsResponse(events=[event_to_proto(r) for r in rows], next_page_token=token)

    async def SetConsents(
        self, request: profile_pb2.SetConsentsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> profile_pb2.SetConsentsResponse:
        changes = [
            ConsentChangeInput(
                channel=channel_name(c.channel),
                purpose=c.purpose,
                status=consent_status_name(c.status),
                source=c.source,
                lawful_basis=c.lawful_basis,
                policy_version=c.policy_version,
                occurred_at=from_timestamp(c.occurred_at) if c.HasField("occurred_at") else None,
            )
            for c in request.changes
        ]
        customer_id, consents = await self.profiles.set_consents(
            request.workspace_id, request.customer_id, changes, actor=request.actor
        )
        return profile_pb2.SetConsentsResponse(
            customer_id=customer_id, consents=[consent_to_proto(c) for c in consents]
        )

    async def CheckConsent(
        self, request: profile_pb2.CheckConsentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> profile_pb2.CheckConsentResponse:
        record, answer = await self.profiles.check_consent(
            request.workspace_id, request.customer_id, channel=channel_name(request.channel),
            purpose=request.purpose,
        )
        return profile_pb2.CheckConsentResponse(
            allowed=answer.allowed,
            consent=consent_to_proto(record) if record else None,
            reason=answer.reason,
        )
