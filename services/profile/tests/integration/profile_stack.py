"""The real profile service (and, when asked, the real audit service) in-process for the newer tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from retain.profile.v1 import profile_pb2_grpc
from retain_audit import app as audit_app
from retain_audit.config import Settings as AuditSettings
from retain_kit import migrations
from retain_kit.db import session_factory
from retain_kit.grpcserver import Registration, channel
from retain_kit.testing import DbTarget, free_port
from retain_profile.app import SERVICE_NAME
from retain_profile.audit_client import GrpcAuditSink
from retain_profile.publisher import DisabledPublisher
from retain_profile.server import ProfileServicer
from retain_profile.service import Profiles

SERVICE_DIR = Path(__file__).resolve().parents[2]
AUDIT_DIR = SERVICE_DIR.parent / "audit"


@dataclass
class ProfileStack:
    stub: Any  # ProfileServiceAsyncStub
    profiles: Profiles
    ws: str


async def start_audit(db_target: DbTarget, grpc_serve: Any, tmp_path: Path) -> tuple[str, Any]:
    url, schema = db_target.fresh("audit")
    await asyncio.to_thread(migrations.upgrade, AUDIT_DIR, url, schema=schema)
    settings = AuditSettings(
        database_url=url, database_schema=schema or "", signing_key_path=str(tmp_path / "audit-signing.key"),
        master_key_path=str(tmp_path / "audit-master.key"), checkpoint_interval_seconds=0,
    )
    registrations, stop = await audit_app.build(settings)
    return await grpc_serve(registrations), stop


@pytest.fixture
async def make_profile(db_target: DbTarget, grpc_serve: Any, tmp_path: Path) -> AsyncIterator[Any]:
    """`await make_profile(audit=True|False)`: audit=False points profile at an address nobody listens on."""
    cleanups: list[Any] = []

    async def build(*, audit: bool = True) -> ProfileStack:
        if audit:
            audit_addr, stop = await start_audit(db_target, grpc_serve, tmp_path)
            cleanups.append(stop)
        else:
            audit_addr = f"127.0.0.1:{free_port()}"
        engine = await db_target.migrate(SERVICE_DIR)
        audit_channel = channel(audit_addr)
        cleanups.append(audit_channel.close)
        profiles = Profiles(
            session_factory(engine), audit=GrpcAuditSink(audit_channel, timeout=2.0), publisher=DisabledPublisher()
        )
        target = await grpc_serve(
            [Registration(ProfileServicer(profiles), profile_pb2_grpc.add_ProfileServiceServicer_to_server,
                          SERVICE_NAME)]
        )
        client = grpc.aio.insecure_channel(target)
        cleanups.append(client.close)
        return ProfileStack(profile_pb2_grpc.ProfileServiceStub(client), profiles, f"ws_{uuid.uuid4().hex[:8]}")

    yield build
    for cleanup in reversed(cleanups):
        await cleanup()
