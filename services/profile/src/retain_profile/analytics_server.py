"""AnalyticsService: gathers profile's data, scores from ScoringService and records from AuditService,
hands them to the pure functions in `analytics`, and translates the results to protobuf."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
from retain.audit.v1 import audit_pb2, audit_pb2_grpc
from retain.common.v1 import common_pb2
from retain.profile.v1 import analytics_pb2, analytics_pb2_grpc
from retain.scoring.v1 import scoring_pb2, scoring_pb2_grpc
from retain_kit.enums import channel_name
from retain_kit.errors import InvalidArgument, Unavailable
from retain_kit.expressions import ExpressionError
from retain_kit.grpcserver import Registration, channel
from retain_kit.protoconv import aware, from_struct, from_timestamp, to_timestamp, utcnow
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from retain_profile import analytics as an
from retain_profile.analytics_repository import AnalyticsRepository
from retain_profile.domain import segments as segment_rules
from retain_profile.domain.features import (
    ORDER_EVENT,
    LifecycleThresholds,
    Summary,
    event_categories,
    features_at,
    order_discount,
    order_revenue,
)
from retain_profile.server import features_to_proto

if TYPE_CHECKING:
    from retain.audit.v1.audit_pb2_grpc import AuditServiceAsyncStub
    from retain.scoring.v1.scoring_pb2_grpc import ScoringServiceAsyncStub

log = logging.getLogger(__name__)
Context = grpc.aio.ServicerContext[Any, Any]
SCORE_BATCH = 500
AUDIT_PAGE = 500
MAX_HORIZON_DAYS = 3650
MAX_MONTHS = 60
DEFAULT_MONTHS = 12
DEFAULT_CONVERSION_DAYS = 7
MAX_CONVERSION_DAYS = 90
_KINDS = {
    "decision": audit_pb2.RECORD_KIND_DECISION,
    "message": audit_pb2.RECORD_KIND_MESSAGE,
    "config": audit_pb2.RECORD_KIND_CONFIG,
}


@dataclass(frozen=True)
class Scored:
    customers: list[an.CustomerView]
    models: list[tuple[str, str]]
    horizon_days: int


class Analytics:
    """The use cases behind AnalyticsService."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        scoring: ScoringServiceAsyncStub,
        audit: AuditServiceAsyncStub,
        timeout: float,
    ) -> None:
        self.sessions = sessions
        self.scoring = scoring
        self.audit = audit
        self.timeout = timeout

    async def customers(self, workspace_id: str, as_of: datetime) -> list[an.CustomerView]:
        """Every customer's features evaluated at `as_of` (never before their newest event)."""
        async with self.sessions() as session:
            repo = AnalyticsRepository(session)
            thresholds = LifecycleThresholds.from_json(await repo.lifecycle(workspace_id))
            definitions = []
            for seg in await repo.segments(workspace_id):
                try:
                    definitions.append(segment_rules.define(seg.name, seg.expression, description=seg.description))
                except ExpressionError:
                    log.warning("segment %s of %s no longer parses", seg.name, workspace_id)
            out = []
            async for customer_id, raw in repo.summaries(workspace_id):
                summary = Summary.from_json(raw)
                at = max(as_of, summary.last_seen) if summary.last_seen else as_of
                features = features_at(summary, at, thresholds=thresholds, segments=definitions)
                out.append(an.CustomerView(customer_id, features))
        return out

    async def orders(self, workspace_id: str) -> list[an.Order]:
        async with self.sessions() as session:
            repo = AnalyticsRepository(session)
            return [
                _order(customer_id, aware(ts), props)
                async for customer_id, _, ts, props in repo.events_named(workspace_id, [ORDER_EVENT])
            ]

    async def conversions(self, workspace_id: str, *, since: datetime, until: datetime) -> list[an.Conversion]:
        async with self.sessions() as session:
            repo = AnalyticsRepository(session)
            return [
                an.Conversion(cid, aware(ts), event, order_revenue(props) if event == ORDER_EVENT else 0.0)
                async for cid, event, ts, props in repo.events_named(
                    workspace_id, an.CONVERSION_EVENTS, since=since, until=until
                )
            ]

    async def score(self, workspace_id: str, customers: list[an.CustomerView], *, horizon_days: int) -> Scored:
        """Churn risk and expected value from ScoringService for every buyer, in batches; others score 0."""
        buyers = [c for c in customers if c.features.frequency > 0]
        scores: dict[str, scoring_pb2.CustomerScores] = {}
        models: set[tuple[str, str]] = set()
        horizon = horizon_days
        for start in range(0, len(buyers), SCORE_BATCH):
            batch = buyers[start : start + SCORE_BATCH]
            request = scoring_pb2.ScoreCustomersRequest(
                workspace_id=workspace_id,
                horizon_days=horizon_days,
                customers=[
                    scoring_pb2.CustomerInput(customer_id=c.customer_id, features=features_to_proto(c.features))
                    for c in batch
                ],
            )
            try:
                response = await self.scoring.ScoreCustomers(request, timeout=max(self.timeout, 30.0))
            except grpc.aio.AioRpcError as exc:
                raise Unavailable(f"scoring: {exc.details() or exc.code().name}") from exc
            for s in response.scores:
                scores[s.customer_id] = s
                horizon = s.horizon_days or horizon
                for score in (s.churn_risk, s.expected_value, s.value_at_risk, s.clv):
                    if score.model.name:
                        models.add((score.model.name, score.model.version))
        out = []
        for c in customers:
            got = scores.get(c.customer_id)
            if got is None:
                out.append(c)
                continue
            out.append(an.CustomerView(
                c.customer_id, c.features, churn_risk=got.churn_risk.value, expected_value=got.expected_value.value,
                value_at_risk=got.value_at_risk.value,
            ))
        return Scored(out, sorted(models), horizon)

    async def records(self, workspace_id: str, *, since: datetime, until: datetime) -> list[an.AuditFact]:
        """Decision and message records of the window, and every offer configuration record (for costs)."""
        facts: list[an.AuditFact] = []
        for kind, windowed in (("config", False), ("decision", True), ("message", True)):
            token = ""
            while True:
                request = audit_pb2.ListRecordsRequest(
                    workspace_id=workspace_id, kind=_KINDS[kind], page_size=AUDIT_PAGE, page_token=token,
                    since=to_timestamp(since) if windowed else None,
                    until=to_timestamp(until) if windowed else None,
                )
                try:
                    page = await self.audit.ListRecords(request, timeout=max(self.timeout, 30.0))
                except grpc.aio.AioRpcError as exc:
                    raise Unavailable(f"audit: {exc.details() or exc.code().name}") from exc
                facts.extend(_fact(kind, r) for r in page.records)
                token = page.next_page_token
                if not token:
                    break
        return facts


