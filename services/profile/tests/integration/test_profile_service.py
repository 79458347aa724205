import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp
from retain.audit.v1 import audit_pb2, audit_pb2_grpc
from retain.common.v1 import common_pb2
from retain.profile.v1 import profile_pb2, profile_pb2_grpc
from retain_audit import app as audit_app
from retain_audit.config import Settings as AuditSettings
from retain_kit import migrations
from retain_kit.db import session_factory
from retain_kit.grpcserver import Registration, channel
from retain_kit.protoconv import to_struct, to_timestamp
from retain_kit.testing import DbTarget, free_port
from retain_profile.app import SERVICE_NAME
from retain_profile.audit_client import GrpcAuditSink
from retain_profile.publisher import RedisEventPublisher, stream_key
from retain_profile.server import ProfileServicer, incoming_event
from retain_profile.service import Profiles

SERVICE_DIR = Path(__file__).resolve().parents[2]
AUDIT_DIR = SERVICE_DIR.parent / "audit"
NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class Stack:
    profile: profile_pb2_grpc.ProfileServiceStub
    audit: audit_pb2_grpc.AuditServiceStub
    profiles: Profiles
    redis: aioredis.Redis
    ws: str


async def start_profile(
    db_target: DbTarget, grpc_serve: Any, *, audit_addr: str, redis_url: str
) -> tuple[profile_pb2_grpc.ProfileServiceStub, Profiles, grpc.aio.Channel]:
    engine = await db_target.migrate(SERVICE_DIR)
    audit_channel = channel(audit_addr)
    profiles = Profiles(
        session_factory(engine),
        audit=GrpcAuditSink(audit_channel, timeout=2.0),
        publisher=RedisEventPublisher.from_url(redis_url, maxlen=10_000),
    )
    target = await grpc_serve(
        [Registration(ProfileServicer(profiles), profile_pb2_grpc.add_ProfileServiceServicer_to_server, SERVICE_NAME)]
    )
    client_channel = grpc.aio.insecure_channel(target)
    return profile_pb2_grpc.ProfileServiceStub(client_channel), profiles, client_channel


async def start_audit(db_target: DbTarget, grpc_serve: Any, tmp_path: Path) -> tuple[str, Any]:
    """The real audit service through its own build(), on a fresh database."""
    url, schema = db_target.fresh("audit")
    await asyncio.to_thread(migrations.upgrade, AUDIT_DIR, url, schema=schema)
    settings = AuditSettings(
        database_url=url, database_schema=schema or "", signing_key_path=str(tmp_path / "audit-signing.key"),
        master_key_path=str(tmp_path / "audit-master.key"), checkpoint_interval_seconds=0,
    )
    registrations, stop = await audit_app.build(settings)
    return await grpc_serve(registrations), stop


