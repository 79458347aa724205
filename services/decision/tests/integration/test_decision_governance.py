"""Governance against the real suite: policies, caps across replicas (two OS processes), quiet hours
(drop, hold and release), holdouts, contact-slot arbitration, decline suppression, Redis fail-closed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from retain.audit.v1 import audit_pb2
from retain.common.v1 import common_pb2
from retain.decision.v1 import decision_pb2, decision_pb2_grpc
from retain_decision.domain import policies
from retain_kit.protoconv import from_struct, from_timestamp, utcnow
from retain_kit.testing import free_port
from test_decision_service import EMAIL_MARKETING, OPS_OFFER, SUITE_IMPORT_ERROR, WS, Suite, field_of, send

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(SUITE_IMPORT_ERROR), reason=SUITE_IMPORT_ERROR or "-"),
]

BANGKOK = ZoneInfo("Asia/Bangkok")
BIG_OFFER = decision_pb2.Offer()
BIG_OFFER.CopyFrom(OPS_OFFER)
BIG_OFFER.offer_id, BIG_OFFER.name, BIG_OFFER.value = "ops_big_5000", "Big: ฿500 voucher", 5000.0


async def set_policy(suite: Suite, **fields: Any) -> decision_pb2.Policy:
    resp = await suite.decision.SetPolicy(
        decision_pb2.SetPolicyRequest(workspace_id=WS, policy=decision_pb2.Policy(**fields), actor="operator:ploy")
    )
    return resp.policy


def email_cap(per_day: int) -> list[decision_pb2.ChannelCap]:
    return [decision_pb2.ChannelCap(channel=common_pb2.CHANNEL_EMAIL, limit=decision_pb2.CapLimit(per_day=per_day))]


async def test_policy_is_versioned_validated_and_audited(suite: Suite) -> None:
    current = (await suite.decision.GetPolicy(decision_pb2.GetPolicyRequest(workspace_id=WS))).policy
    assert current.version == 0 and current.default_time_zone == "Asia/Bangkok"

    first = await set_policy(
        suite, channel_caps=email_cap(2), global_cap=decision_pb2.CapLimit(per_week=5),
        quiet_hours=decision_pb2.QuietHours(start="21:00", end="08:00", mode="hold"), control_group_share=0.1,
    )
    assert first.version == 1 and first.updated_by == "operator:ploy"
    assert first.channel_caps[0].limit.per_day == 2 and not first.channel_caps[0].limit.HasField("per_week")
    second = await set_policy(suite, channel_caps=email_cap(4))
    assert second.version == 2 and not second.HasField("quiet_hours")

    old = (await suite.decision.GetPolicy(decision_pb2.GetPolicyRequest(workspace_id=WS, version=1))).policy
    assert old.quiet_hours.start == "21:00" and old.global_cap.per_week == 5
    records = await suite.records(kind=audit_pb2.RECORD_KIND_CONFIG, outcome="policy_set")
    assert sorted(from_struct(r.payload)["policy"]["version"] for r in records) == [1, 2]
    assert all(r.actor == "operator:ploy" for r in records)

    for bad, name in (
        ({"quiet_hours": decision_pb2.QuietHours(start="25:00", end="08:00")}, "policy.quiet_hours.start"),
        ({"control_group_share": 1.5}, "policy.control_group_share"),
        ({"default_time_zone": "Mars/Olympus"}, "policy.default_time_zone"),
        ({"channel_caps": [decision_pb2.ChannelCap(channel=common_pb2.CHANNEL_SMS,
                                                   limit=decision_pb2.CapLimit(per_day=-1))]},
         "policy.channel_caps.per_day"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await set_policy(suite, **bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field_of(err.value) == name
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await suite.decision.SetPolicy(
            decision_pb2.SetPolicyRequest(workspace_id=WS, policy=decision_pb2.Policy(), expected_version=1)
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(await suite.records(kind=audit_pb2.RECORD_KIND_CONFIG, outcome="policy_set")) == 2


@pytest.fixture
def replica_processes(suite: Suite, tmp_path: Path) -> Iterator[list[str]]:
    """Two `python -m retain_decision serve` processes on the suite's database and Redis."""
    procs: list[subprocess.Popen[bytes]] = []
    targets: list[str] = []
    db = suite.info["decision_db"]
    for i in range(2):
        port = free_port()
        env = {
            **os.environ,
            "RETAIN_DECISION_DATABASE_URL": db["database_url"],
            "RETAIN_DECISION_SERVICE_NAME": db["service_name"],
            "RETAIN_DECISION_PORT": str(port),
            "RETAIN_DECISION_REDIS_URL": suite.info["redis_url"],
            "RETAIN_PROFILE_ADDR": suite.endpoints.profile_addr,
            "RETAIN_SCORING_ADDR": suite.endpoints.scoring_addr,
            "RETAIN_CHANNELS_ADDR": suite.endpoints.channels_addr,
            "RETAIN_AUDIT_ADDR": suite.endpoints.audit_addr,
            "RETAIN_DECISION_RPC_TIMEOUT_SECONDS": "10",
            "OTEL_SDK_DISABLED": "true",
        }
        log = (tmp_path / f"replica-{i}.log").open("wb")
        procs.append(
            subprocess.Popen([sys.executable, "-m", "retain_decision", "serve"], env=env, stdout=log, stderr=log)
        )
        targets.append(f"127.0.0.1:{port}")
    yield targets
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _ready(target: str) -> grpc.aio.Channel:
    ch = grpc.aio.insecure_channel(target)
    deadline = time.monotonic() + 30
    while True:
        try:
            await asyncio.wait_for(ch.channel_ready(), 1.0)
            return ch
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


