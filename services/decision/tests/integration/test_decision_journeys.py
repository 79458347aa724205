"""Journeys against the real suite: definitions (versioned, audited), a template from a profile
event to a delivered message, the worker process killed during a wait, and the report."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from retain.audit.v1 import audit_pb2
from retain.channels.v1 import channels_pb2
from retain.common.v1 import common_pb2
from retain.decision.v1 import decision_pb2
from retain.profile.v1 import profile_pb2
from retain_decision.domain import policies
from retain_decision.worker import Worker, WorkerSettings, build_worker
from retain_kit.protoconv import from_struct, to_struct, to_timestamp, utcnow
from test_decision_service import OPS_OFFER, Suite, field_of

pytestmark = [pytest.mark.integration]

STEP_OFFER = "journey_note"


def offer(offer_id: str) -> decision_pb2.Offer:
    copy = decision_pb2.Offer()
    copy.CopyFrom(OPS_OFFER)
    copy.offer_id = offer_id
    copy.name = f"Note {offer_id}"
    return copy


class Workspace:
    """A workspace of its own per test: the event stream is then this test's alone."""

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.ws = f"ws_j{uuid.uuid4().hex[:10]}"
        self.stream = f"retain:{self.ws}:events"

    async def setup(self, *offers: str, slot_minutes: int = 0) -> None:
        await self.suite.decision.ListOffers(decision_pb2.ListOffersRequest(workspace_id=self.ws))
        for offer_id in offers:
            await self.suite.decision.UpsertOffer(
                decision_pb2.UpsertOfferRequest(workspace_id=self.ws, offer=offer(offer_id), actor="test")
            )
        # Two steps of one journey may reach a customer within the hour in these tests.
        await self.suite.decision.SetPolicy(
            decision_pb2.SetPolicyRequest(
                workspace_id=self.ws, actor="test",
                policy=decision_pb2.Policy(contact_slot_minutes=slot_minutes),
            )
        )

    async def customer(self, user: str = "") -> str:
        user = user or f"u-{uuid.uuid4().hex[:8]}"
        ident = await self.suite.profile.Identify(profile_pb2.IdentifyRequest(
            workspace_id=self.ws, user_id=user, message_id=f"id-{user}",
            traits=to_struct({"first_name": "Nok", "email": f"{user}@example.co.th"}),
        ))
        await self.suite.profile.SetConsents(profile_pb2.SetConsentsRequest(
            workspace_id=self.ws, customer_id=ident.customer_id, actor="test",
            changes=[profile_pb2.ConsentChange(
                channel=common_pb2.CHANNEL_EMAIL, purpose="marketing", status=common_pb2.CONSENT_STATUS_GRANTED,
                source="app", lawful_basis="consent", policy_version="2025-01",
            )],
        ))
        return str(ident.customer_id)

    async def track(self, customer_id: str, event: str, **properties: Any) -> None:
        user = await self.user_of(customer_id)
        await self.suite.profile.IngestEvents(profile_pb2.IngestEventsRequest(
            workspace_id=self.ws,
            events=[profile_pb2.Event(
                message_id=f"e-{uuid.uuid4().hex}", type=profile_pb2.EVENT_TYPE_TRACK, event=event, user_id=user,
                properties=to_struct(properties), timestamp=to_timestamp(utcnow()),
            )],
        ))

    async def user_of(self, customer_id: str) -> str:
        found = await self.suite.profile.GetProfile(
            profile_pb2.GetProfileRequest(workspace_id=self.ws, customer_id=customer_id)
        )
        return next(i.value for i in found.profile.identifiers if i.kind == profile_pb2.IDENTIFIER_KIND_USER_ID)

    async def upsert(self, definition: dict[str, Any] | None = None, *, template: str = "") -> decision_pb2.Journey:
        response = await self.suite.decision.UpsertJourney(decision_pb2.UpsertJourneyRequest(
            workspace_id=self.ws, definition=to_struct(definition) if definition else None, actor="operator:nok",
            template=template,
        ))
        return response.journey

    async def messages(self, customer_id: str) -> list[channels_pb2.Message]:
        response = await self.suite.channels.ListMessages(
            channels_pb2.ListMessagesRequest(workspace_id=self.ws, customer_id=customer_id)
        )
        return list(response.messages)

    async def records(self, **filters: Any) -> list[audit_pb2.AuditRecord]:
        response = await self.suite.audit.ListRecords(
            audit_pb2.ListRecordsRequest(workspace_id=self.ws, page_size=500, **filters)
        )
        return list(response.records)

    async def report(self, journey_id: str) -> decision_pb2.JourneyReport:
        response = await self.suite.decision.GetJourneyReport(
            decision_pb2.GetJourneyReportRequest(workspace_id=self.ws, journey_id=journey_id)
        )
        return response.report

    def worker_settings(self, **extra: Any) -> dict[str, Any]:
        return {
            **self.suite.info["decision_db"], "redis_url": self.suite.info["redis_url"],
            "journey_stream_pattern": self.stream, "journey_poll_seconds": 0.2, "journey_discover_seconds": 0.3,
            # A group of its own: any other journey worker on this Redis (a stack someone runs on the same
            # machine) reads every workspace's stream in the default group and would take these events.
            "journey_consumer": f"c-{self.ws}", "journey_group": f"journeys-{self.ws}",
            "journey_block_ms": 200, "config_cache_seconds": 0.0,
            "rpc_timeout_seconds": 2.0, **extra,
        }


