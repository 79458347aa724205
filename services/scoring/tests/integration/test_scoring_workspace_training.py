"""Per-workspace models trained from profile data (`retain train --workspace`, then on a schedule),
served by ScoreCustomers with their model refs, and written back to the profile with them."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import pytest
from retain.profile.v1 import profile_pb2, profile_pb2_grpc
from retain.scoring.v1 import scoring_pb2, scoring_pb2_grpc
from retain_kit import migrations
from retain_kit.db import session_factory
from retain_kit.grpcserver import Registration
from retain_kit.protoconv import to_struct, to_timestamp
from retain_kit.testing import DbTarget
from retain_scoring.app import SERVICE_NAME
from retain_scoring.bento_service import in_process
from retain_scoring.cli import train_app
from retain_scoring.domain.offers import BetaPrior
from retain_scoring.domain.scores import ValuePolicy
from retain_scoring.profile_client import ProfileFeatures, ProfileOrders
from retain_scoring.retraining import STORED_SCORES, Retrainer, train_workspace
from retain_scoring.server import ScoringServicer
from retain_scoring.service import CustomerScorer, OfferPropensities
from retain_scoring.store import ModelRegistry
from typer.testing import CliRunner

profile_app = pytest.importorskip("retain_profile.app")
profile_config = pytest.importorskip("retain_profile.config")

SERVICE_DIR = Path(__file__).resolve().parents[2]
PROFILE_DIR = SERVICE_DIR.parent / "profile"
WS = "ws_trained"
OTHER = "ws_untrained"


def history(n_customers: int, *, seed: int = 4) -> list[profile_pb2.Event]:
    """Customers who buy at their own rate for a while, then some stop: a year of orders up to today."""
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    events = []
    for c in range(n_customers):
        start = rng.uniform(150, 400)
        life = rng.exponential(250)
        gap = rng.uniform(10, 60)
        day = start
        n = 0
        while day > 0 and start - day < life:
            events.append(profile_pb2.Event(
                message_id=f"m{c}_{n}", type=profile_pb2.EVENT_TYPE_TRACK, event="Order Completed",
                user_id=f"u{c}", properties=to_struct({"revenue": float(rng.gamma(4, 10))}),
                timestamp=to_timestamp(now - timedelta(days=float(day))),
            ))
            n += 1
            day -= rng.exponential(gap)
    return events


@pytest.fixture
async def suite(db_target: DbTarget, grpc_serve, redis_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    url, schema = db_target.fresh("profile")
    await asyncio.to_thread(migrations.upgrade, PROFILE_DIR, url, schema=schema)
    settings = profile_config.Settings(database_url=url, redis_url=redis_url, service_name=schema or "profile")
    registrations, stop_profile = await profile_app.build(settings)
    profile_target = await grpc_serve(registrations)
    engine = await db_target.migrate(SERVICE_DIR)
    home = tmp_path / "bentoml"
    models = in_process(ModelRegistry(home), ValuePolicy(), refresh_seconds=0.0)
    profile_channel = grpc.aio.insecure_channel(profile_target)
    scorer = CustomerScorer(models, ProfileFeatures(profile_channel, timeout=5.0))
    servicer = ScoringServicer(scorer, OfferPropensities(session_factory(engine), prior=BetaPrior()))
    target = await grpc_serve(
        [Registration(servicer, scoring_pb2_grpc.add_ScoringServiceServicer_to_server, SERVICE_NAME)]
    )
    profile = profile_pb2_grpc.ProfileServiceStub(profile_channel)
    events = history(150)
    for start in range(0, len(events), 500):
        await profile.IngestEvents(profile_pb2.IngestEventsRequest(workspace_id=WS, events=events[start:start + 500]))
    await profile.IngestEvents(profile_pb2.IngestEventsRequest(workspace_id=OTHER, events=events[:5]))
    async with grpc.aio.insecure_channel(target) as channel:
        data = ProfileOrders(profile_channel, timeout=30.0)
        yield scoring_pb2_grpc.ScoringServiceStub(channel), profile, scorer, data, profile_target, home
    await profile_channel.close()
    await stop_profile()


async def score(stub, workspace: str, user: str) -> scoring_pb2.CustomerScores:  # type: ignore[no-untyped-def]
    response = await stub.ScoreCustomers(scoring_pb2.ScoreCustomersRequest(
        workspace_id=workspace, customers=[scoring_pb2.CustomerInput(customer_id=user)]))
    return response.scores[0]


async def test_train_workspace_from_profile_then_on_schedule(suite) -> None:  # type: ignore[no-untyped-def]
    stub, profile, scorer, data, profile_target, home = suite
    before = await score(stub, WS, "u0")
    # Nothing trained yet: the deployment-wide prior, and no churn model (churn falls back to BTYD).
    assert before.clv.model.name == "retain-btyd" and before.churn_risk.model == before.clv.model

    args = ["--workspace", WS, "--holdout-days", "60", "--profile-addr", profile_target, "--bentoml-home", str(home),
            "--json"]
    ran = await asyncio.to_thread(CliRunner().invoke, train_app, args)
    assert ran.exit_code == 0, ran.output
    printed = json.loads(ran.output)
    rows = {r["kind"]: r for r in printed["models"]}
    churn = rows["churn"]
    assert churn["promoted"] and churn["incumbent"] is None and churn["model"]["name"] == f"retain-churn-{WS}"
    assert rows["btyd"]["model"]["name"] == f"retain-btyd-{WS}"
    customers = len({e.user_id for e in history(150)})
    assert printed["stored_scores"] == customers * len(STORED_SCORES)

    # ScoreCustomers now uses the workspace's promoted models and names them in every score.
    after = await score(stub, WS, "u0")
    assert (after.churn_risk.model.name, after.churn_risk.model.version) == (
        churn["model"]["name"], churn["model"]["version"])
    assert after.value_at_risk.model == after.churn_risk.model
    btyd_name = f"retain-btyd-{WS}" if rows["btyd"]["promoted"] else "retain-btyd"
    assert after.clv.model.name == btyd_name and after.p_alive.model == after.clv.model
    # Another workspace keeps the deployment-wide models.
    other = await score(stub, OTHER, "u0")
    assert other.clv.model.name == "retain-btyd" and other.churn_risk.model.name == "retain-btyd"

    # The profile holds every customer's latest scores with the same model refs.
    got = await profile.GetProfile(profile_pb2.GetProfileRequest(workspace_id=WS, customer_id="u0"))
    stored = {s.name: s for s in got.profile.scores}
    assert set(stored) == set(STORED_SCORES)
    assert (stored["churn_risk"].model.name, stored["churn_risk"].model.version) == (
        churn["model"]["name"], churn["model"]["version"])
    assert stored["clv"].model.name == btyd_name and 0.0 <= stored["churn_risk"].value <= 1.0

    # On a schedule: WS was scored recently, so a round retrains it against its own serving model.
    async def train(workspace: str):  # type: ignore[no-untyped-def]
        return await train_workspace(workspace, data=data, models=scorer.models, holdout_days=60,
                                     score_horizon_days=90)

    retrainer = Retrainer(train, interval_seconds=0.2, recent=lambda: [w for w in scorer.recent_workspaces(3600)
                                                                       if w == WS])
    task = asyncio.create_task(retrainer.run())
    try:
        async with asyncio.timeout(180):
            while retrainer.rounds < 1:
                await asyncio.sleep(0.1)
    finally:
        task.cancel()
    [run] = retrainer.last_run
    again = {o.kind: o for o in run.outcomes}
    assert again["churn"].incumbent == pytest.approx(churn["candidate"])
    assert again["churn"].promoted == (again["churn"].candidate >= again["churn"].incumbent)
    serving = ModelRegistry(home).current_churn(WS)
    assert serving is not None
    assert serving.ref.version == (again["churn"].ref.version if again["churn"].promoted else churn["model"]["version"])
    latest = await profile.GetProfile(profile_pb2.GetProfileRequest(workspace_id=WS, customer_id="u0"))
    assert {s.name: s.model.version for s in latest.profile.scores}["churn_risk"] == serving.ref.version


def test_retrainer_needs_a_positive_interval() -> None:
    async def train(workspace: str):  # type: ignore[no-untyped-def]
        raise AssertionError(workspace)

    with pytest.raises(ValueError, match="interval"):
        Retrainer(train, interval_seconds=0)
