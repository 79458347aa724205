"""Key material for the deployment: the checkpoint signing key and the master key wrapping data keys.

Production passes both through settings (a secret store); the embedded default creates them under var/
on first start, with a warning, so a laptop run works and restarts keep verifying.
"""

from __future__ import annotations

import base64
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from retain_kit.config import VAR_DIR

from retain_audit.config import Settings

log = logging.getLogger(__name__)
MASTER_KEY_BYTES = 32


def load_signing_key(settings: Settings) -> Ed25519PrivateKey:
    if settings.signing_key:
        return parse_signing_key(settings.signing_key)
    path = Path(settings.signing_key_path or VAR_DIR / "audit-signing-key.pem")
    pem = _read_or_create(
        path,
        lambda: Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        what="checkpoint signing key",
    )
    return parse_signing_key(pem.decode())


def parse_signing_key(text: str) -> Ed25519PrivateKey:
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("signing_key is not an Ed25519 private key")
        return key
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))


def load_master_key(settings: Settings) -> bytes:
    if settings.master_key:
        raw = base64.b64decode(settings.master_key, validate=True)
    else:
        path = Path(settings.master_key_path or VAR_DIR / "audit-master-key")
        raw = base64.b64decode(
            _read_or_create(path, lambda: base64.b64encode(os.urandom(MASTER_KEY_BYTES)), what="master key")
        )
    if len(raw) != MASTER_KEY_BYTES:
        raise ValueError(f"master_key must be {MASTER_KEY_BYTES} bytes (base64)")
    return raw


def _read_or_create(path: Path, make: Callable[[], bytes], *, what: str) -> bytes:
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    data = make()
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    try:
        # link() refuses to replace: replicas starting together agree on the first key written.
        os.link(tmp, path)
    except FileExistsError:
        return path.read_bytes()
    finally:
        tmp.unlink()
    log.warning("generated a new audit %s at %s; set it through settings in production", what, path)
    return data
