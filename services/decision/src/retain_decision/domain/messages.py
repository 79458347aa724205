"""Pieces of an operator send that need no I/O: address, template and personalisation."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from retain_decision.domain.offers import Offer, Template

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
FALLBACK_LOCALE = "en"

# Which profile identifier (and, failing that, which trait) addresses a customer on a channel.
_ADDRESS_SOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "email": ("email", ("email",)),
    "sms": ("phone", ("phone",)),
    "line": ("line_user_id", ("line_user_id", "lineUserId")),
    "push": ("device_token", ()),
}


def recipient(
    channel: str,
    *,
    customer_id: str,
    identifiers: Sequence[tuple[str, str]],
    traits: Mapping[str, Any],
) -> str:
    """The address on `channel`, or "" when the profile has none (the send is then suppressed).

    Identifiers win over traits because profile has resolved and normalised them; a phone number
    only counts in E.164 form, since SMS providers reject anything else.
    """
    if channel == "in_app":
        return customer_id
    kind, trait_names = _ADDRESS_SOURCES.get(channel, ("", ()))
    # The newest identifier of a kind is the likeliest to work (latest device token, current email).
    candidates = [value for k, value in identifiers if k == kind][::-1]
    candidates += [str(traits[name]) for name in trait_names if traits.get(name)]
    for value in candidates:
        value = value.strip()
        if channel == "sms" and not E164.match(value):
            continue
        if value:
            return value
    return ""


def choose_template(templates: Sequence[Template], *, channel: str, locale: str) -> Template | None:
    """Exact locale, then its language ('th-TH' -> 'th'), then English, then any for the channel."""
    own = [t for t in templates if t.channel == channel]
    language = locale.split("-", 1)[0].split("_", 1)[0].lower()
    for wanted in (locale.lower(), language, FALLBACK_LOCALE):
        for template in own:
            if template.locale.lower() == wanted:
                return template
    return own[0] if own else None


def variables(
    offer: Offer, *, traits: Mapping[str, Any], extra: Mapping[str, Any]
) -> dict[str, Any]:
    """Template variables: profile traits, then offer fields, then what the operator passed."""
    merged: dict[str, Any] = dict(traits)
    # Segment sends camelCase traits; templates are written with snake_case names.
    for camel, snake in (("firstName", "first_name"), ("lastName", "last_name")):
        if camel in traits and snake not in merged:
            merged[snake] = traits[camel]
    merged.setdefault("first_name", "")
    merged.update(
        {
            "offer_id": offer.offer_id,
            "offer_name": offer.name,
            "offer_value": offer.value,
            "play_type": offer.play_type,
            "purpose": offer.purpose,
        }
    )
    merged.update(extra)
    return merged
