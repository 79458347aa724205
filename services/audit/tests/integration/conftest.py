import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from retain.audit.v1 import audit_pb2_grpc
from retain_audit.app import SERVICE_NAME
from retain_audit.domain.checkpoint import Signer
from retain_audit.domain.privacy import Vault
from retain_audit.server import AuditServicer
from retain_audit.service import AuditLog
from retain_kit.db import session_factory
from retain_kit.grpcserver import Registration
from retain_kit.testing import DbTarget
from sqlalchemy.ext.asyncio import AsyncEngine

SERVICE_DIR = Path(__file__).resolve().parents[2]


@dataclass
class AuditUnderTest:
    client: audit_pb2_grpc.AuditServiceStub
    engine: AsyncEngine
    log: AuditLog
    dialect: str
    target: str


@pytest.fixture
async def audit(db_target: DbTarget, grpc_serve: Any) -> AsyncIterator[AuditUnderTest]:
    engine = await db_target.migrate(SERVICE_DIR)
    log = AuditLog(
        session_factory(engine), signer=Signer(Ed25519PrivateKey.generate()), vault=Vault(os.urandom(32)),
        checkpoint_every=4,
    )
    servicer = AuditServicer(log)
    target = await grpc_serve([Registration(servicer, audit_pb2_grpc.add_AuditServiceServicer_to_server, SERVICE_NAME)])
    async with grpc.aio.insecure_channel(target) as channel:
        yield AuditUnderTest(audit_pb2_grpc.AuditServiceStub(channel), engine, log, db_target.kind, target)


@pytest.fixture
async def stub(audit: AuditUnderTest) -> tuple[audit_pb2_grpc.AuditServiceStub, AsyncEngine]:
    return audit.client, audit.engine
