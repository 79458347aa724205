import asyncio
from datetime import date
from pathlib import Path

import grpc
import numpy as np
import pytest
from retain.profile.v1 import profile_pb2
from retain.scoring.v1 import scoring_pb2, scoring_pb2_grpc
from retain_kit.db import session_factory
from retain_kit.grpcserver import Registration
from retain_kit.testing import DbTarget
from retain_scoring.app import SERVICE_NAME
from retain_scoring.bento_service import in_process
from retain_scoring.data.cdnow import Summary
from retain_scoring.domain.offers import BetaPrior
from retain_scoring.domain.scores import ValuePolicy
from retain_scoring.profile_client import ProfileFeatures
from retain_scoring.server import ScoringServicer
from retain_scoring.service import CustomerScorer, OfferPropensities
from retain_scoring.store import CDNOW_BGNBD, PRIOR_SOURCE, ModelRegistry, fit_and_save_btyd

SERVICE_DIR = Path(__file__).resolve().parents[2]
WS = "ws_test"


@pytest.fixture
async def stub(db_target: DbTarget, grpc_serve, tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = await db_target.migrate(SERVICE_DIR)
    registry = ModelRegistry(tmp_path / "bentoml")
    models = in_process(registry, ValuePolicy())
    # Nothing listens here: these tests pass features, so profile must never be called.
    profile = grpc.aio.insecure_channel("127.0.0.1:9")
    customers = CustomerScorer(models, ProfileFeatures(profile, timeout=1.0), refresh_seconds=0.0)
    offers = OfferPropensities(session_factory(engine), prior=BetaPrior(1, 9), counts_cache_seconds=3600)
    servicer = ScoringServicer(customers, offers)
    target = await grpc_serve(
        [Registration(servicer, scoring_pb2_grpc.add_ScoringServiceServicer_to_server, SERVICE_NAME)]
    )
    async with grpc.aio.insecure_channel(target) as channel:
        yield scoring_pb2_grpc.ScoringServiceStub(channel), registry
    await profile.close()


def customer(cid: str, *, x: int, t_x: float, age: float, aov: float) -> scoring_pb2.CustomerInput:
    return scoring_pb2.CustomerInput(
        customer_id=cid,
        features=profile_pb2.Features(
            repeat_transactions=x, recency_weeks=t_x, age_weeks=age, average_order_value=aov,
            frequency=x + 1 if age else 0,
        ),
    )


async def test_score_customers_from_given_features(stub) -> None:  # type: ignore[no-untyped-def]
    client, registry = stub
    model = registry.load_btyd()
    assert model.source == PRIOR_SOURCE and model.bgnbd == CDNOW_BGNBD
    response = await client.ScoreCustomers(
        scoring_pb2.ScoreCustomersRequest(
            workspace_id=WS,
            customers=[
                customer("recent", x=4, t_x=35.0, age=38.0, aov=50.0),
                customer("quiet", x=4, t_x=8.0, age=38.0, aov=50.0),
                customer("nobody", x=0, t_x=0.0, age=0.0, aov=0.0),
            ],
        )
    )
    recent, quiet, nobody = response.scores
    assert [s.customer_id for s in response.scores] == ["recent", "quiet", "nobody"]
    assert recent.horizon_days == 90 and recent.scored_at.seconds > 0
    for s in response.scores:
        for score in (s.churn_risk, s.p_alive, s.expected_purchases, s.expected_value, s.clv, s.value_at_risk):
            assert (score.model.name, score.model.version) == ("retain-btyd", model.ref.version)
        assert s.churn_risk.value == pytest.approx(1 - s.p_alive.value)
    assert recent.p_alive.value > 0.75 and quiet.p_alive.value < 0.5
    assert quiet.value_at_risk.value > recent.value_at_risk.value
    assert recent.expected_purchases.value > quiet.expected_purchases.value
    assert nobody.p_alive.value == 1.0 and nobody.expected_value.value > 0
    longer = await client.ScoreCustomers(
        scoring_pb2.ScoreCustomersRequest(
            workspace_id=WS, customers=[customer("recent", x=4, t_x=35.0, age=38.0, aov=50.0)], horizon_days=365
        )
    )
    assert longer.scores[0].horizon_days == 365
    assert longer.scores[0].expected_purchases.value > recent.expected_purchases.value


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (scoring_pb2.ScoreCustomersRequest(customers=[customer("c", x=1, t_x=1, age=2, aov=1)]), "workspace_id"),
        (scoring_pb2.ScoreCustomersRequest(workspace_id=WS), "customers"),
        (
            scoring_pb2.ScoreCustomersRequest(
                workspace_id=WS,
                customers=[customer("ok", x=1, t_x=1, age=2, aov=1), customer("bad", x=1, t_x=5, age=2, aov=1)],
            ),
            "customers[1].features.recency_weeks",
        ),
        (
            scoring_pb2.ScoreCustomersRequest(
                workspace_id=WS, customers=[customer("c", x=1, t_x=1, age=2, aov=1)], horizon_days=-1
            ),
            "horizon_days",
        ),
        (
            scoring_pb2.ScoreCustomersRequest(workspace_id=WS, customers=[customer("", x=1, t_x=1, age=2, aov=1)]),
            "customers[0].customer_id",
        ),
    ],
)
async def test_score_customers_rejects_bad_input(stub, request_, field) -> None:  # type: ignore[no-untyped-def]
    client, _ = stub
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.ScoreCustomers(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.value.trailing_metadata() or ())["retain-field"] == field


