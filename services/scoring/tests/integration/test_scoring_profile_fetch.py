"""ScoreCustomers reading features from the real profile service, run in-process."""

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
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
from retain_scoring.domain.offers import BetaPrior
from retain_scoring.domain.scores import ValuePolicy
from retain_scoring.profile_client import ProfileFeatures
from retain_scoring.server import ScoringServicer
from retain_scoring.service import CustomerScorer, OfferPropensities
from retain_scoring.store import ModelRegistry

profile_app = pytest.importorskip("retain_profile.app")
profile_config = pytest.importorskip("retain_profile.config")

SERVICE_DIR = Path(__file__).resolve().parents[2]
PROFILE_DIR = SERVICE_DIR.parent / "profile"
WS = "ws_test"


@pytest.fixture
async def stubs(db_target: DbTarget, grpc_serve, redis_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    url, schema = db_target.fresh("profile")
    await asyncio.to_thread(migrations.upgrade, PROFILE_DIR, url, schema=schema)
    # Settings derive the PostgreSQL schema from the service name: point it at the test's schema.
    settings = profile_config.Settings(database_url=url, redis_url=redis_url, service_name=schema or "profile")
    registrations, stop_profile = await profile_app.build(settings)
    profile_target = await grpc_serve(registrations)

    engine = await db_target.migrate(SERVICE_DIR)
    models = in_process(ModelRegistry(tmp_path / "bentoml"), ValuePolicy())
    profile_channel = grpc.aio.insecure_channel(profile_target)
    servicer = ScoringServicer(
        CustomerScorer(models, ProfileFeatures(profile_channel, timeout=5.0)),
        OfferPropensities(session_factory(engine), prior=BetaPrior()),
    )
    target = await grpc_serve(
        [Registration(servicer, scoring_pb2_grpc.add_ScoringServiceServicer_to_server, SERVICE_NAME)]
    )
    async with grpc.aio.insecure_channel(target) as channel:
        yield scoring_pb2_grpc.ScoringServiceStub(channel), profile_pb2_grpc.ProfileServiceStub(profile_channel)
    await profile_channel.close()
    await stop_profile()


def order(user: str, days_ago: float, revenue: float, n: int) -> profile_pb2.Event:
    return profile_pb2.Event(
        message_id=f"m_{user}_{n}", type=profile_pb2.EVENT_TYPE_TRACK, event="Order Completed", user_id=user,
        properties=to_struct({"revenue": revenue, "order_id": f"o{n}"}),
        timestamp=to_timestamp(datetime.now(UTC) - timedelta(days=days_ago)),
    )


async def test_scores_customers_with_features_from_profile(stubs) -> None:  # type: ignore[no-untyped-def]
    scoring, profile = stubs
    events = [order("u_loyal", d, 40.0, i) for i, d in enumerate((200, 150, 100, 60, 20, 5))]
    events += [order("u_gone", d, 40.0, 10 + i) for i, d in enumerate((250, 240, 230))]
    ingested = await profile.IngestEvents(profile_pb2.IngestEventsRequest(workspace_id=WS, events=events))
    assert ingested.accepted == len(events)

    response = await scoring.ScoreCustomers(
        scoring_pb2.ScoreCustomersRequest(
            workspace_id=WS, customers=[scoring_pb2.CustomerInput(customer_id=u) for u in ("u_loyal", "u_gone")]
        )
    )
    loyal, gone = response.scores
    assert loyal.customer_id.startswith("cus_") and gone.customer_id.startswith("cus_")
    assert loyal.p_alive.value > gone.p_alive.value
    assert gone.value_at_risk.value > 0 and loyal.expected_purchases.value > gone.expected_purchases.value

    # Same numbers as scoring the features profile reports, passed explicitly.
    features = await profile.GetFeatures(profile_pb2.GetFeaturesRequest(workspace_id=WS, customer_id="u_loyal"))
    assert features.features.repeat_transactions == 5
    given = await scoring.ScoreCustomers(
        scoring_pb2.ScoreCustomersRequest(
            workspace_id=WS,
            customers=[scoring_pb2.CustomerInput(customer_id=loyal.customer_id, features=features.features)],
        )
    )
    assert given.scores[0].p_alive.value == pytest.approx(loyal.p_alive.value, rel=1e-3)


async def test_unknown_customer_is_not_found_naming_the_field(stubs) -> None:  # type: ignore[no-untyped-def]
    scoring, _ = stubs
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await scoring.ScoreCustomers(
            scoring_pb2.ScoreCustomersRequest(
                workspace_id=WS, customers=[scoring_pb2.CustomerInput(customer_id="nobody@example.com")]
            )
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert dict(err.value.trailing_metadata() or ())["retain-field"] == "customers[0].customer_id"
