"""ExportOrders (training data for scoring) and StoreScores (scores with model refs, read back by GetProfile)."""

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from profile_stack import ProfileStack, make_profile
from retain.common.v1 import common_pb2
from retain.profile.v1 import profile_pb2
from retain_kit.protoconv import to_struct, to_timestamp

__all__ = ["make_profile"]

NOW = datetime.now(UTC).replace(microsecond=0)


def order(mid: str, user: str, days_ago: float, **props: Any) -> profile_pb2.Event:
    return profile_pb2.Event(
        message_id=mid, type=profile_pb2.EVENT_TYPE_TRACK, event="Order Completed", user_id=user,
        properties=to_struct(props), timestamp=to_timestamp(NOW - timedelta(days=days_ago)),
    )


async def failure(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), dict(caught.value.trailing_metadata() or ()).get("retain-field", "")


async def test_export_orders_pages_through_orders_only(make_profile: Any) -> None:
    s: ProfileStack = await make_profile(audit=False)
    events = [order(f"o{i}", f"u{i % 3}", 100 - i, revenue=10.0 + i, discount=-2, category=" Shoes ")
              for i in range(7)]
    events.append(profile_pb2.Event(message_id="view", type=profile_pb2.EVENT_TYPE_TRACK, event="Product Viewed",
                                    user_id="u0", timestamp=to_timestamp(NOW)))
    await s.stub.IngestEvents(profile_pb2.IngestEventsRequest(workspace_id=s.ws, events=events))
    await s.stub.IngestEvents(profile_pb2.IngestEventsRequest(workspace_id="ws_other", events=[order("x", "u0", 1)]))

    rows: list[profile_pb2.OrderRow] = []
    token, pages = "", 0
    while True:
        page = await s.stub.ExportOrders(profile_pb2.ExportOrdersRequest(workspace_id=s.ws, page_size=3,
                                                                         page_token=token))
        rows.extend(page.rows)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3 and len(rows) == 7
    assert sorted(r.revenue for r in rows) == [10.0 + i for i in range(7)]
    assert {r.discount for r in rows} == {2.0} and {r.category for r in rows} == {"shoes"}
    assert len({r.customer_id for r in rows}) == 3 and all(r.customer_id.startswith("cus_") for r in rows)

    window = await s.stub.ExportOrders(profile_pb2.ExportOrdersRequest(
        workspace_id=s.ws, since=to_timestamp(NOW - timedelta(days=98)), until=to_timestamp(NOW - timedelta(days=95))))
    assert sorted(r.revenue for r in window.rows) == [12.0, 13.0, 14.0] and not window.next_page_token

    assert await failure(s.stub.ExportOrders(profile_pb2.ExportOrdersRequest(workspace_id=s.ws, page_token="x"))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "page_token")
    assert await failure(s.stub.ExportOrders(profile_pb2.ExportOrdersRequest(workspace_id=s.ws, page_size=-1))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "page_size")
    assert await failure(s.stub.ExportOrders(profile_pb2.ExportOrdersRequest())) == (
        grpc.StatusCode.INVALID_ARGUMENT, "workspace_id")


def score(customer_id: str, name: str, value: float, version: str, at: datetime) -> profile_pb2.StoredScore:
    return profile_pb2.StoredScore(customer_id=customer_id, name=name, value=value, horizon_days=90,
                                   model=common_pb2.ModelRef(name="retain-churn-x", version=version),
                                   scored_at=to_timestamp(at))


async def test_stored_scores_keep_the_latest_with_model_refs(make_profile: Any) -> None:
    s: ProfileStack = await make_profile(audit=False)
    ingested = await s.stub.IngestEvents(profile_pb2.IngestEventsRequest(workspace_id=s.ws,
                                                                         events=[order("o1", "ann", 3, revenue=5)]))
    cid = ingested.results[0].customer_id
    before = await s.stub.GetProfile(profile_pb2.GetProfileRequest(workspace_id=s.ws, customer_id="ann"))
    assert list(before.profile.scores) == []

    first = await s.stub.StoreScores(profile_pb2.StoreScoresRequest(workspace_id=s.ws, scores=[
        score(cid, "churn_risk", 0.4, "v1", NOW), score(cid, "clv", 120.0, "v1", NOW)]))
    assert first.stored == 2
    # A newer score replaces; a late replay of an older one does not.
    await s.stub.StoreScores(profile_pb2.StoreScoresRequest(workspace_id=s.ws, scores=[
        score(cid, "churn_risk", 0.7, "v2", NOW + timedelta(hours=1))]))
    await s.stub.StoreScores(profile_pb2.StoreScoresRequest(workspace_id=s.ws, scores=[
        score(cid, "clv", 1.0, "v0", NOW - timedelta(hours=1))]))

    got = await s.stub.GetProfile(profile_pb2.GetProfileRequest(workspace_id=s.ws, customer_id="ann"))
    by_name = {x.name: x for x in got.profile.scores}
    assert by_name["churn_risk"].value == pytest.approx(0.7) and by_name["churn_risk"].model.version == "v2"
    assert by_name["clv"].value == pytest.approx(120.0) and by_name["clv"].model.version == "v1"
    assert by_name["clv"].model.name == "retain-churn-x" and by_name["clv"].horizon_days == 90
    assert by_name["churn_risk"].scored_at.ToDatetime(UTC) == NOW + timedelta(hours=1)

    # Read back exactly as stored (the profile read carries scores as text on both databases).
    await s.stub.StoreScores(profile_pb2.StoreScoresRequest(workspace_id=s.ws, scores=[
        score(cid, "p_alive", 1 / 3, "v1", NOW)]))
    got = await s.stub.GetProfile(profile_pb2.GetProfileRequest(workspace_id=s.ws, customer_id="ann"))
    assert [x.name for x in got.profile.scores] == ["churn_risk", "clv", "p_alive"]
    assert next(x.value for x in got.profile.scores if x.name == "p_alive") == 1 / 3

    bad_model = profile_pb2.StoredScore(customer_id=cid, name="clv", value=1.0)
    assert await failure(s.stub.StoreScores(profile_pb2.StoreScoresRequest(workspace_id=s.ws, scores=[
        score(cid, "clv", 1.0, "v1", NOW), bad_model]))) == (grpc.StatusCode.INVALID_ARGUMENT, "scores[1].model")
    assert await failure(s.stub.StoreScores(profile_pb2.StoreScoresRequest(scores=[bad_model]))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "workspace_id")
    nan = score(cid, "clv", float("nan"), "v1", NOW)
    assert await failure(s.stub.StoreScores(profile_pb2.StoreScoresRequest(workspace_id=s.ws, scores=[nan]))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "scores[0].value")