async def test_cap_is_exact_across_two_decision_processes(suite: Suite, replica_processes: list[str]) -> None:
    customer_id = await suite.customer(consents=EMAIL_MARKETING)
    await set_policy(suite, channel_caps=email_cap(3))
    channels = [await _ready(t) for t in replica_processes]
    try:
        stubs = [decision_pb2_grpc.DecisionServiceStub(ch) for ch in channels]
        total = 200
        sem = asyncio.Semaphore(64)

        async def one(i: int) -> decision_pb2.SendMessageResponse:
            async with sem:
                return await stubs[i % 2].SendMessage(send(customer_id, f"burst-{i}"), timeout=60)

        answers = await asyncio.gather(*(one(i) for i in range(total)))
    finally:
        for ch in channels:
            await ch.close()

    sent = [a for a in answers if a.status in (decision_pb2.SEND_STATUS_SENT, decision_pb2.SEND_STATUS_QUEUED)]
    capped = [a for a in answers if a.status == decision_pb2.SEND_STATUS_SUPPRESSED]
    assert len(sent) == 3 and len(capped) == total - 3
    assert {s.rule for a in capped for s in a.suppressed} == {"frequency_cap"}
    assert len(await suite.messages(customer_id)) == 3
    decided = await suite.records(kind=audit_pb2.RECORD_KIND_DECISION, customer_id=customer_id, outcome="decided")
    actions = [from_struct(r.payload)["action"] for r in decided]
    assert actions.count("send") == 3 and actions.count("suppress") == total - 3


