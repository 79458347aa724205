"""Wiring: settings -> engine, audit client, providers -> use cases -> servicer + outbox worker."""

from __future__ import annotations

import asyncio

from retain.audit.v1 import audit_pb2_grpc
from retain.channels.v1 import channels_pb2, channels_pb2_grpc
from retain_kit.config import Endpoints
from retain_kit.db import create_engine, session_factory
from retain_kit.grpcserver import Registration, channel
from retain_kit.service_main import Built

from retain_channels.audit_client import GrpcAuditSink
from retain_channels.config import Settings
from retain_channels.domain.retry import RetryPolicy
from retain_channels.ports import AuditSink
from retain_channels.providers.base import ProviderContext
from retain_channels.providers.registry import ProviderRegistry, build_providers, default_registry
from retain_channels.server import ChannelServicer
from retain_channels.service import Channels, DeliveryOptions
from retain_channels.worker import OutboxWorker

SERVICE_NAME = channels_pb2.DESCRIPTOR.services_by_name["ChannelService"].full_name


def policy_from(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.max_attempts,
        base_seconds=settings.backoff_base_seconds,
        max_seconds=settings.backoff_max_seconds,
        jitter=settings.backoff_jitter,
    )


def options_from(settings: Settings) -> DeliveryOptions:
    return DeliveryOptions(
        lease_seconds=settings.outbox_lease_seconds,
        inline_retry_max_delay_seconds=settings.inline_retry_max_delay_seconds,
        audit_body_preview_chars=settings.audit_body_preview_chars,
    )


async def build(
    settings: Settings,
    *,
    registry: ProviderRegistry | None = None,
    audit: AuditSink | None = None,
    endpoints: Endpoints | None = None,
) -> Built:
    engine = create_engine(settings.database_url, schema=settings.schema)
    sessions = session_factory(engine)
    audit_channel = None
    if audit is None:
        audit_channel = channel((endpoints or Endpoints()).audit_addr)
        stub = audit_pb2_grpc.AuditServiceStub(audit_channel)
        audit = GrpcAuditSink(stub, timeout=settings.rpc_timeout_seconds)
    providers = build_providers(
        registry or default_registry(),
        names=settings.providers,
        configs=settings.provider_config,
        context=lambda ch: ProviderContext(channel=ch, var_dir=settings.var_dir, sessions=sessions),
    )
    channels = Channels(sessions, audit=audit, providers=providers, policy=policy_from(settings),
                        options=options_from(settings))
    worker = OutboxWorker(channels, poll_seconds=settings.outbox_poll_seconds, batch_size=settings.outbox_batch_size)
    worker_task = asyncio.create_task(worker.run(), name="channels-outbox-worker")

    async def on_stop() -> None:
        worker.stop()
        await worker_task
        await providers.close()
        if audit_channel is not None:
            await audit_channel.close()
        await engine.dispose()

    registration = Registration(
        ChannelServicer(channels), channels_pb2_grpc.add_ChannelServiceServicer_to_server, SERVICE_NAME
    )
    return [registration], on_stop