async def test_profile_unreachable_is_unavailable(stub) -> None:  # type: ignore[no-untyped-def]
    client, _ = stub
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.ScoreCustomers(
            scoring_pb2.ScoreCustomersRequest(workspace_id=WS, customers=[scoring_pb2.CustomerInput(customer_id="c")])
        )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(err.value.trailing_metadata() or ())["retain-field"] == "customers[0].customer_id"


async def test_saved_fit_is_listed_and_used(stub) -> None:  # type: ignore[no-untyped-def]
    client, registry = stub
    before = await client.ListModels(scoring_pb2.ListModelsRequest())
    kinds = {m.kind: m for m in before.models}
    assert kinds["btyd"].source == PRIOR_SOURCE and kinds["btyd"].parameters["bgnbd.r"] == pytest.approx(0.243)
    assert kinds["btyd"].metrics["log_likelihood"] == pytest.approx(-9582.4)
    assert kinds["beta_binomial"].parameters["prior_beta"] == 9.0

    rng = np.random.default_rng(5)
    n = 400
    x = rng.poisson(2.0, n).astype(float)
    T = rng.uniform(20, 40, n)
    t_x = np.where(x > 0, T * rng.uniform(0.2, 1.0, n), 0.0)
    monetary = np.where(x > 0, rng.gamma(4.0, 10.0, n), 0.0)
    summary = Summary([str(i) for i in range(n)], x, t_x, T, monetary, calibration_end=date(2026, 1, 1))
    ref = fit_and_save_btyd(summary, registry=registry, source="fit:test")

    after = await client.ListModels(scoring_pb2.ListModelsRequest())
    btyd = [m for m in after.models if m.kind == "btyd"]
    assert [m.model.version for m in btyd][0] == ref.version and len(btyd) == 2
    assert btyd[0].source == "fit:test" and btyd[0].metrics["customers"] == n
    scored = await client.ScoreCustomers(
        scoring_pb2.ScoreCustomersRequest(workspace_id=WS, customers=[customer("c", x=2, t_x=10, age=30, aov=20)])
    )
    assert scored.scores[0].clv.model.version == ref.version


def outcome(offer: str, kind: int, decision: str = "") -> scoring_pb2.RecordOutcomeRequest:
    return scoring_pb2.RecordOutcomeRequest(
        workspace_id=WS, customer_id="cus_1", offer_id=offer, outcome=kind, decision_id=decision
    )


async def test_offer_propensity_learns_from_outcomes(stub) -> None:  # type: ignore[no-untyped-def]
    client, _ = stub
    fresh = await client.ScoreOffers(
        scoring_pb2.ScoreOffersRequest(workspace_id=WS, customer_id="c", offer_ids=["a", "b"])
    )
    assert [o.propensity.value for o in fresh.offers] == pytest.approx([0.1, 0.1])
    assert fresh.offers[0].propensity.model.name == "retain-offer-beta" and fresh.customer_id == "c"

    for i in range(8):
        await client.RecordOutcome(outcome("a", scoring_pb2.OUTCOME_IMPRESSION, f"dec_{i}"))
    for i in range(4):
        await client.RecordOutcome(outcome("a", scoring_pb2.OUTCOME_ACCEPT, f"dec_{i}"))
    # An accept without a logged impression implies one; an impression arriving after it is not counted again.
    await client.RecordOutcome(outcome("a", scoring_pb2.OUTCOME_ACCEPT, "dec_late"))
    late = await client.RecordOutcome(outcome("a", scoring_pb2.OUTCOME_IMPRESSION, "dec_late"))
    assert (late.offer.impressions, late.offer.accepts) == (9, 5)
    declined = await client.RecordOutcome(outcome("b", scoring_pb2.OUTCOME_DECLINE, "dec_9"))
    assert (declined.offer.impressions, declined.offer.accepts) == (0, 0)

    scored = await client.ScoreOffers(scoring_pb2.ScoreOffersRequest(workspace_id=WS, offer_ids=["a", "b"]))
    a, b = scored.offers
    assert a.propensity.value == pytest.approx((1 + 5) / (10 + 9))
    assert b.propensity.value == pytest.approx(0.1)
    other = await client.ScoreOffers(scoring_pb2.ScoreOffersRequest(workspace_id="ws_other", offer_ids=["a"]))
    assert other.offers[0].accepts == 0
    custom = await client.ScoreOffers(
        scoring_pb2.ScoreOffersRequest(workspace_id=WS, offer_ids=["a"], prior_alpha=2, prior_beta=2)
    )
    assert custom.offers[0].propensity.value == pytest.approx((2 + 5) / (4 + 9))


