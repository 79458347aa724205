import asyncio
import contextlib
import dataclasses
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel
from retain.audit.v1 import audit_pb2, audit_pb2_grpc
from retain.channels.v1 import channels_pb2, channels_pb2_grpc
from retain.common.v1 import common_pb2
from retain_audit.app import SERVICE_NAME as AUDIT_SERVICE_NAME
from retain_audit.domain.checkpoint import Signer
from retain_audit.domain.privacy import Vault
from retain_audit.server import AuditServicer
from retain_audit.service import AuditLog
from retain_channels.app import SERVICE_NAME, build, options_from, policy_from
from retain_channels.audit_client import GrpcAuditSink
from retain_channels.config import Settings
from retain_channels.models import MessageRow
from retain_channels.providers.base import (
    DeliveryEvent,
    OutboundMessage,
    PermanentProviderError,
    ProviderContext,
    SendResult,
    TransientProviderError,
)
from retain_channels.providers.registry import ProviderRegistry, build_providers, default_registry
from retain_channels.repository import ChannelRepository
from retain_channels.server import ChannelServicer
from retain_channels.service import Channels
from retain_channels.worker import OutboxWorker
from retain_kit.config import Endpoints
from retain_kit.db import session_factory
from retain_kit.grpcserver import Registration
from retain_kit.protoconv import to_struct, utcnow
from retain_kit.testing import DbTarget, free_port
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.integration

CHANNELS_DIR = Path(__file__).resolve().parents[2]
AUDIT_DIR = CHANNELS_DIR.parent / "audit"
WS = "ws_test"


class ScriptedConfig(BaseModel):
    transient_failures: int = 0
    permanent: bool = False


class ScriptedProvider:
    """Stands in for an outside vendor: fails as its config says, then accepts."""

    def __init__(self, config: ScriptedConfig, ctx: ProviderContext) -> None:
        self.config = config
        self.calls: list[OutboundMessage] = []

    async def send(self, msg: OutboundMessage) -> SendResult:
        self.calls.append(msg)
        if self.config.permanent:
            raise PermanentProviderError("21211 invalid 'To' phone number")
        if len(self.calls) <= self.config.transient_failures:
            raise TransientProviderError("503 service unavailable")
        return SendResult(f"vendor_{len(self.calls)}")

    def parse_event(self, payload: dict[str, Any]) -> DeliveryEvent | None:
        return None

    async def close(self) -> None:
        return None


@dataclass
class Stack:
    client: channels_pb2_grpc.ChannelServiceStub
    channels: Channels
    worker: OutboxWorker
    settings: Settings

    def provider(self, channel: str) -> Any:
        return self.channels.providers.for_channel(channel)[1]


@dataclass
class Env:
    engine: AsyncEngine
    audit_addr: str
    audit: audit_pb2_grpc.AuditServiceStub
    var_dir: Path
    start: Callable[..., Awaitable[Stack]]

    @property
    def outbox_file(self) -> Path:
        return self.var_dir / "channels-outbox.jsonl"

    def lines(self) -> list[dict[str, Any]]:
        if not self.outbox_file.exists():
            return []
        return [json.loads(line) for line in self.outbox_file.read_text(encoding="utf-8").splitlines()]

    async def audit_records(self, customer_id: str) -> list[audit_pb2.AuditRecord]:
        resp = await self.audit.ListRecords(audit_pb2.ListRecordsRequest(workspace_id=WS, customer_id=customer_id))
        return list(resp.records)

    async def sent_log_count(self) -> int:
        async with session_factory(self.engine)() as session:
            return len(await ChannelRepository(session).sent_log(WS))


