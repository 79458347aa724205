import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
from retain_profile.domain.features import EventFact, Summary, compute_features, features_at, summarize

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def order(days: float, revenue: float | None = None, **props: object) -> EventFact:
    properties = dict(props)
    if revenue is not None:
        properties["revenue"] = revenue
    return EventFact("track", "Order Completed", ago(days), properties)


def track(name: str, days: float, **props: object) -> EventFact:
    return EventFact("track", name, ago(days), props)


def test_rfm_and_windows_from_orders() -> None:
    events = [order(100, 1000), order(50, 2000), order(20, 300), EventFact("track", "Order Completed", ago(5),
              {"total": "1,200"}), track("Signed Up", 200)]
    f = compute_features(events, NOW)
    assert f.frequency == 4
    assert f.monetary_total == pytest.approx(4500)
    assert f.average_order_value == pytest.approx(1125)
    assert f.recency_days == pytest.approx(5)
    assert f.tenure_days == pytest.approx(200)
    assert (f.orders_30d, f.spend_30d) == (2, pytest.approx(1500))
    assert (f.orders_90d, f.spend_90d) == (3, pytest.approx(3500))
    assert f.first_order_at == ago(100) and f.last_order_at == ago(5)


def test_btyd_inputs_count_distinct_order_days() -> None:
    first = datetime(2026, 1, 1, 9, tzinfo=UTC)
    events = [
        EventFact("track", "Order Completed", first, {"revenue": 10}),
        EventFact("track", "Order Completed", first + timedelta(hours=3), {"revenue": 10}),
        EventFact("track", "Order Completed", first + timedelta(days=14), {"revenue": 10}),
    ]
    f = compute_features(events, first + timedelta(days=28))
    assert f.repeat_transactions == 1
    assert f.recency_weeks == pytest.approx(2.0)
    assert f.age_weeks == pytest.approx(4.0)


def test_no_orders_means_zero_btyd_and_recency_from_last_activity() -> None:
    f = compute_features([track("App Opened", 40), track("App Opened", 10)], NOW)
    assert (f.frequency, f.repeat_transactions, f.age_weeks) == (0, 0, 0.0)
    assert f.recency_days == pytest.approx(10)
    assert "prospect" in f.segments


def test_activity_level_and_change() -> None:
    recent = [track("App Opened", d) for d in (1, 2, 3, 4, 5, 6, 7, 8)]
    earlier = [track("App Opened", d) for d in (30, 31, 32, 33)]
    f = compute_features(recent + earlier, NOW)
    assert f.activity_level == pytest.approx(8 / 4)
    assert f.activity_change == pytest.approx(8 / 4 - 1)
    quiet = compute_features(earlier, NOW)
    assert quiet.activity_level == 0 and quiet.activity_change == pytest.approx(-1.0)
    assert "declining" in quiet.segments


def test_identify_calls_are_not_activity() -> None:
    f = compute_features([EventFact("identify", "", ago(1), {})], NOW)
    assert f.activity_level == 0
    assert f.last_seen == ago(1)


def test_category_affinity_from_views_and_order_products() -> None:
    events = [
        track("Product Viewed", 3, category="Shoes"),
        track("Product Viewed", 2, category="shoes"),
        track("Order Completed", 1, revenue=10, products=[{"category": "Bags"}, {"category": "Shoes"}]),
        track("Product Added", 1, category="Hats"),
    ]
    affinity = compute_features(events, NOW).category_affinity
    assert affinity == {"bags": pytest.approx(0.25), "shoes": pytest.approx(0.75)}


@pytest.mark.parametrize(
    ("feedback", "expected"),
    [
        ([{"score": 1}, {"score": 2}], 2),
        ([{"score": 1}, {"score": 5}, {"sentiment": "negative"}], 1),
        ([{"score": 1}, {"score": 3}, {"score": 2}], 2),
        ([{"score": 1}, {"sentiment": "positive"}], 0),
        ([], 0),
    ],
)
def test_negative_feedback_streak(feedback: list[dict[str, object]], expected: int) -> None:
    events = [track("Feedback Submitted", 10 - i, **props) for i, props in enumerate(feedback)]
    assert compute_features(events, NOW).negative_feedback_streak == expected


