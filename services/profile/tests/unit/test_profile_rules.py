from datetime import UTC, datetime, timedelta

import pytest
from retain_profile.domain.consent import ConsentRecord, check, merge_states, normalise_purpose, supersedes
from retain_profile.domain.events import IncomingEvent, Rejection, ValidEvent, validate

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def consent(status: str, at: datetime, purpose: str = "marketing") -> ConsentRecord:
    return ConsentRecord("line", purpose, status, "app", "consent", "v1", at)


def test_no_record_is_not_allowed_for_any_purpose() -> None:
    for purpose in ("marketing", "service"):
        answer = check(None, channel="sms", purpose=purpose)
        assert not answer.allowed and "no consent recorded" in answer.reason


def test_only_granted_allows() -> None:
    assert check(consent("granted", NOW), channel="line", purpose="marketing").allowed
    for status in ("denied", "withdrawn"):
        answer = check(consent(status, NOW), channel="line", purpose="marketing")
        assert not answer.allowed and status in answer.reason


def test_older_change_does_not_supersede_newer_state() -> None:
    current = consent("withdrawn", NOW)
    assert not supersedes(NOW - timedelta(hours=1), current)
    assert supersedes(NOW, current) and supersedes(NOW, None)


def test_merged_consent_keeps_latest_statement_per_key() -> None:
    merged = merge_states(
        [consent("granted", NOW - timedelta(days=2)), consent("granted", NOW, "service")],
        [consent("withdrawn", NOW - timedelta(days=1)), consent("denied", NOW - timedelta(days=9), "service")],
    )
    assert {(r.purpose, r.status) for r in merged} == {("marketing", "withdrawn"), ("service", "granted")}


def test_purpose_must_be_a_simple_name() -> None:
    assert normalise_purpose(" Marketing ") == "marketing"
    with pytest.raises(ValueError):
        normalise_purpose("")
    with pytest.raises(ValueError):
        normalise_purpose("drop table; --")


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (IncomingEvent(message_id="", type="track", event="X", user_id="u"), "message_id"),
        (IncomingEvent(message_id="m", type="", event="X", user_id="u"), "type"),
        (IncomingEvent(message_id="m", type="track", event="X"), "user_id"),
        (IncomingEvent(message_id="m", type="track", event=" ", user_id="u"), "event"),
        (IncomingEvent(message_id="m", type="alias", user_id="u"), "previous_id"),
        (IncomingEvent(message_id="m", type="track", event="X", user_id="u",
                       timestamp=datetime(1970, 1, 2, tzinfo=UTC)), "timestamp"),
        (IncomingEvent(message_id="m", type="track", event="X", user_id="u",
                       timestamp=NOW + timedelta(days=3)), "timestamp"),
        (IncomingEvent(message_id="m", type="identify", user_id="u", traits={"email": "nope"}), "traits.email"),
    ],
)
def test_invalid_events_are_rejected_naming_the_field(event: IncomingEvent, field: str) -> None:
    result = validate(event, now=NOW)
    assert isinstance(result, Rejection) and result.field == field and result.error


def test_valid_event_gets_time_traits_and_identifiers() -> None:
    result = validate(
        IncomingEvent(message_id="m", type="track", event="X", anonymous_id="a",
                      context={"traits": {"email": "A@B.CO", "name": "x"}}),
        now=NOW,
    )
    assert isinstance(result, ValidEvent)
    assert result.timestamp == NOW
    assert {i.kind for i in result.identifiers} == {"anonymous_id", "email"}
    assert result.traits == {"email": "A@B.CO", "name": "x"}
