"""The hash chain: pure functions over record contents, no I/O."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from retain_audit.domain.checkpoint import Checkpoint

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
        "occurred_at": iso_utc(entry.occurred_at),
        "recorded_at": iso_utc(entry.recorded_at),
        "prev_hash": entry.prev_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def iso_utc(value: datetime) -> str:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if value.year >= 1000:
        # isoformat is several times faster than strftime and yields the same text for four-digit years.
        return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
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
    checkpoints_checked: int = 0


class ChainVerifier:
    """Walks (entry, stored hash) pairs in seq order without holding the chain in memory.

    Checkpoints pin the chain: a checkpoint whose hash differs from the record at its seq, whose signature
    fails, or which lies beyond the last record (a truncated tail) breaks verification at its seq.
    """

    def __init__(
        self, checkpoints: Sequence[Checkpoint] = (), keys: Mapping[str, Ed25519PublicKey] | None = None
    ) -> None:
        from retain_audit.domain.checkpoint import signature_problem

        self.expected_prev = GENESIS
        self.expected_seq = 1
        self.checked = 0
        self.head = GENESIS
        self.broken: tuple[int, str] | None = None
        self.pins: dict[int, Checkpoint] = {}
        self.problems: list[tuple[int, str]] = []
        for cp in checkpoints:
            problem = signature_problem(cp, keys or {})
            if problem:
                self.problems.append((cp.seq, problem))
            self.pins[cp.seq] = cp

    def feed(self, entry: Entry, stored: str) -> bool:
        """False once a link is broken; the caller may stop walking."""
        if self.broken is not None:
            return False
        self.checked += 1
        if entry.seq != self.expected_seq:
            self.broken = (entry.seq, f"gap: expected seq {self.expected_seq}")
        elif entry.prev_hash != self.expected_prev:
            self.broken = (entry.seq, "prev_hash does not match the previous record")
        elif link_hash(entry) != stored:
            self.broken = (entry.seq, "record content does not match its hash")
        else:
            pin = self.pins.get(entry.seq)
            if pin is not None and pin.head_hash != stored:
                self.broken = (entry.seq, f"checkpoint at seq {entry.seq} does not match the chain")
        if self.broken is not None:
            return False
        self.expected_prev = self.head = stored
        self.expected_seq += 1
        return True

    def result(self) -> Verification:
        problems = list(self.problems)
        if self.broken is not None:
            problems.append(self.broken)
        else:
            last = self.expected_seq - 1
            problems += [
                (seq, f"checkpoint at seq {seq} lies beyond the last record {last}: records are missing")
                for seq in self.pins
                if seq > last
            ]
        if problems:
            seq, detail = min(problems)
            return Verification(False, self.checked, seq, detail, self.head, len(self.pins))
        return Verification(True, self.checked, 0, "chain intact", self.head, len(self.pins))


def verify(
    chain: Iterable[tuple[Entry, str]],
    checkpoints: Sequence[Checkpoint] = (),
    keys: Mapping[str, Ed25519PublicKey] | None = None,
) -> Verification:
    """Walk (entry, stored hash) pairs in seq order; report the first link that does not hold."""
    walker = ChainVerifier(checkpoints, keys)
    for entry, stored in chain:
        if not walker.feed(entry, stored):
            break
    return walker.result()
