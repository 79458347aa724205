"""Signed checkpoints: an Ed25519 signature over (workspace, seq, head hash, time), pure and offline-checkable."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from retain_audit.domain.chain import iso_utc

ALGORITHM = "Ed25519"


@dataclass(frozen=True)
class Checkpoint:
    workspace_id: str
    seq: int
    head_hash: str
    signed_at: datetime
    signature: str
    key_id: str


def statement(workspace_id: str, seq: int, head_hash: str, signed_at: datetime) -> bytes:
    """The exact bytes signed; documented so auditors can check signatures with any Ed25519 tool."""
    return f"retain-audit-checkpoint/v1\n{workspace_id}\n{seq}\n{head_hash}\n{iso_utc(signed_at)}".encode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


class Signer:
    """Holds the deployment's private key; signs checkpoints."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    def sign(self, *, workspace_id: str, seq: int, head_hash: str, signed_at: datetime) -> Checkpoint:
        signature = self._private.sign(statement(workspace_id, seq, head_hash, signed_at))
        return Checkpoint(
            workspace_id=workspace_id,
            seq=seq,
            head_hash=head_hash,
            signed_at=signed_at,
            signature=base64.b64encode(signature).decode(),
            key_id=self.key_id,
        )


def signature_problem(checkpoint: Checkpoint, keys: Mapping[str, Ed25519PublicKey]) -> str:
    """"" when the signature holds under the trusted key it names, otherwise why not."""
    public = keys.get(checkpoint.key_id)
    if public is None:
        return f"checkpoint at seq {checkpoint.seq} is signed by unknown key {checkpoint.key_id}"
    try:
        raw = base64.b64decode(checkpoint.signature, validate=True)
        public.verify(
            raw, statement(checkpoint.workspace_id, checkpoint.seq, checkpoint.head_hash, checkpoint.signed_at)
        )
    except (ValueError, InvalidSignature):
        return f"checkpoint signature at seq {checkpoint.seq} does not verify"
    return ""
