"""Decision use cases over the ports: catalogue, next-best-actions, operator send, outcomes.

Failure policy: consent (profile) and audit fail closed (UNAVAILABLE, nothing sent); scoring
degrades to the catalogue's prior propensities, and the decision record says so (`degraded`).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from retain_kit.errors import FailedPrecondition, InvalidArgument, NotFound, RetainError, Unavailable
from retain_kit.protoconv import utcnow
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from retain_decision.domain import messages
from retain_decision.domain.catalogue import default_offers
from retain_decision.domain.offers import CHANNELS, PLACEMENTS, Offer, OfferError, to_dict, validate
from retain_decision.domain.pipeline import (
    CustomerContext,
    ModelRef,
    Propensity,
    Request,
    Result,
    Suppressed,
    decide,
)
from retain_decision.ports import (
    AuditEntry,
    AuditSink,
    CustomerProfile,
    CustomerScores,
    Dispatcher,
    OutboundMessage,
    ProfileReader,
    Scorer,
)
from retain_decision.repository import OfferRepository

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
    ) -> None:
        self.sessions = sessions
        self.audit = audit
        self.seed_demo = seed_demo
        self.clock = clock
        # SQLite has no row locks: serialise writers within the process; PostgreSQL locks the row.
        self._lock = asyncio.Lock()
        self._seeded: set[str] = set()

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
                        return stored
                    except IntegrityError:
                        await session.rollback()
            raise Unavailable("offer was changed concurrently; retry")

    async def offers(self, workspace_id: str, *, include_inactive: bool) -> list[Offer]:
        _require(workspace_id, "workspace_id")
        await self.ensure_seeded(workspace_id)
        async with self.sessions() as session:
            return await OfferRepository(session).list_offers(workspace_id, include_inactive=include_inactive)

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


@dataclass(frozen=True)
class Policy:
    contact_costs: Mapping[str, float]
    rpc_timeout_seconds: float = 2.0
    default_limit: int = 3
    max_limit: int = 20
    default_locale: str = "th"


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


@dataclass(frozen=True)
class SendOutcome:
    decision_id: str
    status: str
    message_id: str = ""
    delivery_status: str = ""
    provider: str = ""
    suppressed: tuple[Suppressed, ...] = ()


def suppressed_dict(s: Suppressed) -> dict[str, str]:
    return {"offer_id": s.offer_id, "channel": s.channel, "rule": s.rule, "detail": s.detail}


class Decisions:
    """GetNextBestActions, SendMessage and RecordOutcome."""

    def __init__(
        self,
        catalogue: Catalogue,
        *,
        profiles: ProfileReader,
        scorer: Scorer,
        dispatcher: Dispatcher,
        audit: AuditSink,
        policy: Policy,
        clock: Clock = utcnow,
    ) -> None:
        self.catalogue = catalogue
        self.profiles = profiles
        self.scorer = scorer
        self.dispatcher = dispatcher
        self.audit = audit
        self.policy = policy
        self.clock = clock

    async def _within(self, call: Awaitable[T], *, service: str) -> T:
        """A deadline of our own on top of the RPC's, so a hung dependency cannot hold a request."""
        try:
            return await asyncio.wait_for(call, self.policy.rpc_timeout_seconds + 0.25)
        except TimeoutError as exc:
            raise Unavailable(f"{service} did not answer in time") from exc

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
        if placement and placement not in PLACEMENTS:
            raise InvalidArgument(f"placement must be one of {', '.join(PLACEMENTS)}", field="placement")
        if any(c not in CHANNELS for c in channels):
            raise InvalidArgument("channels holds an unknown channel", field="channels")
        if placement and set(channels) - {"in_app"}:
            raise InvalidArgument("a placement request is answered in-app; drop channels", field="channels")
        if limit < 0:
            raise InvalidArgument("limit must not be negative", field="limit")
        limit = min(limit or self.policy.default_limit, self.policy.max_limit)

        offers = await self.catalogue.offers(workspace_id, include_inactive=False)
        profile_r, scores_r, props_r = await asyncio.gather(
            self._within(self.profiles.get_profile(workspace_id, customer_id), service="profile"),
            self._within(self.scorer.score_customer(workspace_id, customer_id), service="scoring"),
            self._within(
                self.scorer.score_offers(workspace_id, customer_id, [o.offer_id for o in offers]),
                service="scoring",
            ),
            return_exceptions=True,
        )
        if isinstance(profile_r, BaseException):
            raise profile_r
        degraded: list[str] = []
        scores = CustomerScores({}, {})
        propensities: Mapping[str, Propensity] = {}
        if isinstance(scores_r, RetainError):
            degraded.append(f"customer scores: {scores_r.message}")
        elif isinstance(scores_r, BaseException):
            raise scores_r
        else:
            scores = scores_r
        if isinstance(props_r, RetainError):
            degraded.append(f"offer propensities: {props_r.message}")
        elif isinstance(props_r, BaseException):
            raise props_r
        else:
            propensities = props_r

        now = self.clock()
        ctx = CustomerContext(
            customer_id=profile_r.customer_id,
            features=profile_r.features,
            scores=scores.values,
            consents=profile_r.consents,
            propensities=propensities,
        )
        request = Request(placement=placement, channels=tuple(channels), limit=limit)
        result = decide(ctx, offers, request, now=now, costs=self.policy.contact_costs)
        models = _models(scores, result)
        decision_id = new_id("dec")
        await self.audit.append(
            workspace_id,
            AuditEntry(
                kind="decision",
                outcome="decided",
                customer_id=profile_r.customer_id,
                decision_id=decision_id,
                actor=actor,
                occurred_at=now,
                idempotency_key=decision_id,
                payload={
                    "request": {"placement": placement, "channels": list(channels), "limit": limit},
                    "candidates": [{"offer_id": o.offer_id, "version": o.version} for o in offers],
                    "scores": dict(scores.values),
                    "models": [{"name": m.name, "version": m.version} for m in models],
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
                        for a in result.actions
                    ],
                    "suppressed": [suppressed_dict(s) for s in result.suppressed],
                    "degraded": bool(degraded),
                    "degraded_reason": "; ".join(degraded),
                },
            ),
        )
        return NextBestActions(decision_id, profile_r, scores, result, now, bool(degraded), models)

    async def send_message(self, workspace_id: str, req: SendRequest) -> SendOutcome:
        _require(workspace_id, "workspace_id")
        _require(req.customer_id, "customer_id")
        if req.channel not in CHANNELS:
            raise InvalidArgument("channel is required", field="channel")
        _require(req.offer_id, "offer_id")
        _require(req.purpose, "purpose")
        _require(req.idempotency_key, "idempotency_key")

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

        profile = await self._within(self.profiles.get_profile(workspace_id, req.customer_id), service="profile")
        consent = await self._within(
            self.profiles.check_consent(
                workspace_id, profile.customer_id, channel=req.channel, purpose=req.purpose
            ),
            service="profile",
        )
        now = self.clock()
        locale = req.locale or profile.locale or self.policy.default_locale
        address = messages.recipient(
            req.channel, customer_id=profile.customer_id, identifiers=profile.identifiers, traits=profile.traits
        )
        suppression: Suppressed | None = None
        if not consent.allowed:
            detail = consent.reason or f"consent {consent.status or 'never given'} for {req.purpose}"
            suppression = Suppressed(offer.offer_id, req.channel, "no_consent", detail)
        elif not offer.is_valid_at(now):
            suppression = Suppressed(offer.offer_id, req.channel, "not_valid", "outside the offer's validity window")
        elif not address:
            suppression = Suppressed(offer.offer_id, req.channel, "no_address", f"profile has no {req.channel} address")

        decision_id = new_id("dec")
        await self.audit.append(
            workspace_id,
            AuditEntry(
                kind="decision",
                outcome="decided",
                customer_id=profile.customer_id,
                decision_id=decision_id,
                channel=req.channel,
                offer_id=offer.offer_id,
                actor=req.actor,
                occurred_at=now,
                idempotency_key=decision_id,
                payload={
                    "trigger": "operator_send",
                    "idempotency_key": req.idempotency_key,
                    "offer_version": offer.version,
                    "purpose": req.purpose,
                    "consent": {"allowed": consent.allowed, "status": consent.status, "reason": consent.reason},
                    "action": "suppress" if suppression else "send",
                    "suppressed": [suppressed_dict(suppression)] if suppression else [],
                },
            ),
        )
        if suppression is not None:
            await self.audit.append(
                workspace_id,
                AuditEntry(
                    kind="message",
                    outcome="suppressed",
                    customer_id=profile.customer_id,
                    decision_id=decision_id,
                    channel=req.channel,
                    offer_id=offer.offer_id,
                    actor=req.actor,
                    occurred_at=now,
                    idempotency_key=f"{decision_id}:suppressed",
                    payload={
                        "rule": suppression.rule,
                        "detail": suppression.detail,
                        "idempotency_key": req.idempotency_key,
                    },
                ),
            )
            return SendOutcome(decision_id, "suppressed", delivery_status="suppressed", suppressed=(suppression,))

        template = messages.choose_template(offer.templates, channel=req.channel, locale=locale)
        dispatch = self.dispatcher.dispatch(
            workspace_id,
            OutboundMessage(
                idempotency_key=req.idempotency_key,
                customer_id=profile.customer_id,
                channel=req.channel,
                offer_id=offer.offer_id,
                purpose=req.purpose,
                decision_id=decision_id,
                recipient=address,
                locale=template.locale if template else locale,
                subject=template.subject if template else offer.name,
                body=template.body if template else offer.name,
                variables=messages.variables(offer, traits=profile.traits, extra=req.variables),
            ),
        )
        result = await self._within(dispatch, service="channels")
        if result.duplicate:
            status = "duplicate"
        elif result.status == "failed":
            status = "failed"
        elif result.status == "queued":
            status = "queued"
        else:
            status = "sent"
        return SendOutcome(
            decision_id, status, message_id=result.message_id, delivery_status=result.status, provider=result.provider
        )

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
        await self.audit.append(
            workspace_id,
            AuditEntry(
                kind="decision",
                outcome=outcome,
                customer_id=profile.customer_id,
                decision_id=decision_id,
                offer_id=offer_id,
                occurred_at=occurred_at or self.clock(),
                idempotency_key=key,
                payload={"source": "record_outcome"},
            ),
        )
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
