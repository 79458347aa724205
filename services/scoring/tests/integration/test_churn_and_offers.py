"""Churn model end to end (CDNOW evaluation, store, ScoreCustomers), `retain train`, segmented offers."""

import json
from datetime import UTC, date, datetime
from pathlib import Path

import grpc
import numpy as np
import pytest
from retain.profile.v1 import profile_pb2
from retain.scoring.v1 import scoring_pb2, scoring_pb2_grpc
from retain_kit.db import session_factory
from retain_kit.grpcserver import Registration
from retain_kit.testing import DbTarget
from retain_profile.domain.features import compute_features
from retain_scoring.app import SERVICE_NAME
from retain_scoring.bento_service import in_process
from retain_scoring.cli import churn_app, train_app
from retain_scoring.data.cdnow import Transaction
from retain_scoring.domain.churn import input_row
from retain_scoring.domain.offers import BetaPrior
from retain_scoring.domain.scores import ValuePolicy
from retain_scoring.profile_client import ProfileFeatures, features_from_proto
from retain_scoring.server import ScoringServicer
from retain_scoring.service import CustomerScorer, OfferPropensities
from retain_scoring.store import ModelRegistry
from retain_scoring.training import History, from_profile
from test_cli import write_cohort
from typer.testing import CliRunner

profile_server = pytest.importorskip("retain_profile.server")

SERVICE_DIR = Path(__file__).resolve().parents[2]
CDNOW = SERVICE_DIR.parents[1].parent / "shared" / "data" / "cdnow" / "cdnow_sample_2357cust.txt"
WS = "ws_test"


