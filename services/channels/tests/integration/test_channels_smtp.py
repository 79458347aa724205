"""The SMTP adapter against a real SMTP server (aiosmtpd) in-process: the received MIME is asserted."""

import email
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from retain_channels.providers.base import (
    OutboundMessage,
    PermanentProviderError,
    ProviderContext,
    TransientProviderError,
)
from retain_channels.providers.email.smtp import SmtpProvider, message_id_for
from retain_channels.providers.registry import default_registry
from retain_kit.testing import free_port
from sqlalchemy.ext.asyncio import async_sessionmaker

pytestmark = pytest.mark.integration


@dataclass
class Inbox:
    received: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    rcpt_reply: str = ""
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        # handled=False: aiosmtpd sends the 535 itself instead of leaving the client waiting.
        return AuthResult(success=auth_data.password == b"s3cret", handled=False)


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=inbox.authenticate,
                            auth_require_tls=False)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def adapter(port: int, tmp_path: Path, **overrides: Any) -> SmtpProvider:
    config: dict[str, Any] = {
        "host": "127.0.0.1", "port": port, "security": "none", "username": "brand", "password": "s3cret",
        "from_address": "hello@brand.co.th", "from_name": "แบรนด์ Brand", "message_id_domain": "brand.co.th",
        "unsubscribe_url": "https://brand.co.th/u/{workspace_id}/{message_id}?r={recipient}",
        "unsubscribe_mailto": "unsub@brand.co.th", "timeout_seconds": 5,
    }
    config.update(overrides)
    ctx = ProviderContext(channel="email", var_dir=tmp_path, sessions=async_sessionmaker())
    built = default_registry().build("email", "smtp", config, ctx)
    assert isinstance(built, SmtpProvider)
    return built


def mail(purpose: str = "marketing", html: str = "", key: str = "k1") -> OutboundMessage:
    return OutboundMessage(
        message_id="msg_1", workspace_id="ws_1", idempotency_key=key, channel="email",
        recipient="somchai@example.co.th", subject="ส่วนลด 10% สำหรับคุณสมชาย",
        body="สวัสดีค่ะ คุณสมชาย\nรับส่วนลด 10% วันนี้", locale="th", purpose=purpose, html_body=html,
    )


async def test_marketing_mail_arrives_with_thai_body_and_one_click_unsubscribe(smtp: Any, tmp_path: Path) -> None:
    inbox, port = smtp
    result = await adapter(port, tmp_path).send(mail())

    assert inbox.logins == [(b"brand", b"s3cret")]
    assert len(inbox.received) == 1
    mail_from, rcpt, received = inbox.received[0]
    assert mail_from == "hello@brand.co.th" and rcpt == ["somchai@example.co.th"]
    assert received["Subject"] == "ส่วนลด 10% สำหรับคุณสมชาย"
    assert received["From"].addresses[0].display_name == "แบรนด์ Brand"
    assert received["To"] == "somchai@example.co.th"
    assert received["Content-Language"] == "th"
    # A long header may be folded right after the colon; unfolded, only the leading space remains.
    assert received["List-Unsubscribe"].strip() == (
        "<https://brand.co.th/u/ws_1/msg_1?r=somchai%40example.co.th>, <mailto:unsub@brand.co.th?subject=unsubscribe>"
    )
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received["Message-ID"] == f"<{message_id_for(mail(), 'brand.co.th')}>"
    assert result.provider_message_id == message_id_for(mail(), "brand.co.th")
    assert received.get_content_type() == "text/plain" and received.get_content_charset() == "utf-8"
    assert received.get_content().replace("\r\n", "\n").rstrip("\n") == "สวัสดีค่ะ คุณสมชาย\nรับส่วนลด 10% วันนี้"


async def test_transactional_mail_has_no_unsubscribe_headers_and_html_alternative(smtp: Any, tmp_path: Path) -> None:
    inbox, port = smtp
    await adapter(port, tmp_path).send(mail(purpose="transactional", html="<p>สวัสดีค่ะ</p>"))
    received = inbox.received[0][2]
    assert received["List-Unsubscribe"] is None and received["List-Unsubscribe-Post"] is None
    assert received.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): p.get_content() for p in received.iter_parts()}
    assert parts["text/html"].strip() == "<p>สวัสดีค่ะ</p>"
    assert parts["text/plain"].startswith("สวัสดีค่ะ คุณสมชาย")


async def test_message_id_is_stable_per_idempotency_key(smtp: Any, tmp_path: Path) -> None:
    inbox, port = smtp
    provider = adapter(port, tmp_path)
    first = await provider.send(mail(key="k1"))
    again = await provider.send(mail(key="k1"))
    other = await provider.send(mail(key="k2"))
    assert first.provider_message_id == again.provider_message_id != other.provider_message_id
    assert len({m["Message-ID"] for _, _, m in inbox.received}) == 2


@pytest.mark.parametrize(
    ("reply", "error"),
    [("550 5.1.1 no such user", PermanentProviderError), ("451 4.3.0 try later", TransientProviderError)],
)
async def test_refused_recipient_maps_by_reply_class(
    smtp: Any, tmp_path: Path, reply: str, error: type[Exception]
) -> None:
    inbox, port = smtp
    inbox.rcpt_reply = reply
    with pytest.raises(error, match=reply.split()[0]):
        await adapter(port, tmp_path).send(mail())
    assert inbox.received == []


async def test_bad_credentials_are_permanent(smtp: Any, tmp_path: Path) -> None:
    inbox, port = smtp
    with pytest.raises(PermanentProviderError, match="535"):
        await adapter(port, tmp_path, password="wrong").send(mail())
    assert inbox.received == []


async def test_unreachable_server_is_transient(tmp_path: Path) -> None:
    with pytest.raises(TransientProviderError):
        await adapter(free_port(), tmp_path).send(mail())


async def test_starttls_required_but_not_offered_is_not_sent_in_clear(smtp: Any, tmp_path: Path) -> None:
    inbox, port = smtp
    with pytest.raises((TransientProviderError, PermanentProviderError)):
        await adapter(port, tmp_path, security="starttls").send(mail())
    assert inbox.received == [] and inbox.logins == []
