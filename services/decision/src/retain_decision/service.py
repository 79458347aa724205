"""Decision use cases over the ports: catalogue, policy, next-best-actions, trigger evaluation,
operator and journey sends, outcomes, and the release of messages held for quiet hours.

Failure policy: consent (profile), audit and the cap counters (Redis) fail closed for sends
(UNAVAILABLE, nothing sent); scoring degrades to the catalogue's prior propensities, and the
decision record says so (`degraded`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from retain_kit.cache import TtlCache
from retain_kit.errors import FailedPrecondition, InvalidArgument, NotFound, RetainError, Unavailable
from retain_kit.protoconv import utcnow
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from retain_decision.domain import messages, policies
from retain_decision.domain.catalogue import default_offers
from retain_decision.domain.offers import CHANNELS, PLACEMENTS, Offer, OfferError, to_dict, validate
from retain_decision.domain.pipeline import (
    Action,
    Breakdown,
    CustomerContext,
    ModelRef,
    Propensity,
    Request,
    Result,
    Suppressed,
    decide,
)
from retain_decision.domain.policies import GovernancePolicy, PolicyError
from retain_decision.ports import (
    PENDING,
    AuditEntry,
    AuditSink,
    ConsentAnswer,
    CounterStore,
    CustomerProfile,
    CustomerScores,
    Dispatcher,
    OutboundMessage,
    ProfileReader,
    Scorer,
    SlotBid,
)
from retain_decision.repository import DeclineRepository, HoldRepository, OfferRepository, PolicyRepository

log = logging.getLogger(__name__)
T = TypeVar("T")
Clock = Callable[[], datetime]
OUTCOMES = ("impression", "click", "accept", "decline")
SEED_ACTOR = "system:demo-seed"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _require(value: str, name: str) -> None:
    if not value:
        raise InvalidArgument(f"{name} is required", field=name)


class Catalogue:
    """Versioned offers per workspace; every change is audited (RECORD_KIND_CONFIG) before commit.

    A workspace with no offers at all gets the demo catalogue (domain/catalogue.py) on first read,
    when `seed_demo` is on, so next-best-actions work out of the box.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        audit: AuditSink,
        *,
        seed_demo: bool,
        clock: Clock = utcnow,
        cache_seconds: float = 0.0,
    ) -> None:
        self.sessions = sessions
        self.audit = audit
        self.seed_demo = seed_demo
        self.clock = clock
        # SQLite has no row locks: serialise writers within the process; PostgreSQL locks the row.
        self._lock = asyncio.Lock()
        self._seeded: set[str] = set()
        # Active offers are read on every decision; other replicas' changes show within `cache_seconds`.
        self._active = TtlCache[list[Offer]](cache_seconds)

    async def upsert(self, workspace_id: str, offer: Offer, *, actor: str) -> Offer:
        _require(workspace_id, "workspace_id")
        try:
            offer = validate(offer)
        except OfferError as exc:
            raise InvalidArgument(str(exc), field=exc.field) from exc
        async with self._lock:
            for _ in range(3):
                async with self.sessions() as session:
                    try:
                        stored, previous = await OfferRepository(session).save(
                            workspace_id, offer, actor=actor, now=self.clock()
                        )
                        # Audited before commit: an unaudited configuration change must not exist.
                        await self.audit.append(
                            workspace_id,
                            AuditEntry(
                                kind="config",
                                outcome="offer_upserted",
                                offer_id=stored.offer_id,
                                actor=actor,
                                payload={"offer": to_dict(stored), "previous_version": previous},
                                idempotency_key=f"offer:{stored.offer_id}:v{stored.version}",
                            ),
                        )
                        await session.commit()
                        self._active.forget(workspace_id)
                        return stored
                    except IntegrityError:
                        await session.rollback()
            raise Unavailable("offer was changed concurrently; retry")

    async def offers(self, workspace_id: str, *, include_inactive: bool) -> list[Offer]:
        _require(workspace_id, "workspace_id")
        if not include_inactive and (cached := self._active.get(workspace_id)) is not None:
            return cached
        await self.ensure_seeded(workspace_id)
        async with self.sessions() as session:
            offers = await OfferRepository(session).list_offers(workspace_id, include_inactive=include_inactive)
        if not include_inactive:
            self._active.put(workspace_id, offers)
        return offers

    async def get(self, workspace_id: str, offer_id: str) -> Offer | None:
        await self.ensure_seeded(workspace_id)
        async with self.sessions() as session:
            return await OfferRepository(session).get(workspace_id, offer_id)

    async def versions(self, workspace_id: str, offer_id: str) -> list[Offer]:
        async with self.sessions() as session:
            return await OfferRepository(session).versions(workspace_id, offer_id)

    async def ensure_seeded(self, workspace_id: str) -> None:
        if not self.seed_demo or workspace_id in self._seeded:
            return
        async with self._lock:
            async with self.sessions() as session:
                repo = OfferRepository(session)
                if await repo.count(workspace_id) > 0:
                    self._seeded.add(workspace_id)
                    return
                try:
                    stored = await repo.save_all(workspace_id, default_offers(), actor=SEED_ACTOR, now=self.clock())
                    await self.audit.append(
                        workspace_id,
                        AuditEntry(
                            kind="config",
                            outcome="catalogue_seeded",
                            actor=SEED_ACTOR,
                            payload={"offers": [{"offer_id": o.offer_id, "version": o.version} for o in stored]},
                            idempotency_key="catalogue:demo-seed",
                        ),
                    )
                    await session.commit()
                except IntegrityError:
                    # Another replica seeded first; its catalogue is the same.
                    await session.rollback()
            self._seeded.add(workspace_id)


