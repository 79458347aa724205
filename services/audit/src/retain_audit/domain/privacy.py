"""Which payload fields are personal data, and how they are sealed with a customer's data key.

Sealed values are strings `enc:v1:<key id>:<base64 nonce+ciphertext>`; the hash chain covers these strings,
so destroying the key (crypto-shredding) leaves every link intact while the plaintext becomes unrecoverable.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# The one list of payload keys (at any depth) that hold personal data; matched case-insensitively.
PERSONAL_FIELDS: frozenset[str] = frozenset(
    {
        "recipient", "to", "email", "phone", "phone_number", "mobile", "name", "first_name", "last_name",
        "full_name", "display_name", "address", "street", "postcode", "birthday", "date_of_birth",
        "line_user_id", "device_token", "push_token", "ip", "ip_address", "user_id", "anonymous_id",
        "subject", "body", "text", "rendered", "note", "notes", "comment", "free_text", "message_text",
        "reason_text", "variables", "traits",
    }
)
ERASED = "[erased]"
PREFIX = "enc:v1:"
_NONCE = 12


def is_personal(key: str) -> bool:
    return key.lower() in PERSONAL_FIELDS


def has_personal_data(payload: Mapping[str, Any]) -> bool:
    return any(_walk_keys(payload))


def _walk_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if is_personal(str(key)) and inner not in (None, "", [], {}):
                yield key
            else:
                yield from _walk_keys(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _walk_keys(inner)


def seal(payload: Mapping[str, Any], encrypt: Callable[[Any], str]) -> dict[str, Any]:
    """A copy of `payload` with every personal field's value replaced by `encrypt(value)`."""
    return {k: _seal_value(k, v, encrypt) for k, v in payload.items()}


def _seal_value(key: str, value: Any, encrypt: Callable[[Any], str]) -> Any:
    if is_personal(key) and value not in (None, "", [], {}):
        return encrypt(value)
    if isinstance(value, Mapping):
        return seal(value, encrypt)
    if isinstance(value, list):
        return [_seal_value("", v, encrypt) for v in value]
    return value


def unseal(payload: Any, decrypt: Callable[[str], Any]) -> tuple[Any, bool]:
    """Payload with sealed values opened by `decrypt` (which returns ERASED when the key is gone).

    Returns the payload and whether anything read as erased.
    """
    if isinstance(payload, str) and payload.startswith(PREFIX):
        value = decrypt(payload)
        return value, value == ERASED
    if isinstance(payload, Mapping):
        erased = False
        out: dict[str, Any] = {}
        for k, v in payload.items():
            out[k], e = unseal(v, decrypt)
            erased = erased or e
        return out, erased
    if isinstance(payload, list):
        items = [unseal(v, decrypt) for v in payload]
        return [v for v, _ in items], any(e for _, e in items)
    return payload, False


def sealed_key_id(token: str) -> str:
    return token[len(PREFIX) :].split(":", 1)[0]


def encrypt_value(data_key: bytes, key_id: str, value: Any, *, aad: bytes) -> str:
    nonce = os.urandom(_NONCE)
    plain = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    sealed = AESGCM(data_key).encrypt(nonce, plain, aad)
    return f"{PREFIX}{key_id}:{base64.b64encode(nonce + sealed).decode()}"


def decrypt_value(data_key: bytes, token: str, *, aad: bytes) -> Any:
    """Raises ValueError when the token is malformed or does not open with this key."""
    try:
        raw = base64.b64decode(token[len(PREFIX) :].split(":", 1)[1], validate=True)
        plain = AESGCM(data_key).decrypt(raw[:_NONCE], raw[_NONCE:], aad)
    except (IndexError, ValueError, InvalidTag) as exc:
        raise ValueError("sealed value does not open") from exc
    return json.loads(plain)


def wrap_key(master_key: bytes, data_key: bytes, *, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(master_key).encrypt(nonce, data_key, aad)


def unwrap_key(master_key: bytes, wrapped: bytes, *, aad: bytes) -> bytes:
    return AESGCM(master_key).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], aad)


def customer_aad(workspace_id: str, customer_id: str) -> bytes:
    """Binds ciphertext to its owner so a sealed value cannot be replayed into another customer's record."""
    return f"{workspace_id}\x1f{customer_id}".encode()


class Vault:
    """Per-customer data keys wrapped by the deployment's master key (no storage: callers persist the wraps)."""

    def __init__(self, master_key: bytes) -> None:
        self._master = master_key

    def new_key(self, workspace_id: str, customer_id: str) -> tuple[str, bytes, bytes]:
        """(key id, data key, wrapped data key)."""
        data_key = AESGCM.generate_key(bit_length=256)
        wrapped = wrap_key(self._master, data_key, aad=customer_aad(workspace_id, customer_id))
        return os.urandom(8).hex(), data_key, wrapped

    def open_key(self, workspace_id: str, customer_id: str, wrapped: bytes) -> bytes:
        return unwrap_key(self._master, wrapped, aad=customer_aad(workspace_id, customer_id))

    def seal(
        self, payload: Mapping[str, Any], *, workspace_id: str, customer_id: str, key_id: str, data_key: bytes
    ) -> dict[str, Any]:
        aad = customer_aad(workspace_id, customer_id)
        return seal(payload, lambda value: encrypt_value(data_key, key_id, value, aad=aad))

    def unseal(
        self, payload: Any, *, workspace_id: str, customer_id: str, key: tuple[str, bytes] | None
    ) -> tuple[Any, bool]:
        """Opens sealed values with the customer's live key; anything else (key destroyed) reads as ERASED."""
        aad = customer_aad(workspace_id, customer_id)

        def decrypt(token: str) -> Any:
            if key is None or sealed_key_id(token) != key[0]:
                return ERASED
            try:
                return decrypt_value(key[1], token, aad=aad)
            except ValueError:
                return ERASED

        return unseal(payload, decrypt)
