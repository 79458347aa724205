"""API key format and hashing: `rk_<prefix8>_<secret32>`; only the SHA-256 of the whole key is stored."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

KEY_PREFIX = "rk"
_KEY_RE = re.compile(r"^rk_([0-9a-f]{8})_([A-Za-z0-9_-]{32})$")
WORKSPACE_RE = re.compile(r"^ws_[a-z0-9][a-z0-9_-]{0,60}$")


@dataclass(frozen=True)
class NewKey:
    plaintext: str
    prefix: str
    key_hash: str


@dataclass(frozen=True)
class Principal:
    """Who is calling: every downstream call is scoped to `workspace_id`."""

    workspace_id: str
    key_id: str
    roles: frozenset[str]


@dataclass(frozen=True)
class Workspace:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class ApiKeyInfo:
    """A key as operators see it: the display prefix, never the secret or its hash."""

    id: str
    workspace_id: str
    name: str
    roles: frozenset[str]
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


def generate() -> NewKey:
    prefix = secrets.token_hex(4)
    # 24 random bytes encode to exactly 32 url-safe characters.
    secret = secrets.token_urlsafe(24)
    plaintext = f"{KEY_PREFIX}_{prefix}_{secret}"
    return NewKey(plaintext=plaintext, prefix=prefix, key_hash=hash_key(plaintext))


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def parse(plaintext: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None; malformed keys never reach the database."""
    match = _KEY_RE.match(plaintext.strip())
    return (match.group(1), match.group(2)) if match else None


def display(prefix: str) -> str:
    return f"{KEY_PREFIX}_{prefix}_…"


def valid_workspace_id(workspace_id: str) -> bool:
    return bool(WORKSPACE_RE.match(workspace_id))


def extract_key(*, authorization: str | None, api_key_header: str | None) -> str | None:
    """The key from `Authorization: Bearer`, HTTP Basic (key as user name, empty password), or X-API-Key."""
    if api_key_header:
        return api_key_header.strip() or None
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer":
        return value or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, _password = decoded.partition(":")
        return user or None
    return None