@pytest.fixture
async def env(db_target: DbTarget, grpc_serve: Any, tmp_path: Path) -> AsyncIterator[Env]:
    audit_engine = await db_target.migrate(AUDIT_DIR)
    audit_log = AuditLog(
        session_factory(audit_engine), signer=Signer(Ed25519PrivateKey.generate()), vault=Vault(os.urandom(32))
    )
    audit_servicer = AuditServicer(audit_log)
    audit_addr = await grpc_serve(
        [Registration(audit_servicer, audit_pb2_grpc.add_AuditServiceServicer_to_server, AUDIT_SERVICE_NAME)]
    )
    engine = await db_target.migrate(CHANNELS_DIR)
    sessions = session_factory(engine)
    var_dir = tmp_path / "var"
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            *, audit_addr: str = audit_addr, registry: ProviderRegistry | None = None, **overrides: Any
        ) -> Stack:
            values: dict[str, Any] = {"var_dir": var_dir, "backoff_base_seconds": 0.01, "rpc_timeout_seconds": 1.0}
            values.update(overrides)
            settings = Settings(**values)
            audit_channel = await stack.enter_async_context(grpc.aio.insecure_channel(audit_addr))
            providers = build_providers(
                registry or default_registry(),
                names=settings.providers,
                configs=settings.provider_config,
                context=lambda ch: ProviderContext(channel=ch, var_dir=var_dir, sessions=sessions),
            )
            channels = Channels(
                sessions,
                audit=GrpcAuditSink(
                    audit_pb2_grpc.AuditServiceStub(audit_channel), timeout=settings.rpc_timeout_seconds
                ),
                providers=providers,
                policy=policy_from(settings),
                options=options_from(settings),
            )
            target = await grpc_serve(
                [Registration(ChannelServicer(channels), channels_pb2_grpc.add_ChannelServiceServicer_to_server,
                              SERVICE_NAME)]
            )
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(target))
            worker = OutboxWorker(channels, poll_seconds=0.05, batch_size=10)
            return Stack(channels_pb2_grpc.ChannelServiceStub(channel), channels, worker, settings)

        audit_channel = await stack.enter_async_context(grpc.aio.insecure_channel(audit_addr))
        yield Env(engine, audit_addr, audit_pb2_grpc.AuditServiceStub(audit_channel), var_dir, start)


def message(
    key: str = "k1",
    *,
    customer: str = "cus_1",
    channel: common_pb2.Channel.ValueType = common_pb2.CHANNEL_SMS,
    recipient: str = "+66810000001",
    body: str = "สวัสดีค่ะ คุณ{{ name }} รับส่วนลด {{ discount }}% วันนี้",
    subject: str = "",
    variables: dict[str, Any] | None = None,
) -> channels_pb2.Message:
    return channels_pb2.Message(
        idempotency_key=key, customer_id=customer, channel=channel, recipient=recipient, offer_id="off_save10",
        decision_id="dec_1", purpose="marketing", locale="th", subject=subject, body=body,
        variables=to_struct({"name": "สมชาย", "discount": 10} if variables is None else variables),
    )


def dispatch(key: str = "k1", **kwargs: Any) -> channels_pb2.DispatchRequest:
    return channels_pb2.DispatchRequest(workspace_id=WS, message=message(key, **kwargs))


async def test_dispatch_sends_once_and_audits_queued_then_sent(env: Env) -> None:
    stack = await env.start()
    long_body = "x" * 150 + " {{ name }} " + "y" * 300
    resp = await stack.client.Dispatch(dispatch(subject="{{ name }}, a gift", body=long_body))
    msg = resp.message
    assert not resp.duplicate
    assert msg.message_id.startswith("msg_") and msg.status == common_pb2.DELIVERY_STATUS_SENT
    assert msg.provider == "log" and msg.provider_message_id.startswith("log_") and msg.attempts == 1
    assert msg.subject == "สมชาย, a gift"
    # Timed from the Dispatch request to the provider call, which happens after it and before settling.
    assert msg.HasField("provider_called_at")
    assert msg.created_at.ToDatetime() <= msg.provider_called_at.ToDatetime() <= msg.updated_at.ToDatetime()
    assert 0 < msg.dispatch_to_provider_ms < 5000

    lines = env.lines()
    assert len(lines) == 1
    assert lines[0]["provider_message_id"] == msg.provider_message_id
    assert lines[0]["recipient"] == "+66810000001" and lines[0]["idempotency_key"] == "k1"
    assert await env.sent_log_count() == 1

    records = await env.audit_records("cus_1")
    assert [r.outcome for r in records] == ["queued", "sent"]
    for record in records:
        assert record.kind == audit_pb2.RECORD_KIND_MESSAGE and record.message_id == msg.message_id
        assert record.channel == common_pb2.CHANNEL_SMS
        assert (record.offer_id, record.decision_id) == ("off_save10", "dec_1")
        assert record.payload["provider"] == "log" and record.payload["subject"] == "สมชาย, a gift"
        assert len(record.payload["body_preview"]) == 200 and record.payload["body_chars"] == len(msg.body)
    assert records[1].payload["provider_message_id"] == msg.provider_message_id
    assert (await env.audit.Verify(audit_pb2.VerifyRequest(workspace_id=WS))).ok


