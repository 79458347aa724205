"""The one table of which roles may perform which action; every route names its action here."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Role(StrEnum):
    INGEST = "ingest"
    APP = "app"
    CONTACT_CENTRE = "contact_centre"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    ADMIN = "admin"


class Action(StrEnum):
    INGEST_EVENTS = "ingest_events"
    READ_CUSTOMER = "read_customer"
    READ_EVENTS = "read_events"
    WRITE_CONSENTS = "write_consents"
    GET_NEXT_BEST_ACTIONS = "get_next_best_actions"
    CREATE_DECISION = "create_decision"
    SEND_MESSAGE = "send_message"
    RECORD_OUTCOME = "record_outcome"
    READ_OFFERS = "read_offers"
    WRITE_OFFERS = "write_offers"
    READ_AUDIT = "read_audit"
    VERIFY_AUDIT = "verify_audit"
    READ_POLICIES = "read_policies"
    WRITE_POLICIES = "write_policies"
    CREATE_AUDIT_CHECKPOINT = "create_audit_checkpoint"
    READ_PROFILE_SETTINGS = "read_profile_settings"
    WRITE_PROFILE_SETTINGS = "write_profile_settings"
    READ_SEGMENTS = "read_segments"
    WRITE_SEGMENTS = "write_segments"
    PRIVACY_ACCESS = "privacy_access"
    PRIVACY_ERASURE = "privacy_erasure"
    READ_ANALYTICS = "read_analytics"
    READ_JOURNEYS = "read_journeys"
    WRITE_JOURNEYS = "write_journeys"


R = Role
ALLOWED: dict[Action, frozenset[Role]] = {
    Action.INGEST_EVENTS: frozenset({R.INGEST}),
    Action.READ_CUSTOMER: frozenset({R.APP, R.CONTACT_CENTRE, R.OPERATOR, R.AUDITOR}),
    Action.READ_EVENTS: frozenset({R.CONTACT_CENTRE, R.OPERATOR, R.AUDITOR}),
    Action.WRITE_CONSENTS: frozenset({R.INGEST, R.OPERATOR, R.CONTACT_CENTRE}),
    Action.GET_NEXT_BEST_ACTIONS: frozenset({R.APP, R.CONTACT_CENTRE, R.OPERATOR}),
    Action.CREATE_DECISION: frozenset({R.OPERATOR, R.CONTACT_CENTRE}),
    Action.SEND_MESSAGE: frozenset({R.OPERATOR, R.CONTACT_CENTRE}),
    # In-app surfaces report impressions and clicks; the contact centre logs the customer's answer.
    Action.RECORD_OUTCOME: frozenset({R.APP, R.CONTACT_CENTRE, R.OPERATOR}),
    Action.READ_OFFERS: frozenset({R.OPERATOR}),
    Action.WRITE_OFFERS: frozenset({R.OPERATOR}),
    Action.READ_AUDIT: frozenset({R.AUDITOR, R.OPERATOR}),
    Action.VERIFY_AUDIT: frozenset({R.AUDITOR, R.OPERATOR}),
    Action.READ_POLICIES: frozenset({R.OPERATOR}),
    Action.WRITE_POLICIES: frozenset({R.OPERATOR}),
    # Signing is a write to the log: admin only (admin is implicitly allowed everything).
    Action.CREATE_AUDIT_CHECKPOINT: frozenset(),
    Action.READ_PROFILE_SETTINGS: frozenset({R.OPERATOR, R.AUDITOR}),
    Action.WRITE_PROFILE_SETTINGS: frozenset({R.OPERATOR}),
    Action.READ_SEGMENTS: frozenset({R.OPERATOR, R.CONTACT_CENTRE, R.AUDITOR}),
    Action.WRITE_SEGMENTS: frozenset({R.OPERATOR}),
    # The DPO answers access requests with an auditor key; erasure changes data, so operator (or admin).
    Action.PRIVACY_ACCESS: frozenset({R.AUDITOR, R.OPERATOR}),
    Action.PRIVACY_ERASURE: frozenset({R.OPERATOR}),
    Action.READ_ANALYTICS: frozenset({R.OPERATOR}),
    Action.READ_JOURNEYS: frozenset({R.OPERATOR, R.AUDITOR}),
    Action.WRITE_JOURNEYS: frozenset({R.OPERATOR}),
}


def is_allowed(roles: Iterable[str], action: Action) -> bool:
    """Admin may do everything inside its own workspace; other roles only what the table grants."""
    held = set(roles)
    return Role.ADMIN in held or not held.isdisjoint(ALLOWED[action])


def parse_roles(names: Iterable[str]) -> frozenset[Role]:
    """Raises ValueError naming the first unknown role."""
    roles: set[Role] = set()
    for name in names:
        cleaned = name.strip().lower()
        try:
            roles.add(Role(cleaned))
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise ValueError(f"unknown role {name!r}; expected one of {known}") from None
    return frozenset(roles)
