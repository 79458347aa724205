"""Checkpoints, signatures and tamper detection: rows edited behind the service's back must be caught."""

import base64
import json
from dataclasses import replace

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from retain.audit.v1 import audit_pb2
from retain_audit.domain.chain import link_hash
from retain_audit.domain.checkpoint import statement
from retain_audit.models import AuditRecordRow
from retain_audit.repository import to_entry
from retain_kit.protoconv import from_timestamp, to_struct
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from conftest import AuditUnderTest


def rec(n: int, customer: str = "cus_1") -> audit_pb2.RecordInput:
    return audit_pb2.RecordInput(
        kind=audit_pb2.RECORD_KIND_DECISION, customer_id=customer, outcome="decided",
        payload=to_struct({"n": n, "winner": f"offer_{n}"}),
    )


async def fill(audit: AuditUnderTest, workspace: str, n: int) -> None:
    await audit.client.AppendBatch(
        audit_pb2.AppendBatchRequest(workspace_id=workspace, records=[rec(i) for i in range(1, n + 1)])
    )


async def behind_the_back(audit: AuditUnderTest, *statements: str, table: str = "audit_records") -> None:
    """Run statements with the append-only triggers switched off, as an attacker with DBA rights would."""
    engine: AsyncEngine = audit.engine
    async with engine.begin() as conn:
        if audit.dialect == "postgresql":
            await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        else:
            for verb in ("update", "delete"):
                await conn.execute(text(f"DROP TRIGGER {table}_no_{verb}"))
        for stmt in statements:
            await conn.execute(text(stmt))
        if audit.dialect == "postgresql":
            await conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
        else:
            for verb in ("UPDATE", "DELETE"):
                await conn.execute(
                    text(
                        f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                        f"BEGIN SELECT RAISE(ABORT, 'audit log is append-only: {verb} refused'); END"
                    )
                )


async def verify(audit: AuditUnderTest, workspace: str = "ws") -> audit_pb2.VerifyResponse:
    return await audit.client.Verify(audit_pb2.VerifyRequest(workspace_id=workspace))


async def test_checkpoints_every_n_records_are_signed_with_the_published_key(audit: AuditUnderTest) -> None:
    await fill(audit, "ws", 9)  # checkpoint_every=4 in the fixture: seqs 4 and 8
    listed = await audit.client.ListCheckpoints(audit_pb2.ListCheckpointsRequest(workspace_id="ws"))
    assert [c.seq for c in listed.checkpoints] == [4, 8]
    records = (await audit.client.ListRecords(audit_pb2.ListRecordsRequest(workspace_id="ws"))).records
    assert listed.checkpoints[1].head_hash == records[7].hash
    published = await audit.client.GetPublicKey(audit_pb2.GetPublicKeyRequest())
    assert published.algorithm == "Ed25519" and published.key_id == listed.checkpoints[0].key_id
    public = serialization.load_pem_public_key(published.public_key_pem.encode())
    assert isinstance(public, Ed25519PublicKey)
    for cp in listed.checkpoints:
        # An auditor checks the signature offline from the published statement format.
        public.verify(
            base64.b64decode(cp.signature),
            statement(cp.workspace_id, cp.seq, cp.head_hash, from_timestamp(cp.signed_at)),
        )
    result = await verify(audit)
    assert result.ok and result.records_checked == 9 and result.checkpoints_checked == 2


async def test_on_demand_checkpoint_signs_the_head_once(audit: AuditUnderTest) -> None:
    empty = await audit.client.CreateCheckpoint(audit_pb2.CreateCheckpointRequest(workspace_id="ws"))
    assert not empty.HasField("checkpoint")
    await fill(audit, "ws", 3)
    first = (await audit.client.CreateCheckpoint(audit_pb2.CreateCheckpointRequest(workspace_id="ws"))).checkpoint
    again = (await audit.client.CreateCheckpoint(audit_pb2.CreateCheckpointRequest(workspace_id="ws"))).checkpoint
    assert first.seq == 3 and again == first
    assert (await verify(audit)).checkpoints_checked == 1


async def test_timer_signs_only_workspaces_with_new_records(audit: AuditUnderTest) -> None:
    await fill(audit, "ws_a", 2)
    await fill(audit, "ws_b", 4)  # already checkpointed at 4 by count
    assert await audit.log.checkpoint_due() == 1
    assert await audit.log.checkpoint_due() == 0
    listed = await audit.client.ListCheckpoints(audit_pb2.ListCheckpointsRequest(workspace_id="ws_a"))
    assert [c.seq for c in listed.checkpoints] == [2]