@pytest.fixture
async def stack(db_target: DbTarget, grpc_serve: Any, redis_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    audit_target, stop_audit = await start_audit(db_target, grpc_serve, tmp_path)
    stub, profiles, client_channel = await start_profile(
        db_target, grpc_serve, audit_addr=audit_target, redis_url=redis_url
    )
    audit_channel = grpc.aio.insecure_channel(audit_target)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    ws = f"ws_{uuid.uuid4().hex[:8]}"
    yield Stack(stub, audit_pb2_grpc.AuditServiceStub(audit_channel), profiles, redis, ws)
    await redis.delete(stream_key(ws))
    await redis.aclose()
    await audit_channel.close()
    await client_channel.close()
    await stop_audit()


def ts(days_ago: float) -> Timestamp:
    stamp = to_timestamp(NOW - timedelta(days=days_ago))
    assert stamp is not None
    return stamp


def track(
    mid: str, name: str, days_ago: float = 0, *, user: str = "", anon: str = "", **props: Any
) -> profile_pb2.Event:
    return profile_pb2.Event(
        message_id=mid, type=profile_pb2.EVENT_TYPE_TRACK, event=name, user_id=user, anonymous_id=anon,
        properties=to_struct(props), timestamp=ts(days_ago),
    )


async def ingest(s: Stack, *events: profile_pb2.Event) -> profile_pb2.IngestEventsResponse:
    return await s.profile.IngestEvents(profile_pb2.IngestEventsRequest(workspace_id=s.ws, events=list(events)))


async def stream(s: Stack) -> list[dict[str, str]]:
    return [fields for _, fields in await s.redis.xrange(stream_key(s.ws))]


async def test_replay_is_duplicate_and_changes_nothing(stack: Stack) -> None:
    batch = [track("m1", "Order Completed", 3, user="u1", revenue=500), track("m2", "App Opened", 1, user="u1")]
    first = await ingest(stack, *batch)
    assert (first.accepted, first.duplicates) == (2, 0)
    again = await ingest(stack, *batch, batch[0])
    assert (again.accepted, again.duplicates) == (0, 3)
    assert {r.customer_id for r in again.results} == {first.results[0].customer_id}
    request = profile_pb2.GetProfileRequest(workspace_id=stack.ws, customer_id="u1")
    prof = (await stack.profile.GetProfile(request)).profile
    assert prof.events_count == 2 and prof.features.frequency == 1 and prof.features.monetary_total == 500
    published = await stream(stack)
    assert [e["message_id"] for e in published] == ["m1", "m2"]
    assert published[0]["customer_id"] == prof.customer_id and published[0]["type"] == "track"
    assert json.loads(published[0]["properties"]) == {"revenue": 500}


async def test_concurrent_batches_for_the_same_customers_lose_nothing(stack: Stack) -> None:
    """On PostgreSQL batches run concurrently (row locks and retries instead of one writer per workspace):
    overlapping new customers, replays and orders across batches still give one customer each, every event
    once, and features that count them all."""
    users = [f"cc{n}" for n in range(6)]
    batches = [
        [track(f"c{b}-{n}", "Order Completed", n % 5, user=users[(b + n) % len(users)], revenue=10) for n in range(30)]
        for b in range(4)
    ]
    batches.append(batches[0][:10])  # a concurrent replay
    responses = await asyncio.gather(*(ingest(stack, *batch) for batch in batches))
    assert sum(r.accepted for r in responses) == 120
    assert sum(r.duplicates for r in responses) == 10
    owners = {}
    for batch, response in zip(batches, responses, strict=True):
        for event, result in zip(batch, response.results, strict=True):
            owners.setdefault(event.user_id, set()).add(result.customer_id)
    assert all(len(ids) == 1 for ids in owners.values())
    total = 0
    for user in users:
        prof = (await stack.profile.GetProfile(profile_pb2.GetProfileRequest(workspace_id=stack.ws, customer_id=user)))
        assert prof.profile.customer_id in owners[user]
        assert prof.profile.features.frequency == prof.profile.events_count
        assert prof.profile.features.monetary_total == 10 * prof.profile.events_count
        total += prof.profile.events_count
    assert total == 120
    assert len(await stream(stack)) == 120


async def test_bad_item_is_rejected_and_the_rest_stored(stack: Stack) -> None:
    response = await ingest(
        stack,
        track("ok1", "App Opened", user="u1"),
        track("", "App Opened", user="u1"),
        track("noid", "App Opened"),
        profile_pb2.Event(message_id="noname", type=profile_pb2.EVENT_TYPE_TRACK, user_id="u1"),
        track("ok2", "App Opened", user="u1"),
    )
    statuses = [(r.index, profile_pb2.IngestStatus.Name(r.status), r.field) for r in response.results]
    assert statuses == [
        (0, "INGEST_STATUS_ACCEPTED", ""),
        (1, "INGEST_STATUS_REJECTED", "message_id"),
        (2, "INGEST_STATUS_REJECTED", "user_id"),
        (3, "INGEST_STATUS_REJECTED", "event"),
        (4, "INGEST_STATUS_ACCEPTED", ""),
    ]
    assert all(r.error for r in response.results if r.status == profile_pb2.INGEST_STATUS_REJECTED)
    listed = await stack.profile.ListEvents(profile_pb2.ListEventsRequest(workspace_id=stack.ws, customer_id="u1"))
    assert sorted(e.message_id for e in listed.events) == ["ok1", "ok2"]


async def test_event_linking_two_customers_merges_into_the_older(stack: Stack) -> None:
    older = (await ingest(stack, track("a", "Order Completed", 20, user="u1", revenue=100))).results[0].customer_id
    newer_event = track("b", "Order Completed", 10, anon="anon-9", revenue=300)
    newer_event.context.update({"traits": {"phone": "081-234-5678"}})
    newer = (await ingest(stack, newer_event)).results[0].customer_id
    assert older != newer
    await stack.profile.SetConsents(profile_pb2.SetConsentsRequest(
        workspace_id=stack.ws, customer_id=newer, actor="test",
        changes=[profile_pb2.ConsentChange(channel=common_pb2.CHANNEL_SMS, purpose="marketing",
                                           status=common_pb2.CONSENT_STATUS_GRANTED, source="pos")],
    ))
    linking = track("c", "App Opened", 0, user="u1", anon="anon-9")
    result = (await ingest(stack, linking)).results[0]
    assert result.customer_id == older
    for reference in (older, newer, "u1", "anon-9", "+66812345678", "0812345678"):
        prof = (await stack.profile.GetProfile(
            profile_pb2.GetProfileRequest(workspace_id=stack.ws, customer_id=reference))).profile
        assert prof.customer_id == older, reference
    assert prof.events_count == 3 and prof.features.frequency == 2 and prof.features.monetary_total == 400
    kinds = {(profile_pb2.IdentifierKind.Name(i.kind), i.value) for i in prof.identifiers}
    assert ("IDENTIFIER_KIND_PHONE", "+66812345678") in kinds and ("IDENTIFIER_KIND_USER_ID", "u1") in kinds
    check = await stack.profile.CheckConsent(profile_pb2.CheckConsentRequest(
        workspace_id=stack.ws, customer_id="u1", channel=common_pb2.CHANNEL_SMS, purpose="marketing"))
    assert check.allowed
    history = await stack.profiles.consent_history(stack.ws, older)
    assert [h.customer_id for h in history] == [older]


async def test_alias_merges_and_returns_merged_ids(stack: Stack) -> None:
    first = (await ingest(stack, track("a1", "App Opened", 5, user="member-1"))).results[0].customer_id
    second = (await ingest(stack, track("a2", "App Opened", 1, anon="device-x"))).results[0].customer_id
    response = await stack.profile.Alias(
        profile_pb2.AliasRequest(workspace_id=stack.ws, previous_id="device-x", user_id="member-1", message_id="al1"))
    assert response.customer_id == first and list(response.merged_customer_ids) == [second]
    listed = await stack.profile.ListEvents(profile_pb2.ListEventsRequest(workspace_id=stack.ws, customer_id=second))
    assert [e.message_id for e in listed.events] == ["al1", "a2", "a1"]
    fresh = await stack.profile.Alias(
        profile_pb2.AliasRequest(workspace_id=stack.ws, previous_id="anon-new", user_id="member-1"))
    assert fresh.customer_id == first and not fresh.merged_customer_ids


async def test_identify_sets_traits_and_links_identifiers(stack: Stack) -> None:
    response = await stack.profile.Identify(profile_pb2.IdentifyRequest(
        workspace_id=stack.ws, user_id="u7", message_id="id1", timestamp=ts(2),
        traits=to_struct({"email": " Nok@Example.com ", "phone": "0891112222", "line_user_id": "Uabc",
                          "name": "Nok", "locale": "en"}),
    ))
    await stack.profile.Identify(profile_pb2.IdentifyRequest(
        workspace_id=stack.ws, user_id="u7", message_id="id0", timestamp=ts(5), traits=to_struct({"name": "Old"})))
    prof = (await stack.profile.GetProfile(profile_pb2.GetProfileRequest(
        workspace_id=stack.ws, identifier=profile_pb2.Identifier(
            kind=profile_pb2.IDENTIFIER_KIND_EMAIL, value="nok@example.com")))).profile
    assert prof.customer_id == response.customer_id
    assert prof.traits["name"] == "Nok" and prof.locale == "en" and prof.time_zone == "Asia/Bangkok"
    by_line = await stack.profile.GetProfile(profile_pb2.GetProfileRequest(workspace_id=stack.ws, customer_id="Uabc"))
    assert by_line.profile.customer_id == response.customer_id
    listed = await stack.profile.ListEvents(profile_pb2.ListEventsRequest(workspace_id=stack.ws, customer_id="u7"))
    assert [e.type for e in listed.events] == [profile_pb2.EVENT_TYPE_IDENTIFY] * 2
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.profile.Identify(profile_pb2.IdentifyRequest(
            workspace_id=stack.ws, user_id="u8", traits=to_struct({"phone": "12"})))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.value.trailing_metadata() or ())["retain-field"] == "traits.phone"


