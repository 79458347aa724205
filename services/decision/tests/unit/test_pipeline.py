from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from retain_decision.domain.catalogue import default_offers
from retain_decision.domain.offers import Offer, Template, validate
from retain_decision.domain.pipeline import (
    CustomerContext,
    ModelRef,
    Propensity,
    Request,
    decide,
)

NOW = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
COSTS = {"in_app": 0.0, "email": 0.5, "push": 1.0, "line": 1.5, "sms": 3.0}


def offer(offer_id: str, **kw: object) -> Offer:
    base = Offer(
        offer_id=offer_id,
        name=offer_id,
        play_type="save",
        channels=("email", "sms", "in_app"),
        placements=("home",),
        purpose="marketing",
        value=1000.0,
        cost=100.0,
        prior_propensity=0.1,
        version=1,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def granted(*channels: str, purpose: str = "marketing") -> dict[tuple[str, str], str]:
    return {(c, purpose): "granted" for c in channels}


def ctx(**kw: object) -> CustomerContext:
    base = CustomerContext(
        customer_id="cus_1",
        features={"frequency": 3, "lifecycle_stage": "at_risk", "negative_feedback_streak": 0},
        scores={"churn_risk": 0.72, "value_at_risk": 1240.0},
        consents=granted("email", "sms"),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def rules(result: object) -> dict[str, str]:
    return {s.offer_id: s.rule for s in result.suppressed}  # type: ignore[attr-defined]


def test_expected_value_formula_and_breakdown() -> None:
    result = decide(ctx(), [offer("a", lever=1.5)], Request(channels=("email",)), now=NOW, costs=COSTS)
    (action,) = result.actions
    assert action.channel == "email"
    assert action.score.expected_value == pytest.approx(0.1 * (1000 * 1.5 - 100) - 0.5)
    assert (action.score.propensity, action.score.lever, action.score.contact_cost) == (0.1, 1.5, 0.5)
    assert action.score.model == ModelRef("offer_prior", "a@v1")
    assert "churn risk 0.72" in action.reason and "฿1,240" in action.reason and "save play" in action.reason


def test_model_propensity_beats_prior_and_orders_ranking() -> None:
    offers = [offer("low"), offer("high"), offer("mid")]
    props = {
        "low": Propensity(0.05, ModelRef("nbo", "3")),
        "high": Propensity(0.4, ModelRef("nbo", "3")),
        "mid": Propensity(0.2, ModelRef("nbo", "3")),
    }
    result = decide(ctx(propensities=props), offers, Request(channels=("email",), limit=5), now=NOW, costs=COSTS)
    assert [a.offer.offer_id for a in result.actions] == ["high", "mid", "low"]
    assert [a.rank for a in result.actions] == [1, 2, 3]
    assert result.actions[0].score.model == ModelRef("nbo", "3")


def test_no_consent_suppresses_and_denied_or_withdrawn_count_as_no() -> None:
    consents = {("email", "marketing"): "withdrawn", ("sms", "marketing"): "denied", ("email", "service"): "granted"}
    result = decide(ctx(consents=consents), [offer("a")], Request(), now=NOW, costs=COSTS)
    assert not result.actions
    assert rules(result) == {"a": "no_consent"}


def test_channel_choice_uses_only_consented_channels() -> None:
    result = decide(ctx(consents=granted("sms")), [offer("a")], Request(), now=NOW, costs=COSTS)
    assert result.actions[0].channel == "sms"
    result = decide(ctx(consents=granted("sms", "email")), [offer("a")], Request(), now=NOW, costs=COSTS)
    assert result.actions[0].channel == "email"  # cheaper contact


def test_in_app_placement_needs_no_contact_consent_but_must_fit_placement() -> None:
    offers = [offer("home_offer"), offer("checkout_offer", placements=("checkout",))]
    result = decide(ctx(consents={}), offers, Request(placement="home"), now=NOW, costs=COSTS)
    assert [(a.offer.offer_id, a.channel) for a in result.actions] == [("home_offer", "in_app")]
    assert rules(result) == {"checkout_offer": "placement"}


def test_conflict_group_keeps_the_higher_value_offer() -> None:
    offers = [
        offer("small", value=500.0, conflict_group="retention"),
        offer("big", value=2000.0, conflict_group="retention"),
        offer("other", value=300.0, conflict_group="growth"),
    ]
    result = decide(ctx(), offers, Request(channels=("email",), limit=5), now=NOW, costs=COSTS)
    assert [a.offer.offer_id for a in result.actions] == ["big", "other"]
    assert rules(result) == {"small": "conflict_group"}
    assert "big" in next(s.detail for s in result.suppressed if s.offer_id == "small")


def test_limit_drops_the_rest_with_rule_limit() -> None:
    offers = [offer(f"o{i}", value=1000.0 + i) for i in range(4)]
    result = decide(ctx(), offers, Request(channels=("email",), limit=2), now=NOW, costs=COSTS)
    assert [a.offer.offer_id for a in result.actions] == ["o3", "o2"]
    assert rules(result) == {"o1": "limit", "o0": "limit"}


def test_eligibility_validity_and_negative_value_rules() -> None:
    offers = [
        offer("not_eligible", eligibility="churn_risk > 0.9"),
        offer("missing_score", eligibility="p_alive < 0.5"),
        offer("expired", valid_until=NOW - timedelta(days=1)),
        offer("future", valid_from=NOW + timedelta(days=1)),
        offer("loss", value=10.0, cost=50.0),
        offer("ok", eligibility="churn_risk > 0.5 and frequency >= 2"),
    ]
    result = decide(ctx(), offers, Request(channels=("email",), limit=5), now=NOW, costs=COSTS)
    assert [a.offer.offer_id for a in result.actions] == ["ok"]
    assert rules(result) == {
        "not_eligible": "eligibility",
        "missing_score": "eligibility",
        "expired": "not_valid",
        "future": "not_valid",
        "loss": "below_zero_value",
    }


def test_message_load_raises_contact_cost() -> None:
    calm = decide(ctx(), [offer("a")], Request(channels=("sms",)), now=NOW, costs=COSTS).actions[0]
    busy = decide(ctx(message_load=2.0), [offer("a")], Request(channels=("sms",)), now=NOW, costs=COSTS).actions[0]
    assert busy.score.contact_cost == pytest.approx(3 * calm.score.contact_cost)
    assert busy.score.expected_value < calm.score.expected_value


def test_requested_channels_outside_the_offer_are_a_placement_miss() -> None:
    result = decide(ctx(consents=granted("line")), [offer("a")], Request(channels=("line",)), now=NOW, costs=COSTS)
    assert rules(result) == {"a": "placement"}


def test_demo_catalogue_is_valid_and_covers_the_plays() -> None:
    offers = [validate(o) for o in default_offers()]
    assert len({o.offer_id for o in offers}) == len(offers) >= 8
    plays = {o.play_type for o in offers}
    assert {"onboarding", "cross_sell", "save", "winback", "service_recovery", "replenishment", "engagement"} <= plays
    for o in offers:
        locales = {t.locale for t in o.templates}
        assert {"th", "en"} <= locales
        assert all("{{ first_name }}" in t.body for t in o.templates if t.channel == "email")


def test_demo_catalogue_gives_an_at_risk_customer_a_save_play_in_app() -> None:
    offers = [replace(o, version=1) for o in default_offers()]
    customer = ctx(
        features={"frequency": 5, "lifecycle_stage": "at_risk", "tenure_days": 400.0, "recency_days": 70.0,
                  "average_order_value": 650.0, "negative_feedback_streak": 0, "open_tickets": 0},
    )
    result = decide(customer, offers, Request(placement="home", limit=3), now=NOW, costs=COSTS)
    assert result.actions[0].offer.play_type == "save"
    retention = [a for a in result.actions if a.offer.conflict_group == "retention"]
    assert len(retention) == 1


def test_template_validation_requires_a_template_per_message_channel() -> None:
    from retain_decision.domain.offers import OfferError

    with pytest.raises(OfferError) as err:
        validate(offer("a", templates=(Template("email", "en", "s", "b"),)))
    assert err.value.field == "offer.templates"
    with pytest.raises(OfferError) as err:
        validate(offer("a", eligibility="__import__('os')"))
    assert err.value.field == "offer.eligibility"
