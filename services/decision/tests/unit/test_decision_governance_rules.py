"""Pure governance: windows in the customer's zone, quiet hours, holdouts, caps, declines, load."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from retain_decision.domain import policies
from retain_decision.domain.pipeline import CustomerContext, Request, decide
from retain_decision.domain.policies import CapLimit, GovernancePolicy, OfferRule, PolicyError, QuietHours
from test_pipeline import offer

# 02:30 UTC on Monday 3 March 2025 is 09:30 in Bangkok.
NOW = datetime(2025, 3, 3, 2, 30, tzinfo=UTC)


def ctx(**kw: object) -> CustomerContext:
    base = CustomerContext(
        customer_id="cus_1",
        workspace_id="ws",
        consents={("email", "marketing"): "granted", ("sms", "marketing"): "granted"},
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def counts_for(policy: GovernancePolicy, channel: str, n: int, *, offer_id: str = "a") -> dict[str, int]:
    tz = policies.zone("", policy.default_time_zone)
    return {
        c.key: n
        for c in policies.counters_for(
            policy, workspace_id="ws", customer_id="cus_1", channel=channel, offer_id=offer_id, now=NOW, tz=tz
        )
    }


def test_day_and_week_windows_follow_the_customer_zone() -> None:
    late = datetime(2025, 3, 2, 18, 0, tzinfo=UTC)  # Sunday 18:00 UTC = Monday 01:00 in Bangkok
    bkk, ny = policies.zone("Asia/Bangkok"), policies.zone("America/New_York")
    assert policies.day_window(late, bkk).label == "d2025-03-03"
    assert policies.day_window(late, ny).label == "d2025-03-02"
    assert policies.week_window(late, bkk).label == "w2025-W10"
    assert policies.week_window(late, ny).label == "w2025-W09"
    assert policies.day_window(late, bkk).ends_at == datetime(2025, 3, 3, 17, 0, tzinfo=UTC)
    assert policies.zone("Not/AZone").key == "Asia/Bangkok"


def test_quiet_hours_wrap_midnight() -> None:
    bkk = policies.zone("Asia/Bangkok")
    night = QuietHours("21:00", "08:00")
    at_2230 = datetime(2025, 3, 3, 15, 30, tzinfo=UTC)
    assert policies.quiet_until(at_2230, night, bkk) == datetime(2025, 3, 4, 1, 0, tzinfo=UTC)
    at_0700 = datetime(2025, 3, 3, 0, 0, tzinfo=UTC)
    assert policies.quiet_until(at_0700, night, bkk) == datetime(2025, 3, 3, 1, 0, tzinfo=UTC)
    assert policies.quiet_until(NOW, night, bkk) is None
    assert policies.quiet_until(NOW, QuietHours("09:00", "10:00"), bkk) == datetime(2025, 3, 3, 3, 0, tzinfo=UTC)


def test_holdout_assignment_is_stable_and_near_its_share() -> None:
    policy = GovernancePolicy(control_group_share=0.2, holdout_salt="salt")
    members = [policies.holdout(policy, f"cus_{i}") for i in range(5000)]
    assert members == [policies.holdout(policy, f"cus_{i}") for i in range(5000)]
    assert 0.17 < sum(1 for m in members if m) / 5000 < 0.23
    reshuffled = replace(policy, holdout_salt="other")
    assert members != [policies.holdout(reshuffled, f"cus_{i}") for i in range(5000)]


def test_holdout_suppresses_marketing_but_not_service() -> None:
    policy = GovernancePolicy(control_group_share=0.999)
    result = decide(ctx(), [offer("m"), offer("s", purpose="service")], Request(channels=("email",), limit=5),
                    now=NOW, policy=policy)
    assert {s.offer_id: s.rule for s in result.suppressed} == {"m": "holdout", "s": "no_consent"}
    journey = GovernancePolicy(journey_holdouts={"j1": 0.999})
    free = decide(ctx(), [offer("m")], Request(channels=("email",)), now=NOW, policy=journey)
    held = decide(ctx(), [offer("m")], Request(channels=("email",), journey_id="j1"), now=NOW, policy=journey)
    assert free.actions and [s.rule for s in held.suppressed] == ["holdout"]


def test_caps_drop_the_capped_channel_then_the_candidate() -> None:
    policy = GovernancePolicy(channel_caps={"email": CapLimit(per_day=2)})
    result = decide(ctx(counts=counts_for(policy, "email", 2)), [offer("a")], Request(), now=NOW, policy=policy)
    assert result.actions[0].channel == "sms"  # email is at its cap, sms is still open
    only_email = decide(ctx(counts=counts_for(policy, "email", 2)), [offer("a")], Request(channels=("email",)),
                        now=NOW, policy=policy)
    assert [(s.rule, "2/day" in s.detail) for s in only_email.suppressed] == [("frequency_cap", True)]
    offer_capped = replace(policy, offer_rules={"a": OfferRule("a", per_day=1)})
    result = decide(ctx(counts=counts_for(offer_capped, "sms", 1)), [offer("a")], Request(channels=("sms",)),
                    now=NOW, policy=offer_capped)
    assert [s.rule for s in result.suppressed] == ["offer_cap"]


def test_quiet_hours_drop_or_hold() -> None:
    at_night = datetime(2025, 3, 3, 15, 30, tzinfo=UTC)
    drop = GovernancePolicy(quiet_hours=QuietHours("21:00", "08:00", "drop"))
    result = decide(ctx(), [offer("a")], Request(channels=("email",)), now=at_night, policy=drop)
    assert [s.rule for s in result.suppressed] == ["quiet_hours"]
    hold = replace(drop, quiet_hours=QuietHours("21:00", "08:00", "hold"))
    (action,) = decide(ctx(), [offer("a")], Request(channels=("email",)), now=at_night, policy=hold).actions
    assert action.deliver_after == datetime(2025, 3, 4, 1, 0, tzinfo=UTC)
    # An in-app placement is not a message: quiet hours do not apply.
    (shown,) = decide(ctx(), [offer("a")], Request(placement="home"), now=at_night, policy=drop).actions
    assert shown.deliver_after is None and shown.counters == ()


def test_declines_within_the_window_suppress() -> None:
    policy = GovernancePolicy(offer_rules={"a": OfferRule("a", decline_limit=2, decline_window_days=7)})
    recent = {"a": [NOW - timedelta(days=1), NOW - timedelta(days=2)]}
    old = {"a": [NOW - timedelta(days=1), NOW - timedelta(days=30)]}
    assert [s.rule for s in decide(ctx(declines=recent), [offer("a")], Request(), now=NOW,
                                   policy=policy).suppressed] == ["declined"]
    assert decide(ctx(declines=old), [offer("a")], Request(), now=NOW, policy=policy).actions


def test_recent_sends_raise_contact_cost() -> None:
    policy = GovernancePolicy(load_weight=0.5)
    key = policies.load_key(workspace_id="ws", customer_id="cus_1", now=NOW, tz=policies.zone(""))
    calm = decide(ctx(), [offer("a")], Request(channels=("sms",)), now=NOW, policy=policy).actions[0]
    busy = decide(ctx(counts={key: 4}), [offer("a")], Request(channels=("sms",)), now=NOW, policy=policy).actions[0]
    assert busy.score.contact_cost == pytest.approx(calm.score.contact_cost * 3)  # 1 + 0.5 x 4


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"quiet_hours": QuietHours("9:00", "10:00")}, "policy.quiet_hours.start"),
        ({"quiet_hours": QuietHours("09:00", "10:00", "later")}, "policy.quiet_hours.mode"),
        ({"control_group_share": 1.0}, "policy.control_group_share"),
        ({"channel_caps": {"fax": CapLimit(1)}}, "policy.channel_caps"),
        ({"global_cap": CapLimit(per_week=-1)}, "policy.global_cap.per_week"),
        ({"default_time_zone": "Nowhere/Town"}, "policy.default_time_zone"),
        ({"journey_holdouts": {"j": 2.0}}, "policy.journey_holdouts"),
    ],
)
def test_validation_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(PolicyError) as err:
        policies.validate(replace(GovernancePolicy(), **change))  # type: ignore[arg-type]
    assert err.value.field == field


def test_round_trip() -> None:
    policy = policies.validate(
        GovernancePolicy(
            channel_caps={"sms": CapLimit(1, 3)}, global_cap=CapLimit(per_week=5),
            quiet_hours=QuietHours("21:00", "08:00", "drop"), journey_holdouts={"welcome": 0.1},
            offer_rules={"a": OfferRule("a", per_day=1, decline_limit=3, decline_window_days=14)},
        )
    )
    assert policies.from_dict(policies.to_dict(policy)) == policy
