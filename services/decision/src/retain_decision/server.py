"""gRPC servicer: proto <-> domain translation only."""

from __future__ import annotations

from typing import Any

import grpc
from retain.common.v1 import common_pb2
from retain.decision.v1 import decision_pb2, decision_pb2_grpc
from retain_kit.enums import channel_name, channel_value, delivery_status_value, lifecycle_value
from retain_kit.errors import InvalidArgument
from retain_kit.protoconv import from_struct, from_timestamp, to_timestamp

from retain_decision.domain.offers import DEFAULT_PRIOR_PROPENSITY, Offer, Template
from retain_decision.domain.pipeline import Breakdown, ModelRef, Suppressed
from retain_decision.domain.policies import CapLimit, GovernancePolicy, OfferRule, QuietHours
from retain_decision.service import (
    Catalogue,
    Decisions,
    NextBestActions,
    Policies,
    SendOutcome,
    SendRequest,
    Trigger,
)

Context = grpc.aio.ServicerContext[Any, Any]

_SEND_STATUS = {
    "sent": decision_pb2.SEND_STATUS_SENT,
    "queued": decision_pb2.SEND_STATUS_QUEUED,
    "suppressed": decision_pb2.SEND_STATUS_SUPPRESSED,
    "failed": decision_pb2.SEND_STATUS_FAILED,
    "duplicate": decision_pb2.SEND_STATUS_DUPLICATE,
}


def play_type_name(value: int) -> str:
    if not value:
        return ""
    return decision_pb2.PlayType.Name(decision_pb2.PlayType.ValueType(value)).removeprefix("PLAY_TYPE_").lower()


def play_type_value(name: str) -> decision_pb2.PlayType.ValueType:
    return decision_pb2.PlayType.Value("PLAY_TYPE_" + name.upper())


def _channel(value: int, *, field: str) -> str:
    if value not in common_pb2.Channel.values():
        raise InvalidArgument(f"unknown channel {value}", field=field)
    return channel_name(value)


def offer_from_proto(msg: decision_pb2.Offer) -> Offer:
    """Proto3 cannot tell 0 from unset: lever 0 means 1.0 and prior_propensity 0 means the default."""
    if msg.play_type not in decision_pb2.PlayType.values():
        raise InvalidArgument("unknown play_type", field="offer.play_type")
    return Offer(
        offer_id=msg.offer_id,
        name=msg.name,
        play_type=play_type_name(msg.play_type),
        channels=tuple(_channel(c, field="offer.channels") for c in msg.channels),
        placements=tuple(msg.placements),
        purpose=msg.purpose,
        eligibility=msg.eligibility,
        value=msg.value,
        cost=msg.cost,
        lever=msg.lever or 1.0,
        conflict_group=msg.conflict_group,
        templates=tuple(
            Template(_channel(t.channel, field="offer.templates"), t.locale, t.subject, t.body)
            for t in msg.templates
        ),
        valid_from=from_timestamp(msg.valid_from) if msg.HasField("valid_from") else None,
        valid_until=from_timestamp(msg.valid_until) if msg.HasField("valid_until") else None,
        active=msg.active,
        prior_propensity=msg.prior_propensity or DEFAULT_PRIOR_PROPENSITY,
    )


def offer_to_proto(offer: Offer) -> decision_pb2.Offer:
    return decision_pb2.Offer(
        offer_id=offer.offer_id,
        name=offer.name,
        play_type=play_type_value(offer.play_type),
        channels=[channel_value(c) for c in offer.channels],
        placements=list(offer.placements),
        purpose=offer.purpose,
        eligibility=offer.eligibility,
        value=offer.value,
        cost=offer.cost,
        lever=offer.lever,
        conflict_group=offer.conflict_group,
        templates=[
            decision_pb2.Template(channel=channel_value(t.channel), locale=t.locale, subject=t.subject, body=t.body)
            for t in offer.templates
        ],
        valid_from=to_timestamp(offer.valid_from),
        valid_until=to_timestamp(offer.valid_until),
        active=offer.active,
        version=offer.version,
        prior_propensity=offer.prior_propensity,
    )


