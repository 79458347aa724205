"""Consent rules (PDPA): explicit opt-in per channel and purpose, the newest change wins."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

STATUSES = ("granted", "denied", "withdrawn")
_PURPOSE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")


@dataclass(frozen=True)
class ConsentRecord:
    channel: str
    purpose: str
    status: str
    source: str
    lawful_basis: str
    policy_version: str
    updated_at: datetime

    @property
    def key(self) -> tuple[str, str]:
        return self.channel, self.purpose


@dataclass(frozen=True)
class ConsentAnswer:
    allowed: bool
    reason: str


def normalise_purpose(raw: str) -> str:
    value = raw.strip().lower()
    if not _PURPOSE.match(value):
        raise ValueError("purpose must be a short lower-case name such as marketing or service")
    return value


def supersedes(change_at: datetime, current: ConsentRecord | None) -> bool:
    """A late-arriving older change goes into history but does not overwrite a newer state."""
    return current is None or change_at >= current.updated_at


def check(record: ConsentRecord | None, *, channel: str, purpose: str) -> ConsentAnswer:
    if record is None:
        # PDPA is opt-in, and we do not presume consent even for service messages: it must be recorded.
        return ConsentAnswer(
            False, f"no consent recorded for {channel}/{purpose}: contact needs an explicit grant"
        )
    when = record.updated_at.isoformat()
    source = f" via {record.source}" if record.source else ""
    if record.status == "granted":
        return ConsentAnswer(True, f"{channel}/{purpose} granted{source} at {when}")
    return ConsentAnswer(False, f"{channel}/{purpose} {record.status}{source} at {when}")


def merge_states(survivor: Iterable[ConsentRecord], other: Iterable[ConsentRecord]) -> list[ConsentRecord]:
    """Consent of two merged customers: per channel and purpose, the most recent statement stands."""
    merged = {r.key: r for r in survivor}
    for record in other:
        current = merged.get(record.key)
        if current is None or record.updated_at > current.updated_at:
            merged[record.key] = record
    return sorted(merged.values(), key=lambda r: r.key)