async def test_same_idempotency_key_twice_sends_once(env: Env) -> None:
    stack = await env.start()
    first = await stack.client.Dispatch(dispatch("same"))
    second = await stack.client.Dispatch(dispatch("same", body="a different body"))
    assert second.duplicate and not first.duplicate
    assert second.message.message_id == first.message.message_id
    assert second.message.body == first.message.body
    assert len(env.lines()) == 1 and await env.sent_log_count() == 1
    assert [r.outcome for r in await env.audit_records("cus_1")] == ["queued", "sent"]


async def test_concurrent_same_key_sends_once(env: Env) -> None:
    stack = await env.start()
    results = await asyncio.gather(*(stack.client.Dispatch(dispatch("race")) for _ in range(5)))
    assert len({r.message.message_id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert len(env.lines()) == 1


async def test_missing_variable_is_invalid_argument_naming_it(env: Env) -> None:
    stack = await env.start()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.client.Dispatch(dispatch(variables={"discount": 10}))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "name" in (err.value.details() or "")
    assert dict(err.value.trailing_metadata() or ())["retain-field"] == "message.variables.name"
    listed = await stack.client.ListMessages(channels_pb2.ListMessagesRequest(workspace_id=WS, customer_id="cus_1"))
    assert list(listed.messages) == [] and env.lines() == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"recipient": ""}, "message.recipient"),
        ({"channel": common_pb2.CHANNEL_UNSPECIFIED}, "message.channel"),
        ({"customer": ""}, "message.customer_id"),
    ],
)
async def test_bad_input_names_the_field(env: Env, overrides: dict[str, Any], field: str) -> None:
    stack = await env.start()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.client.Dispatch(dispatch(**overrides))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.value.trailing_metadata() or ())["retain-field"] == field


async def test_in_app_needs_no_recipient(env: Env) -> None:
    stack = await env.start()
    resp = await stack.client.Dispatch(dispatch(channel=common_pb2.CHANNEL_IN_APP, recipient=""))
    assert resp.message.status == common_pb2.DELIVERY_STATUS_SENT