def test_open_tickets_never_negative() -> None:
    events = [track("Ticket Opened", 5), track("Ticket Opened", 4), track("Ticket Resolved", 3)]
    assert compute_features(events, NOW).open_tickets == 1
    assert compute_features([track("Ticket Resolved", 1)], NOW).open_tickets == 0


@pytest.mark.parametrize(
    ("events", "stage"),
    [
        ([track("Signed Up", 5)], "new"),
        ([order(10, 100)], "new"),
        ([order(100, 100), order(40, 100)], "active"),
        ([order(80, 100), order(75, 100), order(70, 100), order(65, 100), order(40, 100)], "at_risk"),
        ([order(80, 100), order(75, 100), order(70, 100), order(65, 100), order(60, 100), order(15, 100)], "active"),
        ([order(70, 100)], "at_risk"),
        ([order(150, 100)], "lapsed"),
        ([order(400, 100)], "churned"),
        ([order(90, 100), order(10, 100), track("Subscription Cancelled", 2)], "churned"),
        ([order(400, 100), order(10, 100)], "reactivated"),
        ([order(100, 100), track("Subscription Cancelled", 60), order(10, 100)], "reactivated"),
        ([track("App Opened", 200), track("App Opened", 100)], "at_risk"),
        ([track("App Opened", 200), track("App Opened", 3)], "active"),
    ],
)
def test_lifecycle_stage(events: list[EventFact], stage: str) -> None:
    assert compute_features(events, NOW).lifecycle_stage == stage


def test_segments_follow_rules() -> None:
    rich = compute_features([order(200, 3000), order(150, 3000)], NOW)
    assert {"high_value", "repeat_buyer", "valuable_at_risk", "winback"} <= set(rich.segments)
    assert "vip" not in rich.segments
    vip = compute_features([order(d, 10) for d in range(1, 11)], NOW)
    assert "vip" in vip.segments and "high_value" not in vip.segments


def mixed_history() -> list[EventFact]:
    return [
        track("Signed Up", 300),
        order(250, 500, category="Beauty"),
        track("Feedback Submitted", 240, score=1),
        track("Feedback Submitted", 200, score=5),
        track("Product Viewed", 100, category="Shoes"),
        order(95, 1200, products=[{"category": "Shoes"}]),
        track("Ticket Opened", 60),
        track("Feedback Submitted", 50, sentiment="negative"),
        track("Feedback Submitted", 45, score=2),
        track("Ticket Resolved", 40),
        EventFact("page", "", ago(20), {}),
        order(15, 800),
        track("Feedback Submitted", 12, score=3),
        EventFact("screen", "", ago(2), {}),
    ]


def test_out_of_order_arrival_gives_identical_features() -> None:
    history = mixed_history()
    expected = compute_features(history, NOW)
    rng = random.Random(7)
    for _ in range(25):
        shuffled = history[:]
        rng.shuffle(shuffled)
        assert compute_features(shuffled, NOW) == expected
    assert expected.negative_feedback_streak == 2


def test_incremental_summary_survives_storage_round_trip() -> None:
    history = mixed_history()
    summary = Summary()
    for fact in reversed(history):
        summary = Summary.from_json(summary.to_json())
        summary.add(fact)
    assert features_at(summary, NOW) == compute_features(history, NOW)


def test_late_feedback_before_last_positive_does_not_change_streak() -> None:
    for arrival in itertools.permutations([
        track("Feedback Submitted", 10, score=5),
        track("Feedback Submitted", 20, score=1),
        track("Feedback Submitted", 5, score=1),
    ]):
        assert features_at(summarize(arrival), NOW).negative_feedback_streak == 1


def test_point_in_time_ignores_later_events() -> None:
    history = mixed_history()
    as_of = ago(100)
    past = compute_features(history, as_of)
    assert past.frequency == 1 and past.as_of == as_of
    assert past.recency_days == pytest.approx(150)
    assert compute_features([e for e in history if e.timestamp <= as_of], as_of) == past
