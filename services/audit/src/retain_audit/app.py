"""Wiring: settings -> engine, keys -> use cases -> servicer registrations, checkpoint timer."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from retain.audit.v1 import audit_pb2, audit_pb2_grpc
from retain_kit.config import Endpoints
from retain_kit.db import create_engine, session_factory
from retain_kit.grpcserver import Registration
from retain_kit.service_main import Built
from sqlalchemy.ext.asyncio import AsyncEngine

from retain_audit.config import Settings
from retain_audit.domain.checkpoint import Signer
from retain_audit.domain.privacy import Vault
from retain_audit.keys import load_master_key, load_signing_key
from retain_audit.server import AuditServicer
from retain_audit.service import AuditLog

SERVICE_NAME = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
log = logging.getLogger(__name__)


def build_log(settings: Settings, engine: AsyncEngine) -> AuditLog:
    return AuditLog(
        session_factory(engine),
        signer=Signer(load_signing_key(settings)),
        vault=Vault(load_master_key(settings)),
        checkpoint_every=settings.checkpoint_every,
    )


async def checkpoint_timer(audit: AuditLog, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await audit.checkpoint_due()
        except Exception:  # noqa: BLE001 - the timer must outlive a database hiccup; the next tick retries
            log.exception("periodic checkpoint failed")


async def build(settings: Settings, endpoints: Endpoints | None = None) -> Built:
    """Audit calls no other service; `endpoints` keeps the signature uniform across services."""
    engine = create_engine(settings.database_url, schema=settings.schema)
    audit = build_log(settings, engine)
    servicer = AuditServicer(audit)
    registration = Registration(servicer, audit_pb2_grpc.add_AuditServiceServicer_to_server, SERVICE_NAME)
    timer = (
        asyncio.create_task(checkpoint_timer(audit, settings.checkpoint_interval_seconds))
        if settings.checkpoint_interval_seconds > 0
        else None
    )

    async def stop() -> None:
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        await engine.dispose()

    return [registration], stop