def _order(customer_id: str, at: datetime, props: dict[str, Any]) -> an.Order:
    categories = event_categories(ORDER_EVENT, props)
    channel = str(props.get("channel") or props.get("sales_channel") or "").strip().lower()
    return an.Order(
        customer_id, at, order_revenue(props), order_discount(props),
        category=categories[0] if categories else "unknown", channel=channel or "unknown",
    )


def _fact(kind: str, r: audit_pb2.AuditRecord) -> an.AuditFact:
    return an.AuditFact(
        seq=r.seq, kind=kind, outcome=r.outcome, customer_id=r.customer_id,
        at=from_timestamp(r.occurred_at) or datetime.fromtimestamp(0, UTC),
        offer_id=r.offer_id, message_id=r.message_id, decision_id=r.decision_id,
        channel=channel_name(r.channel) if r.channel else "", journey_id=r.journey_id,
        payload=from_struct(r.payload),
    )


# --- translation ---------------------------------------------------------------------------------------


def _window(request: Any, orders: Sequence[an.Order], now: datetime) -> an.Window:
    if not request.workspace_id:
        raise InvalidArgument("workspace_id is required", field="workspace_id")
    since = from_timestamp(request.since) if request.HasField("since") else None
    until = from_timestamp(request.until) if request.HasField("until") else None
    until = until or now
    if since is None:
        first = min((o.at for o in orders), default=until)
        since = first.replace(hour=0, minute=0, second=0, microsecond=0)
    if until <= since:
        raise InvalidArgument("until must be after since", field="until")
    return an.Window(since, until, now)


def _horizon(value: int) -> int:
    if not 0 <= value <= MAX_HORIZON_DAYS:
        raise InvalidArgument(f"horizon_days must be within 0..{MAX_HORIZON_DAYS}", field="horizon_days")
    return value


