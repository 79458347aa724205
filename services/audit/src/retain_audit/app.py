"""Wiring: settings -> engine -> use cases -> servicer registrations."""

from __future__ import annotations

from retain.audit.v1 import audit_pb2, audit_pb2_grpc
from retain_kit.config import Endpoints
from retain_kit.db import create_engine, session_factory
from retain_kit.grpcserver import Registration
from retain_kit.service_main import Built

from retain_audit.config import Settings
from retain_audit.server import AuditServicer
from retain_audit.service import AuditLog

SERVICE_NAME = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name


async def build(settings: Settings, endpoints: Endpoints | None = None) -> Built:
    """Audit calls no other service; `endpoints` keeps the signature uniform across services."""
    engine = create_engine(settings.database_url, schema=settings.schema)
    servicer = AuditServicer(AuditLog(session_factory(engine)))
    registration = Registration(servicer, audit_pb2_grpc.add_AuditServiceServicer_to_server, SERVICE_NAME)
    return [registration], engine.dispose
