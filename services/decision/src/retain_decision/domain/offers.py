"""The offer/action catalogue entry and its validation (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from retain_kit.expressions import ExpressionError, compile_expression

CHANNELS = ("email", "sms", "push", "line", "in_app")
PLAY_TYPES = (
    "onboarding",
    "engagement",
    "cross_sell",
    "upsell",
    "save",
    "winback",
    "reactivation",
    "service_recovery",
    "replenishment",
)
PLACEMENTS = ("home", "checkout", "contact_centre", "product", "account")

# What eligibility expressions may reference: profile features and customer scores.
FEATURE_NAMES = frozenset(
    {
        "recency_days",
        "frequency",
        "monetary_total",
        "average_order_value",
        "tenure_days",
        "orders_30d",
        "spend_30d",
        "orders_90d",
        "spend_90d",
        "activity_level",
        "activity_change",
        "negative_feedback_streak",
        "open_tickets",
        "lifecycle_stage",
        "segments",
        "repeat_transactions",
    }
)
SCORE_NAMES = frozenset({"churn_risk", "p_alive", "expected_purchases", "expected_value", "clv", "value_at_risk"})
# Category affinities arrive as a map; each becomes `affinity_<category>`.
AFFINITY_PREFIX = "affinity_"
KNOWN_NAMES = FEATURE_NAMES | SCORE_NAMES

DEFAULT_PRIOR_PROPENSITY = 0.05
_OFFER_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


class OfferError(ValueError):
    """An offer definition is not acceptable; `field` names the offending input."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Template:
    channel: str
    locale: str
    subject: str
    body: str


@dataclass(frozen=True)
class Offer:
    """An action the brand can take. `lever` scales value (a priority knob operators turn)."""

    offer_id: str
    name: str
    play_type: str
    channels: tuple[str, ...]
    purpose: str
    value: float
    cost: float
    placements: tuple[str, ...] = ()
    eligibility: str = ""
    lever: float = 1.0
    conflict_group: str = ""
    templates: tuple[Template, ...] = ()
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    active: bool = True
    version: int = 0
    prior_propensity: float = DEFAULT_PRIOR_PROPENSITY

    def is_valid_at(self, now: datetime) -> bool:
        if self.valid_from is not None and now < self.valid_from:
            return False
        return self.valid_until is None or now < self.valid_until


def validate(offer: Offer) -> Offer:
    """Checks an offer as defined by an operator; returns it with name and purpose trimmed."""
    if not _OFFER_ID.match(offer.offer_id):
        raise OfferError("offer_id must be 1-64 of a-z 0-9 _ - (starting alphanumeric)", field="offer.offer_id")
    if not offer.name.strip():
        raise OfferError("name is required", field="offer.name")
    if offer.play_type not in PLAY_TYPES:
        raise OfferError(f"play_type must be one of {', '.join(PLAY_TYPES)}", field="offer.play_type")
    if not offer.channels:
        raise OfferError("at least one channel is required", field="offer.channels")
    for channel in offer.channels:
        if channel not in CHANNELS:
            raise OfferError(f"unknown channel {channel!r}", field="offer.channels")
    if len(set(offer.channels)) != len(offer.channels):
        raise OfferError("channels repeat", field="offer.channels")
    for placement in offer.placements:
        if placement not in PLACEMENTS:
            raise OfferError(f"placement must be one of {', '.join(PLACEMENTS)}", field="offer.placements")
    if not offer.purpose.strip():
        raise OfferError("purpose is required (consent is checked per purpose)", field="offer.purpose")
    try:
        compile_expression(offer.eligibility, known_names=KNOWN_NAMES, known_prefixes=(AFFINITY_PREFIX,))
    except ExpressionError as exc:
        raise OfferError(f"eligibility: {exc}", field="offer.eligibility") from exc
    for name, number in (("value", offer.value), ("cost", offer.cost)):
        if number < 0:
            raise OfferError(f"{name} must not be negative", field=f"offer.{name}")
    if offer.lever <= 0:
        raise OfferError("lever must be positive", field="offer.lever")
    if not 0 <= offer.prior_propensity <= 1:
        raise OfferError("prior_propensity must be within [0, 1]", field="offer.prior_propensity")
    if offer.valid_from and offer.valid_until and offer.valid_until <= offer.valid_from:
        raise OfferError("valid_until must be after valid_from", field="offer.valid_until")
    for template in offer.templates:
        if template.channel not in offer.channels:
            raise OfferError(f"template for channel {template.channel!r} not offered", field="offer.templates")
        if not template.locale or not template.body.strip():
            raise OfferError("every template needs a locale and a body", field="offer.templates")
    # A message channel without text could never be sent; in-app placements render the offer itself.
    missing = [c for c in offer.channels if c != "in_app" and not any(t.channel == c for t in offer.templates)]
    if missing:
        raise OfferError(f"no template for channel(s): {', '.join(missing)}", field="offer.templates")
    return replace(offer, name=offer.name.strip(), purpose=offer.purpose.strip())


def to_dict(offer: Offer) -> dict[str, Any]:
    """JSON-ready form (stored in the database and in audit payloads)."""
    return {
        "offer_id": offer.offer_id,
        "name": offer.name,
        "play_type": offer.play_type,
        "channels": list(offer.channels),
        "placements": list(offer.placements),
        "purpose": offer.purpose,
        "eligibility": offer.eligibility,
        "value": offer.value,
        "cost": offer.cost,
        "lever": offer.lever,
        "conflict_group": offer.conflict_group,
        "templates": [
            {"channel": t.channel, "locale": t.locale, "subject": t.subject, "body": t.body}
            for t in offer.templates
        ],
        "valid_from": offer.valid_from.isoformat() if offer.valid_from else None,
        "valid_until": offer.valid_until.isoformat() if offer.valid_until else None,
        "active": offer.active,
        "version": offer.version,
        "prior_propensity": offer.prior_propensity,
    }


def from_dict(data: dict[str, Any]) -> Offer:
    return Offer(
        offer_id=data["offer_id"],
        name=data["name"],
        play_type=data["play_type"],
        channels=tuple(data.get("channels", ())),
        placements=tuple(data.get("placements", ())),
        purpose=data["purpose"],
        eligibility=data.get("eligibility", ""),
        value=float(data["value"]),
        cost=float(data["cost"]),
        lever=float(data.get("lever", 1.0)),
        conflict_group=data.get("conflict_group", ""),
        templates=tuple(Template(**t) for t in data.get("templates", ())),
        valid_from=datetime.fromisoformat(data["valid_from"]) if data.get("valid_from") else None,
        valid_until=datetime.fromisoformat(data["valid_until"]) if data.get("valid_until") else None,
        active=bool(data.get("active", True)),
        version=int(data.get("version", 0)),
        prior_propensity=float(data.get("prior_propensity", DEFAULT_PRIOR_PROPENSITY)),
    )

