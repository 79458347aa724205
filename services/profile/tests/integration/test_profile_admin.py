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


def track(mid: str, name: str, days_ago: float, user: str, **props: Any) -> profile_pb2.Event:
    return profile_pb2.Event(
        message_id=mid, type=profile_pb2.EVENT_TYPE_TRACK, event=name, user_id=user,
        properties=to_struct(props), timestamp=to_timestamp(NOW - timedelta(days=days_ago)),
    )


async def ingest(s: ProfileStack, *events: profile_pb2.Event) -> profile_pb2.IngestEventsResponse:
    return await s.stub.IngestEvents(profile_pb2.IngestEventsRequest(workspace_id=s.ws, events=list(events)))


async def features(s: ProfileStack, customer: str) -> profile_pb2.Features:
    response = await s.stub.GetFeatures(profile_pb2.GetFeaturesRequest(workspace_id=s.ws, customer_id=customer))
    return response.features


async def code_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), dict(caught.value.trailing_metadata() or ()).get("retain-field", "")


async def test_semantic_events_reach_the_features(make_profile: Any) -> None:
    s: ProfileStack = await make_profile(audit=False)
    await ingest(
        s,
        track("o1", "Order Completed", 200, "u1", revenue=900, discount=100),
        track("o2", "Order Completed", 10, "u1", revenue=300),
        track("o3", "Order Completed", 400, "u1", revenue=50),
        track("d1", "Message Delivered", 3, "u1", channel="line"),
        track("op1", "Message Opened", 2, "u1", channel="line"),
        track("c1", "Message Clicked", 5, "u1", channel="email"),
        track("pa", "Product Added", 1, "u1"),
        track("cs", "Checkout Started", 1, "u1"),
        track("ss", "Subscription Started", 30, "u1"),
        track("n1", "NPS Survey Responded", 4, "u1", score=5),
        track("n2", "NPS Survey Responded", 2, "u1", score=3),
        track("oa", "Offer Accepted", 1, "u1"),
        track("od1", "Offer Declined", 1, "u1"),
        track("od2", "Offer Declined", 2, "u1"),
    )
    f = await features(s, "u1")
    assert (f.orders_365d, f.spend_365d, f.frequency) == (2, 1200, 3)
    assert f.discount_total == 100 and f.discount_share == pytest.approx(100 / 1350)
    line = f.channel_engagement["line"]
    assert (line.delivered, line.opened, line.clicked) == (1, 1, 0)
    assert line.last_engaged_at.ToDatetime(tzinfo=UTC) == NOW - timedelta(days=2)
    assert f.channel_engagement["email"].clicked == 1
    assert (f.products_added, f.checkouts_started, f.subscriptions_started, f.subscription_active) == (1, 1, 1, True)
    assert (f.nps_responses, f.nps_negative, f.last_nps_score) == (2, 2, 3)
    assert f.negative_feedback_streak == 2 and "unhappy" in f.segments
    assert (f.offers_accepted, f.offers_declined) == (1, 2)


async def test_lifecycle_thresholds_are_per_workspace(make_profile: Any) -> None:
    s: ProfileStack = await make_profile(audit=False)
    await ingest(s, track("a", "Order Completed", 100, "u1", revenue=10))
    assert (await features(s, "u1")).lifecycle_stage == common_pb2.LIFECYCLE_STAGE_AT_RISK
    default = await s.stub.GetWorkspaceSettings(profile_pb2.GetWorkspaceSettingsRequest(workspace_id=s.ws))
    assert default.settings.lifecycle.lapsed_days == 120
    changed = await s.stub.SetWorkspaceSettings(profile_pb2.SetWorkspaceSettingsRequest(
        workspace_id=s.ws, actor="ops",
        settings=profile_pb2.WorkspaceSettings(lifecycle=profile_pb2.LifecycleThresholds(lapsed_days=90)),
    ))
    assert changed.settings.lifecycle.lapsed_days == 90 and changed.settings.lifecycle.at_risk_days == 60
    assert (await features(s, "u1")).lifecycle_stage == common_pb2.LIFECYCLE_STAGE_LAPSED
    bad = s.stub.SetWorkspaceSettings(profile_pb2.SetWorkspaceSettingsRequest(
        workspace_id=s.ws,
        settings=profile_pb2.WorkspaceSettings(lifecycle=profile_pb2.LifecycleThresholds(churned_days=50)),
    ))
    assert await code_of(bad) == (grpc.StatusCode.INVALID_ARGUMENT, "lifecycle.at_risk_days")


