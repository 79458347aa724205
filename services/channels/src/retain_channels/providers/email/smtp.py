"""Email over SMTP with aiosmtplib: implicit TLS or STARTTLS, optional auth, one connection per send."""

from __future__ import annotations

import hashlib
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import Any, Literal
from urllib.parse import quote

import aiosmtplib
from pydantic import SecretStr

from retain_channels.providers.base import (
    DeliveryEvent,
    OutboundMessage,
    PermanentProviderError,
    ProviderContext,
    SendResult,
    TransientProviderError,
)
from retain_channels.providers.ratelimit import RateLimitConfig


class SmtpConfig(RateLimitConfig):
    host: str = "localhost"
    port: int = 587
    # "starttls" upgrades a plain connection (port 587), "tls" is implicit TLS (port 465), "none" is for
    # local relays and tests only.
    security: Literal["starttls", "tls", "none"] = "starttls"
    validate_certs: bool = True
    username: str = ""
    password: SecretStr = SecretStr("")
    from_address: str
    from_name: str = ""
    reply_to: str = ""
    timeout_seconds: float = 30.0
    # Right-hand side of the Message-ID; use the sending domain so receivers thread and dedupe correctly.
    message_id_domain: str = "retain.local"
    # Marketing mail gets List-Unsubscribe (RFC 2369) and one-click unsubscribe (RFC 8058). The URL is a
    # template: {workspace_id}, {message_id} and {recipient} are substituted, URL-encoded.
    unsubscribe_url: str = ""
    unsubscribe_mailto: str = ""


def message_id_for(msg: OutboundMessage, domain: str) -> str:
    """The same key always yields the same Message-ID, so a re-sent copy is recognisably the same mail."""
    digest = hashlib.sha256(f"{msg.workspace_id}\x00{msg.idempotency_key}".encode()).hexdigest()[:40]
    return f"{digest}@{domain}"


class SmtpProvider:
    """Sends one MIME message per OutboundMessage (text, plus HTML when `html_body` is set)."""

    def __init__(self, config: SmtpConfig, ctx: ProviderContext) -> None:
        self.config = config
        self.channel = ctx.channel
        self._bucket = config.bucket()

    def build_message(self, msg: OutboundMessage) -> EmailMessage:
        cfg = self.config
        mail = EmailMessage()
        mail["From"] = formataddr((cfg.from_name, cfg.from_address)) if cfg.from_name else cfg.from_address
        mail["To"] = str(Address(addr_spec=msg.recipient)) if "@" in msg.recipient else msg.recipient
        if cfg.reply_to:
            mail["Reply-To"] = cfg.reply_to
        mail["Subject"] = msg.subject
        mail["Date"] = formatdate(localtime=False, usegmt=True)
        mail["Message-ID"] = f"<{message_id_for(msg, cfg.message_id_domain)}>"
        if msg.purpose == "marketing":
            targets = self._unsubscribe_targets(msg)
            if targets:
                mail["List-Unsubscribe"] = ", ".join(f"<{t}>" for t in targets)
                if any(t.startswith("https://") for t in targets):
                    # RFC 8058 one-click needs an HTTPS target the mailbox provider can POST to.
                    mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        mail.set_content(msg.body, charset="utf-8")
        if msg.html_body:
            mail.add_alternative(msg.html_body, subtype="html", charset="utf-8")
        if msg.locale:
            # After set_content, which drops every Content-* header already present.
            mail["Content-Language"] = msg.locale
        return mail

    async def send(self, msg: OutboundMessage) -> SendResult:
        if msg.channel != self.channel:
            raise PermanentProviderError(f"smtp provider for {self.channel} got a {msg.channel} message")
        if "@" not in msg.recipient:
            raise PermanentProviderError(f"recipient {msg.recipient!r} is not an email address")
        mail = self.build_message(msg)
        cfg = self.config
        await self._bucket.acquire()
        try:
            await aiosmtplib.send(
                mail,
                hostname=cfg.host,
                port=cfg.port,
                use_tls=cfg.security == "tls",
                start_tls=cfg.security == "starttls",
                validate_certs=cfg.validate_certs,
                username=cfg.username or None,
                password=cfg.password.get_secret_value() or None,
                timeout=cfg.timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [err.code for err in exc.recipients]
            if codes and all(400 <= code < 500 for code in codes):
                raise TransientProviderError(f"recipient deferred: {exc}") from exc
            raise PermanentProviderError(f"recipient refused: {exc}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 4xx replies are "try again later" by definition; 5xx (incl. 535 bad credentials) are final.
            if 400 <= exc.code < 500:
                raise TransientProviderError(f"{exc.code} {exc.message}") from exc
            raise PermanentProviderError(f"{exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientProviderError(f"smtp {cfg.host}:{cfg.port}: {exc}") from exc
        message_id = str(mail["Message-ID"]).strip("<>")
        return SendResult(message_id, {"host": cfg.host})

    def parse_event(self, payload: dict[str, Any]) -> DeliveryEvent | None:
        # SMTP has no delivery callbacks; bounces arrive as DSN mail, which is not parsed here.
        return None

    async def close(self) -> None:
        return None

    def _unsubscribe_targets(self, msg: OutboundMessage) -> list[str]:
        cfg = self.config
        targets: list[str] = []
        if cfg.unsubscribe_url:
            targets.append(
                cfg.unsubscribe_url.format(
                    workspace_id=quote(msg.workspace_id, safe=""),
                    message_id=quote(msg.message_id, safe=""),
                    recipient=quote(msg.recipient, safe=""),
                )
            )
        if cfg.unsubscribe_mailto:
            targets.append(f"mailto:{cfg.unsubscribe_mailto}?subject=unsubscribe")
        return targets