async def test_checkpoints_refuse_update_and_delete(audit: AuditUnderTest) -> None:
    await fill(audit, "ws", 4)
    for stmt in ("UPDATE audit_checkpoints SET head_hash = 'x'", "DELETE FROM audit_checkpoints"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with audit.engine.begin() as conn:
                await conn.execute(text(stmt))


async def test_payload_edited_behind_the_service_is_caught_at_its_seq(audit: AuditUnderTest) -> None:
    await fill(audit, "ws", 10)
    assert (await verify(audit)).ok
    forged = json.dumps({"n": 6, "winner": "offer_999"})
    await behind_the_back(audit, f"UPDATE audit_records SET payload = '{forged}' WHERE workspace_id = 'ws' AND seq = 6")
    result = await verify(audit)
    assert not result.ok and result.first_broken_seq == 6 and "content" in result.detail
    # The edit is real (triggers were back on afterwards), and other workspaces are unaffected.
    rows = (await audit.client.ListRecords(audit_pb2.ListRecordsRequest(workspace_id="ws"))).records
    assert rows[5].payload["winner"] == "offer_999"


async def test_rehashed_forgery_is_caught_by_the_signed_checkpoint(audit: AuditUnderTest) -> None:
    """An attacker who recomputes every hash after the edit keeps the chain consistent; checkpoints pin it."""
    await fill(audit, "ws", 6)  # checkpoint at 4
    async with audit.engine.connect() as conn:
        table = AuditRecordRow.__table__
        rows = (await conn.execute(select(table).where(table.c.workspace_id == "ws").order_by(table.c.seq))).all()
    statements, prev = [], ""
    for row in rows:
        entry = to_entry(row)
        payload = {"n": 2, "winner": "offer_forged"} if entry.seq == 2 else entry.payload
        entry = replace(entry, payload=payload, prev_hash=prev)
        prev = link_hash(entry)
        statements.append(
            f"UPDATE audit_records SET payload = '{json.dumps(payload, sort_keys=True)}', "
            f"prev_hash = '{entry.prev_hash}', hash = '{prev}' WHERE workspace_id = 'ws' AND seq = {entry.seq}"
        )
    await behind_the_back(audit, *statements)
    result = await verify(audit)
    assert not result.ok and result.first_broken_seq == 4 and "checkpoint" in result.detail


async def test_truncated_tail_is_caught_by_a_checkpoint_beyond_it(audit: AuditUnderTest) -> None:
    await fill(audit, "ws", 5)  # checkpoint at 4
    await behind_the_back(audit, "DELETE FROM audit_records WHERE workspace_id = 'ws' AND seq >= 4")
    result = await verify(audit)
    assert not result.ok and result.first_broken_seq == 4 and "missing" in result.detail


async def test_forged_checkpoint_signature_is_caught(audit: AuditUnderTest) -> None:
    await fill(audit, "ws", 4)
    bogus = base64.b64encode(b"\x00" * 64).decode()
    await behind_the_back(
        audit, f"UPDATE audit_checkpoints SET signature = '{bogus}' WHERE seq = 4", table="audit_checkpoints"
    )
    result = await verify(audit)
    assert not result.ok and result.first_broken_seq == 4 and "signature" in result.detail


async def test_batch_is_one_transaction_and_idempotent(audit: AuditUnderTest) -> None:
    keyed = [audit_pb2.RecordInput(kind=audit_pb2.RECORD_KIND_MESSAGE, outcome="sent", idempotency_key=f"k{i}")
             for i in range(3)]
    first = await audit.client.AppendBatch(audit_pb2.AppendBatchRequest(workspace_id="ws", records=keyed))
    assert [r.seq for r in first.records] == [1, 2, 3]
    # A retried batch (plus one new record and an in-batch duplicate) stores only the new one.
    extra = audit_pb2.RecordInput(kind=audit_pb2.RECORD_KIND_MESSAGE, outcome="sent", idempotency_key="k9")
    retry = await audit.client.AppendBatch(
        audit_pb2.AppendBatchRequest(workspace_id="ws", records=[*keyed, extra, extra])
    )
    assert [r.seq for r in retry.records] == [1, 2, 3, 4, 4]
    # One invalid record rejects the whole batch, naming it.
    bad = [rec(1), audit_pb2.RecordInput(outcome="sent")]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await audit.client.AppendBatch(audit_pb2.AppendBatchRequest(workspace_id="ws", records=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.value.trailing_metadata() or ())["retain-field"] == "records[1].kind"
    result = await verify(audit)
    assert result.ok and result.records_checked == 4
