"""The next-best-action pipeline for one customer at one moment (pure: no I/O, `now` is an argument).

Every path goes through `decide`: an in-app placement, a contact-centre request, a trigger
evaluation, an operator send (candidates restricted to the one offer and channel) and a journey step.
Order of the rules, each dropping a candidate with the rule's name:
  eligibility -> not_valid -> placement -> holdout -> declined -> no_consent -> frequency_cap / offer_cap
  -> quiet_hours -> below_zero_value -> conflict_group -> limit

Caps here are checked against a snapshot of the counters (`CustomerContext.counts`), which explains
and ranks; the binding check is the atomic reservation of `Action.counters` just before dispatch.
Quiet hours in mode "hold" do not drop a candidate: its action carries `deliver_after`.
Holdouts withhold marketing (any purpose but service/transactional) on every path.

Governance is strict: every message channel needs consent *granted* for (channel, offer purpose);
denied, withdrawn and never-recorded all mean no (PDPA opt-in). The one exemption is an in-app
placement request: showing an offer inside the brand's own app while the customer is using it is
not a message sent to them, so no contact consent applies. An in-app *message* (SendMessage on the
in_app channel) is not exempt.

Ranking per (offer, channel):
  expected_value = propensity x (value x lever - offer cost) - contact_cost(channel)
  contact_cost   = base cost of the channel x (1 + recent message load)
  message load   = ctx.message_load + policy.load_weight x messages this local week (cap counters)
The best channel of an offer is the one with the highest expected value (ties keep the offer's own
channel order, which states the brand's preference); within a conflict group only the best offer
survives; then the top `limit`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from retain_kit.expressions import ExpressionError, Value, cached

from retain_decision.domain import policies
from retain_decision.domain.offers import Offer
from retain_decision.domain.policies import Counter, GovernancePolicy

IN_APP = "in_app"
PLAY_LABELS = {
    "onboarding": "onboarding play",
    "engagement": "engagement play",
    "cross_sell": "cross-sell play",
    "upsell": "upsell play",
    "save": "save play",
    "winback": "winback play",
    "reactivation": "reactivation play",
    "service_recovery": "service recovery play",
    "replenishment": "replenishment play",
}


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str


@dataclass(frozen=True)
class Propensity:
    value: float
    model: ModelRef


@dataclass(frozen=True)
class CustomerContext:
    """What is known about the customer now. `consents` maps (channel, purpose) to a status name."""

    customer_id: str
    features: Mapping[str, Value] = field(default_factory=dict)
    scores: Mapping[str, float] = field(default_factory=dict)
    consents: Mapping[tuple[str, str], str] = field(default_factory=dict)
    propensities: Mapping[str, Propensity] = field(default_factory=dict)
    message_load: float = 0.0
    workspace_id: str = ""
    time_zone: str = ""
    # Cap counter values read just before deciding (key -> count), see policies.counters_for.
    counts: Mapping[str, int] = field(default_factory=dict)
    # Recent declines per offer id (from RecordOutcome).
    declines: Mapping[str, Sequence[datetime]] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """A placement request (in-app surface, contact centre) or an outbound one over `channels`."""

    placement: str = ""
    channels: tuple[str, ...] = ()
    limit: int = 3
    # placement | contact_centre | trigger | operator | journey
    trigger: str = ""
    journey_id: str = ""


@dataclass(frozen=True)
class Breakdown:
    propensity: float
    value: float
    lever: float
    contact_cost: float
    offer_cost: float
    expected_value: float
    model: ModelRef


@dataclass(frozen=True)
class Action:
    rank: int
    offer: Offer
    channel: str
    score: Breakdown
    reason: str
    # Quiet hours in hold mode: deliver no earlier than this (UTC).
    deliver_after: datetime | None = None
    # The counters a dispatch of this action must reserve atomically (none for in-app placements).
    counters: tuple[Counter, ...] = ()


@dataclass(frozen=True)
class Suppressed:
    offer_id: str
    channel: str
    rule: str
    detail: str


@dataclass(frozen=True)
class Result:
    actions: tuple[Action, ...]
    suppressed: tuple[Suppressed, ...]


def prior_ref(offer: Offer) -> ModelRef:
    """The 'model' behind a catalogue prior: the offer version it came from."""
    return ModelRef("offer_prior", f"{offer.offer_id}@v{offer.version}")


def propensity_for(offer: Offer, ctx: CustomerContext) -> Propensity:
    return ctx.propensities.get(offer.offer_id) or Propensity(offer.prior_propensity, prior_ref(offer))


def contact_cost(channel: str, *, costs: Mapping[str, float], message_load: float) -> float:
    return costs.get(channel, 0.0) * (1.0 + max(message_load, 0.0))


def message_load(ctx: CustomerContext, policy: GovernancePolicy, *, now: datetime) -> float:
    tz = policies.zone(ctx.time_zone, policy.default_time_zone)
    key = policies.load_key(workspace_id=ctx.workspace_id, customer_id=ctx.customer_id, now=now, tz=tz)
    return ctx.message_load + policy.load_weight * ctx.counts.get(key, 0)


def score(
    offer: Offer, channel: str, ctx: CustomerContext, *, costs: Mapping[str, float], load: float | None = None
) -> Breakdown:
    propensity = propensity_for(offer, ctx)
    p = min(max(propensity.value, 0.0), 1.0)
    contact = contact_cost(channel, costs=costs, message_load=ctx.message_load if load is None else load)
    expected = p * (offer.value * offer.lever - offer.cost) - contact
    return Breakdown(
        propensity=p,
        value=offer.value,
        lever=offer.lever,
        contact_cost=contact,
        offer_cost=offer.cost,
        expected_value=expected,
        model=propensity.model,
    )


def namespace(ctx: CustomerContext) -> dict[str, Value]:
    """Names eligibility expressions see: features, then scores (scores win on a clash)."""
    names: dict[str, Value] = dict(ctx.features)
    names.update(ctx.scores)
    return names


def decide(
    ctx: CustomerContext,
    candidates: Sequence[Offer],
    request: Request,
    *,
    now: datetime,
    costs: Mapping[str, float] | None = None,
    policy: GovernancePolicy | None = None,
) -> Result:
    """Ranked actions plus every dropped candidate with the rule that dropped it."""
    policy = policy or GovernancePolicy()
    if costs is not None:
        policy = replace(policy, contact_costs=costs)
    gov = _Governance(ctx, policy, now=now)
    names = namespace(ctx)
    suppressed: list[Suppressed] = []
    scored: list[tuple[Offer, str, Breakdown]] = []
    for offer in candidates:
        outcome = _best_channel(offer, ctx, request, names=names, now=now, gov=gov)
        if isinstance(outcome, Suppressed):
            suppressed.append(outcome)
        else:
            scored.append((offer, *outcome))

    scored.sort(key=lambda item: (-item[2].expected_value, item[0].offer_id))
    survivors: list[tuple[Offer, str, Breakdown]] = []
    group_winner: dict[str, str] = {}
    for offer, channel, breakdown in scored:
        group = offer.conflict_group
        if group and group in group_winner:
            suppressed.append(
                Suppressed(offer.offer_id, channel, "conflict_group", f"{group}: {group_winner[group]} ranks higher")
            )
            continue
        if group:
            group_winner[group] = offer.offer_id
        survivors.append((offer, channel, breakdown))

    actions: list[Action] = []
    for offer, channel, breakdown in survivors:
        if len(actions) >= max(request.limit, 0):
            suppressed.append(Suppressed(offer.offer_id, channel, "limit", f"only {request.limit} returned"))
            continue
        outbound = not request.placement
        actions.append(
            Action(
                len(actions) + 1,
                offer,
                channel,
                breakdown,
                reason(offer, channel, ctx, breakdown),
                deliver_after=gov.quiet_end if outbound else None,
                counters=tuple(gov.counters(offer, channel)) if outbound else (),
            )
        )
    return Result(tuple(actions), tuple(suppressed))


class _Governance:
    """The per-decision governance facts, computed once: zone, load, quiet window, holdout."""

    def __init__(self, ctx: CustomerContext, policy: GovernancePolicy, *, now: datetime) -> None:
        self.ctx = ctx
        self.policy = policy
        self.now = now
        self.tz = policies.zone(ctx.time_zone, policy.default_time_zone)
        self.load = message_load(ctx, policy, now=now)
        self.quiet_end = policies.quiet_until(now, policy.quiet_hours, self.tz)

    def counters(self, offer: Offer, channel: str) -> list[Counter]:
        return policies.counters_for(
            self.policy,
            workspace_id=self.ctx.workspace_id,
            customer_id=self.ctx.customer_id,
            channel=channel,
            offer_id=offer.offer_id,
            now=self.now,
            tz=self.tz,
        )

    def capped(self, offer: Offer, channel: str) -> Counter | None:
        return policies.first_exceeded(self.counters(offer, channel), self.ctx.counts)


def _best_channel(
    offer: Offer,
    ctx: CustomerContext,
    request: Request,
    *,
    names: Mapping[str, Value],
    now: datetime,
    gov: _Governance,
) -> tuple[str, Breakdown] | Suppressed:
    first = request.channels[0] if request.channels else ""
    try:
        eligible = offer.eligibility == "" or cached(offer.eligibility).evaluate(names)
    except ExpressionError as exc:
        # Fail closed: an expression that cannot be evaluated (e.g. scores missing) does not qualify.
        return Suppressed(offer.offer_id, first, "eligibility", f"{offer.eligibility!r}: {exc}")
    if not eligible:
        return Suppressed(offer.offer_id, first, "eligibility", f"{offer.eligibility!r} is false")
    if not offer.is_valid_at(now):
        return Suppressed(offer.offer_id, first, "not_valid", "outside the offer's validity window")

    if request.placement:
        if request.placement not in offer.placements:
            return Suppressed(offer.offer_id, IN_APP, "placement", f"not offered at {request.placement!r}")
        channels: tuple[str, ...] = (IN_APP,)
    else:
        wanted = request.channels or offer.channels
        channels = tuple(c for c in offer.channels if c in wanted)
        if not channels:
            return Suppressed(offer.offer_id, first, "placement", "none of the requested channels is offered")
    if policies.is_marketing(offer.purpose):
        group = policies.holdout(gov.policy, ctx.customer_id, journey_id=request.journey_id)
        if group:
            return Suppressed(offer.offer_id, channels[0], "holdout", f"in the {group}")
    declined = policies.declined_out(
        gov.policy.offer_rules.get(offer.offer_id), ctx.declines.get(offer.offer_id, ()), now=now
    )
    if declined:
        return Suppressed(offer.offer_id, channels[0], "declined", declined)
    if not request.placement:
        denied = [c for c in channels if ctx.consents.get((c, offer.purpose)) != "granted"]
        if len(denied) == len(channels):
            return Suppressed(
                offer.offer_id,
                channels[0],
                "no_consent",
                f"no granted consent for purpose {offer.purpose!r} on {', '.join(denied)}",
            )
        channels = tuple(c for c in channels if c not in denied)
        open_channels = tuple(c for c in channels if gov.capped(offer, c) is None)
        if not open_channels:
            cap = gov.capped(offer, channels[0])
            assert cap is not None
            return Suppressed(offer.offer_id, channels[0], cap.rule, cap.detail)
        channels = open_channels
        if gov.quiet_end is not None and gov.policy.quiet_hours and gov.policy.quiet_hours.mode == "drop":
            return Suppressed(
                offer.offer_id, channels[0], "quiet_hours", f"quiet hours until {gov.quiet_end.isoformat()}"
            )

    best: tuple[str, Breakdown] | None = None
    for channel in channels:
        breakdown = score(offer, channel, ctx, costs=gov.policy.contact_costs, load=gov.load)
        if best is None or breakdown.expected_value > best[1].expected_value:
            best = (channel, breakdown)
    assert best is not None
    if best[1].expected_value < 0:
        return Suppressed(
            offer.offer_id, best[0], "below_zero_value", f"expected value {best[1].expected_value:.2f} < 0"
        )
    return best


def reason(offer: Offer, channel: str, ctx: CustomerContext, breakdown: Breakdown) -> str:
    """A sentence an operator or contact-centre agent can read, e.g.
    'churn risk 0.72, value at risk ฿1,240: save play on sms (expected value ฿85)'."""
    facts: list[str] = []
    if "churn_risk" in ctx.scores:
        facts.append(f"churn risk {ctx.scores['churn_risk']:.2f}")
    if ctx.scores.get("value_at_risk"):
        facts.append(f"value at risk ฿{ctx.scores['value_at_risk']:,.0f}")
    stage = ctx.features.get("lifecycle_stage")
    if stage and not facts:
        facts.append(f"lifecycle {stage}")
    if offer.play_type == "service_recovery":
        facts.append(f"{ctx.features.get('negative_feedback_streak', 0)} negative feedback in a row")
    source = "prior" if breakdown.model.name == "offer_prior" else "model"
    facts.append(f"propensity {breakdown.propensity:.2f} ({source})")
    label = PLAY_LABELS.get(offer.play_type, offer.play_type)
    return f"{', '.join(facts)}: {label} on {channel} (expected value ฿{breakdown.expected_value:,.0f})"