async def test_record_outcome_is_idempotent_per_decision(stub) -> None:  # type: ignore[no-untyped-def]
    client, _ = stub
    first = await client.RecordOutcome(outcome("o", scoring_pb2.OUTCOME_ACCEPT, "dec_1"))
    again = await client.RecordOutcome(outcome("o", scoring_pb2.OUTCOME_ACCEPT, "dec_1"))
    assert not first.duplicate and again.duplicate
    assert (again.offer.impressions, again.offer.accepts) == (1, 1)
    # Without a decision id nothing identifies a retry: each call counts.
    await client.RecordOutcome(outcome("o", scoring_pb2.OUTCOME_IMPRESSION))
    await client.RecordOutcome(outcome("o", scoring_pb2.OUTCOME_IMPRESSION))
    latest = await client.RecordOutcome(outcome("o", scoring_pb2.OUTCOME_ACCEPT))
    assert (latest.offer.impressions, latest.offer.accepts) == (3, 2)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (outcome("", scoring_pb2.OUTCOME_ACCEPT), "offer_id"),
        (outcome("o", scoring_pb2.OUTCOME_UNSPECIFIED), "outcome"),
        (scoring_pb2.RecordOutcomeRequest(offer_id="o", outcome=scoring_pb2.OUTCOME_ACCEPT), "workspace_id"),
    ],
)
async def test_record_outcome_rejects_bad_input(stub, request_, field) -> None:  # type: ignore[no-untyped-def]
    client, _ = stub
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.RecordOutcome(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.value.trailing_metadata() or ())["retain-field"] == field


async def test_score_offers_rejects_half_a_prior(stub) -> None:  # type: ignore[no-untyped-def]
    client, _ = stub
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.ScoreOffers(scoring_pb2.ScoreOffersRequest(workspace_id=WS, offer_ids=["a"], prior_alpha=2))
    assert dict(err.value.trailing_metadata() or ())["retain-field"] == "prior_beta"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.ScoreOffers(scoring_pb2.ScoreOffersRequest(workspace_id=WS, offer_ids=[]))
    assert dict(err.value.trailing_metadata() or ())["retain-field"] == "offer_ids"


async def test_score_offers_can_carry_the_customers_scores(stub) -> None:  # type: ignore[no-untyped-def]
    client, _ = stub
    given = customer("c", x=4, t_x=35.0, age=38.0, aov=50.0)
    alone_response = await client.ScoreCustomers(scoring_pb2.ScoreCustomersRequest(workspace_id=WS, customers=[given]))
    alone = alone_response.scores[0]
    both = await client.ScoreOffers(scoring_pb2.ScoreOffersRequest(
        workspace_id=WS, customer_id="c", offer_ids=["a", "b"], features=given.features, include_customer_scores=True,
    ))
    assert [o.offer_id for o in both.offers] == ["a", "b"] and not both.customer_scores_unavailable
    carried = both.customer_scores
    assert carried.customer_id == "c" and carried.horizon_days == alone.horizon_days
    for name in ("churn_risk", "p_alive", "expected_purchases", "expected_value", "clv", "value_at_risk"):
        assert getattr(carried, name).value == pytest.approx(getattr(alone, name).value, rel=1e-12), name
        assert getattr(carried, name).model == getattr(alone, name).model
    # Not asked: not computed.
    plain = await client.ScoreOffers(scoring_pb2.ScoreOffersRequest(
        workspace_id=WS, customer_id="c", offer_ids=["a"], features=given.features,
    ))
    assert not plain.HasField("customer_scores")


async def test_offer_propensities_stand_when_the_customer_cannot_be_scored(stub) -> None:  # type: ignore[no-untyped-def]
    client, _ = stub
    # No features given and profile unreachable: the scores are missing and say why; the offers are answered.
    both = await client.ScoreOffers(scoring_pb2.ScoreOffersRequest(
        workspace_id=WS, customer_id="c", offer_ids=["a"], include_customer_scores=True,
    ))
    assert [o.offer_id for o in both.offers] == ["a"] and both.offers[0].propensity.value == pytest.approx(0.1)
    assert not both.HasField("customer_scores") and "profile" in both.customer_scores_unavailable


async def test_another_replicas_outcomes_show_once_its_counts_cache_expires(db_target: DbTarget) -> None:
    engine = await db_target.migrate(SERVICE_DIR)
    here = OfferPropensities(session_factory(engine), prior=BetaPrior(1, 9), counts_cache_seconds=0.2)
    there = OfferPropensities(session_factory(engine), prior=BetaPrior(1, 9), counts_cache_seconds=0.2)
    assert (await here.score(WS, ["a"]))[0].counts.accepts == 0  # cached here now
    await there.record(WS, offer_id="a", outcome="accept", customer_id="c", decision_id="dec_1", occurred_at=None)
    assert (await there.score(WS, ["a"]))[0].counts.accepts == 1  # the recording replica: at once
    assert (await here.score(WS, ["a"]))[0].counts.accepts == 0  # the other: its snapshot, until it expires
    await asyncio.sleep(0.3)
    assert (await here.score(WS, ["a"]))[0].counts.accepts == 1
