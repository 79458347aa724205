"""Crypto-shredding: personal fields are sealed per customer; erasure destroys the key, the chain survives."""

import grpc
import pytest
from retain.audit.v1 import audit_pb2
from retain_kit.protoconv import from_struct, to_struct
from sqlalchemy import text

from conftest import AuditUnderTest


def message(customer: str, email: str) -> audit_pb2.RecordInput:
    return audit_pb2.RecordInput(
        kind=audit_pb2.RECORD_KIND_MESSAGE, customer_id=customer, outcome="sent", offer_id="o1",
        payload=to_struct(
            {"recipient": email, "template": "winback", "rendered": {"subject": "สวัสดี คุณสมชาย", "cost": 0.4},
             "attempts": [{"phone": "+66812345678", "status": "ok"}]}
        ),
    )


async def records(audit: AuditUnderTest, **filters: str) -> list[audit_pb2.AuditRecord]:
    response = await audit.client.ListRecords(audit_pb2.ListRecordsRequest(workspace_id="ws", **filters))
    return list(response.records)


async def test_personal_fields_are_stored_encrypted_and_read_back_in_clear(audit: AuditUnderTest) -> None:
    await audit.client.Append(audit_pb2.AppendRequest(workspace_id="ws", record=message("cus_a", "a@example.com")))
    async with audit.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT payload FROM audit_records"))).scalar_one()
    assert "a@example.com" not in stored and "+66812345678" not in stored and "สมชาย" not in stored
    assert "winback" in stored  # non-personal fields stay queryable in clear
    (read,) = await records(audit)
    payload = from_struct(read.payload)
    assert payload["recipient"] == "a@example.com" and payload["attempts"][0]["phone"] == "+66812345678"
    assert payload["rendered"] == {"subject": "สวัสดี คุณสมชาย", "cost": 0.4}
    assert not read.erased


async def test_erasure_shreds_one_customer_and_the_chain_still_verifies(audit: AuditUnderTest) -> None:
    for customer, email in (("cus_a", "a@example.com"), ("cus_b", "b@example.com"), ("cus_a", "a2@example.com")):
        await audit.client.Append(audit_pb2.AppendRequest(workspace_id="ws", record=message(customer, email)))
    before = await audit.client.Verify(audit_pb2.VerifyRequest(workspace_id="ws"))
    hashes = [r.hash for r in await records(audit)]
    erased = await audit.client.EraseCustomer(
        audit_pb2.EraseCustomerRequest(workspace_id="ws", customer_id="cus_a", actor="dpo", reason="pdpa_erasure")
    )
    assert erased.key_destroyed and erased.record.kind == audit_pb2.RECORD_KIND_PRIVACY
    assert erased.record.seq == 4 and erased.record.outcome == "erased"

    shredded = await records(audit, customer_id="cus_a", kind=audit_pb2.RECORD_KIND_MESSAGE)
    assert len(shredded) == 2 and all(r.erased for r in shredded)
    for r in shredded:
        payload = from_struct(r.payload)
        assert payload["recipient"] == "[erased]" and payload["attempts"][0]["phone"] == "[erased]"
        assert payload["rendered"] == "[erased]"
        assert payload["template"] == "winback" and payload["attempts"][0]["status"] == "ok"
    (other,) = await records(audit, customer_id="cus_b")
    assert from_struct(other.payload)["recipient"] == "b@example.com" and not other.erased

    # The log rows were not touched: same hashes, and the chain verifies through the erasure record.
    after = await audit.client.Verify(audit_pb2.VerifyRequest(workspace_id="ws"))
    assert after.ok and after.records_checked == 4
    assert [r.hash for r in await records(audit)][:3] == hashes and before.head_hash == hashes[-1]
    async with audit.engine.connect() as conn:
        left = (await conn.execute(text("SELECT customer_id FROM audit_data_keys"))).scalars().all()
    assert left == ["cus_b"]


async def test_second_erasure_reports_no_key_and_new_data_gets_a_new_key(audit: AuditUnderTest) -> None:
    await audit.client.Append(audit_pb2.AppendRequest(workspace_id="ws", record=message("cus_a", "old@example.com")))
    first = await audit.client.EraseCustomer(audit_pb2.EraseCustomerRequest(workspace_id="ws", customer_id="cus_a"))
    second = await audit.client.EraseCustomer(audit_pb2.EraseCustomerRequest(workspace_id="ws", customer_id="cus_a"))
    assert first.key_destroyed and not second.key_destroyed
    await audit.client.Append(audit_pb2.AppendRequest(workspace_id="ws", record=message("cus_a", "new@example.com")))
    reads = await records(audit, customer_id="cus_a", kind=audit_pb2.RECORD_KIND_MESSAGE)
    # The new key never opens the shredded record.
    assert [from_struct(r.payload)["recipient"] for r in reads] == ["[erased]", "new@example.com"]
    assert (await audit.client.Verify(audit_pb2.VerifyRequest(workspace_id="ws"))).ok


async def test_erase_requires_a_customer(audit: AuditUnderTest) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await audit.client.EraseCustomer(audit_pb2.EraseCustomerRequest(workspace_id="ws"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.value.trailing_metadata() or ())["retain-field"] == "customer_id"