@pytest.fixture
async def stub(db_target: DbTarget, grpc_serve, tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = await db_target.migrate(SERVICE_DIR)
    registry = ModelRegistry(tmp_path / "bentoml")
    profile = grpc.aio.insecure_channel("127.0.0.1:9")
    customers = CustomerScorer(in_process(registry, ValuePolicy()), ProfileFeatures(profile, timeout=1.0),
                               refresh_seconds=0.0)
    # Cached as in the service: an outcome recorded here must still show in the next score at once.
    offers = OfferPropensities(session_factory(engine), prior=BetaPrior(1, 9), rng=np.random.default_rng(3),
                               counts_cache_seconds=3600)
    target = await grpc_serve([Registration(ScoringServicer(customers, offers),
                                            scoring_pb2_grpc.add_ScoringServiceServicer_to_server, SERVICE_NAME)])
    async with grpc.aio.insecure_channel(target) as channel:
        yield scoring_pb2_grpc.ScoringServiceStub(channel), registry, tmp_path / "bentoml"
    await profile.close()


def test_serving_rows_equal_training_rows() -> None:
    """Training reads profile's Features dataclass, serving its proto: both must give the same model row."""
    history = History.of([
        Transaction("a", date(2025, 1, 3), 30.0), Transaction("a", date(2025, 2, 9), 12.5),
        Transaction("a", date(2025, 2, 9), 7.5), Transaction("a", date(2025, 5, 1), 40.0),
    ])
    cutoff = date(2025, 6, 1)
    trained = history.features_at(["a"], cutoff)[0]
    served = features_from_proto(profile_server.features_to_proto(
        compute_features(history.events["a"], datetime(2025, 6, 1, tzinfo=UTC))))
    now = datetime(2025, 6, 1, tzinfo=UTC).timestamp()
    assert input_row(served, now=now, horizon_weeks=13) == pytest.approx(input_row(trained, now=now, horizon_weeks=13))
    assert served.lifecycle_stage == trained.lifecycle_stage
    later = input_row(served, now=now + 7 * 86400, horizon_weeks=13)
    assert later[2] == pytest.approx(trained.age_weeks + 1) and later[5] == pytest.approx(trained.recency_days + 7)
    assert from_profile(compute_features(history.events["a"], datetime(2025, 6, 1, tzinfo=UTC))) == trained


@pytest.fixture(scope="module")
def cdnow_churn(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:  # type: ignore[type-arg]
    """One evaluation shared by both database targets: training does not touch the database."""
    if not CDNOW.exists():
        pytest.skip("../shared CDNOW sample not present")
    home = tmp_path_factory.mktemp("cdnow") / "bentoml"
    result = CliRunner().invoke(churn_app, [
        "evaluate", "--transactions", str(CDNOW), "--format", "cdnow", "--cutoff", "1997-09-30",
        "--horizon-days", "273", "--json", "--bentoml-home", str(home),
    ])
    assert result.exit_code == 0, result.output
    return json.loads(result.output), home


async def test_cdnow_churn_beats_bgnbd_and_serves(stub, cdnow_churn) -> None:  # type: ignore[no-untyped-def]
    client, registry, _ = stub
    out, home = cdnow_churn
    evaluated = ModelRegistry(home).current_churn()
    assert evaluated.ref.version == out["model"]["version"]
    registry.save_churn(evaluated.classifier, evaluated.bgnbd, horizon_days=evaluated.horizon_days,
                        source=evaluated.source, metrics=evaluated.metrics)
    model, baseline = out["supervised"], out["bgnbd_expected_purchases"]
    assert model["customers"] == baseline["customers"] == 2357
    assert model["base_rate"] == pytest.approx(baseline["base_rate"]) and 0.6 < model["base_rate"] < 0.8
    for metric in ("roc_auc", "pr_auc", "top_decile_lift"):
        assert model[metric] >= baseline[metric], metric
    # Training never looked past the cutoff.
    assert all(s["cutoff"] < "1997-09-30" for s in out["training"]["snapshots"])
    saved = registry.current_churn()
    assert saved.metrics["roc_auc"] == model["roc_auc"]

    def customer(cid: str, *, orders: int, weeks_since_last: float, age: float) -> scoring_pb2.CustomerInput:
        return scoring_pb2.CustomerInput(customer_id=cid, features=profile_pb2.Features(
            frequency=orders, repeat_transactions=orders - 1, recency_weeks=age - weeks_since_last,
            age_weeks=age, tenure_days=age * 7, recency_days=weeks_since_last * 7, average_order_value=30,
            monetary_total=30 * orders))

    scored = await client.ScoreCustomers(scoring_pb2.ScoreCustomersRequest(
        workspace_id=WS, horizon_days=273, customers=[
        customer("lapsed_one_timer", orders=1, weeks_since_last=60, age=60),
        customer("regular", orders=8, weeks_since_last=1, age=38),
        ]))
    lapsed, regular = scored.scores
    assert lapsed.churn_risk.model.name == "retain-churn" and lapsed.churn_risk.model.version == saved.ref.version
    assert lapsed.clv.model.name == "retain-btyd"
    # BG/NBD alone calls a one-time buyer certainly alive; the churn model gives them a real risk.
    assert lapsed.p_alive.value == 1.0 and lapsed.churn_risk.value > 0.8
    assert regular.churn_risk.value < 0.5
    listed = await client.ListModels(scoring_pb2.ListModelsRequest())
    churn = [m for m in listed.models if m.kind == "churn"]
    assert churn[0].metrics["roc_auc"] == pytest.approx(model["roc_auc"])


def test_train_promotes_only_when_not_worse(tmp_path: Path) -> None:
    data = tmp_path / "cohort.txt"
    write_cohort(data, n=500)
    home = tmp_path / "bentoml"
    args = ["--transactions", str(data), "--format", "cdnow", "--holdout-days", "91", "--bentoml-home", str(home),
            "--json"]
    first = CliRunner().invoke(train_app, args)
    assert first.exit_code == 0, first.output
    rows = {r["kind"]: r for r in json.loads(first.output)}
    # The first BTYD fit is judged against the bootstrap CDNOW prior on the held-out MAE.
    btyd = rows["btyd"]
    assert btyd["promoted"] == (btyd["candidate"] <= btyd["incumbent"])
    serving_btyd = ModelRegistry(home).current_btyd()
    assert (serving_btyd.ref.version == btyd["model"]["version"]) == btyd["promoted"]
    assert rows["churn"]["promoted"] and rows["churn"]["incumbent"] is None
    assert 0.5 < rows["churn"]["candidate"] <= 1.0
    registry = ModelRegistry(home)
    assert registry.current_churn().ref.version == rows["churn"]["model"]["version"]

    # Retraining judges the serving model on the same window and promotes only if not worse.
    second = CliRunner().invoke(train_app, args)
    again = {r["kind"]: r for r in json.loads(second.output)}
    assert again["churn"]["incumbent"] == pytest.approx(rows["churn"]["candidate"])
    assert again["churn"]["promoted"] == (again["churn"]["candidate"] >= again["churn"]["incumbent"])
    kept = registry.current_churn().ref.version
    expected = again["churn"]["model"]["version"] if again["churn"]["promoted"] else rows["churn"]["model"]["version"]
    assert kept == expected


async def test_offers_segmented_thompson_with_per_offer_priors(stub) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = stub
    features = profile_pb2.Features(frequency=3, repeat_transactions=2, lifecycle_stage=3)
    request = scoring_pb2.ScoreOffersRequest(workspace_id=WS, customer_id="c", offer_ids=["a", "b"], features=features,
                                             prior_propensity={"a": 0.3})
    fresh = await client.ScoreOffers(request)
    assert fresh.segment == "at_risk:repeat"
    a, b = fresh.offers
    assert a.propensity.value == pytest.approx(0.3) and b.propensity.value == pytest.approx(0.1)
    assert 0 < a.thompson_sample.value < 1 and a.thompson_sample.model.name == "retain-offer-beta"
    for i in range(20):
        await client.RecordOutcome(scoring_pb2.RecordOutcomeRequest(
            workspace_id=WS, customer_id="c", offer_id="b", outcome=scoring_pb2.OUTCOME_ACCEPT,
            decision_id=f"dec_{i}", segment=fresh.segment))
    learned = await client.ScoreOffers(request)
    b = learned.offers[1]
    assert (b.segment_impressions, b.segment_accepts) == (20, 20) and b.propensity.value > 0.7
    other = await client.ScoreOffers(scoring_pb2.ScoreOffersRequest(
        workspace_id=WS, offer_ids=["b"], features=profile_pb2.Features(frequency=1, lifecycle_stage=2)))
    # A new segment starts from the offer's overall record, shrunk: above the prior, below the segment.
    assert other.segment == "active:one_time" and 0.1 < other.offers[0].propensity.value < b.propensity.value
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.ScoreOffers(scoring_pb2.ScoreOffersRequest(workspace_id=WS, offer_ids=["a"],
                                                                prior_propensity={"a": 1.5}))
    assert dict(err.value.trailing_metadata() or ())["retain-field"] == "prior_propensity[a]"
