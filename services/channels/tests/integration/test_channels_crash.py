"""Crash tests: a real `python -m retain_channels serve` process is killed (os._exit(137) through the
test-only RETAIN_CHANNELS_CRASH_AT hook) at each dangerous point of a delivery, then restarted without
the hook. The message must reach the provider exactly once, end `sent`, and be audited queued + sent once.

Audit runs in this process on a TCP port; the channels process reaches it like any other service.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from retain.audit.v1 import audit_pb2, audit_pb2_grpc
from retain.channels.v1 import channels_pb2, channels_pb2_grpc
from retain.common.v1 import common_pb2
from retain_audit.app import SERVICE_NAME as AUDIT_SERVICE_NAME
from retain_audit.domain.checkpoint import Signer
from retain_audit.domain.privacy import Vault
from retain_audit.server import AuditServicer
from retain_audit.service import AuditLog
from retain_channels.faults import CRASH_ENV, CRASH_EXIT_CODE
from retain_channels.providers.line.messaging_api import retry_key
from retain_channels.repository import ChannelRepository
from retain_kit import migrations
from retain_kit.db import create_engine, session_factory
from retain_kit.grpcserver import Registration
from retain_kit.testing import DbTarget, free_port
from support.openapi_mock import LINE_SPEC, ContractServer, LineResponder

pytestmark = pytest.mark.integration

CHANNELS_DIR = Path(__file__).resolve().parents[2]
AUDIT_DIR = CHANNELS_DIR.parent / "audit"
WS = "ws_crash"
LINE_USER = "U" + "1f2e3d4c5b" * 3 + "aa"
KEY = "dec_crash_1:line"


@dataclass
class Proc:
    """One channels server process on a fixed port, restartable."""

    env: dict[str, str]
    port: int
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    runs: list[int] = field(default_factory=list)

    def start(self, *, crash_at: str = "") -> None:
        env = dict(self.env)
        env.pop(CRASH_ENV, None)
        if crash_at:
            env[CRASH_ENV] = crash_at
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "retain_channels", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        code = self.popen.wait(timeout)
        self.runs.append(code)
        return code

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class CrashEnv:
    proc: Proc
    audit: audit_pb2_grpc.AuditServiceStub
    var_dir: Path
    database_url: str
    schema: str | None
    line: LineResponder
    line_server: ContractServer

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.proc.port}"

    def lines(self) -> list[dict[str, Any]]:
        path = self.var_dir / "channels-outbox.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    async def sent_log_count(self) -> int:
        engine = create_engine(self.database_url, schema=self.schema)
        try:
            async with session_factory(engine)() as session:
                return len(await ChannelRepository(session).sent_log(WS))
        finally:
            await engine.dispose()

    async def outcomes(self, customer_id: str) -> list[str]:
        resp = await self.audit.ListRecords(audit_pb2.ListRecordsRequest(workspace_id=WS, customer_id=customer_id))
        return sorted(r.outcome for r in resp.records)


@pytest.fixture
async def crash_env(db_target: DbTarget, grpc_serve: Any, tmp_path: Path) -> AsyncIterator[CrashEnv]:
    audit_engine = await db_target.migrate(AUDIT_DIR)
    audit_log = AuditLog(
        session_factory(audit_engine), signer=Signer(Ed25519PrivateKey.generate()), vault=Vault(os.urandom(32))
    )
    audit_addr = await grpc_serve(
        [Registration(AuditServicer(audit_log), audit_pb2_grpc.add_AuditServiceServicer_to_server,
                      AUDIT_SERVICE_NAME)]
    )
    url, schema = db_target.fresh("channels")
    await asyncio.to_thread(migrations.upgrade, CHANNELS_DIR, url, schema=schema)
    var_dir = tmp_path / "var"
    line = LineResponder()
    with ContractServer(LINE_SPEC, line) as line_server:
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RETAIN_")},
            "RETAIN_CHANNELS_DATABASE_URL": url,
            "RETAIN_CHANNELS_PORT": str(port),
            "RETAIN_CHANNELS_VAR_DIR": str(var_dir),
            "RETAIN_AUDIT_ADDR": audit_addr,
            # A short lease so the restarted worker takes over the dead process's claim quickly.
            "RETAIN_CHANNELS_OUTBOX_LEASE_SECONDS": "1",
            "RETAIN_CHANNELS_OUTBOX_POLL_SECONDS": "0.1",
            "RETAIN_CHANNELS_PROVIDERS": json.dumps({"line": "line"}),
            "RETAIN_CHANNELS_PROVIDER_CONFIG": json.dumps(
                {"line": {"channel_access_token": "crash-token", "base_url": line_server.url}}
            ),
            "RETAIN_CHANNELS_LOG_LEVEL": "WARNING",
        }
        if schema:
            env["RETAIN_CHANNELS_DATABASE_SCHEMA"] = schema
        proc = Proc(env, port, tmp_path / "channels.log")
        async with grpc.aio.insecure_channel(audit_addr) as audit_channel:
            try:
                yield CrashEnv(proc, audit_pb2_grpc.AuditServiceStub(audit_channel), var_dir, url, schema, line,
                               line_server)
            finally:
                proc.stop()
        assert line_server.take_violations() == []


def request(channel: common_pb2.Channel.ValueType, recipient: str, *, key: str = KEY) -> channels_pb2.DispatchRequest:
    return channels_pb2.DispatchRequest(
        workspace_id=WS,
        message=channels_pb2.Message(
            idempotency_key=key, customer_id="cus_crash", channel=channel, recipient=recipient,
            decision_id="dec_crash_1", offer_id="off_save10", purpose="marketing", locale="th",
            body="สวัสดีค่ะ รับส่วนลด 10% วันนี้",
        ),
    )


async def ready(env: CrashEnv, ch: grpc.aio.Channel) -> None:
    """Wait for the process to listen; startup imports take seconds on a busy machine."""
    deadline = time.monotonic() + 60
    while True:
        assert env.proc.popen is not None and env.proc.popen.poll() is None, env.proc.output()
        try:
            await asyncio.wait_for(ch.channel_ready(), timeout=1)
            return
        except TimeoutError:
            assert time.monotonic() < deadline, f"channels did not start: {env.proc.output()}"


async def dispatch_into_crash(env: CrashEnv, req: channels_pb2.DispatchRequest, point: str) -> None:
    env.proc.start(crash_at=point)
    async with grpc.aio.insecure_channel(env.target) as ch:
        await ready(env, ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channels_pb2_grpc.ChannelServiceStub(ch).Dispatch(req, timeout=15)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    code = await asyncio.to_thread(env.proc.wait, 10)
    assert code == CRASH_EXIT_CODE, env.proc.output()
    assert f"crashing at {point}" in env.proc.output()


async def restart_until_settled(env: CrashEnv, key: str = KEY) -> channels_pb2.Message:
    """Restart without the hook; the outbox worker must finish the message on its own."""
    env.proc.start()
    async with grpc.aio.insecure_channel(env.target) as ch:
        await ready(env, ch)
        # The dead process's lease (1 s) must run out before the worker may take the message over.
        deadline = time.monotonic() + 15
        stub = channels_pb2_grpc.ChannelServiceStub(ch)
        while True:
            resp = await stub.GetMessage(
                channels_pb2.GetMessageRequest(workspace_id=WS, idempotency_key=key), timeout=5
            )
            # `sent` is recorded before the outbox row's final audit; wait for the audit record too.
            if resp.message.status != common_pb2.DELIVERY_STATUS_QUEUED and len(await env.outcomes("cus_crash")) >= 2:
                return resp.message
            assert time.monotonic() < deadline, f"message still {resp.message.status}: {env.proc.output()}"
            await asyncio.sleep(0.1)


@pytest.mark.parametrize(("point", "attempts"), [("after_commit", 1), ("before_send", 2), ("after_send", 2)])
async def test_log_provider_crash_then_restart_delivers_exactly_once(
    crash_env: CrashEnv, point: str, attempts: int
) -> None:
    await dispatch_into_crash(crash_env, request(common_pb2.CHANNEL_SMS, "+66810000001"), point)
    sent_before_restart = len(crash_env.lines())
    # after_send is the one point where the provider already has the message.
    assert sent_before_restart == (1 if point == "after_send" else 0)

    message = await restart_until_settled(crash_env)

    assert message.status == common_pb2.DELIVERY_STATUS_SENT
    assert message.attempts == attempts
    lines = [line for line in crash_env.lines() if line["idempotency_key"] == KEY]
    assert len(lines) == 1
    assert lines[0]["provider_message_id"] == message.provider_message_id
    assert await crash_env.sent_log_count() == 1
    assert await crash_env.outcomes("cus_crash") == ["queued", "sent"]
    verified = await crash_env.audit.Verify(audit_pb2.VerifyRequest(workspace_id=WS))
    assert verified.ok


# after_send is the point that makes LINE see the same retry key twice; the others are covered above.
@pytest.mark.parametrize(("point", "requests"), [("after_send", 2)])
async def test_line_crash_then_restart_is_one_accepted_request_per_retry_key(
    crash_env: CrashEnv, point: str, requests: int
) -> None:
    await dispatch_into_crash(crash_env, request(common_pb2.CHANNEL_LINE, LINE_USER), point)
    message = await restart_until_settled(crash_env)

    key = retry_key(WS, KEY)
    pushes = [r for r in crash_env.line_server.requests if r.path == "/v2/bot/message/push"]
    assert [r.header("X-Line-Retry-Key") for r in pushes] == [key] * requests
    # The re-send after `after_send` is answered 409 (already accepted), never delivered again.
    assert crash_env.line.delivered == [(LINE_USER, "สวัสดีค่ะ รับส่วนลด 10% วันนี้")]
    assert message.status == common_pb2.DELIVERY_STATUS_SENT and message.provider == "line"
    assert message.provider_message_id.isdigit()
    assert await crash_env.outcomes("cus_crash") == ["queued", "sent"]