def _window_pb(w: an.Window) -> analytics_pb2.AnalyticsWindow:
    return analytics_pb2.AnalyticsWindow(since=to_timestamp(w.since), until=to_timestamp(w.until),
                                         as_of=to_timestamp(w.as_of))


def _models_pb(models: Sequence[tuple[str, str]]) -> list[common_pb2.ModelRef]:
    return [common_pb2.ModelRef(name=n, version=v) for n, v in models]


def _bucket_pb(b: an.Bucket) -> analytics_pb2.Bucket:
    return analytics_pb2.Bucket(key=b.key, customers=b.customers, orders=b.orders, revenue=b.revenue,
                                discount=b.discount, value_at_risk=b.value_at_risk)


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServiceServicer):
    def __init__(self, analytics: Analytics) -> None:
        self.analytics = analytics

    async def _scored(self, request: Any, horizon_days: int) -> tuple[an.Window, list[an.Order], Scored]:
        if not request.workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        horizon = _horizon(horizon_days)
        now = utcnow()
        orders = await self.analytics.orders(request.workspace_id)
        window = _window(request, orders, now)
        customers = await self.analytics.customers(request.workspace_id, window.as_of)
        scored = await self.analytics.score(request.workspace_id, customers, horizon_days=horizon)
        return window, orders, scored

    async def GetValueLeakage(
        self, request: analytics_pb2.GetValueLeakageRequest, context: Context
    ) -> analytics_pb2.GetValueLeakageResponse:
        window, orders, scored = await self._scored(request, request.horizon_days)
        report = an.value_leakage(scored.customers, orders, window)
        return analytics_pb2.GetValueLeakageResponse(
            window=_window_pb(window),
            models=_models_pb(scored.models),
            customers=report.customers,
            buyers=report.buyers,
            orders=report.orders,
            revenue=report.revenue,
            discount=report.discount,
            value_at_risk=report.value_at_risk,
            expected_value=report.expected_value,
            breakdowns=[
                analytics_pb2.Breakdown(dimension=d, buckets=[_bucket_pb(b) for b in buckets])
                for d, buckets in report.breakdowns.items()
            ],
            leakage=[
                analytics_pb2.Leak(kind=x.kind, customers=x.customers, value=x.value, definition=x.definition)
                for x in report.leakage
            ],
            monthly=[
                analytics_pb2.MonthPoint(month=m.month, revenue=m.revenue, orders=m.orders,
                                         active_customers=m.active_customers, new_customers=m.new_customers,
                                         leavers=m.leavers)
                for m in report.monthly
            ],
            horizon_days=scored.horizon_days,
            scored_customers=sum(1 for c in scored.customers if c.features.frequency > 0),
        )

    async def GetCohorts(
        self, request: analytics_pb2.GetCohortsRequest, context: Context
    ) -> analytics_pb2.GetCohortsResponse:
        if not 0 <= request.months <= MAX_MONTHS:
            raise InvalidArgument(f"months must be within 0..{MAX_MONTHS}", field="months")
        months = request.months or DEFAULT_MONTHS
        window, orders, scored = await self._scored(request, request.horizon_days)
        result = an.cohorts(scored.customers, orders, window, months=months)
        return analytics_pb2.GetCohortsResponse(
            window=_window_pb(window),
            models=_models_pb(scored.models),
            months=months,
            horizon_days=scored.horizon_days,
            cohorts=[
                analytics_pb2.Cohort(
                    month=c.month, customers=c.customers, retention=c.retention,
                    cumulative_revenue_per_customer=c.cumulative_revenue_per_customer, repeat_rate=c.repeat_rate,
                    active_rate=c.active_rate, ltv_to_date=c.ltv_to_date, predicted_ltv=c.predicted_ltv,
                )
                for c in result
            ],
        )

    async def GetPrioritySegments(
        self, request: analytics_pb2.GetPrioritySegmentsRequest, context: Context
    ) -> analytics_pb2.GetPrioritySegmentsResponse:
        window, _, scored = await self._scored(request, request.horizon_days)
        result = an.priority_segments(scored.customers)
        return analytics_pb2.GetPrioritySegmentsResponse(
            window=_window_pb(window),
            models=_models_pb(scored.models),
            horizon_days=scored.horizon_days,
            segments=[
                analytics_pb2.PrioritySegment(
                    segment=s.segment, customers=s.customers, value=s.value, value_at_risk=s.value_at_risk,
                    share_of_value=s.share_of_value, share_of_value_at_risk=s.share_of_value_at_risk,
                    stayers=s.stayers, leavers=s.leavers,
                    comparison=[
                        analytics_pb2.FeatureComparison(feature=c.feature, stayers_mean=c.stayers_mean,
                                                        leavers_mean=c.leavers_mean, effect_size=c.effect_size)
                        for c in s.comparison
                    ],
                )
                for s in result
            ],
        )

    async def GetPlays(
        self, request: analytics_pb2.GetPlaysRequest, context: Context
    ) -> analytics_pb2.GetPlaysResponse:
        if not request.workspace_id:
            raise InvalidArgument("workspace_id is required", field="workspace_id")
        if not 0 <= request.conversion_days <= MAX_CONVERSION_DAYS:
            raise InvalidArgument(f"conversion_days must be within 0..{MAX_CONVERSION_DAYS}", field="conversion_days")
        days = request.conversion_days or DEFAULT_CONVERSION_DAYS
        now = utcnow()
        until = from_timestamp(request.until) if request.HasField("until") else None
        until = until or now
        since = from_timestamp(request.since) if request.HasField("since") else None
        # Without a start, plays look back 90 days: message volumes are recent by nature.
        since = since or until - timedelta(days=90)
        if until <= since:
            raise InvalidArgument("until must be after since", field="until")
        window = an.Window(since, until, now)
        ws = request.workspace_id
        records = await self.analytics.records(ws, since=since, until=until)
        conversions = await self.analytics.conversions(ws, since=since, until=until + timedelta(days=days))
        engaged: dict[str, set[str]] = {}
        for c in await self.analytics.customers(ws, now):
            for name, e in c.features.channel_engagement.items():
                if e.opened or e.clicked:
                    engaged.setdefault(name, set()).add(c.customer_id)
        report = an.plays(
            records, conversions, window=window, conversion_days=days,
            engaged={k: frozenset(v) for k, v in engaged.items()},
        )
        return analytics_pb2.GetPlaysResponse(
            window=_window_pb(window),
            models=_models_pb(report.models),
            conversion_days=days,
            records_read=len(records),
            plays=[
                analytics_pb2.PlayStats(
                    offer_id=p.offer_id, journey_ids=p.journey_ids, decisions=p.decisions, sends=p.sends,
                    treated_customers=p.treated_customers, conversions=p.conversions,
                    conversion_rate=p.conversion_rate, holdout_customers=p.holdout_customers,
                    holdout_conversions=p.holdout_conversions, holdout_rate=p.holdout_rate,
                    has_holdout=p.has_holdout, lift=p.lift, lift_ci_low=p.lift_ci_low, lift_ci_high=p.lift_ci_high,
                    incentive_cost=p.incentive_cost, offer_cost=p.offer_cost,
                    attributed_revenue=p.attributed_revenue, value_saved=p.value_saved, incremental=p.incremental,
                    suppressed=p.suppressed,
                )
                for p in report.plays
            ],
            channels=[
                analytics_pb2.ChannelLoad(
                    channel=c.channel, messages=c.messages, customers=c.customers,
                    messages_per_customer=c.messages_per_customer, failed=c.failed, suppressed=c.suppressed,
                    engagement_rate=c.engagement_rate,
                )
                for c in report.channels
            ],
        )


SERVICE_NAME = analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].full_name


def build_registration(
    sessions: async_sessionmaker[AsyncSession], *, audit_channel: grpc.aio.Channel, scoring_addr: str, timeout: float
) -> tuple[Registration, Callable[[], Awaitable[None]]]:
    """The AnalyticsService registration and the hook closing the scoring channel it opened."""
    scoring_channel = channel(scoring_addr)
    analytics = Analytics(
        sessions,
        scoring=scoring_pb2_grpc.ScoringServiceStub(scoring_channel),
        audit=audit_pb2_grpc.AuditServiceStub(audit_channel),
        timeout=timeout,
    )
    registration = Registration(
        AnalyticsServicer(analytics), analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server, SERVICE_NAME
    )
    return registration, scoring_channel.close