def _model(ref: ModelRef) -> common_pb2.ModelRef:
    return common_pb2.ModelRef(name=ref.name, version=ref.version)


def _breakdown(b: Breakdown) -> decision_pb2.ScoreBreakdown:
    return decision_pb2.ScoreBreakdown(
        propensity=b.propensity,
        value=b.value,
        lever=b.lever,
        contact_cost=b.contact_cost,
        offer_cost=b.offer_cost,
        expected_value=b.expected_value,
        propensity_model=_model(b.model),
    )


def _suppressed(s: Suppressed) -> decision_pb2.SuppressedCandidate:
    return decision_pb2.SuppressedCandidate(
        offer_id=s.offer_id,
        channel=channel_value(s.channel) if s.channel else common_pb2.CHANNEL_UNSPECIFIED, rule=s.rule, detail=s.detail
    )


def _opt(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def _cap_from(msg: decision_pb2.CapLimit) -> CapLimit:
    return CapLimit(_opt(msg, "per_day"), _opt(msg, "per_week"))


def _cap_to(limit: CapLimit) -> decision_pb2.CapLimit:
    return decision_pb2.CapLimit(per_day=limit.per_day, per_week=limit.per_week)


def policy_from_proto(msg: decision_pb2.Policy, *, defaults: GovernancePolicy) -> GovernancePolicy:
    """Optional numbers left unset keep the defaults; a repeated channel or offer is refused."""
    channel_caps: dict[str, CapLimit] = {}
    for cap in msg.channel_caps:
        name = _channel(cap.channel, field="policy.channel_caps")
        if name in channel_caps:
            raise InvalidArgument(f"channel {name} repeats", field="policy.channel_caps")
        channel_caps[name] = _cap_from(cap.limit)
    holdouts: dict[str, float] = {}
    for h in msg.journey_holdouts:
        if h.journey_id in holdouts:
            raise InvalidArgument(f"journey {h.journey_id} repeats", field="policy.journey_holdouts")
        holdouts[h.journey_id] = h.share
    costs = dict(defaults.contact_costs)
    for c in msg.contact_costs:
        costs[_channel(c.channel, field="policy.contact_costs")] = c.cost
    rules: dict[str, OfferRule] = {}
    for r in msg.offer_rules:
        if r.offer_id in rules:
            raise InvalidArgument(f"offer {r.offer_id} repeats", field="policy.offer_rules")
        rules[r.offer_id] = OfferRule(
            r.offer_id, _opt(r, "per_day"), _opt(r, "per_week"), r.decline_limit, r.decline_window_days or 30
        )
    qh = msg.quiet_hours if msg.HasField("quiet_hours") else None
    return GovernancePolicy(
        channel_caps=channel_caps,
        global_cap=_cap_from(msg.global_cap),
        quiet_hours=QuietHours(qh.start, qh.end, qh.mode or "hold") if qh else None,
        control_group_share=msg.control_group_share,
        journey_holdouts=holdouts,
        contact_costs=costs,
        offer_rules=rules,
        default_time_zone=msg.default_time_zone or defaults.default_time_zone,
        contact_slot_minutes=(
            msg.contact_slot_minutes if msg.HasField("contact_slot_minutes") else defaults.contact_slot_minutes
        ),
        arbitration_ms=msg.arbitration_ms if msg.HasField("arbitration_ms") else defaults.arbitration_ms,
        holdout_salt=msg.holdout_salt or defaults.holdout_salt,
        load_weight=msg.load_weight if msg.HasField("load_weight") else defaults.load_weight,
    )


def policy_to_proto(p: GovernancePolicy) -> decision_pb2.Policy:
    qh = p.quiet_hours
    return decision_pb2.Policy(
        version=p.version,
        channel_caps=[
            decision_pb2.ChannelCap(channel=channel_value(c), limit=_cap_to(v))
            for c, v in sorted(p.channel_caps.items())
        ],
        global_cap=_cap_to(p.global_cap),
        quiet_hours=decision_pb2.QuietHours(start=qh.start, end=qh.end, mode=qh.mode) if qh else None,
        control_group_share=p.control_group_share,
        journey_holdouts=[
            decision_pb2.JourneyHoldout(journey_id=j, share=s) for j, s in sorted(p.journey_holdouts.items())
        ],
        contact_costs=[
            decision_pb2.ChannelCost(channel=channel_value(c), cost=v) for c, v in sorted(p.contact_costs.items())
        ],
        offer_rules=[
            decision_pb2.OfferRule(
                offer_id=r.offer_id, per_day=r.per_day, per_week=r.per_week, decline_limit=r.decline_limit,
                decline_window_days=r.decline_window_days,
            )
            for _, r in sorted(p.offer_rules.items())
        ],
        default_time_zone=p.default_time_zone,
        contact_slot_minutes=p.contact_slot_minutes,
        arbitration_ms=p.arbitration_ms,
        holdout_salt=p.holdout_salt,
        load_weight=p.load_weight,
        updated_by=p.updated_by,
        updated_at=to_timestamp(p.updated_at),
    )


def _nba_to_proto(nba: NextBestActions) -> decision_pb2.GetNextBestActionsResponse:
    stage = nba.customer.features.get("lifecycle_stage")
    lifecycle = (
        lifecycle_value(stage) if isinstance(stage, str) and stage else common_pb2.LIFECYCLE_STAGE_UNSPECIFIED
    )
    return decision_pb2.GetNextBestActionsResponse(
        decision_id=nba.decision_id,
        actions=[
            decision_pb2.RankedAction(
                rank=a.rank,
                offer_id=a.offer.offer_id,
                name=a.offer.name,
                play_type=play_type_value(a.offer.play_type),
                channel=channel_value(a.channel),
                score=_breakdown(a.score),
                reason=a.reason,
            )
            for a in nba.result.actions
        ],
        suppressed=[_suppressed(s) for s in nba.result.suppressed],
        customer=decision_pb2.CustomerContext(
            customer_id=nba.customer.customer_id,
            churn_risk=nba.scores.values.get("churn_risk", 0.0),
            clv=nba.scores.values.get("clv", 0.0),
            value_at_risk=nba.scores.values.get("value_at_risk", 0.0),
            lifecycle_stage=lifecycle,
            models=[_model(m) for m in nba.models],
        ),
        decided_at=to_timestamp(nba.decided_at),
    )


def _send_to_proto(outcome: SendOutcome) -> decision_pb2.SendMessageResponse:
    return decision_pb2.SendMessageResponse(
        decision_id=outcome.decision_id,
        status=_SEND_STATUS[outcome.status],
        message_id=outcome.message_id,
        delivery_status=(
            delivery_status_value(outcome.delivery_status)
            if outcome.delivery_status
            else common_pb2.DELIVERY_STATUS_UNSPECIFIED
        ),
        suppressed=[_suppressed(s) for s in outcome.suppressed],
        provider=outcome.provider,
        deliver_after=to_timestamp(outcome.deliver_after),
        score=_breakdown(outcome.score) if outcome.score else None,
    )


class DecisionServicer(decision_pb2_grpc.DecisionServiceServicer):
    def __init__(self, catalogue: Catalogue, decisions: Decisions, policies: Policies) -> None:
        self.catalogue = catalogue
        self.decisions = decisions
        self.policies = policies

    async def GetNextBestActions(
        self, request: decision_pb2.GetNextBestActionsRequest, context: Context
    ) -> decision_pb2.GetNextBestActionsResponse:
        nba = await self.decisions.next_best_actions(
            request.workspace_id,
            request.customer_id,
            placement=request.placement,
            channels=[_channel(c, field="channels") for c in request.channels],
            limit=request.limit,
        )
        return _nba_to_proto(nba)

    async def SendMessage(
        self, request: decision_pb2.SendMessageRequest, context: Context
    ) -> decision_pb2.SendMessageResponse:
        outcome = await self.decisions.send_message(
            request.workspace_id,
            SendRequest(
                customer_id=request.customer_id,
                channel=_channel(request.channel, field="channel"),
                offer_id=request.offer_id,
                purpose=request.purpose,
                idempotency_key=request.idempotency_key,
                actor=request.actor,
                locale=request.locale,
                variables=from_struct(request.variables) if request.HasField("variables") else {},
                trigger=request.trigger or "operator",
                journey_id=request.journey_id,
            ),
        )
        return _send_to_proto(outcome)

    async def UpsertOffer(
        self, request: decision_pb2.UpsertOfferRequest, context: Context
    ) -> decision_pb2.UpsertOfferResponse:
        stored = await self.catalogue.upsert(request.workspace_id, offer_from_proto(request.offer), actor=request.actor)
        return decision_pb2.UpsertOfferResponse(offer=offer_to_proto(stored))

    async def ListOffers(
        self, request: decision_pb2.ListOffersRequest, context: Context
    ) -> decision_pb2.ListOffersResponse:
        offers = await self.catalogue.offers(request.workspace_id, include_inactive=request.include_inactive)
        return decision_pb2.ListOffersResponse(offers=[offer_to_proto(o) for o in offers])

    async def RecordOutcome(
        self, request: decision_pb2.RecordOutcomeRequest, context: Context
    ) -> decision_pb2.RecordOutcomeResponse:
        known = request.outcome != 0 and request.outcome in decision_pb2.Outcome.values()
        name = decision_pb2.Outcome.Name(request.outcome).removeprefix("OUTCOME_").lower() if known else ""
        await self.decisions.record_outcome(
            request.workspace_id,
            customer_id=request.customer_id,
            offer_id=request.offer_id,
            outcome=name,
            decision_id=request.decision_id,
            occurred_at=from_timestamp(request.occurred_at) if request.HasField("occurred_at") else None,
        )
        return decision_pb2.RecordOutcomeResponse(recorded=True)

    async def EvaluateTrigger(
        self, request: decision_pb2.EvaluateTriggerRequest, context: Context
    ) -> decision_pb2.EvaluateTriggerResponse:
        outcome = await self.decisions.evaluate_trigger(
            request.workspace_id,
            request.customer_id,
            channels=[_channel(c, field="channels") for c in request.channels],
            limit=request.limit,
            trigger=Trigger(request.trigger or "trigger", request.journey_id, request.actor),
            dispatch=request.dispatch,
            idempotency_key=request.idempotency_key,
            locale=request.locale,
        )
        return decision_pb2.EvaluateTriggerResponse(
            decision=_nba_to_proto(outcome.decision),
            send=_send_to_proto(outcome.send) if outcome.send else None,
        )

    async def GetPolicy(
        self, request: decision_pb2.GetPolicyRequest, context: Context
    ) -> decision_pb2.GetPolicyResponse:
        policy = await self.policies.get(request.workspace_id, version=request.version)
        return decision_pb2.GetPolicyResponse(policy=policy_to_proto(policy))

    async def SetPolicy(
        self, request: decision_pb2.SetPolicyRequest, context: Context
    ) -> decision_pb2.SetPolicyResponse:
        if not request.HasField("policy"):
            raise InvalidArgument("policy is required", field="policy")
        policy = policy_from_proto(request.policy, defaults=self.policies.defaults)
        stored = await self.policies.set(
            request.workspace_id, policy, actor=request.actor, expected_version=request.expected_version
        )
        return decision_pb2.SetPolicyResponse(policy=policy_to_proto(stored))
