"""The CDNOW demo data: parsing, the time shift, and the generated signals."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta

import pytest
from retain_cli import cdnow

ROWS = [
    " 00004 0001 19970101  2   29.33",
    " 00004 0001 19970118  2   29.73",
    " 00004 0001 19970118  1   10.00",
    " 00021 0002 19970101  3   63.34",
    " 00021 0002 19980630  1    0.00",
]
TODAY = date(2026, 11, 23)


def test_read_converts_to_baht_and_numbers_repeat_rows() -> None:
    purchases = cdnow.read(ROWS)
    assert [p.customer_id for p in purchases] == ["cdnow-00004"] * 3 + ["cdnow-00021"] * 2
    assert purchases[0].amount == pytest.approx(29.33 * cdnow.USD_TO_THB)
    assert purchases[0].quantity == 2
    # Two rows of one customer on one day stay two purchases with distinct ids.
    assert [p.occurrence for p in purchases[1:3]] == [1, 2]


def test_read_rejects_other_layouts_naming_the_line() -> None:
    with pytest.raises(ValueError, match="line 2"):
        cdnow.read([ROWS[0], "customer 19970101 2 29.33"])


def test_shift_ends_a_few_days_before_today_and_keeps_gaps() -> None:
    original = cdnow.read(ROWS)
    shifted = cdnow.shift(original, today=TODAY)
    assert max(p.day for p in shifted) == TODAY - timedelta(days=cdnow.DAYS_BEFORE_TODAY)
    assert {b.day - a.day for a, b in zip(original, shifted, strict=True)} == {shifted[0].day - original[0].day}
    assert cdnow.shift([], today=TODAY) == []


def test_events_are_one_order_per_purchase_with_stable_ids() -> None:
    purchases = cdnow.shift(cdnow.read(ROWS), today=TODAY)
    events = cdnow.events(purchases, today=TODAY)
    orders = [e for e in events if e.get("event") == "Order Completed"]
    assert len(orders) == len(purchases)
    assert sum(o["properties"]["revenue"] for o in orders) == pytest.approx(sum(p.amount for p in purchases))
    assert all(o["properties"]["currency"] == "THB" for o in orders)
    assert len({e["messageId"] for e in events}) == len(events)
    # Loaded on another day, the same rows carry the same ids (so a re-load stores nothing new).
    later = cdnow.events(cdnow.shift(cdnow.read(ROWS), today=TODAY + timedelta(days=40)), today=TODAY)
    assert {e["messageId"] for e in later if e.get("event") == "Order Completed"} == {o["messageId"] for o in orders}
    # Nothing is dated in the future.
    end = datetime(TODAY.year, TODAY.month, TODAY.day).isoformat()
    assert all(e["timestamp"][:19] <= end for e in events)


def _population(n: int = 600) -> list[cdnow.Purchase]:
    rows = [f" {i:05d} 0001 199{7 + (i % 2)}0{1 + i % 6}15  1   {10 + i % 40}.00" for i in range(1, n + 1)]
    return cdnow.shift(cdnow.read(rows), today=TODAY)


def test_signals_cover_every_kind_for_a_subset() -> None:
    purchases = _population()
    events = cdnow.events(purchases, today=TODAY)
    kinds = Counter(e.get("event") or e["type"] for e in events)
    for kind in ("identify", "Feedback Submitted", "Ticket Opened", "Ticket Resolved", "App Opened"):
        assert 0 < kinds[kind] < len(purchases), kind
    orders = [e for e in events if e.get("event") == "Order Completed"]
    discounted = [o for o in orders if o["properties"].get("discount", 0) > 0]
    assert 0 < len(discounted) < len(orders)
    identities = [e for e in events if e["type"] == "identify"]
    assert all(e["traits"]["email"].endswith("@example.co.th") for e in identities)
    assert any("phone" in e["traits"] for e in identities)
    assert any(e["traits"].get("line_user_id", "").startswith("U") for e in identities)
    assert any(e["context"].get("device", {}).get("token") for e in identities)
    negative = [e for e in events if e.get("event") == "Feedback Submitted" and e["properties"]["score"] <= 2]
    assert negative


def test_consents_only_for_contactable_customers_on_their_channels() -> None:
    purchases = _population()
    events = cdnow.events(purchases, today=TODAY)
    contactable = {e["userId"]: e for e in events if e["type"] == "identify"}
    given = cdnow.consents(p.customer_id for p in purchases)
    assert 0 < len(given) < len(contactable)
    assert set(given) <= set(contactable)
    channels = Counter(c["channel"] for consents in given.values() for c in consents)
    assert set(channels) == {"email", "sms", "line", "push"}
    for user, consents in given.items():
        traits = contactable[user]["traits"]
        for c in consents:
            assert c["status"] == "granted" and c["purpose"] == "marketing"
            if c["channel"] == "sms":
                assert "phone" in traits
            if c["channel"] == "line":
                assert "line_user_id" in traits


def test_the_sample_file_when_present() -> None:
    path = cdnow.find_file()
    if path is None:
        pytest.skip("the CDNOW sample is not next to the repository")
    purchases = cdnow.read(path.read_text().splitlines())
    assert len(purchases) == 6919
    assert len({p.customer_id for p in purchases}) == 2357
    assert cdnow.last_customer(purchases) == max(p.customer_id for p in purchases)
