"""Identifier normalisation and the rules that decide which customer an event belongs to."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

KINDS = ("user_id", "anonymous_id", "email", "phone", "line_user_id", "device_token")
# How a bare customer reference is tried: Segment userId first (docs/CONVENTIONS.md).
LOOKUP_ORDER = ("user_id", "email", "phone", "line_user_id", "anonymous_id", "device_token")
CUSTOMER_PREFIX = "cus_"

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE_NOISE = re.compile(r"[\s\-().]")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
MAX_IDENTIFIER_LENGTH = 200


class IdentifierError(ValueError):
    """An identifier that cannot be normalised; `field` names where it came from."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, order=True)
class Identifier:
    kind: str
    value: str


def normalise_email(raw: str) -> str:
    value = raw.strip().lower()
    if not _EMAIL.match(value):
        raise ValueError(f"{raw!r} is not an email address")
    return value


def normalise_phone(raw: str, *, country_code: str = "66") -> str:
    """E.164. Local numbers with a trunk 0 (Thai 0XXXXXXXXX) get the default country code."""
    value = _PHONE_NOISE.sub("", raw.strip())
    if value.startswith("00"):
        value = "+" + value[2:]
    elif value.startswith("0"):
        value = f"+{country_code}{value[1:]}"
    elif not value.startswith("+"):
        # Digits without a plus are taken as already carrying the country code (66812345678).
        value = "+" + value
    if not _E164.match(value):
        raise ValueError(f"{raw!r} is not a phone number")
    return value


def normalise(kind: str, raw: str, *, country_code: str = "66") -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown identifier kind {kind!r}")
    if kind == "email":
        value = normalise_email(raw)
    elif kind == "phone":
        value = normalise_phone(raw, country_code=country_code)
    else:
        value = raw.strip()
    if not value:
        raise ValueError(f"{kind} is empty")
    if len(value) > MAX_IDENTIFIER_LENGTH:
        raise ValueError(f"{kind} is longer than {MAX_IDENTIFIER_LENGTH} characters")
    return value


def lookup_candidates(reference: str, *, country_code: str = "66") -> list[Identifier]:
    """Every identifier a bare reference could be, in lookup order (invalid shapes skipped)."""
    found: list[Identifier] = []
    for kind in LOOKUP_ORDER:
        try:
            found.append(Identifier(kind, normalise(kind, reference, country_code=country_code)))
        except ValueError:
            continue
    return found


# Where each identifier may sit in a Segment payload, most specific first.
_TRAIT_SOURCES: dict[str, tuple[tuple[str, ...], ...]] = {
    "email": (("traits", "email"), ("context", "traits", "email")),
    "phone": (("traits", "phone"), ("context", "traits", "phone")),
    "line_user_id": (("traits", "line_user_id"), ("context", "line_user_id"), ("context", "traits", "line_user_id")),
    "device_token": (("context", "device", "token"),),
}


def event_identifiers(
    *,
    user_id: str,
    anonymous_id: str,
    traits: Mapping[str, Any],
    context: Mapping[str, Any],
    country_code: str = "66",
) -> list[Identifier]:
    """Identifiers carried by one event; raises IdentifierError naming the bad field."""
    found: list[Identifier] = []
    for kind, raw, field in (("user_id", user_id, "user_id"), ("anonymous_id", anonymous_id, "anonymous_id")):
        if raw:
            found.append(_make(kind, raw, field, country_code))
    if not traits and not context:
        return sorted(set(found))
    sources = {"traits": traits, "context": context}
    for kind, paths in _TRAIT_SOURCES.items():
        for path in paths:
            raw_value = _dig(sources, path)
            if raw_value is None or raw_value == "":
                continue
            if not isinstance(raw_value, str):
                raise IdentifierError(f"{kind} must be a string", field=".".join(path))
            found.append(_make(kind, raw_value, ".".join(path), country_code))
    return sorted(set(found))


def _make(kind: str, raw: str, field: str, country_code: str) -> Identifier:
    try:
        return Identifier(kind, normalise(kind, raw, country_code=country_code))
    except ValueError as exc:
        raise IdentifierError(str(exc), field=field) from exc


def _dig(sources: Mapping[str, Any], path: Sequence[str]) -> Any:
    node: Any = sources
    for key in path:
        # The exact-type test first: the Mapping ABC check is slow and nearly every node is a plain dict.
        if type(node) is not dict and not isinstance(node, Mapping):
            return None
        node = node.get(key)
        if node is None:
            return None
    return node


@dataclass(frozen=True)
class CustomerRef:
    customer_id: str
    created_at: datetime


def choose_survivor(customers: Iterable[CustomerRef]) -> CustomerRef:
    """The oldest customer survives a merge; the id breaks ties so every replica picks the same one."""
    return min(customers, key=lambda c: (c.created_at, c.customer_id))


def merge_traits(
    traits: Mapping[str, Any],
    times: Mapping[str, str],
    incoming: Mapping[str, Any],
    *,
    at: datetime,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Per-trait last-writer-wins by event time, so replays and late events cannot roll a trait back."""
    merged, merged_times = dict(traits), dict(times)
    stamp = at.isoformat()
    for key, value in incoming.items():
        previous = merged_times.get(key)
        if previous is None or datetime.fromisoformat(previous) <= at:
            merged[key] = value
            merged_times[key] = stamp
    return merged, merged_times


def combine_traits(
    survivor: tuple[Mapping[str, Any], Mapping[str, str]],
    other: tuple[Mapping[str, Any], Mapping[str, str]],
) -> tuple[dict[str, Any], dict[str, str]]:
    """Traits of two merged customers: for each key, the value set most recently wins."""
    traits, times = dict(survivor[0]), dict(survivor[1])
    for key, value in other[0].items():
        theirs = other[1].get(key)
        ours = times.get(key)
        if ours is None or (theirs is not None and datetime.fromisoformat(theirs) > datetime.fromisoformat(ours)):
            traits[key] = value
            if theirs is not None:
                times[key] = theirs
    return traits, times