async def test_redis_unreachable_fails_closed(suite: Suite) -> None:
    customer_id = await suite.customer(consents=EMAIL_MARKETING)
    blind = await suite.start_decision(settings={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await blind.SendMessage(send(customer_id, "no-redis"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await suite.messages(customer_id) == []
    decided = await suite.records(kind=audit_pb2.RECORD_KIND_DECISION, customer_id=customer_id)
    assert [from_struct(r.payload).get("action") for r in decided] == []


def _at_bangkok(hour: int, minute: int) -> datetime:
    today = utcnow().astimezone(BANGKOK).date()
    return datetime(today.year, today.month, today.day, hour, minute, tzinfo=BANGKOK).astimezone(UTC)


async def test_quiet_hours_drop_suppresses(suite: Suite) -> None:
    customer_id = await suite.customer(consents=EMAIL_MARKETING)
    await set_policy(suite, quiet_hours=decision_pb2.QuietHours(start="21:00", end="08:00", mode="drop"))
    night = await suite.start_decision(clock=lambda: _at_bangkok(23, 15))
    resp = await night.SendMessage(send(customer_id, "late"))
    assert resp.status == decision_pb2.SEND_STATUS_SUPPRESSED and [s.rule for s in resp.suppressed] == ["quiet_hours"]
    day = await suite.start_decision(clock=lambda: _at_bangkok(12, 0))
    ok = await day.SendMessage(send(customer_id, "noon"))
    assert ok.status in (decision_pb2.SEND_STATUS_SENT, decision_pb2.SEND_STATUS_QUEUED)
    assert len(await suite.messages(customer_id)) == 1


async def test_quiet_hours_hold_queues_then_releases_through_the_pipeline(suite: Suite) -> None:
    customer_id = await suite.customer(consents=EMAIL_MARKETING)
    await set_policy(suite, quiet_hours=decision_pb2.QuietHours(start="21:00", end="08:00", mode="hold"))
    now = [_at_bangkok(22, 30)]
    replica = await suite.start_decision(clock=lambda: now[0], settings={"release_interval_seconds": 0.1})
    resp = await replica.SendMessage(send(customer_id, "held-1"))
    assert resp.status == decision_pb2.SEND_STATUS_QUEUED and not resp.message_id
    assert from_timestamp(resp.deliver_after) == _at_bangkok(8, 0) + timedelta(days=1)
    await asyncio.sleep(0.4)
    assert await suite.messages(customer_id) == []  # still night: nothing leaves

    now[0] = _at_bangkok(8, 5) + timedelta(days=1)
    deadline = time.monotonic() + 10
    while not await suite.messages(customer_id) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    (message,) = await suite.messages(customer_id)
    decided = await suite.records(kind=audit_pb2.RECORD_KIND_DECISION, customer_id=customer_id, outcome="decided")
    payloads = [from_struct(r.payload) for r in decided]
    assert [p["action"] for p in payloads] == ["hold", "send"]
    assert payloads[1]["released_from_hold"] is True
    assert message.decision_id == decided[1].decision_id
    # Once the release has settled, a repeat of the request gets the message it sent, not "held" (a repeat
    # while the release is under way may still read "held").
    again = await replica.SendMessage(send(customer_id, "held-1"))
    while again.status == decision_pb2.SEND_STATUS_QUEUED and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        again = await replica.SendMessage(send(customer_id, "held-1"))
    assert again.status == decision_pb2.SEND_STATUS_DUPLICATE and again.message_id == message.message_id
    assert len(await suite.messages(customer_id)) == 1


async def _customer_in_holdout(suite: Suite, *, inside: bool, salt: str, share: float, journey: str = "") -> str:
    for _ in range(40):
        customer_id = await suite.customer(consents=EMAIL_MARKETING, orders=0)
        key = f"{salt}|{journey}" if journey else salt
        if (policies.bucket(customer_id, key) < share) == inside:
            return customer_id
    raise AssertionError("no customer on the wanted side of the holdout")


async def test_holdout_members_get_no_marketing_and_it_is_audited(suite: Suite) -> None:
    await set_policy(suite, control_group_share=0.5, holdout_salt="s1",
                     journey_holdouts=[decision_pb2.JourneyHoldout(journey_id="welcome", share=0.5)])
    held_out = await _customer_in_holdout(suite, inside=True, salt="s1", share=0.5)
    resp = await suite.decision.SendMessage(send(held_out, "ho-1"))
    assert resp.status == decision_pb2.SEND_STATUS_SUPPRESSED and [s.rule for s in resp.suppressed] == ["holdout"]
    (record,) = await suite.records(customer_id=held_out, outcome="suppressed")
    assert from_struct(record.payload)["rule"] == "holdout"
    assert await suite.messages(held_out) == []

    treated = await _customer_in_holdout(suite, inside=False, salt="s1", share=0.5)
    assert (await suite.decision.SendMessage(send(treated, "ho-2"))).status != decision_pb2.SEND_STATUS_SUPPRESSED

    # Outside the global control group but inside the journey's holdout: the journey send is withheld.
    for _ in range(40):
        candidate = await _customer_in_holdout(suite, inside=False, salt="s1", share=0.5)
        if policies.bucket(candidate, "s1|welcome") < 0.5:
            break
    resp = await suite.decision.SendMessage(send(candidate, "ho-3", trigger="journey", journey_id="welcome"))
    assert [s.rule for s in resp.suppressed] == ["holdout"] and "welcome" in resp.suppressed[0].detail


@pytest.mark.parametrize("high_first", [True, False])
async def test_contact_slot_goes_to_the_higher_value_whatever_the_order(suite: Suite, high_first: bool) -> None:
    await suite.decision.UpsertOffer(decision_pb2.UpsertOfferRequest(workspace_id=WS, offer=BIG_OFFER))
    await set_policy(suite, contact_slot_minutes=60, arbitration_ms=400)
    customer_id = await suite.customer(consents=EMAIL_MARKETING)
    low = send(customer_id, "slot-low", trigger="journey", journey_id="j_low")
    high = send(customer_id, "slot-high", trigger="journey", journey_id="j_high", offer_id=BIG_OFFER.offer_id)
    first, second = (high, low) if high_first else (low, high)
    async def call(req: decision_pb2.SendMessageRequest) -> decision_pb2.SendMessageResponse:
        return await suite.decision.SendMessage(req)

    first_task = asyncio.create_task(call(first))
    await asyncio.sleep(0.05)
    second_resp = await suite.decision.SendMessage(second)
    first_resp = await first_task
    by_key = {first.idempotency_key: first_resp, second.idempotency_key: second_resp}
    assert by_key["slot-high"].status in (decision_pb2.SEND_STATUS_SENT, decision_pb2.SEND_STATUS_QUEUED)
    loser = by_key["slot-low"]
    assert loser.status == decision_pb2.SEND_STATUS_SUPPRESSED
    assert [s.rule for s in loser.suppressed] == ["contact_slot"] and BIG_OFFER.offer_id in loser.suppressed[0].detail
    assert by_key["slot-high"].score.expected_value > loser.score.expected_value
    (message,) = await suite.messages(customer_id)
    assert message.offer_id == BIG_OFFER.offer_id
    # The slot is taken for the window: a later journey send loses too; an operator send does not compete.
    late = await suite.decision.SendMessage(send(customer_id, "slot-late", trigger="journey", journey_id="j3"))
    assert [s.rule for s in late.suppressed] == ["contact_slot"]
    operator = await suite.decision.SendMessage(send(customer_id, "slot-operator"))
    assert operator.status != decision_pb2.SEND_STATUS_SUPPRESSED


async def test_offer_is_suppressed_after_repeated_declines(suite: Suite) -> None:
    rule = decision_pb2.OfferRule(offer_id=OPS_OFFER.offer_id, decline_limit=2, decline_window_days=30)
    await set_policy(suite, offer_rules=[rule])
    customer_id = await suite.customer(consents=EMAIL_MARKETING)
    for i in range(2):
        await suite.decision.RecordOutcome(
            decision_pb2.RecordOutcomeRequest(
                workspace_id=WS, customer_id=customer_id, offer_id=OPS_OFFER.offer_id,
                outcome=decision_pb2.OUTCOME_DECLINE, decision_id=f"dec_x{i}",
            )
        )
    resp = await suite.decision.SendMessage(send(customer_id, "after-declines"))
    assert [s.rule for s in resp.suppressed] == ["declined"]


async def test_trigger_evaluation_dispatches_the_top_action_through_governance(suite: Suite) -> None:
    await suite.decision.UpsertOffer(decision_pb2.UpsertOfferRequest(workspace_id=WS, offer=BIG_OFFER))
    await set_policy(suite, contact_slot_minutes=0, channel_caps=email_cap(1))
    customer_id = await suite.customer(consents=EMAIL_MARKETING)
    request = decision_pb2.EvaluateTriggerRequest(
        workspace_id=WS, customer_id=customer_id, channels=[common_pb2.CHANNEL_EMAIL], dispatch=True,
        idempotency_key="trig-1", actor="segment:cart",
    )
    resp = await suite.decision.EvaluateTrigger(request)
    top = resp.decision.actions[0]
    assert resp.send.status in (decision_pb2.SEND_STATUS_SENT, decision_pb2.SEND_STATUS_QUEUED)
    (message,) = await suite.messages(customer_id)
    assert message.offer_id == top.offer_id and message.decision_id == resp.decision.decision_id
    # The email cap of 1 is used up: a second trigger drops every candidate with the cap's rule.
    request.idempotency_key = "trig-2"
    again = await suite.decision.EvaluateTrigger(request)
    assert again.send.status == decision_pb2.SEND_STATUS_SUPPRESSED and not again.decision.actions
    assert "frequency_cap" in {s.rule for s in again.decision.suppressed}
    assert len(await suite.messages(customer_id)) == 1


async def test_a_repeat_of_a_sent_message_is_a_duplicate_even_when_the_cap_is_now_full(suite: Suite) -> None:
    """Idempotency is answered before governance: the first send took the last unit of the cap, and its
    repeats (at once, concurrently, later) get the first message back, not a frequency-cap suppression."""
    customer_id = await suite.customer(consents=EMAIL_MARKETING)
    await set_policy(suite, channel_caps=email_cap(1))
    twins = await asyncio.gather(*(suite.decision.SendMessage(send(customer_id, "once")) for _ in range(12)))
    sent = [a for a in twins if a.status in (decision_pb2.SEND_STATUS_SENT, decision_pb2.SEND_STATUS_QUEUED)]
    assert len(sent) == 1, [decision_pb2.SendStatus.Name(a.status) for a in twins]
    assert {a.message_id for a in twins} == {sent[0].message_id}
    assert all(a.status == decision_pb2.SEND_STATUS_DUPLICATE for a in twins if a is not sent[0])
    later = await suite.decision.SendMessage(send(customer_id, "once"))
    assert later.status == decision_pb2.SEND_STATUS_DUPLICATE and later.message_id == sent[0].message_id
    other = await suite.decision.SendMessage(send(customer_id, "another"))  # a new request does meet the cap
    assert other.status == decision_pb2.SEND_STATUS_SUPPRESSED
    assert [s.rule for s in other.suppressed] == ["frequency_cap"]
    assert len(await suite.messages(customer_id)) == 1
    # A suppressed request's repeat is answered the same way, with its reason.
    again = await suite.decision.SendMessage(send(customer_id, "another"))
    assert again.status == decision_pb2.SEND_STATUS_SUPPRESSED and [s.rule for s in again.suppressed] == [
        "frequency_cap"]
