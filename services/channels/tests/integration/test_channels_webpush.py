"""Web Push through pywebpush against a local push service: VAPID, encryption, Topic, unregistered."""

import base64
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import http_ece
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from retain_channels.providers.base import (
    OutboundMessage,
    PermanentProviderError,
    ProviderContext,
    TransientProviderError,
)
from retain_channels.providers.push.webpush import UNREGISTERED, WebPushProvider, topic_for
from retain_channels.providers.registry import default_registry
from sqlalchemy.ext.asyncio import async_sessionmaker

pytestmark = pytest.mark.integration


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class PushService:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.status = 201
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                service.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(service.status)
                if service.status == 201:
                    self.send_header("Location", f"http://127.0.0.1/m/{len(service.requests)}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def push_service() -> Iterator[PushService]:
    service = PushService()
    service.thread.start()
    yield service
    service.server.shutdown()
    service.server.server_close()


@pytest.fixture
def keys() -> dict[str, Any]:
    vapid = ec.generate_private_key(ec.SECP256R1())
    subscriber = ec.generate_private_key(ec.SECP256R1())
    auth = os.urandom(16)
    point = subscriber.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return {
        "vapid_private": b64(vapid.private_numbers().private_value.to_bytes(32, "big")),
        "vapid_public": vapid.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint),
        "subscriber": subscriber, "auth": auth, "p256dh": b64(point),
    }


def adapter(tmp_path: Path, keys: dict[str, Any]) -> WebPushProvider:
    ctx = ProviderContext(channel="push", var_dir=tmp_path, sessions=async_sessionmaker())
    built = default_registry().build("push", "webpush", {
        "vapid_private_key": keys["vapid_private"], "vapid_subject": "mailto:ops@brand.co.th", "ttl_seconds": 3600,
    }, ctx)
    assert isinstance(built, WebPushProvider)
    return built


def push_msg(endpoint: str, keys: dict[str, Any], key: str = "k1") -> OutboundMessage:
    subscription = json.dumps({"endpoint": endpoint, "keys": {"p256dh": keys["p256dh"], "auth": b64(keys["auth"])}})
    return OutboundMessage(message_id="msg_1", workspace_id="ws_1", idempotency_key=key, channel="push",
                           recipient=subscription, subject="ส่วนลด", body="รับส่วนลด 10% วันนี้", locale="th")


async def test_push_is_vapid_signed_encrypted_and_topic_tagged(
    push_service: PushService, keys: dict[str, Any], tmp_path: Path
) -> None:
    msg = push_msg(f"{push_service.url}/push/abc", keys)
    result = await adapter(tmp_path, keys).send(msg)

    path, headers, body = push_service.requests[0]
    assert path == "/push/abc"
    assert headers["content-encoding"] == "aes128gcm" and headers["ttl"] == "3600"
    assert headers["topic"] == topic_for(msg) and len(headers["topic"]) <= 32
    assert headers["authorization"].startswith("vapid t=")
    assert f"k={b64(keys['vapid_public'])}" in headers["authorization"]
    plain = http_ece.decrypt(body, private_key=keys["subscriber"], auth_secret=keys["auth"], version="aes128gcm")
    assert json.loads(plain) == {"title": "ส่วนลด", "body": "รับส่วนลด 10% วันนี้", "message_id": "msg_1"}
    assert result.provider_message_id == "http://127.0.0.1/m/1"


@pytest.mark.parametrize("status", [404, 410])
async def test_gone_subscription_is_permanent_and_flagged_unregistered(
    push_service: PushService, keys: dict[str, Any], tmp_path: Path, status: int
) -> None:
    push_service.status = status
    with pytest.raises(PermanentProviderError) as caught:
        await adapter(tmp_path, keys).send(push_msg(f"{push_service.url}/push/abc", keys))
    assert caught.value.reason == UNREGISTERED


@pytest.mark.parametrize(("status", "error"), [(429, TransientProviderError), (503, TransientProviderError),
                                               (400, PermanentProviderError), (413, PermanentProviderError)])
async def test_other_failures_map_to_retry_classes(
    push_service: PushService, keys: dict[str, Any], tmp_path: Path, status: int, error: type[Exception]
) -> None:
    push_service.status = status
    with pytest.raises(error) as caught:
        await adapter(tmp_path, keys).send(push_msg(f"{push_service.url}/push/abc", keys))
    assert getattr(caught.value, "reason", "") != UNREGISTERED


async def test_recipient_that_is_not_a_subscription_is_permanent(keys: dict[str, Any], tmp_path: Path) -> None:
    bad = push_msg("ftp://nowhere", keys)
    with pytest.raises(PermanentProviderError, match="subscription"):
        await adapter(tmp_path, keys).send(bad)