@pytest.fixture
async def space(suite: Suite) -> Workspace:
    return Workspace(suite)


@pytest.fixture
async def worker(space: Workspace) -> AsyncIterator[Worker]:
    built, close = await build_worker(WorkerSettings(**space.worker_settings()), space.suite.endpoints)
    yield built
    await close()


async def until(check: Callable[[], Awaitable[bool]], *, timeout: float, tick: Callable[[], Awaitable[Any]]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await tick()
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


def linear(*steps: dict[str, Any], journey_id: str = "checkout_note", **extra: Any) -> dict[str, Any]:
    trigger = {"kind": "event", "event": "Checkout Started"}
    return {"journey_id": journey_id, "name": "Checkout note", "trigger": trigger,
            "goal": {"event": "Order Completed"}, "entry": {"reentry": "never"}, "steps": list(steps), **extra}


async def test_journeys_are_versioned_audited_and_validated(suite: Suite, space: Workspace) -> None:
    await space.setup(STEP_OFFER)
    definition = linear({"step_id": "note", "kind": "send", "offer_id": STEP_OFFER, "channels": ["email"]})
    first = await space.upsert(definition)
    assert first.version == 1 and first.updated_by == "operator:nok"
    definition["steps"].insert(0, {"step_id": "pause", "kind": "wait", "hours": 1})
    second = await space.upsert(definition)
    assert second.version == 2 and [s["step_id"] for s in from_struct(second.definition)["steps"]] == ["pause", "note"]

    old = await suite.decision.GetJourney(
        decision_pb2.GetJourneyRequest(workspace_id=space.ws, journey_id="checkout_note", version=1)
    )
    assert [s["step_id"] for s in from_struct(old.journey.definition)["steps"]] == ["note"]
    listed = await suite.decision.ListJourneys(decision_pb2.ListJourneysRequest(workspace_id=space.ws))
    assert [(j.journey_id, j.version) for j in listed.journeys] == [("checkout_note", 2)]
    config = await space.records(kind=audit_pb2.RECORD_KIND_CONFIG, outcome="journey_upserted")
    assert sorted(from_struct(r.payload)["journey"]["version"] for r in config) == [1, 2]

    bad_cases = [
        (linear({"step_id": "n", "kind": "send", "offer_id": "no_such_offer", "channels": ["email"]}),
         "journey.steps[0].offer_id"),
        (linear({"step_id": "n", "kind": "branch", "condition": "open('x')", "then": "exit"}),
         "journey.steps[0].condition"),
        (linear({"step_id": "n", "kind": "send", "offer_id": "winback_200_baht", "channels": ["push"]}),
         "journey.steps[0].channels"),
    ]
    for bad, field in bad_cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await space.upsert(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field_of(err.value) == field
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await space.upsert(template="no_such_template")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and field_of(err.value) == "template"
    assert len(await space.records(kind=audit_pb2.RECORD_KIND_CONFIG, outcome="journey_upserted")) == 2

    shipped = await suite.decision.ListJourneyTemplates(decision_pb2.ListJourneyTemplatesRequest())
    assert len(shipped.templates) == 10
    for template in shipped.templates:  # every template installs against the demo catalogue
        installed = await space.upsert(template=template.name)
        assert installed.journey_id == template.name and installed.version == 1


async def test_template_runs_from_a_profile_event_to_a_delivered_message(
    suite: Suite, space: Workspace, worker: Worker
) -> None:
    """welcome_series: "Signed Up" ingested by profile, published to Redis, consumed by the worker,
    sent through the decision pipeline, delivered by channels' log provider, all audited."""
    await space.setup(slot_minutes=60)
    await space.upsert(template="welcome_series")
    # The template holds 10% out; pick customers outside the holdout for a delivery.
    customer_id = await space.customer()
    while policies.bucket(customer_id, "retain|welcome_series") < 0.1:
        customer_id = await space.customer()
    await space.track(customer_id, "Signed Up", plan="free")

    async def tick() -> None:
        await worker.discover()
        await worker.consume_once()
        await worker.engine.fire_due_timers()
        await worker.engine.run_effects()

    async def delivered() -> bool:
        return any(m.status == common_pb2.DELIVERY_STATUS_DELIVERED or m.status == common_pb2.DELIVERY_STATUS_SENT
                   for m in await space.messages(customer_id))

    await until(delivered, timeout=20, tick=tick)
    (message,) = await space.messages(customer_id)
    assert message.offer_id == "welcome_points" and message.channel == common_pb2.CHANNEL_EMAIL
    assert message.idempotency_key.startswith("journey:jin_") and message.idempotency_key.endswith(":welcome")
    assert "Nok" in message.body and message.provider

    decided = [r for r in await space.records(kind=audit_pb2.RECORD_KIND_DECISION, customer_id=customer_id)
               if r.outcome == "decided"]
    assert len(decided) == 1
    payload = from_struct(decided[0].payload)
    assert payload["trigger"] == "journey" and payload["journey_id"] == "welcome_series"
    assert payload["action"] == "send" and decided[0].decision_id == message.decision_id
    sent = await space.records(kind=audit_pb2.RECORD_KIND_MESSAGE, customer_id=customer_id)
    assert {r.outcome for r in sent} & {"sent", "delivered", "queued"}
    assert message.journey_id == "welcome_series"
    # An auditor asking for the journey's trail gets its configuration, the decision and every message record.
    trail = await space.records(journey_id="welcome_series")
    assert {r.record_id for r in trail} >= {decided[0].record_id} | {r.record_id for r in sent}
    assert any(r.kind == audit_pb2.RECORD_KIND_CONFIG and r.outcome == "journey_upserted" for r in trail)
    assert all(r.journey_id == "welcome_series" for r in trail)

    # The instance now waits two days; the same stream entry delivered again changes nothing.
    await worker.redis.xgroup_setid(space.stream, worker.settings.journey_group, id="0")
    await worker.consume_once()
    await worker.engine.run_effects()
    assert len(await space.messages(customer_id)) == 1
    report = await space.report("welcome_series")
    assert report.entered == 1 and report.treated == 1 and report.active == 1
    welcome = next(s for s in report.steps if s.step_id == "welcome")
    assert (welcome.entered, welcome.sent) == (1, 1)
    assert next(s for s in report.steps if s.step_id == "wait_2d").entered == 1

    # The goal event converts the instance and ends it.
    await space.track(customer_id, "Order Completed", revenue=500)

    async def converted() -> bool:
        return (await space.report("welcome_series")).converted_treated == 1

    await until(converted, timeout=10, tick=tick)
    report = await space.report("welcome_series")
    assert report.exited == 1 and report.active == 0 and report.conversion_treated == 1.0
    # The customer's path, from the step log: in, the send, the wait, out on the goal.
    assert [(t.source, t.target, t.count) for t in report.transitions] == [
        ("(start)", "welcome", 1), ("welcome", "wait_2d", 1), ("wait_2d", "(exited: goal)", 1)
    ]


async def test_suppressed_sends_holdout_and_lift_in_the_report(
    suite: Suite, space: Workspace, worker: Worker
) -> None:
    await space.setup(STEP_OFFER)
    await space.upsert(linear(
        {"step_id": "note", "kind": "send", "offer_id": STEP_OFFER, "channels": ["email"]},
        holdout_share=0.5,
    ))
    customers = [await space.customer() for _ in range(6)]
    # One customer withdrew consent: the pipeline suppresses, and the report says why.
    no_consent = await space.customer()
    await suite.profile.SetConsents(profile_pb2.SetConsentsRequest(
        workspace_id=space.ws, customer_id=no_consent, actor="test",
        changes=[profile_pb2.ConsentChange(
            channel=common_pb2.CHANNEL_EMAIL, purpose="marketing", status=common_pb2.CONSENT_STATUS_WITHDRAWN,
            source="app", lawful_basis="consent", policy_version="2025-01",
        )],
    ))
    everyone = [*customers, no_consent]
    for cid in everyone:
        await space.track(cid, "Checkout Started", total=900)
    held = {cid for cid in everyone if policies.bucket(cid, "retain|checkout_note") < 0.5}

    async def tick() -> None:
        await worker.discover()
        await worker.consume_once()
        await worker.engine.run_effects()

    async def all_in() -> bool:
        return (await space.report("checkout_note")).completed == len(everyone)

    await until(all_in, timeout=20, tick=tick)
    for cid in customers[:2]:
        await space.track(cid, "Order Completed", revenue=100)

    async def goals() -> bool:
        r = await space.report("checkout_note")
        return r.converted_treated + r.converted_holdout == 2

    await until(goals, timeout=10, tick=tick)
    report = await space.report("checkout_note")
    assert report.entered == len(everyone) and report.holdout == len(held)
    note = report.steps[0]
    assert note.withheld == len(held) and note.entered == len(everyone)
    suppressed = {r.reason: r.count for r in note.suppressed}
    expected_suppressed = 0 if no_consent in held else 1
    assert sum(suppressed.values()) == expected_suppressed
    if expected_suppressed:
        assert set(suppressed) == {"no_consent"}
    assert note.sent == len(everyone) - len(held) - expected_suppressed
    assert [(t.source, t.target, t.count) for t in report.transitions] == [
        ("(start)", "note", len(everyone)), ("note", "(completed)", len(everyone))
    ]
    for cid in everyone:
        assert len(await space.messages(cid)) == (1 if cid not in held and cid != no_consent else 0)
    treated_conv = sum(1 for c in customers[:2] if c not in held)
    assert report.converted_treated == treated_conv and report.converted_holdout == 2 - treated_conv
    if report.treated and report.holdout:
        assert report.lift_ci_low <= report.lift <= report.lift_ci_high
        assert report.lift == pytest.approx(report.conversion_treated - report.conversion_holdout)


async def test_a_scheduled_journey_runs_at_once_over_the_customers_seen(space: Workspace) -> None:
    """Its first run is due on install, while the worker may still hold the active journeys it cached
    a moment before: the run must find the new journey, not end its schedule."""
    await space.setup(STEP_OFFER)
    worker, close = await build_worker(WorkerSettings(**space.worker_settings(config_cache_seconds=60.0)),
                                       space.suite.endpoints)
    try:
        customers = [await space.customer() for _ in range(3)]
        for cid in customers:
            await space.track(cid, "App Opened")
        await worker.discover()
        deadline = time.monotonic() + 10
        while worker.processed < len(customers):
            assert time.monotonic() < deadline, "the events were never consumed"
            await worker.consume_once()
        assert await worker.engine.active(space.ws) == []  # cached, for the next minute
        await space.upsert({
            "journey_id": "daily_note", "name": "Daily note", "trigger": {"kind": "schedule", "every_hours": 24},
            "entry": {"reentry": "never"},
            "steps": [{"step_id": "note", "kind": "send", "offer_id": STEP_OFFER, "channels": ["email"]}],
        })
        assert await worker.engine.fire_due_timers() == 1
        while await worker.engine.run_effects():
            pass
        report = await space.report("daily_note")
        assert report.entered == len(customers) and report.steps[0].sent == len(customers)
        # The next run is a day later: firing again now changes nothing.
        assert await worker.engine.fire_due_timers() == 0
        assert (await space.report("daily_note")).entered == len(customers)
    finally:
        await close()
    for cid in customers:
        assert [m.offer_id for m in await space.messages(cid)] == [STEP_OFFER]


def _spawn(settings: dict[str, Any], suite: Suite) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update({
        "RETAIN_DECISION_DATABASE_URL": settings["database_url"],
        "RETAIN_DECISION_SERVICE_NAME": settings["service_name"],
        "REDIS_URL": settings["redis_url"],
        "RETAIN_PROFILE_ADDR": suite.endpoints.profile_addr,
        "RETAIN_SCORING_ADDR": suite.endpoints.scoring_addr,
        "RETAIN_CHANNELS_ADDR": suite.endpoints.channels_addr,
        "RETAIN_AUDIT_ADDR": suite.endpoints.audit_addr,
        "OTEL_SDK_DISABLED": "true",
        "RETAIN_DECISION_LOG_LEVEL": "WARNING",
    })
    for key, value in settings.items():
        if key.startswith("journey_") or key == "config_cache_seconds":
            env[f"RETAIN_DECISION_{key.upper()}"] = str(value)
    return subprocess.Popen([sys.executable, "-m", "retain_decision", "worker"], env=env)


async def test_worker_killed_during_a_wait_loses_no_step_and_repeats_none(suite: Suite, space: Workspace) -> None:
    await space.setup("journey_first", "journey_second")
    await space.upsert(linear(
        {"step_id": "first", "kind": "send", "offer_id": "journey_first", "channels": ["email"]},
        {"step_id": "pause", "kind": "wait", "seconds": 2},
        {"step_id": "second", "kind": "send", "offer_id": "journey_second", "channels": ["email"]},
        journey_id="two_notes",
    ))
    customer_id = await space.customer()
    # A kill between a send and its bookkeeping leaves the effect leased; a short lease lets the
    # restarted worker finish it (as a duplicate at channels) within the test.
    settings = space.worker_settings(journey_lease_seconds=1.5)
    proc = _spawn(settings, suite)
    try:
        await space.track(customer_id, "Checkout Started", total=1)
        # A bound, not a speed test: the new process imports and connects first (slow on a loaded machine).
        deadline = time.monotonic() + 60
        while not await space.messages(customer_id):
            assert time.monotonic() < deadline, "the first step was never sent"
            assert proc.poll() is None, "the worker died"
            await asyncio.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)  # mid-wait: the second step is still two seconds away
        proc.wait(5)
        assert len(await space.messages(customer_id)) == 1
        await asyncio.sleep(2.5)  # the timer falls due while no worker runs
        assert len(await space.messages(customer_id)) == 1
        proc = _spawn(settings, suite)
        deadline = time.monotonic() + 60
        while len(await space.messages(customer_id)) < 2:
            assert time.monotonic() < deadline, "the second step was lost"
            await asyncio.sleep(0.1)
        while sum(s.sent for s in (await space.report("two_notes")).steps) < 2:
            assert time.monotonic() < deadline, "a send was never accounted for"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # room for a wrong repeat to show
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    sent = await space.messages(customer_id)
    assert sorted(m.offer_id for m in sent) == ["journey_first", "journey_second"]
    # A step re-run after the kill may decide again, but channels answers "duplicate": the audit
    # trail holds exactly one message per step.
    decided = [r for r in await space.records(kind=audit_pb2.RECORD_KIND_DECISION, customer_id=customer_id)
               if r.outcome == "decided" and from_struct(r.payload).get("action") == "send"]
    assert {r.offer_id for r in decided} == {"journey_first", "journey_second"}
    keys = {from_struct(r.payload)["idempotency_key"] for r in decided}
    assert len(keys) == 2 and all(k.startswith("journey:jin_") for k in keys)
    audited = await space.records(kind=audit_pb2.RECORD_KIND_MESSAGE, customer_id=customer_id)
    per_message = {r.message_id: r.offer_id for r in audited if r.message_id}
    assert sorted(per_message.values()) == ["journey_first", "journey_second"]
    report = await space.report("two_notes")
    assert [(s.step_id, s.entered, s.sent) for s in report.steps] == [
        ("first", 1, 1), ("pause", 1, 0), ("second", 1, 1)
    ]
    assert report.completed == 1


async def test_redelivered_and_concurrent_timers_fire_once(suite: Suite, space: Workspace, worker: Worker) -> None:
    """Two workers over one database: timers are leased and instance saves compare revisions."""
    await space.setup(STEP_OFFER)
    await space.upsert(linear(
        {"step_id": "pause", "kind": "wait", "seconds": 0.5},
        {"step_id": "note", "kind": "send", "offer_id": STEP_OFFER, "channels": ["email"]},
    ))
    other, close = await build_worker(WorkerSettings(**space.worker_settings(journey_consumer="other")),
                                      suite.endpoints)
    try:
        customers = [await space.customer() for _ in range(4)]
        for cid in customers:
            await space.track(cid, "Checkout Started")
        for _ in range(30):
            await asyncio.gather(worker.discover(), other.discover())
            await asyncio.gather(worker.consume_once(), other.consume_once())
            await asyncio.gather(worker.engine.fire_due_timers(), other.engine.fire_due_timers())
            await asyncio.gather(worker.engine.run_effects(), other.engine.run_effects())
            if (await space.report("checkout_note")).completed == len(customers):
                break
            await asyncio.sleep(0.2)
    finally:
        await close()
    report = await space.report("checkout_note")
    assert report.entered == len(customers) and report.completed == len(customers)
    for cid in customers:
        assert len(await space.messages(cid)) == 1


async def test_one_stream_batch_with_a_trigger_its_goal_and_unrelated_events(space: Workspace, worker: Worker) -> None:
    """The worker triages a batch (one query for it): unrelated events are acknowledged without work, but an
    event after a trigger in the same batch still reaches the instance the trigger started."""
    await space.setup("journey_first")
    await space.upsert(linear({"step_id": "pause", "kind": "wait", "hours": 1}, journey_id="wait_then_goal"))
    buyer, browser = await space.customer(), await space.customer()
    user_of = {cid: await space.user_of(cid) for cid in (buyer, browser)}

    def event(cid: str, name: str) -> profile_pb2.Event:
        return profile_pb2.Event(message_id=f"e-{uuid.uuid4().hex}", type=profile_pb2.EVENT_TYPE_TRACK, event=name,
                                 user_id=user_of[cid], timestamp=to_timestamp(utcnow()))

    await space.suite.profile.IngestEvents(profile_pb2.IngestEventsRequest(workspace_id=space.ws, events=[
        event(browser, "App Opened"), event(buyer, "Checkout Started"), event(browser, "Product Viewed"),
        event(buyer, "Order Completed"), event(browser, "App Opened"),
    ]))
    # Entries no worker can ever handle are dropped (acknowledged), not retried for ever: properties that
    # are not JSON on an event the journey would look at, and an entry without a timestamp.
    await worker.redis.xadd(space.stream, {"message_id": "bad-1", "customer_id": browser, "event": "Checkout Started",
                                           "type": "track", "timestamp": utcnow().isoformat(), "properties": "{oops"})
    await worker.redis.xadd(space.stream, {"message_id": "bad-2", "customer_id": browser, "event": "App Opened"})
    await worker.discover()
    for _ in range(3):  # its own backlog first (empty), then the new entries
        await worker.consume_once()
    report = await space.report("wait_then_goal")
    assert report.entered == 1 and report.converted_treated == 1 and report.exited == 1
    pending = await worker.redis.xpending(space.stream, worker.settings.journey_group)
    assert pending["pending"] == 0
    assert worker.processed >= 8  # two identifies, five tracks and the bad-1 drop, each acknowledged once
    from retain_decision.journeys_repository import WatchRepository

    async with worker.engine.sessions() as session:
        audience = await WatchRepository(session).audience(space.ws, after="", limit=10)
    assert set(audience) == {buyer, browser}
