from datetime import UTC, datetime, timedelta

import pytest
from retain_profile.domain.identity import (
    CustomerRef,
    Identifier,
    IdentifierError,
    choose_survivor,
    combine_traits,
    event_identifiers,
    lookup_candidates,
    merge_traits,
    normalise_email,
    normalise_phone,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_email_is_trimmed_and_lower_cased() -> None:
    assert normalise_email("  Somchai@Example.CO.TH ") == "somchai@example.co.th"
    with pytest.raises(ValueError):
        normalise_email("not-an-email")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("081-234-5678", "+66812345678"),
        ("0812345678", "+66812345678"),
        ("+66 81 234 5678", "+66812345678"),
        ("0066812345678", "+66812345678"),
        ("66812345678", "+66812345678"),
        ("(02) 123 4567", "+6621234567"),
        ("+1 (415) 555-0100", "+14155550100"),
    ],
)
def test_phone_numbers_become_e164(raw: str, expected: str) -> None:
    assert normalise_phone(raw) == expected


def test_local_numbers_use_the_configured_country_code() -> None:
    assert normalise_phone("0912345678", country_code="84") == "+84912345678"


@pytest.mark.parametrize("raw", ["12", "hello", "+0812345678", "+66 81 234 5678 9999 99"])
def test_invalid_phone_numbers_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        normalise_phone(raw)


def test_event_identifiers_collects_every_source() -> None:
    found = event_identifiers(
        user_id="u1",
        anonymous_id="a1",
        traits={"email": "A@X.COM", "phone": "0812345678"},
        context={"line_user_id": "U123", "device": {"token": "tok"}, "traits": {"email": "a@x.com"}},
    )
    assert found == sorted(
        {
            Identifier("user_id", "u1"),
            Identifier("anonymous_id", "a1"),
            Identifier("email", "a@x.com"),
            Identifier("phone", "+66812345678"),
            Identifier("line_user_id", "U123"),
            Identifier("device_token", "tok"),
        }
    )


def test_bad_identifier_names_its_field() -> None:
    with pytest.raises(IdentifierError) as err:
        event_identifiers(user_id="u1", anonymous_id="", traits={}, context={"traits": {"phone": "abc"}})
    assert err.value.field == "context.traits.phone"


def test_lookup_candidates_try_user_id_first() -> None:
    kinds = [c.kind for c in lookup_candidates("0812345678")]
    assert kinds[0] == "user_id" and "phone" in kinds and "email" not in kinds
    email = [c for c in lookup_candidates(" Ann@X.com") if c.kind == "email"]
    assert email == [Identifier("email", "ann@x.com")]


def test_oldest_customer_survives_and_ties_break_by_id() -> None:
    old = CustomerRef("cus_b", T0)
    young = CustomerRef("cus_a", T0 + timedelta(days=1))
    assert choose_survivor([young, old]) == old
    twin = CustomerRef("cus_a", T0)
    assert choose_survivor([old, twin]) == twin


def test_newer_trait_wins_and_older_does_not_roll_back() -> None:
    traits, times = merge_traits({}, {}, {"name": "Ann", "tier": "gold"}, at=T0 + timedelta(days=2))
    traits, times = merge_traits(traits, times, {"name": "Old Ann", "city": "BKK"}, at=T0)
    assert traits == {"name": "Ann", "tier": "gold", "city": "BKK"}
    traits, times = merge_traits(traits, times, {"tier": "platinum"}, at=T0 + timedelta(days=3))
    assert traits["tier"] == "platinum"


def test_combined_traits_take_the_most_recent_value() -> None:
    survivor = merge_traits({}, {}, {"name": "A", "tier": "gold"}, at=T0 + timedelta(days=5))
    other = merge_traits({}, {}, {"name": "B", "locale": "en"}, at=T0 + timedelta(days=9))
    traits, _ = combine_traits(survivor, other)
    assert traits == {"name": "B", "tier": "gold", "locale": "en"}