async def test_audit_unreachable_fails_closed_then_worker_delivers_when_it_is_back(env: Env) -> None:
    down = await env.start(audit_addr=f"127.0.0.1:{free_port()}", rpc_timeout_seconds=0.3)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await down.client.Dispatch(dispatch("while-down"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert env.lines() == [] and not env.outbox_file.exists() and await env.sent_log_count() == 0
    kept = (await down.client.GetMessage(channels_pb2.GetMessageRequest(workspace_id=WS, idempotency_key="while-down")))
    assert kept.message.status == common_pb2.DELIVERY_STATUS_QUEUED and kept.message.attempts == 0
    # A worker that still cannot reach audit sends nothing either.
    assert await down.worker.run_once() == 0 and env.lines() == []

    up = await env.start()
    assert await up.worker.run_once() == 1
    got = await up.client.GetMessage(
        channels_pb2.GetMessageRequest(workspace_id=WS, message_id=kept.message.message_id)
    )
    assert got.message.status == common_pb2.DELIVERY_STATUS_SENT
    assert len(env.lines()) == 1
    assert [r.outcome for r in await env.audit_records("cus_1")] == ["queued", "sent"]


def scripted(**config: Any) -> dict[str, Any]:
    registry = default_registry()
    registry.register("sms", "scripted", ScriptedProvider, ScriptedConfig)
    return {"registry": registry, "providers": {"sms": "scripted"}, "provider_config": {"sms": config}}


async def test_transient_errors_are_retried_with_the_same_idempotency_key(env: Env) -> None:
    stack = await env.start(**scripted(transient_failures=2))
    resp = await stack.client.Dispatch(dispatch("flaky"))
    provider = stack.provider("sms")
    assert [c.attempt for c in provider.calls] == [1, 2, 3]
    assert {c.idempotency_key for c in provider.calls} == {"flaky"}
    assert resp.message.status == common_pb2.DELIVERY_STATUS_SENT
    assert resp.message.attempts == 3 and resp.message.provider == "scripted"
    assert resp.message.provider_message_id == "vendor_3" and resp.message.error == ""
    assert [r.outcome for r in await env.audit_records("cus_1")] == ["queued", "sent"]


async def test_permanent_error_is_not_retried(env: Env) -> None:
    stack = await env.start(**scripted(permanent=True))
    resp = await stack.client.Dispatch(dispatch("bad-number"))
    assert len(stack.provider("sms").calls) == 1
    assert resp.message.status == common_pb2.DELIVERY_STATUS_FAILED and resp.message.attempts == 1
    assert "invalid 'To'" in resp.message.error
    records = await env.audit_records("cus_1")
    assert [r.outcome for r in records] == ["queued", "failed"]
    assert "invalid 'To'" in records[1].payload["error"]
    assert await stack.worker.run_once() == 0 and len(stack.provider("sms").calls) == 1


async def test_gives_up_after_max_attempts(env: Env) -> None:
    stack = await env.start(max_attempts=3, **scripted(transient_failures=10))
    resp = await stack.client.Dispatch(dispatch("never"))
    assert len(stack.provider("sms").calls) == 3
    assert resp.message.status == common_pb2.DELIVERY_STATUS_FAILED and resp.message.attempts == 3
    assert "gave up after 3 attempts" in resp.message.error


async def test_long_backoff_goes_back_to_the_outbox_for_the_worker(env: Env) -> None:
    stack = await env.start(
        inline_retry_max_delay_seconds=0.0, backoff_base_seconds=0.2, backoff_jitter=0.0,
        **scripted(transient_failures=1),
    )
    resp = await stack.client.Dispatch(dispatch("later"))
    assert resp.message.status == common_pb2.DELIVERY_STATUS_QUEUED and resp.message.attempts == 1
    assert "503" in resp.message.error
    assert await stack.worker.run_once() == 0
    await asyncio.sleep(0.3)
    assert await stack.worker.run_once() == 1
    got = await stack.client.GetMessage(channels_pb2.GetMessageRequest(workspace_id=WS, idempotency_key="later"))
    assert got.message.status == common_pb2.DELIVERY_STATUS_SENT and got.message.attempts == 2
    assert [r.outcome for r in await env.audit_records("cus_1")] == ["queued", "sent"]


async def insert_left_behind(env: Env, key: str) -> MessageRow:
    """What a crash right after the outbox transaction leaves: a queued message nobody delivered."""
    now = utcnow()
    row = MessageRow(
        message_id=f"msg_crash_{key}", workspace_id=WS, idempotency_key=key, customer_id="cus_9", channel="line",
        offer_id="off_1", purpose="marketing", decision_id="dec_9", recipient="U1234", locale="en",
        subject="", body="Welcome back", status="queued", provider="log", provider_message_id="", attempts=0,
        error="", created_at=now, updated_at=now,
    )
    async with session_factory(env.engine)() as session:
        await ChannelRepository(session).add_message(row, claim_token=None, claimed_until=None)
        await session.commit()
    return row


async def test_worker_delivers_a_message_left_queued(env: Env) -> None:
    row = await insert_left_behind(env, "crash-1")
    stack = await env.start()
    assert await stack.worker.run_once() == 1
    got = await stack.client.GetMessage(channels_pb2.GetMessageRequest(workspace_id=WS, message_id=row.message_id))
    assert got.message.status == common_pb2.DELIVERY_STATUS_SENT and got.message.attempts == 1
    assert [line["message_id"] for line in env.lines()] == [row.message_id]
    assert [r.outcome for r in await env.audit_records("cus_9")] == ["queued", "sent"]
    assert await stack.worker.run_once() == 0 and len(env.lines()) == 1


async def test_resend_after_crash_does_not_duplicate_at_the_log_provider(env: Env) -> None:
    row = await insert_left_behind(env, "crash-2")
    stack = await env.start()
    outbound = OutboundMessage(
        message_id=row.message_id, workspace_id=WS, idempotency_key="crash-2", channel="line", recipient="U1234",
        subject="", body="Welcome back",
    )
    # The provider call went through, then the process died before recording the result ...
    first = await stack.provider("line").send(outbound)
    assert await stack.worker.run_once() == 1
    got = await stack.client.GetMessage(channels_pb2.GetMessageRequest(workspace_id=WS, message_id=row.message_id))
    assert got.message.provider_message_id == first.provider_message_id
    assert len(env.lines()) == 1

    # ... or died after writing the line but before its sent_log row committed.
    async with env.engine.begin() as conn:
        await conn.execute(text("DELETE FROM sent_log"))
    again = await stack.provider("line").send(dataclasses.replace(outbound, attempt=2))
    assert again.provider_message_id == first.provider_message_id
    assert len(env.lines()) == 1 and await env.sent_log_count() == 1


async def test_get_and_list_messages_newest_first_with_cursor(env: Env) -> None:
    stack = await env.start()
    sent = [(await stack.client.Dispatch(dispatch(f"k{i}"))).message for i in range(5)]
    await stack.client.Dispatch(dispatch("other", customer="cus_2"))
    page = await stack.client.ListMessages(
        channels_pb2.ListMessagesRequest(workspace_id=WS, customer_id="cus_1", page_size=3)
    )
    rest = await stack.client.ListMessages(
        channels_pb2.ListMessagesRequest(workspace_id=WS, customer_id="cus_1", page_size=3,
                                         page_token=page.next_page_token)
    )
    assert page.next_page_token and not rest.next_page_token
    ids = [m.message_id for m in [*page.messages, *rest.messages]]
    assert ids == [m.message_id for m in reversed(sent)]
    by_key = await stack.client.GetMessage(channels_pb2.GetMessageRequest(workspace_id=WS, idempotency_key="k2"))
    assert by_key.message.message_id == sent[2].message_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.client.GetMessage(
            channels_pb2.GetMessageRequest(workspace_id="ws_other", message_id=sent[0].message_id)
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_delivery_events_update_status_and_audit(env: Env) -> None:
    stack = await env.start()
    msg = (await stack.client.Dispatch(dispatch("events"))).message

    def event(status: common_pb2.DeliveryStatus.ValueType, pmid: str = msg.provider_message_id) -> Any:
        return stack.client.RecordDeliveryEvent(
            channels_pb2.RecordDeliveryEventRequest(workspace_id=WS, provider="log", provider_message_id=pmid,
                                                    status=status)
        )

    assert (await event(common_pb2.DELIVERY_STATUS_DELIVERED)).message.status == common_pb2.DELIVERY_STATUS_DELIVERED
    assert (await event(common_pb2.DELIVERY_STATUS_CLICKED)).message.status == common_pb2.DELIVERY_STATUS_CLICKED
    # A late "delivered" after the click changes nothing and is not audited again.
    assert (await event(common_pb2.DELIVERY_STATUS_DELIVERED)).message.status == common_pb2.DELIVERY_STATUS_CLICKED
    # The raw form goes through the provider's own parser.
    raw = await stack.client.RecordDeliveryEvent(
        channels_pb2.RecordDeliveryEventRequest(
            workspace_id=WS, provider="log",
            raw=to_struct({"provider_message_id": msg.provider_message_id, "status": "opened"}),
        )
    )
    assert raw.message.status == common_pb2.DELIVERY_STATUS_CLICKED
    assert [r.outcome for r in await env.audit_records("cus_1")] == ["queued", "sent", "delivered", "clicked"]

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await event(common_pb2.DELIVERY_STATUS_DELIVERED, pmid="log_unknown")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert dict(err.value.trailing_metadata() or ())["retain-field"] == "provider_message_id"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await event(common_pb2.DELIVERY_STATUS_QUEUED)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_app_build_runs_the_outbox_worker_until_shutdown(env: Env, tmp_path: Path) -> None:
    db = tmp_path / "app-channels.db"
    from retain_kit import migrations

    await asyncio.to_thread(migrations.upgrade, CHANNELS_DIR, f"sqlite:///{db}", schema=None)
    settings = Settings(database_url=f"sqlite:///{db}", var_dir=tmp_path / "app-var", outbox_poll_seconds=0.05)
    registrations, on_stop = await build(settings, endpoints=Endpoints(audit_addr=env.audit_addr))
    try:
        from retain_kit.db import create_engine

        engine = create_engine(settings.database_url)
        now = utcnow()
        row = MessageRow(
            message_id="msg_app_1", workspace_id=WS, idempotency_key="app-1", customer_id="cus_app", channel="email",
            recipient="a@example.com", subject="Hi", body="Hello", status="queued", provider="log",
            provider_message_id="", attempts=0, error="", created_at=now, updated_at=now,
        )
        async with session_factory(engine)() as session:
            await ChannelRepository(session).add_message(row, claim_token=None, claimed_until=None)
            await session.commit()
        for _ in range(100):
            async with session_factory(engine)() as session:
                current = await ChannelRepository(session).get("msg_app_1")
            if current is not None and current.status == "sent":
                break
            await asyncio.sleep(0.05)
        assert current is not None and current.status == "sent"
        assert (tmp_path / "app-var" / "channels-outbox.jsonl").exists()
        await engine.dispose()
    finally:
        await on_stop()
    assert len(registrations) == 1
