import grpc
import pytest
from retain.audit.v1 import audit_pb2
from retain_kit.protoconv import to_struct
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError


def record(customer: str, outcome: str, key: str = "") -> audit_pb2.RecordInput:
    return audit_pb2.RecordInput(
        kind=audit_pb2.RECORD_KIND_MESSAGE, customer_id=customer, outcome=outcome,
        payload=to_struct({"offer": "o1", "note": "ทดสอบ"}), idempotency_key=key,
    )


async def test_append_chains_records_and_verify_passes(stub) -> None:  # type: ignore[no-untyped-def]
    client, _ = stub
    first = (await client.Append(audit_pb2.AppendRequest(workspace_id="ws1", record=record("c1", "sent")))).record
    second = (await client.Append(audit_pb2.AppendRequest(workspace_id="ws1", record=record("c2", "sent")))).record
    other = (await client.Append(audit_pb2.AppendRequest(workspace_id="ws2", record=record("c1", "sent")))).record
    assert (first.seq, second.seq, other.seq) == (1, 2, 1)
    assert first.prev_hash == "" and second.prev_hash == first.hash
    verified = await client.Verify(audit_pb2.VerifyRequest(workspace_id="ws1"))
    assert verified.ok and verified.records_checked == 2 and verified.head_hash == second.hash


async def test_idempotency_key_stores_once(stub) -> None:  # type: ignore[no-untyped-def]
    client, _ = stub
    a = await client.Append(audit_pb2.AppendRequest(workspace_id="ws", record=record("c1", "sent", "k1")))
    b = await client.Append(audit_pb2.AppendRequest(workspace_id="ws", record=record("c1", "sent", "k1")))
    assert a.record.record_id == b.record.record_id
    listed = await client.ListRecords(audit_pb2.ListRecordsRequest(workspace_id="ws"))
    assert len(listed.records) == 1


async def test_filters_and_cursor_pagination(stub) -> None:  # type: ignore[no-untyped-def]
    client, _ = stub
    for i in range(5):
        await client.Append(audit_pb2.AppendRequest(workspace_id="ws", record=record("c1" if i % 2 else "c2", "sent")))
    page = await client.ListRecords(audit_pb2.ListRecordsRequest(workspace_id="ws", customer_id="c2", page_size=2))
    assert [r.customer_id for r in page.records] == ["c2", "c2"] and page.next_page_token
    rest = await client.ListRecords(
        audit_pb2.ListRecordsRequest(workspace_id="ws", customer_id="c2", page_size=2, page_token=page.next_page_token)
    )
    assert len(rest.records) == 1 and not rest.next_page_token
    assert rest.records[0].payload["note"] == "ทดสอบ"


async def test_missing_kind_is_invalid_argument_naming_field(stub) -> None:  # type: ignore[no-untyped-def]
    client, _ = stub
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.Append(audit_pb2.AppendRequest(workspace_id="ws", record=audit_pb2.RecordInput()))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.value.trailing_metadata() or ())["retain-field"] == "record.kind"


async def test_database_refuses_update_and_delete(stub) -> None:  # type: ignore[no-untyped-def]
    client, engine = stub
    await client.Append(audit_pb2.AppendRequest(workspace_id="ws", record=record("c1", "sent")))
    for statement in ("UPDATE audit_records SET outcome = 'x'", "DELETE FROM audit_records"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text(statement))
    listed = await client.ListRecords(audit_pb2.ListRecordsRequest(workspace_id="ws"))
    assert listed.records[0].outcome == "sent"


async def test_concurrent_appends_share_transactions_and_keep_one_chain(stub) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    client, _ = stub
    replies = await asyncio.gather(*(
        client.Append(audit_pb2.AppendRequest(workspace_id="ws", record=record(f"c{i}", "sent", f"k{i}")))
        for i in range(60)
    ))
    # every caller gets its own record back, and together they form one gap-free chain
    assert sorted(r.record.seq for r in replies) == list(range(1, 61))
    assert {r.record.customer_id for r in replies} == {f"c{i}" for i in range(60)}
    verified = await client.Verify(audit_pb2.VerifyRequest(workspace_id="ws"))
    assert verified.ok and verified.records_checked == 60


async def test_database_down_is_unavailable_not_internal(grpc_serve) -> None:  # type: ignore[no-untyped-def]
    import os

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from retain.audit.v1 import audit_pb2_grpc
    from retain_audit.app import SERVICE_NAME
    from retain_audit.domain.checkpoint import Signer
    from retain_audit.domain.privacy import Vault
    from retain_audit.server import AuditServicer
    from retain_audit.service import AuditLog
    from retain_kit.db import create_engine, session_factory
    from retain_kit.grpcserver import Registration
    from retain_kit.testing import free_port

    # Nothing listens on this port: every query fails to connect.
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test")
    log = AuditLog(session_factory(engine), signer=Signer(Ed25519PrivateKey.generate()), vault=Vault(os.urandom(32)))
    target = await grpc_serve([Registration(AuditServicer(log), audit_pb2_grpc.add_AuditServiceServicer_to_server,
                                            SERVICE_NAME)])
    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await audit_pb2_grpc.AuditServiceStub(channel).Append(
                audit_pb2.AppendRequest(workspace_id="ws", record=record("c1", "sent"))
            )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    await engine.dispose()


async def test_payload_may_come_as_json_and_reads_back_the_same(stub) -> None:  # type: ignore[no-untyped-def]
    client, _ = stub
    as_json = audit_pb2.RecordInput(
        kind=audit_pb2.RECORD_KIND_DECISION, customer_id="c1", payload_json='{"rank":2,"note":"ทดสอบ","ev":0.1}',
    )
    stored = (await client.Append(audit_pb2.AppendRequest(workspace_id="wsj", record=as_json))).record
    assert dict(stored.payload) == {"rank": 2, "note": "ทดสอบ", "ev": 0.1}
    listed = await client.ListRecords(audit_pb2.ListRecordsRequest(workspace_id="wsj"))
    assert dict(listed.records[0].payload) == {"rank": 2, "note": "ทดสอบ", "ev": 0.1}
    assert (await client.Verify(audit_pb2.VerifyRequest(workspace_id="wsj"))).ok


@pytest.mark.parametrize(
    ("payload_json", "struct", "message"),
    [("{not json", None, "not JSON"), ("[1, 2]", None, "JSON object"), ('{"a": 1}', {"a": 1}, "not both")],
)
async def test_bad_payload_json_is_refused_naming_the_field(  # type: ignore[no-untyped-def]
    stub, payload_json, struct, message
) -> None:
    client, _ = stub
    bad = audit_pb2.RecordInput(kind=audit_pb2.RECORD_KIND_DECISION, payload_json=payload_json,
                                payload=to_struct(struct) if struct else None)
    good = audit_pb2.RecordInput(kind=audit_pb2.RECORD_KIND_DECISION, payload_json='{"a": 1}')
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.AppendBatch(audit_pb2.AppendBatchRequest(workspace_id="wsb", records=[good, bad]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in (err.value.details() or "")
    assert dict(err.value.trailing_metadata() or ())["retain-field"] == "records[1].payload_json"