async def test_unknown_customer_is_not_found_naming_the_field(stack: Stack) -> None:
    for reference in ("cus_" + "0" * 32, "nobody"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stack.profile.GetProfile(profile_pb2.GetProfileRequest(workspace_id=stack.ws, customer_id=reference))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert dict(err.value.trailing_metadata() or ())["retain-field"] == "customer_id"


async def test_list_events_is_newest_first_with_cursor(stack: Stack) -> None:
    await ingest(stack, *[track(f"e{i}", "App Opened", 10 - i, user="u1") for i in range(5)])
    seen: list[str] = []
    token = ""
    while True:
        page = await stack.profile.ListEvents(profile_pb2.ListEventsRequest(
            workspace_id=stack.ws, customer_id="u1", page_size=2, page_token=token))
        seen.extend(e.message_id for e in page.events)
        token = page.next_page_token
        if not token:
            break
    assert seen == ["e4", "e3", "e2", "e1", "e0"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.profile.ListEvents(profile_pb2.ListEventsRequest(
            workspace_id=stack.ws, customer_id="u1", page_token="garbage!"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def history_events(user: str) -> list[profile_pb2.Event]:
    return [
        track(f"{user}-1", "Order Completed", 200, user=user, revenue=1000, category="Beauty"),
        track(f"{user}-2", "Feedback Submitted", 150, user=user, score=1),
        track(f"{user}-3", "Order Completed", 100, user=user, total=2500,
              products=[{"category": "Shoes"}, {"category": "Bags"}]),
        track(f"{user}-4", "Feedback Submitted", 90, user=user, score=5),
        track(f"{user}-5", "Ticket Opened", 40, user=user),
        track(f"{user}-6", "Feedback Submitted", 30, user=user, sentiment="negative"),
        track(f"{user}-7", "Feedback Submitted", 20, user=user, score=2),
        track(f"{user}-8", "Order Completed", 10, user=user, revenue=4000),
        track(f"{user}-9", "Product Viewed", 2, user=user, category="Shoes"),
    ]


async def test_out_of_order_events_give_the_same_features(stack: Stack) -> None:
    in_order = history_events("inorder")
    await ingest(stack, *in_order)
    shuffled = history_events("shuffled")
    for event in (shuffled[7], shuffled[2], shuffled[8], shuffled[0]):
        await ingest(stack, event)
    await ingest(stack, shuffled[6], shuffled[4], shuffled[1], shuffled[5], shuffled[3])

    async def features(user: str) -> profile_pb2.Features:
        request = profile_pb2.GetFeaturesRequest(workspace_id=stack.ws, customer_id=user)
        response = await stack.profile.GetFeatures(request)
        response.features.ClearField("as_of")
        return response.features

    expected = await features("inorder")
    actual = await features("shuffled")
    # These move with the clock between the two reads; everything else must match exactly.
    for name in ("recency_days", "tenure_days", "age_weeks"):
        assert getattr(actual, name) == pytest.approx(getattr(expected, name), abs=1e-3)
        actual.ClearField(name)  # type: ignore[arg-type]
        expected.ClearField(name)  # type: ignore[arg-type]
    assert actual == expected
    assert expected.frequency == 3 and expected.monetary_total == 7500
    assert expected.negative_feedback_streak == 2 and expected.open_tickets == 1
    assert expected.repeat_transactions == 2
    assert expected.lifecycle_stage == common_pb2.LIFECYCLE_STAGE_ACTIVE
    assert "high_value" in expected.segments and "unhappy" in expected.segments
    assert dict(expected.category_affinity) == pytest.approx({"beauty": 0.25, "shoes": 0.5, "bags": 0.25})


async def test_replicas_writing_the_same_customer_in_turn_lose_no_event(stack: Stack) -> None:
    """Each replica keeps the summaries it wrote decoded; a write by another replica in between must be seen."""
    other = Profiles(stack.profiles.sessions, audit=stack.profiles.audit, publisher=stack.profiles.publisher)
    revenues = [100, 200, 400, 800, 1600]
    for n, revenue in enumerate(revenues):
        event = track(f"turn-{n}", "Order Completed", 10 - n, user="turns", revenue=revenue)
        if n % 2:
            (result,) = await other.ingest(stack.ws, [incoming_event(event)])
            assert result.status == "accepted"
        else:
            assert (await ingest(stack, event)).accepted == 1
    for replica in (stack.profiles, other):
        _, features = await replica.features(stack.ws, "turns")
        assert (features.frequency, features.monetary_total) == (len(revenues), sum(revenues))
    request = profile_pb2.GetFeaturesRequest(workspace_id=stack.ws, customer_id="turns")
    assert (await stack.profile.GetFeatures(request)).features.frequency == len(revenues)


def change(status: int, purpose: str = "marketing", **kw: Any) -> profile_pb2.ConsentChange:
    return profile_pb2.ConsentChange(channel=common_pb2.CHANNEL_LINE, purpose=purpose, status=status,
                                     source="line_oa", lawful_basis="consent", policy_version="2026-01", **kw)


async def test_consent_changes_keep_history_and_write_audit_records(stack: Stack) -> None:
    cid = (await ingest(stack, track("m", "App Opened", user="u1"))).results[0].customer_id
    check_req = profile_pb2.CheckConsentRequest(
        workspace_id=stack.ws, customer_id="u1", channel=common_pb2.CHANNEL_LINE, purpose="marketing")
    before = await stack.profile.CheckConsent(check_req)
    assert not before.allowed and not before.HasField("consent") and "no consent" in before.reason
    service = await stack.profile.CheckConsent(profile_pb2.CheckConsentRequest(
        workspace_id=stack.ws, customer_id="u1", channel=common_pb2.CHANNEL_LINE, purpose="service"))
    assert not service.allowed

    await stack.profile.SetConsents(profile_pb2.SetConsentsRequest(
        workspace_id=stack.ws, customer_id="u1", actor="crm", changes=[change(common_pb2.CONSENT_STATUS_GRANTED)]))
    assert (await stack.profile.CheckConsent(check_req)).allowed
    response = await stack.profile.SetConsents(profile_pb2.SetConsentsRequest(
        workspace_id=stack.ws, customer_id="u1", actor="webhook",
        changes=[change(common_pb2.CONSENT_STATUS_WITHDRAWN)]))
    assert [c.status for c in response.consents] == [common_pb2.CONSENT_STATUS_WITHDRAWN]
    after = await stack.profile.CheckConsent(check_req)
    assert not after.allowed and after.consent.status == common_pb2.CONSENT_STATUS_WITHDRAWN
    assert "withdrawn" in after.reason

    history = await stack.profiles.consent_history(stack.ws, cid)
    assert [(h.status, h.previous_status, h.actor) for h in history] == [
        ("granted", "", "crm"), ("withdrawn", "granted", "webhook")]
    records = (await stack.audit.ListRecords(audit_pb2.ListRecordsRequest(
        workspace_id=stack.ws, customer_id=cid, kind=audit_pb2.RECORD_KIND_CONSENT))).records
    assert [r.outcome for r in records] == ["granted", "withdrawn"]
    assert [r.record_id for r in records] == [h.audit_record_id for h in history]
    assert records[1].payload["previous_status"] == "granted" and records[1].channel == common_pb2.CHANNEL_LINE
    assert (await stack.audit.Verify(audit_pb2.VerifyRequest(workspace_id=stack.ws))).ok


async def test_late_consent_change_is_history_only(stack: Stack) -> None:
    await ingest(stack, track("m", "App Opened", user="u1"))
    await stack.profile.SetConsents(profile_pb2.SetConsentsRequest(
        workspace_id=stack.ws, customer_id="u1", changes=[change(common_pb2.CONSENT_STATUS_WITHDRAWN)]))
    late = await stack.profile.SetConsents(profile_pb2.SetConsentsRequest(
        workspace_id=stack.ws, customer_id="u1",
        changes=[change(common_pb2.CONSENT_STATUS_GRANTED, occurred_at=ts(3))]))
    assert [c.status for c in late.consents] == [common_pb2.CONSENT_STATUS_WITHDRAWN]


async def test_consent_input_is_validated(stack: Stack) -> None:
    await ingest(stack, track("m", "App Opened", user="u1"))
    bad = profile_pb2.ConsentChange(purpose="marketing", status=common_pb2.CONSENT_STATUS_GRANTED)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.profile.SetConsents(profile_pb2.SetConsentsRequest(
            workspace_id=stack.ws, customer_id="u1", changes=[change(common_pb2.CONSENT_STATUS_GRANTED), bad]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.value.trailing_metadata() or ())["retain-field"] == "changes[1].channel"


async def test_consent_fails_closed_when_audit_is_unreachable(
    db_target: DbTarget, grpc_serve: Any, redis_url: str
) -> None:
    stub, profiles, client_channel = await start_profile(
        db_target, grpc_serve, audit_addr=f"127.0.0.1:{free_port()}", redis_url=redis_url
    )
    ws = f"ws_{uuid.uuid4().hex[:8]}"
    await stub.IngestEvents(profile_pb2.IngestEventsRequest(workspace_id=ws, events=[track("m", "X", user="u1")]))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SetConsents(profile_pb2.SetConsentsRequest(
            workspace_id=ws, customer_id="u1", changes=[change(common_pb2.CONSENT_STATUS_GRANTED)]))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    check = await stub.CheckConsent(profile_pb2.CheckConsentRequest(
        workspace_id=ws, customer_id="u1", channel=common_pb2.CHANNEL_LINE, purpose="marketing"))
    assert not check.allowed and not check.HasField("consent")
    assert await profiles.consent_history(ws, "u1") == []
    await client_channel.close()


async def test_events_survive_redis_outage_and_are_republished(
    db_target: DbTarget, grpc_serve: Any, redis_url: str
) -> None:
    stub, profiles, client_channel = await start_profile(
        db_target, grpc_serve, audit_addr="127.0.0.1:1", redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    ws = f"ws_{uuid.uuid4().hex[:8]}"
    response = await stub.IngestEvents(profile_pb2.IngestEventsRequest(
        workspace_id=ws, events=[track("r1", "App Opened", user="u1"), track("r2", "App Opened", user="u1")]))
    assert response.accepted == 2
    listed = await stub.ListEvents(profile_pb2.ListEventsRequest(workspace_id=ws, customer_id="u1"))
    assert len(listed.events) == 2

    profiles.publisher = RedisEventPublisher.from_url(redis_url, maxlen=10_000)
    assert await profiles.republish_pending(min_age=timedelta(0)) == 2
    assert await profiles.republish_pending(min_age=timedelta(0)) == 0
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    entries = await redis.xrange(stream_key(ws))
    assert sorted(fields["message_id"] for _, fields in entries) == ["r1", "r2"]
    await redis.delete(stream_key(ws))
    await redis.aclose()
    await client_channel.close()
