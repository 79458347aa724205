"""Wiring: settings -> engine, audit client, Redis publisher -> use cases -> servicer registration."""

from __future__ import annotations

import asyncio
import contextlib

from retain.profile.v1 import profile_pb2, profile_pb2_grpc
from retain_kit.config import Endpoints
from retain_kit.db import create_engine, session_factory
from retain_kit.grpcserver import Registration, channel
from retain_kit.service_main import Built

from retain_profile import analytics_server
from retain_profile.audit_client import GrpcAuditSink
from retain_profile.config import Settings
from retain_profile.publisher import DisabledPublisher, RedisEventPublisher
from retain_profile.server import ProfileServicer
from retain_profile.service import Profiles

SERVICE_NAME = profile_pb2.DESCRIPTOR.services_by_name["ProfileService"].full_name


async def build(settings: Settings, endpoints: Endpoints | None = None) -> Built:
    engine = create_engine(settings.database_url, schema=settings.schema)
    audit_channel = channel((endpoints or Endpoints()).audit_addr)
    publisher: RedisEventPublisher | DisabledPublisher = (
        RedisEventPublisher.from_url(settings.redis_url, maxlen=settings.stream_maxlen)
        if settings.redis_url
        else DisabledPublisher()
    )
    profiles = Profiles(
        session_factory(engine),
        audit=GrpcAuditSink(audit_channel, timeout=settings.rpc_timeout_seconds),
        publisher=publisher,
        country_code=settings.default_country_code,
        default_time_zone=settings.default_time_zone,
        default_locale=settings.default_locale,
    )
    republisher = asyncio.create_task(profiles.run_republisher(interval=settings.republish_interval_seconds))
    registration = Registration(
        ProfileServicer(profiles), profile_pb2_grpc.add_ProfileServiceServicer_to_server, SERVICE_NAME
    )
    analytics, close_analytics = analytics_server.build_registration(
        session_factory(engine), audit_channel=audit_channel, scoring_addr=(endpoints or Endpoints()).scoring_addr,
        timeout=settings.rpc_timeout_seconds,
    )

    async def on_stop() -> None:
        republisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await republisher
        await publisher.close()
        await close_analytics()
        await audit_channel.close()
        await engine.dispose()

    return [registration, analytics], on_stop
