"""The hash chain: pure functions over record contents, no I/O."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS = ""


@dataclass(frozen=True)
class Entry:
    """The hashed content of one record (everything but the hash itself)."""

    workspace_id: str
    seq: int
    kind: str
    customer_id: str
    decision_id: str
    message_id: str
    channel: str
    journey_id: str
    offer_id: str
    outcome: str
    actor: str
    payload: dict[str, Any]
    occurred_at: datetime
    recorded_at: datetime
    prev_hash: str
    extra: dict[str, Any] = field(default_factory=dict)


def canonical(entry: Entry) -> bytes:
    """Stable bytes: sorted keys, no whitespace, UTC ISO-8601 times with microseconds."""
    body = {
        "workspace_id": entry.workspace_id,
        "seq": entry.seq,
        "kind": entry.kind,
        "customer_id": entry.customer_id,
        "decision_id": entry.decision_id,
        "message_id": entry.message_id,
        "channel": entry.channel,
        "journey_id": entry.journey_id,
        "offer_id": entry.offer_id,
        "outcome": entry.outcome,
        "actor": entry.actor,
        "payload": entry.payload,
        "occurred_at": _iso(entry.occurred_at),
        "recorded_at": _iso(entry.recorded_at),
        "prev_hash": entry.prev_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _iso(value: datetime) -> str:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def link_hash(entry: Entry) -> str:
    return hashlib.sha256(canonical(entry)).hexdigest()


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    first_broken_seq: int
    detail: str
    head_hash: str


def verify(chain: Iterable[tuple[Entry, str]]) -> Verification:
    """Walk (entry, stored hash) pairs in seq order; report the first link that does not hold."""
    expected_prev = GENESIS
    expected_seq = 1
    checked = 0
    head = GENESIS
    for entry, stored in chain:
        checked += 1
        if entry.seq != expected_seq:
            return Verification(False, checked, entry.seq, f"gap: expected seq {expected_seq}", head)
        if entry.prev_hash != expected_prev:
            return Verification(False, checked, entry.seq, "prev_hash does not match the previous record", head)
        actual = link_hash(entry)
        if actual != stored:
            return Verification(False, checked, entry.seq, "record content does not match its hash", head)
        expected_prev = head = stored
        expected_seq += 1
    return Verification(True, checked, 0, "chain intact", head)
