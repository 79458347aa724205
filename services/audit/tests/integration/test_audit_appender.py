"""The appender every service writes audit records with: concurrent appends share AppendBatch RPCs, and each
caller is answered with its own durable record, or fails closed with its own message."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from retain.audit.v1 import audit_pb2, audit_pb2_grpc
from retain_kit.audit_client import AuditAppender
from retain_kit.errors import Unavailable
from retain_kit.testing import free_port

from conftest import AuditUnderTest

WS = "ws_appender"


class CountCalls(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_unary_unary(
        self, continuation: Callable[..., Awaitable[Any]], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        self.methods.append(method.rsplit("/", 1)[-1])
        return await continuation(details, request)


@pytest.fixture
async def appender(audit: AuditUnderTest) -> AsyncIterator[tuple[AuditAppender, CountCalls]]:
    counter = CountCalls()
    async with grpc.aio.insecure_channel(audit.target, interceptors=[counter]) as channel:
        yield AuditAppender(audit_pb2_grpc.AuditServiceStub(channel), timeout=5.0), counter


async def test_concurrent_appends_share_rpcs_and_each_gets_its_own_record(
    audit: AuditUnderTest, appender: tuple[AuditAppender, CountCalls]
) -> None:
    client, counter = appender
    ids = await asyncio.gather(*(
        client.append(WS, kind="decision", customer_id=f"c{i % 5}", decision_id=f"dec_{i}", outcome="decided",
                      payload={"rank": i}, idempotency_key=f"dec_{i}")
        for i in range(64)
    ))
    assert len(set(ids)) == 64
    assert counter.methods and set(counter.methods) == {"AppendBatch"} and len(counter.methods) < 64
    listed = await audit.client.ListRecords(audit_pb2.ListRecordsRequest(workspace_id=WS, page_size=100))
    by_decision = {r.decision_id: r for r in listed.records}
    assert sorted(by_decision) == sorted(f"dec_{i}" for i in range(64))
    for i, record_id in enumerate(ids):
        stored = by_decision[f"dec_{i}"]
        assert stored.record_id == record_id and stored.payload["rank"] == i and stored.customer_id == f"c{i % 5}"
    assert (await audit.client.Verify(audit_pb2.VerifyRequest(workspace_id=WS))).ok


async def test_a_repeated_key_in_one_group_is_one_record(
    audit: AuditUnderTest, appender: tuple[AuditAppender, CountCalls]
) -> None:
    client, _ = appender
    first, again, other = await asyncio.gather(
        client.append(WS, kind="message", message_id="m1", outcome="sent", idempotency_key="m1:sent"),
        client.append(WS, kind="message", message_id="m1", outcome="sent", idempotency_key="m1:sent"),
        client.append(WS, kind="message", message_id="m2", outcome="sent", idempotency_key="m2:sent"),
    )
    assert first == again != other
    listed = await audit.client.ListRecords(audit_pb2.ListRecordsRequest(workspace_id=WS))
    assert sorted(r.message_id for r in listed.records) == ["m1", "m2"]


async def test_a_caller_that_gives_up_does_not_cancel_the_others(
    audit: AuditUnderTest, appender: tuple[AuditAppender, CountCalls]
) -> None:
    client, _ = appender
    calls = [asyncio.create_task(client.append(WS, kind="decision", decision_id=f"d{i}")) for i in range(3)]
    await asyncio.sleep(0)
    calls[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await calls[0]
    kept = await asyncio.gather(*calls[1:])
    assert all(kept)
    listed = await audit.client.ListRecords(audit_pb2.ListRecordsRequest(workspace_id=WS))
    assert {"d1", "d2"} <= {r.decision_id for r in listed.records}


async def test_unreachable_audit_fails_every_caller_closed_with_its_own_message() -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        client = AuditAppender(audit_pb2_grpc.AuditServiceStub(channel), timeout=1.0)
        answers = await asyncio.gather(
            client.append(WS, kind="decision", failure="decision not recorded"),
            client.append(WS, kind="message", failure="message not recorded"),
            return_exceptions=True,
        )
    assert all(isinstance(a, Unavailable) for a in answers), answers
    assert str(answers[0]).startswith("decision not recorded: UNAVAILABLE")
    assert str(answers[1]).startswith("message not recorded: UNAVAILABLE")