class Policies:
    """The workspace's governance policy: versioned, and audited (RECORD_KIND_CONFIG) before commit.

    A workspace that never set one runs on `defaults` (version 0).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        audit: AuditSink,
        *,
        defaults: GovernancePolicy,
        clock: Clock = utcnow,
        cache_seconds: float = 0.0,
    ) -> None:
        self.sessions = sessions
        self.audit = audit
        self.defaults = defaults
        self.clock = clock
        self._lock = asyncio.Lock()
        # The current policy is read on every decision; other replicas' changes show within `cache_seconds`.
        self._current = TtlCache[GovernancePolicy](cache_seconds)

    async def get(self, workspace_id: str, *, version: int = 0) -> GovernancePolicy:
        _require(workspace_id, "workspace_id")
        if version < 0:
            raise InvalidArgument("version must not be negative", field="version")
        if not version and (cached := self._current.get(workspace_id)) is not None:
            return cached
        async with self.sessions() as session:
            repo = PolicyRepository(session)
            if version:
                found = await repo.version(workspace_id, version)
                if found is None:
                    raise NotFound(f"policy version {version} not found", field="version")
                return found
            current = await repo.current(workspace_id) or self.defaults
        self._current.put(workspace_id, current)
        return current

    async def set(
        self, workspace_id: str, policy: GovernancePolicy, *, actor: str, expected_version: int = 0
    ) -> GovernancePolicy:
        _require(workspace_id, "workspace_id")
        try:
            policy = policies.validate(policy)
        except PolicyError as exc:
            raise InvalidArgument(str(exc), field=exc.field) from exc
        async with self._lock:
            for _ in range(3):
                async with self.sessions() as session:
                    try:
                        repo = PolicyRepository(session)
                        stored, previous = await repo.save(workspace_id, policy, actor=actor, now=self.clock())
                        if expected_version and previous != expected_version:
                            raise FailedPrecondition(
                                f"policy is at version {previous}, not {expected_version}", field="expected_version"
                            )
                        await self.audit.append(
                            workspace_id,
                            AuditEntry(
                                kind="config",
                                outcome="policy_set",
                                actor=actor,
                                payload={"policy": policies.to_dict(stored), "previous_version": previous},
                                idempotency_key=f"policy:v{stored.version}",
                            ),
                        )
                        await session.commit()
                        self._current.forget(workspace_id)
                        return stored
                    except IntegrityError:
                        await session.rollback()
            raise Unavailable("policy was changed concurrently; retry")


@dataclass(frozen=True)
class Limits:
    rpc_timeout_seconds: float = 2.0
    default_limit: int = 3
    max_limit: int = 20
    default_locale: str = "th"
    # How often held (quiet-hours) messages are checked for release, and how many per pass.
    release_interval_seconds: float = 5.0
    release_batch: int = 100


TRIGGERS = ("placement", "contact_centre", "trigger", "operator", "journey")
# Sends that compete for the customer's contact slot (operators send deliberately, outside it).
SLOT_TRIGGERS = frozenset({"trigger", "journey"})


@dataclass(frozen=True)
class Trigger:
    """What asked for the decision: kind (one of TRIGGERS), the journey if any, who."""

    kind: str
    journey_id: str = ""
    actor: str = ""


@dataclass(frozen=True)
class NextBestActions:
    decision_id: str
    customer: CustomerProfile
    scores: CustomerScores
    result: Result
    decided_at: datetime
    degraded: bool
    models: tuple[ModelRef, ...]


@dataclass(frozen=True)
class SendRequest:
    customer_id: str
    channel: str
    offer_id: str
    purpose: str
    idempotency_key: str
    actor: str = ""
    locale: str = ""
    variables: Mapping[str, Any] = field(default_factory=dict)
    trigger: str = "operator"
    journey_id: str = ""


@dataclass(frozen=True)
class SendOutcome:
    decision_id: str
    status: str
    message_id: str = ""
    delivery_status: str = ""
    provider: str = ""
    suppressed: tuple[Suppressed, ...] = ()
    deliver_after: datetime | None = None
    score: Breakdown | None = None


# A repeat finds the first request's outcome this long (channels keep refusing a second message for ever);
# a holder that died mid-request blocks its repeats for at most PENDING_SECONDS.
IDEMPOTENCY_SECONDS = 7 * 24 * 3600
PENDING_SECONDS = 30


def _outcome_json(outcome: SendOutcome) -> str:
    return json.dumps({
        "decision_id": outcome.decision_id, "status": outcome.status, "message_id": outcome.message_id,
        "delivery_status": outcome.delivery_status, "provider": outcome.provider,
        "suppressed": [asdict(s) for s in outcome.suppressed],
        "deliver_after": outcome.deliver_after.isoformat() if outcome.deliver_after else None,
    })


def _outcome_of(stored: str) -> SendOutcome:
    """A repeat's answer: "duplicate" with the first message when one was made, else the same suppression or
    hold as the first request."""
    data = json.loads(stored)
    made = bool(data["message_id"])
    return SendOutcome(
        data["decision_id"], "duplicate" if made else data["status"], message_id=data["message_id"],
        delivery_status=data["delivery_status"], provider=data["provider"],
        suppressed=tuple(Suppressed(**s) for s in data["suppressed"]),
        deliver_after=datetime.fromisoformat(data["deliver_after"]) if data["deliver_after"] else None,
    )


@dataclass(frozen=True)
class TriggerOutcome:
    decision: NextBestActions
    send: SendOutcome | None


def suppressed_dict(s: Suppressed) -> dict[str, str]:
    return {"offer_id": s.offer_id, "channel": s.channel, "rule": s.rule, "detail": s.detail}


def _request_dict(req: SendRequest) -> dict[str, Any]:
    return {
        "customer_id": req.customer_id, "channel": req.channel, "offer_id": req.offer_id, "purpose": req.purpose,
        "idempotency_key": req.idempotency_key, "actor": req.actor, "locale": req.locale,
        "variables": dict(req.variables), "trigger": req.trigger, "journey_id": req.journey_id,
    }


@dataclass
class _Decided:
    """One run of the pipeline with everything it was run on."""

    decision_id: str
    profile: CustomerProfile
    scores: CustomerScores
    policy: GovernancePolicy
    ctx: CustomerContext
    offers: list[Offer]
    result: Result
    now: datetime
    degraded: list[str]


class Decisions:
    """Every path (next-best-actions, trigger evaluation, operator and journey sends) runs the same
    pipeline (`domain.pipeline.decide`) over a context gathered here; sends then reserve the contact
    slot and the cap counters, write the decision record, and only then dispatch."""

    def __init__(
        self,
        catalogue: Catalogue,
        *,
        policies: Policies,
        profiles: ProfileReader,
        scorer: Scorer,
        dispatcher: Dispatcher,
        audit: AuditSink,
        counters: CounterStore,
        sessions: async_sessionmaker[AsyncSession],
        limits: Limits,
        clock: Clock = utcnow,
    ) -> None:
        self.catalogue = catalogue
        self.policies = policies
        self.profiles = profiles
        self.scorer = scorer
        self.dispatcher = dispatcher
        self.audit = audit
        self.counters = counters
        self.sessions = sessions
        self.limits = limits
        self.clock = clock

    async def _within(self, call: Awaitable[T], *, service: str) -> T:
        """A deadline of our own on top of the RPC's, so a hung dependency cannot hold a request."""
        try:
            return await asyncio.wait_for(call, self.limits.rpc_timeout_seconds + 0.25)
        except TimeoutError as exc:
            raise Unavailable(f"{service} did not answer in time") from exc

    # --- the one pipeline ---------------------------------------------------------------------

    async def _decide(
        self,
        workspace_id: str,
        customer_id: str,
        offers: list[Offer],
        request: Request,
        *,
        consent_check: tuple[str, str] | None = None,
        fail_closed: bool,
    ) -> _Decided:
        """Gather the context and run `decide`. `consent_check` (channel, purpose) asks profile's
        consent check on top of the profile's consent list; `fail_closed` makes unreadable cap
        counters an error (a send) rather than a degraded answer (a recommendation)."""
        # The profile first: scoring then gets its features with the request instead of reading the
        # profile again (same depth of calls, one profile read fewer, segment-aware propensities).
        calls: list[Awaitable[Any]] = [
            self._within(self.profiles.get_profile(workspace_id, customer_id), service="profile"),
            self.policies.get(workspace_id),
        ]
        if consent_check:
            channel, purpose = consent_check
            calls.append(
                self._within(
                    self.profiles.check_consent(workspace_id, customer_id, channel=channel, purpose=purpose),
                    service="profile",
                )
            )
        answers = await asyncio.gather(*calls, return_exceptions=True)
        profile_r, policy_r = answers[:2]
        for hard in answers:
            if isinstance(hard, BaseException):
                raise hard
        assert isinstance(profile_r, CustomerProfile) and isinstance(policy_r, GovernancePolicy)
        profile, policy = profile_r, policy_r
        consents: dict[tuple[str, str], str] = dict(profile.consents)
        if consent_check:
            answer = answers[2]
            assert isinstance(answer, ConsentAnswer)
            # The consent check is authoritative at decision time (e.g. a LINE unfollow just now).
            consents[consent_check] = "granted" if answer.allowed else (answer.status or "not_given")

        now = self.clock()
        ctx = CustomerContext(
            customer_id=profile.customer_id,
            features=profile.features,
            consents=consents,
            workspace_id=workspace_id,
            time_zone=profile.time_zone,
        )
        degraded: list[str] = []
        # Scores, cap counters and declines depend only on the profile: fetch them side by side.
        parts: dict[str, Awaitable[Any]] = {"scores": self._scores(workspace_id, profile, offers, degraded)}
        if not request.placement:
            parts["counts"] = self._counts(ctx, offers, request, policy, now, fail_closed, degraded)
        if any(r.decline_limit > 0 for r in policy.offer_rules.values()):
            parts["declines"] = self._declines(workspace_id, profile.customer_id, policy, now)
        answered = await asyncio.gather(*parts.values(), return_exceptions=True)
        found: dict[str, Any] = dict(zip(parts, answered, strict=True))
        for failed in found.values():
            if isinstance(failed, BaseException):
                raise failed
        scores, propensities = found["scores"]
        ctx = replace(
            ctx, scores=scores.values, propensities=propensities,
            counts=found.get("counts", ctx.counts), declines=found.get("declines", ctx.declines),
        )
        result = decide(ctx, offers, request, now=now, policy=policy)
        return _Decided(new_id("dec"), profile, scores, policy, ctx, offers, result, now, degraded)

    async def _scores(
        self, workspace_id: str, profile: CustomerProfile, offers: Sequence[Offer], degraded: list[str]
    ) -> tuple[CustomerScores, Mapping[str, Propensity]]:
        try:
            scored = await self._within(
                self.scorer.score_for_decision(
                    workspace_id, profile.customer_id, [o.offer_id for o in offers], features=profile.features_message
                ),
                service="scoring",
            )
        except RetainError as exc:
            # Without scoring the answer is still governed, only ranked on priors: say so, do not fail.
            degraded.append(f"scoring: {exc.message}")
            return CustomerScores({}, {}), {}
        if scored.scores_unavailable:
            degraded.append(f"customer scores: {scored.scores_unavailable}")
        return scored.scores, scored.propensities

    async def _declines(
        self, workspace_id: str, customer_id: str, policy: GovernancePolicy, now: datetime
    ) -> dict[str, list[datetime]]:
        window = max(r.decline_window_days for r in policy.offer_rules.values())
        async with self.sessions() as session:
            return await DeclineRepository(session).since(workspace_id, customer_id, since=now - timedelta(days=window))

    async def _counts(
        self,
        ctx: CustomerContext,
        offers: Sequence[Offer],
        request: Request,
        policy: GovernancePolicy,
        now: datetime,
        fail_closed: bool,
        degraded: list[str],
    ) -> Mapping[str, int]:
        tz = policies.zone(ctx.time_zone, policy.default_time_zone)
        keys = {policies.load_key(workspace_id=ctx.workspace_id, customer_id=ctx.customer_id, now=now, tz=tz)}
        for offer in offers:
            for channel in offer.channels:
                if request.channels and channel not in request.channels:
                    continue
                counters = policies.counters_for(
                    policy, workspace_id=ctx.workspace_id, customer_id=ctx.customer_id, channel=channel,
                    offer_id=offer.offer_id, now=now, tz=tz,
                )
                keys.update(c.key for c in counters)
        try:
            return await self.counters.counts(sorted(keys))
        except RetainError as exc:
            if fail_closed:
                raise
            degraded.append(f"cap counters: {exc.message}")
            return {}

    async def _audit_decision(
        self, workspace_id: str, d: _Decided, *, trigger: Trigger, request: Request, extra: Mapping[str, Any]
    ) -> None:
        models = _models(d.scores, d.result)
        await self.audit.append(
            workspace_id,
            AuditEntry(
                kind="decision",
                outcome="decided",
                customer_id=d.profile.customer_id,
                decision_id=d.decision_id,
                channel=str(extra.get("channel", "")),
                offer_id=str(extra.get("offer_id", "")),
                journey_id=trigger.journey_id,
                actor=trigger.actor,
                occurred_at=d.now,
                # Keyed although a decision id is never reused: the channel's retry policy repeats an append
                # that met UNAVAILABLE, which may have been committed (audit killed before it answered).
                idempotency_key=d.decision_id,
                payload={
                    "trigger": trigger.kind,
                    "journey_id": trigger.journey_id,
                    "request": {"placement": request.placement, "channels": list(request.channels),
                                "limit": request.limit},
                    "policy_version": d.policy.version,
                    "candidates": [{"offer_id": o.offer_id, "version": o.version} for o in d.offers],
                    "scores": dict(d.scores.values),
                    # "model", not "name": "name" is a personal-data key to audit, which would seal these
                    # (and erase them with the customer) and look up a data key for every decision.
                    "models": [{"model": m.name, "version": m.version} for m in models],
                    "actions": [
                        {
                            "rank": a.rank,
                            "offer_id": a.offer.offer_id,
                            "channel": a.channel,
                            "expected_value": a.score.expected_value,
                            "propensity": a.score.propensity,
                            "contact_cost": a.score.contact_cost,
                            "model": f"{a.score.model.name}:{a.score.model.version}",
                            "reason": a.reason,
                        }
                        for a in d.result.actions
                    ],
                    "suppressed": [suppressed_dict(s) for s in d.result.suppressed],
                    "degraded": bool(d.degraded),
                    "degraded_reason": "; ".join(d.degraded),
                    **extra,
                },
            ),
        )

    def _nba(self, d: _Decided) -> NextBestActions:
        return NextBestActions(
            d.decision_id, d.profile, d.scores, d.result, d.now, bool(d.degraded), _models(d.scores, d.result)
        )

    # --- next-best-actions and trigger evaluation ----------------------------------------------

    def _check_request(self, placement: str, channels: Sequence[str], limit: int) -> int:
        if placement and placement not in PLACEMENTS:
            raise InvalidArgument(f"placement must be one of {', '.join(PLACEMENTS)}", field="placement")
        if any(c not in CHANNELS for c in channels):
            raise InvalidArgument("channels holds an unknown channel", field="channels")
        if placement and set(channels) - {"in_app"}:
            raise InvalidArgument("a placement request is answered in-app; drop channels", field="channels")
        if limit < 0:
            raise InvalidArgument("limit must not be negative", field="limit")
        return min(limit or self.limits.default_limit, self.limits.max_limit)

    async def next_best_actions(
        self,
        workspace_id: str,
        customer_id: str,
        *,
        placement: str = "",
        channels: Sequence[str] = (),
        limit: int = 0,
        actor: str = "",
    ) -> NextBestActions:
        _require(workspace_id, "workspace_id")
        _require(customer_id, "customer_id")
        limit = self._check_request(placement, channels, limit)
        offers = await self.catalogue.offers(workspace_id, include_inactive=False)
        trigger = Trigger("placement" if placement else "contact_centre", actor=actor)
        request = Request(placement=placement, channels=tuple(channels), limit=limit, trigger=trigger.kind)
        d = await self._decide(workspace_id, customer_id, offers, request, fail_closed=False)
        await self._audit_decision(workspace_id, d, trigger=trigger, request=request, extra={})
        return self._nba(d)

    async def evaluate_trigger(
        self,
        workspace_id: str,
        customer_id: str,
        *,
        channels: Sequence[str] = (),
        limit: int = 0,
        trigger: Trigger = Trigger("trigger"),
        dispatch: bool = False,
        idempotency_key: str = "",
        locale: str = "",
    ) -> TriggerOutcome:
        """The pipeline over every candidate on the given channels; with `dispatch`, the top action
        goes out through the same governed send path as an operator or journey send."""
        _require(workspace_id, "workspace_id")
        _require(customer_id, "customer_id")
        if trigger.kind not in ("trigger", "journey", "contact_centre"):
            raise InvalidArgument("trigger must be trigger, journey or contact_centre", field="trigger")
        if dispatch:
            _require(idempotency_key, "idempotency_key")
        limit = self._check_request("", channels, limit)
        offers = await self.catalogue.offers(workspace_id, include_inactive=False)
        request = Request(channels=tuple(channels), limit=limit, trigger=trigger.kind, journey_id=trigger.journey_id)
        d = await self._decide(workspace_id, customer_id, offers, request, fail_closed=dispatch)
        if not dispatch:
            await self._audit_decision(workspace_id, d, trigger=trigger, request=request, extra={})
            return TriggerOutcome(self._nba(d), None)
        if not d.result.actions:
            await self._audit_decision(workspace_id, d, trigger=trigger, request=request, extra={"action": "none"})
            none = SendOutcome(d.decision_id, "suppressed", suppressed=d.result.suppressed)
            return TriggerOutcome(self._nba(d), none)
        top = d.result.actions[0]
        send = SendRequest(
            customer_id=d.profile.customer_id, channel=top.channel, offer_id=top.offer.offer_id,
            purpose=top.offer.purpose, idempotency_key=idempotency_key, actor=trigger.actor, locale=locale,
            trigger=trigger.kind, journey_id=trigger.journey_id,
        )
        outcome = await self._govern_and_send(workspace_id, d, top, send, trigger=trigger, request=request)
        return TriggerOutcome(self._nba(d), outcome)

    # --- sends ------------------------------------------------------------------------------

    async def send_message(self, workspace_id: str, req: SendRequest, *, releasing: bool = False) -> SendOutcome:
        """One offer on one channel: the pipeline with the candidates restricted to it."""
        _require(workspace_id, "workspace_id")
        _require(req.customer_id, "customer_id")
        if req.channel not in CHANNELS:
            raise InvalidArgument("channel is required", field="channel")
        _require(req.offer_id, "offer_id")
        _require(req.purpose, "purpose")
        _require(req.idempotency_key, "idempotency_key")
        if req.trigger not in ("operator", "journey", "trigger"):
            raise InvalidArgument("trigger must be operator, journey or trigger", field="trigger")
        if req.trigger == "journey":
            _require(req.journey_id, "journey_id")

        offer = await self.catalogue.get(workspace_id, req.offer_id)
        if offer is None:
            raise NotFound(f"offer {req.offer_id!r} not found", field="offer_id")
        if not offer.active:
            raise FailedPrecondition(f"offer {req.offer_id!r} is not active", field="offer_id")
        if req.channel not in offer.channels:
            raise InvalidArgument(f"offer {offer.offer_id!r} is not offered on {req.channel}", field="channel")
        if req.purpose != offer.purpose:
            # Consent is per purpose: sending a marketing offer "as service" would dodge the opt-in.
            raise InvalidArgument(f"offer {offer.offer_id!r} has purpose {offer.purpose!r}", field="purpose")

        # Per customer as well: a key reused for another customer is a client's mistake that channels refuse.
        claim = f"idem:{workspace_id}:{req.customer_id}:{req.idempotency_key}"
        if releasing:
            # A held message coming due: its first request holds the key and stored "held". From now on a
            # repeat is answered with what the release did (the message, or why it was suppressed).
            released = await self._send(workspace_id, offer, req, releasing=True)
            if released.status != "queued":
                await self.counters.settle(claim, _outcome_json(released), ttl_seconds=IDEMPOTENCY_SECONDS)
            return released
        earlier = await self._claim(claim)
        if earlier is not None:
            return earlier
        try:
            outcome = await self._send(workspace_id, offer, req, releasing=False)
        except BaseException:
            await self.counters.unclaim(claim)
            raise
        await self.counters.settle(claim, _outcome_json(outcome), ttl_seconds=IDEMPOTENCY_SECONDS)
        return outcome

    async def _claim(self, key: str) -> SendOutcome | None:
        """Repeats of an idempotency key get the first request's outcome, whichever replica they reach: they
        wait while it runs rather than meet the caps it has just taken (which would report a repeat of a sent
        message as capped). None: this request holds the key."""
        deadline = time.monotonic() + self.limits.rpc_timeout_seconds
        while True:
            held = await self.counters.claim(key, ttl_seconds=PENDING_SECONDS)
            if held is None:
                return None
            if held != PENDING:
                return _outcome_of(held)
            if time.monotonic() > deadline:
                raise Unavailable("a request with this idempotency key is still being decided; retry")
            await asyncio.sleep(0.02)

    async def _send(self, workspace_id: str, offer: Offer, req: SendRequest, *, releasing: bool) -> SendOutcome:
        trigger = Trigger(req.trigger, req.journey_id, req.actor)
        request = Request(channels=(req.channel,), limit=1, trigger=req.trigger, journey_id=req.journey_id)
        d = await self._decide(
            workspace_id, req.customer_id, [offer], request, consent_check=(req.channel, req.purpose),
            fail_closed=True,
        )
        if not d.result.actions:
            (why,) = d.result.suppressed
            return await self._suppress(workspace_id, d, why, req, trigger=trigger, request=request)
        return await self._govern_and_send(
            workspace_id, d, d.result.actions[0], req, trigger=trigger, request=request, releasing=releasing
        )

    async def _suppress(
        self,
        workspace_id: str,
        d: _Decided,
        why: Suppressed,
        req: SendRequest,
        *,
        trigger: Trigger,
        request: Request,
        audited: bool = False,
        score: Breakdown | None = None,
    ) -> SendOutcome:
        if not audited:
            await self._audit_decision(
                workspace_id, d, trigger=trigger, request=request,
                extra={"action": "suppress", "offer_id": req.offer_id, "channel": req.channel,
                       "idempotency_key": req.idempotency_key, "rule": why.rule},
            )
        await self.audit.append(
            workspace_id,
            AuditEntry(
                kind="message",
                outcome="suppressed",
                customer_id=d.profile.customer_id,
                decision_id=d.decision_id,
                channel=req.channel,
                offer_id=req.offer_id,
                journey_id=trigger.journey_id,
                actor=req.actor,
                occurred_at=d.now,
                idempotency_key=f"{d.decision_id}:suppressed",
                payload={"rule": why.rule, "detail": why.detail, "idempotency_key": req.idempotency_key,
                         "trigger": trigger.kind, "journey_id": trigger.journey_id},
            ),
        )
        return SendOutcome(d.decision_id, "suppressed", delivery_status="suppressed", suppressed=(why,), score=score)

    async def _govern_and_send(
        self,
        workspace_id: str,
        d: _Decided,
        action: Action,
        req: SendRequest,
        *,
        trigger: Trigger,
        request: Request,
        releasing: bool = False,
    ) -> SendOutcome:
        """Hold for quiet hours, or: win the contact slot, reserve every cap counter atomically,
        write the decision record, dispatch. Whatever fails before dispatch gives back what it took."""
        offer, channel, customer_id = action.offer, action.channel, d.profile.customer_id

        def drop(rule: str, detail: str) -> Suppressed:
            return Suppressed(offer.offer_id, channel, rule, detail)

        address = messages.recipient(
            channel, customer_id=customer_id, identifiers=d.profile.identifiers, traits=d.profile.traits
        )
        if not address:
            return await self._suppress(
                workspace_id, d, drop("no_address", f"profile has no {channel} address"), req, trigger=trigger,
                request=request, score=action.score,
            )
        if action.deliver_after is not None:
            return await self._hold(workspace_id, d, action, req, trigger=trigger, request=request)

        slot = ""
        if trigger.kind in SLOT_TRIGGERS and d.policy.contact_slot_minutes > 0:
            slot, loser = await self._contest_slot(workspace_id, d, action, req)
            if loser is not None:
                return await self._suppress(
                    workspace_id, d, loser, req, trigger=trigger, request=request, score=action.score
                )
        refused = await self.counters.reserve(action.counters)
        if refused is not None:
            if slot:
                await self.counters.release_slot(slot, req.idempotency_key)
            return await self._suppress(
                workspace_id, d, drop(refused.rule, refused.detail), req, trigger=trigger, request=request,
                score=action.score,
            )

        async def give_back() -> None:
            await self.counters.release(action.counters)
            if slot:
                await self.counters.release_slot(slot, req.idempotency_key)

        try:
            await self._audit_decision(
                workspace_id, d, trigger=trigger, request=request,
                extra={"action": "send", "offer_id": offer.offer_id, "channel": channel,
                       "offer_version": offer.version, "purpose": offer.purpose,
                       "idempotency_key": req.idempotency_key, "released_from_hold": releasing},
            )
        except BaseException:
            await give_back()
            raise

        locale = req.locale or d.profile.locale or self.limits.default_locale
        template = messages.choose_template(offer.templates, channel=channel, locale=locale)
        dispatch = self.dispatcher.dispatch(
            workspace_id,
            OutboundMessage(
                idempotency_key=req.idempotency_key,
                customer_id=customer_id,
                channel=channel,
                offer_id=offer.offer_id,
                purpose=offer.purpose,
                decision_id=d.decision_id,
                recipient=address,
                locale=template.locale if template else locale,
                subject=template.subject if template else offer.name,
                body=template.body if template else offer.name,
                variables=messages.variables(offer, traits=d.profile.traits, extra=req.variables),
                journey_id=trigger.journey_id,
            ),
        )
        try:
            result = await self._within(dispatch, service="channels")
        except (InvalidArgument, FailedPrecondition, NotFound):
            # Refused outright: nothing left, so the counters are given back.
            await give_back()
            raise
        # An Unavailable/timeout may still have sent: the reservation stays (never over the cap).
        if result.duplicate or result.status == "failed":
            await give_back()
        status = {"failed": "failed", "queued": "queued"}.get(result.status, "sent")
        if result.duplicate:
            status = "duplicate"
        return SendOutcome(
            d.decision_id, status, message_id=result.message_id, delivery_status=result.status,
            provider=result.provider, score=action.score,
        )

    async def _contest_slot(
        self, workspace_id: str, d: _Decided, action: Action, req: SendRequest
    ) -> tuple[str, Suppressed | None]:
        """Collect competing requests for this customer's slot for `arbitration_ms`, then award it
        to the highest expected value, whichever arrived first. Returns (slot, the loss or None)."""
        policy = d.policy
        minutes = policy.contact_slot_minutes
        index = int(d.now.timestamp() // (minutes * 60))
        slot = f"slot:{{{workspace_id}:{d.profile.customer_id}}}:{minutes}:{index}"
        seconds = minutes * 60
        me = req.idempotency_key
        awarded, left_ms = await self.counters.bid(
            slot, SlotBid(me, action.offer.offer_id, action.score.expected_value),
            arbitration_ms=policy.arbitration_ms, slot_seconds=seconds,
        )
        winner_offer = ""
        if not awarded:
            await asyncio.sleep(left_ms / 1000)
            awarded, winner_offer = await self.counters.award(slot, slot_seconds=seconds)
        if awarded == me:
            return slot, None
        detail = f"contact slot taken by offer {winner_offer}" if winner_offer else "contact slot already taken"
        return slot, Suppressed(action.offer.offer_id, action.channel, "contact_slot", detail)

    async def _hold(
        self, workspace_id: str, d: _Decided, action: Action, req: SendRequest, *, trigger: Trigger, request: Request
    ) -> SendOutcome:
        assert action.deliver_after is not None
        async with self.sessions() as session:
            row = await HoldRepository(session).hold(
                workspace_id, hold_id=new_id("hold"), idempotency_key=req.idempotency_key,
                request=_request_dict(req), deliver_after=action.deliver_after, decision_id=d.decision_id,
                now=d.now,
            )
            await self._audit_decision(
                workspace_id, d, trigger=trigger, request=request,
                extra={"action": "hold", "offer_id": req.offer_id, "channel": req.channel,
                       "idempotency_key": req.idempotency_key, "hold_id": row.hold_id,
                       "deliver_after": action.deliver_after.isoformat()},
            )
            await session.commit()
        return SendOutcome(
            d.decision_id, "queued", delivery_status="queued", deliver_after=action.deliver_after, score=action.score
        )

    async def release_due(self) -> int:
        """Send every held message whose quiet hours are over, through the pipeline again (consent,
        caps and holdouts are judged at release time). Returns how many were handled."""
        now = self.clock()
        async with self.sessions() as session:
            rows = await HoldRepository(session).claim_due(now=now, limit=self.limits.release_batch)
            claimed = [(r.hold_id, r.workspace_id, r.request) for r in rows]
            for row in rows:
                row.status, row.updated_at = "releasing", now
            await session.commit()
        for hold_id, workspace_id, raw in claimed:
            data = json.loads(raw)
            status = "failed"
            try:
                outcome = await self.send_message(workspace_id, SendRequest(**data), releasing=True)
                status = outcome.status
            except RetainError as exc:
                log.warning("held message %s not released: %s", hold_id, exc.message)
            async with self.sessions() as session:
                held = await HoldRepository(session).get(hold_id)
                if held is not None:
                    # Queued again means the quiet window is still open (clock skew); keep holding.
                    held.status = "held" if status == "queued" else status
                    held.updated_at = self.clock()
                    await session.commit()
        return len(claimed)

    async def release_loop(self) -> None:
        while True:
            try:
                await self.release_due()
            except Exception:  # the loop must outlive a bad pass (database blip)
                log.exception("releasing held messages failed")
            await asyncio.sleep(self.limits.release_interval_seconds)

    # --- outcomes ---------------------------------------------------------------------------

    async def record_outcome(
        self,
        workspace_id: str,
        *,
        customer_id: str,
        offer_id: str,
        outcome: str,
        decision_id: str = "",
        occurred_at: datetime | None = None,
    ) -> None:
        _require(workspace_id, "workspace_id")
        _require(customer_id, "customer_id")
        _require(offer_id, "offer_id")
        if outcome not in OUTCOMES:
            raise InvalidArgument(f"outcome must be one of {', '.join(OUTCOMES)}", field="outcome")
        profile = await self._within(self.profiles.get_profile(workspace_id, customer_id), service="profile")
        # Keyed only when the caller identified the event, so a retry is logged once while two
        # genuine clicks without a decision or time are not collapsed into one.
        key = ""
        if decision_id or occurred_at:
            when = occurred_at.isoformat() if occurred_at else ""
            raw = f"{profile.customer_id}|{offer_id}|{outcome}|{decision_id}|{when}"
            key = "outcome:" + hashlib.sha256(raw.encode()).hexdigest()[:32]
        at = occurred_at or self.clock()
        async with self.sessions() as session:
            if outcome == "decline":
                await DeclineRepository(session).add(
                    workspace_id, customer_id=profile.customer_id, offer_id=offer_id, occurred_at=at
                )
            await self.audit.append(
                workspace_id,
                AuditEntry(
                    kind="decision",
                    outcome=outcome,
                    customer_id=profile.customer_id,
                    decision_id=decision_id,
                    offer_id=offer_id,
                    occurred_at=at,
                    idempotency_key=key,
                    payload={"source": "record_outcome"},
                ),
            )
            await session.commit()
        await self._within(
            self.scorer.record_outcome(
                workspace_id,
                customer_id=profile.customer_id,
                offer_id=offer_id,
                outcome=outcome,
                decision_id=decision_id,
                occurred_at=occurred_at,
            ),
            service="scoring",
        )


def _models(scores: CustomerScores, result: Result) -> tuple[ModelRef, ...]:
    seen: dict[tuple[str, str], ModelRef] = {}
    for ref in [*scores.models.values(), *(a.score.model for a in result.actions)]:
        seen.setdefault((ref.name, ref.version), ref)
    return tuple(seen.values())