async def test_segments_are_defined_evaluated_live_and_counted(make_profile: Any) -> None:
    s: ProfileStack = await make_profile(audit=False)
    await ingest(
        s,
        track("a1", "Order Completed", 100, "big", revenue=6000),
        track("b1", "Order Completed", 100, "small", revenue=100),
        track("c1", "Order Completed", 1, "fresh", revenue=9000),
    )
    segment = profile_pb2.Segment(
        name="big_at_risk", expression="monetary_total > 5000 and lifecycle_stage == 'at_risk'"
    )
    await s.stub.CreateSegment(profile_pb2.CreateSegmentRequest(workspace_id=s.ws, segment=segment))
    assert "big_at_risk" in (await features(s, "big")).segments
    assert "big_at_risk" not in (await features(s, "small")).segments
    count = await s.stub.CountSegment(profile_pb2.CountSegmentRequest(workspace_id=s.ws, name="big_at_risk"))
    assert (count.members, count.customers) == (1, 3)
    # Live: new spend moves `small` in without any rebuild.
    await ingest(s, track("b0", "Order Completed", 101, "small", revenue=5000))
    assert "big_at_risk" in (await features(s, "small")).segments
    listed = await s.stub.ListSegments(profile_pb2.ListSegmentsRequest(workspace_id=s.ws))
    assert any(x.name == "big_at_risk" and not x.builtin for x in listed.segments)
    assert any(x.name == "vip" and x.builtin for x in listed.segments) and "monetary_total" in listed.features
    for expression in ("__import__('os').system('x')", "monetary_total ** 2", "nope > 1", "f.x"):
        bad = s.stub.CreateSegment(profile_pb2.CreateSegmentRequest(
            workspace_id=s.ws, segment=profile_pb2.Segment(name="bad", expression=expression)))
        assert await code_of(bad) == (grpc.StatusCode.INVALID_ARGUMENT, "expression"), expression
    dup = s.stub.CreateSegment(profile_pb2.CreateSegmentRequest(workspace_id=s.ws, segment=segment))
    assert (await code_of(dup))[0] == grpc.StatusCode.ALREADY_EXISTS
    await s.stub.DeleteSegment(profile_pb2.DeleteSegmentRequest(workspace_id=s.ws, name="big_at_risk"))
    assert "big_at_risk" not in (await features(s, "big")).segments
    gone = s.stub.CountSegment(profile_pb2.CountSegmentRequest(workspace_id=s.ws, name="big_at_risk"))
    assert (await code_of(gone))[0] == grpc.StatusCode.NOT_FOUND


async def test_export_then_erase_keeps_aggregates_only(make_profile: Any) -> None:
    s: ProfileStack = await make_profile(audit=True)
    await s.stub.Identify(profile_pb2.IdentifyRequest(
        workspace_id=s.ws, user_id="u1", message_id="id1",
        traits=to_struct({"email": "Somchai@Example.com", "name": "Somchai", "phone": "081-234-5678"}),
    ))
    await ingest(s, track("o1", "Order Completed", 5, "u1", revenue=700, discount=70,
                          shipping_address="99 Sukhumvit", products=[{"name": "Shoe", "category": "shoes"}]))
    await s.stub.SetConsents(profile_pb2.SetConsentsRequest(
        workspace_id=s.ws, customer_id="u1", actor="dpo",
        changes=[profile_pb2.ConsentChange(channel=common_pb2.CHANNEL_EMAIL, purpose="marketing",
                                           status=common_pb2.CONSENT_STATUS_GRANTED, source="web")],
    ))
    export = await s.stub.ExportCustomer(profile_pb2.ExportCustomerRequest(workspace_id=s.ws,
                                                                           customer_id="somchai@example.com"))
    cid = export.profile.customer_id
    assert export.profile.traits["name"] == "Somchai"
    assert {i.value for i in export.profile.identifiers} >= {"u1", "somchai@example.com", "+66812345678"}
    assert [e.message_id for e in export.events] == ["o1", "id1"]  # oldest first
    assert export.events[0].properties["shipping_address"] == "99 Sukhumvit"
    assert len(export.consent_history) == 1 and export.consent_history[0].actor == "dpo"
    assert not export.HasField("erased_at")

    erased = await s.stub.EraseCustomer(profile_pb2.EraseCustomerRequest(workspace_id=s.ws, customer_id="u1",
                                                                         actor="dpo"))
    assert erased.customer_id == cid and erased.events_scrubbed == 2 and erased.identifiers_removed == 3
    assert (await code_of(s.stub.GetProfile(profile_pb2.GetProfileRequest(
        workspace_id=s.ws, customer_id="somchai@example.com"))))[0] == grpc.StatusCode.NOT_FOUND
    after = await s.stub.ExportCustomer(profile_pb2.ExportCustomerRequest(workspace_id=s.ws, customer_id=cid))
    assert after.HasField("erased_at") and not after.profile.identifiers and not dict(after.profile.traits)
    order = after.events[0]
    assert not order.user_id and "shipping_address" not in order.properties
    assert order.properties["revenue"] == 700 and dict(order.properties["products"][0]) == {"category": "shoes"}
    f = after.profile.features
    assert (f.frequency, f.monetary_total, f.discount_total) == (1, 700, 70)


async def test_erasure_fails_closed_when_audit_is_down(make_profile: Any) -> None:
    s: ProfileStack = await make_profile(audit=False)
    await s.stub.Identify(profile_pb2.IdentifyRequest(
        workspace_id=s.ws, user_id="u1", message_id="id1", traits=to_struct({"email": "a@b.co"})))
    call = s.stub.EraseCustomer(profile_pb2.EraseCustomerRequest(workspace_id=s.ws, customer_id="u1"))
    assert (await code_of(call))[0] == grpc.StatusCode.UNAVAILABLE
    still = await s.stub.GetProfile(profile_pb2.GetProfileRequest(workspace_id=s.ws, customer_id="a@b.co"))
    assert still.profile.traits["email"] == "a@b.co"
