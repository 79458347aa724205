"""gRPC adapters for the ports: proto <-> port values, RPC errors -> retain_kit errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import grpc
from retain.audit.v1 import audit_pb2_grpc
from retain.channels.v1 import channels_pb2, channels_pb2_grpc
from retain.profile.v1 import profile_pb2, profile_pb2_grpc
from retain.scoring.v1 import scoring_pb2, scoring_pb2_grpc
from retain_kit.audit_client import AuditAppender
from retain_kit.enums import channel_name, channel_value, consent_status_name, delivery_status_name, lifecycle_name
from retain_kit.errors import (
    FIELD_METADATA_KEY,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RetainError,
    Unavailable,
)
from retain_kit.expressions import Value
from retain_kit.protoconv import from_struct, to_struct, to_timestamp

from retain_decision.domain.offers import AFFINITY_PREFIX
from retain_decision.domain.pipeline import ModelRef, Propensity
from retain_decision.ports import (
    AuditEntry,
    ConsentAnswer,
    CustomerProfile,
    CustomerScores,
    DecisionScores,
    DispatchResult,
    OutboundMessage,
)

_ScoreField = Literal["churn_risk", "p_alive", "expected_purchases", "expected_value", "clv", "value_at_risk"]
_SCORE_FIELDS: tuple[_ScoreField, ...] = (
    "churn_risk",
    "p_alive",
    "expected_purchases",
    "expected_value",
    "clv",
    "value_at_risk",
)
_NUMERIC_FEATURES = (
    "recency_days",
    "frequency",
    "monetary_total",
    "average_order_value",
    "tenure_days",
    "orders_30d",
    "spend_30d",
    "orders_90d",
    "spend_90d",
    "activity_level",
    "activity_change",
    "negative_feedback_streak",
    "open_tickets",
    "repeat_transactions",
)


def rpc_error(exc: grpc.aio.AioRpcError, *, service: str, field: str = "") -> RetainError:
    """Map another service's status onto ours; anything unexpected counts as that service failing."""
    code = exc.code()
    detail = exc.details() or code.name
    remote_field = dict(exc.trailing_metadata() or ()).get(FIELD_METADATA_KEY, "")
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"{service}: {detail}", field=field or str(remote_field))
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(f"{service}: {detail}", field=field or str(remote_field))
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(f"{service}: {detail}", field=field or str(remote_field))
    return Unavailable(f"{service} unavailable: {code.name} {detail}")


def features_to_names(features: profile_pb2.Features) -> dict[str, Value]:
    """Profile features as eligibility names (lifecycle as its lower-case name, affinities flattened)."""
    names: dict[str, Value] = {name: getattr(features, name) for name in _NUMERIC_FEATURES}
    names["lifecycle_stage"] = lifecycle_name(features.lifecycle_stage)
    names["segments"] = tuple(features.segments)
    for category, affinity in features.category_affinity.items():
        key = AFFINITY_PREFIX + category.lower().replace(" ", "_").replace("-", "_")
        if key.isidentifier():
            names[key] = affinity
    return names


def profile_from_proto(profile: profile_pb2.Profile) -> CustomerProfile:
    identifiers = tuple(
        (profile_pb2.IdentifierKind.Name(i.kind).removeprefix("IDENTIFIER_KIND_").lower(), i.value)
        for i in profile.identifiers
    )
    consents = {
        (channel_name(c.channel), c.purpose): consent_status_name(c.status) for c in profile.consents
    }
    return CustomerProfile(
        customer_id=profile.customer_id,
        identifiers=identifiers,
        traits=from_struct(profile.traits) if profile.HasField("traits") else {},
        features=features_to_names(profile.features) if profile.HasField("features") else {},
        consents=consents,
        locale=profile.locale,
        time_zone=profile.time_zone,
        features_message=profile.features if profile.HasField("features") else None,
    )


class GrpcProfileReader:
    def __init__(self, stub: profile_pb2_grpc.ProfileServiceAsyncStub, *, timeout: float) -> None:
        self.stub = stub
        self.timeout = timeout

    async def get_profile(self, workspace_id: str, customer_id: str) -> CustomerProfile:
        request = profile_pb2.GetProfileRequest(workspace_id=workspace_id, customer_id=customer_id)
        try:
            response = await self.stub.GetProfile(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, service="profile", field="customer_id") from exc
        return profile_from_proto(response.profile)

    async def check_consent(
        self, workspace_id: str, customer_id: str, *, channel: str, purpose: str
    ) -> ConsentAnswer:
        request = profile_pb2.CheckConsentRequest(
            workspace_id=workspace_id, customer_id=customer_id, channel=channel_value(channel), purpose=purpose
        )
        try:
            response = await self.stub.CheckConsent(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, service="profile consent") from exc
        status = consent_status_name(response.consent.status) if response.HasField("consent") else ""
        return ConsentAnswer(allowed=response.allowed, status=status, reason=response.reason)


def _ref(score: scoring_pb2.Score) -> ModelRef:
    return ModelRef(score.model.name, score.model.version)


def _scores(scores: scoring_pb2.CustomerScores) -> CustomerScores:
    values: dict[str, float] = {}
    models: dict[str, ModelRef] = {}
    for name in _SCORE_FIELDS:
        if scores.HasField(name):
            score = getattr(scores, name)
            values[name] = score.value
            models[name] = _ref(score)
    return CustomerScores(values, models)


class GrpcScorer:
    def __init__(self, stub: scoring_pb2_grpc.ScoringServiceAsyncStub, *, timeout: float) -> None:
        self.stub = stub
        self.timeout = timeout

    async def score_customer(self, workspace_id: str, customer_id: str, *, features: Any = None) -> CustomerScores:
        """`features` (profile's Features message), when given, spares scoring a read of the profile."""
        request = scoring_pb2.ScoreCustomersRequest(
            workspace_id=workspace_id,
            customers=[scoring_pb2.CustomerInput(customer_id=customer_id, features=features)],
        )
        try:
            response = await self.stub.ScoreCustomers(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, service="scoring") from exc
        return _scores(response.scores[0]) if response.scores else CustomerScores({}, {})

    async def score_for_decision(
        self, workspace_id: str, customer_id: str, offer_ids: Sequence[str], *, features: Any = None
    ) -> DecisionScores:
        """Propensities and customer scores in one call. With `features`, the propensities are those of
        the customer's segment (lifecycle stage, orders) and scoring does not read the profile."""
        request = scoring_pb2.ScoreOffersRequest(
            workspace_id=workspace_id, customer_id=customer_id, offer_ids=list(offer_ids), features=features,
            include_customer_scores=True,
        )
        try:
            response = await self.stub.ScoreOffers(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, service="scoring") from exc
        propensities = {
            o.offer_id: Propensity(o.propensity.value, _ref(o.propensity))
            for o in response.offers
            if o.HasField("propensity")
        }
        if not response.HasField("customer_scores"):
            unavailable = response.customer_scores_unavailable or "scoring returned no customer scores"
            return DecisionScores(propensities, CustomerScores({}, {}), unavailable)
        return DecisionScores(propensities, _scores(response.customer_scores))

    async def record_outcome(
        self,
        workspace_id: str,
        *,
        customer_id: str,
        offer_id: str,
        outcome: str,
        decision_id: str,
        occurred_at: datetime | None,
    ) -> None:
        request = scoring_pb2.RecordOutcomeRequest(
            workspace_id=workspace_id,
            customer_id=customer_id,
            offer_id=offer_id,
            outcome=scoring_pb2.Outcome.Value("OUTCOME_" + outcome.upper()),
            decision_id=decision_id,
            occurred_at=to_timestamp(occurred_at),
        )
        try:
            await self.stub.RecordOutcome(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, service="scoring") from exc


class GrpcDispatcher:
    def __init__(self, stub: channels_pb2_grpc.ChannelServiceAsyncStub, *, timeout: float) -> None:
        self.stub = stub
        self.timeout = timeout

    async def dispatch(self, workspace_id: str, message: OutboundMessage) -> DispatchResult:
        request = channels_pb2.DispatchRequest(
            workspace_id=workspace_id,
            message=channels_pb2.Message(
                idempotency_key=message.idempotency_key,
                workspace_id=workspace_id,
                customer_id=message.customer_id,
                channel=channel_value(message.channel),
                offer_id=message.offer_id,
                purpose=message.purpose,
                decision_id=message.decision_id,
                journey_id=message.journey_id,
                recipient=message.recipient,
                locale=message.locale,
                subject=message.subject,
                body=message.body,
                variables=to_struct(_json_ready(message.variables)),
            ),
        )
        try:
            response = await self.stub.Dispatch(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, service="channels") from exc
        return DispatchResult(
            message_id=response.message.message_id,
            status=delivery_status_name(response.message.status),
            provider=response.message.provider,
            duplicate=response.duplicate,
        )


def _json_ready(values: Mapping[str, Any]) -> dict[str, Any]:
    """Struct holds JSON only: anything else (dates, decimals) travels as text."""
    ready: dict[str, Any] = {}
    for key, value in values.items():
        if value is None or isinstance(value, bool | int | float | str | list | dict):
            ready[key] = value
        else:
            ready[key] = str(value)
    return ready


class GrpcAuditSink:
    def __init__(self, stub: audit_pb2_grpc.AuditServiceAsyncStub, *, timeout: float) -> None:
        self.appender = AuditAppender(stub, timeout=timeout)

    async def append(self, workspace_id: str, entry: AuditEntry) -> str:
        return await self.appender.append(
            workspace_id,
            kind=entry.kind,
            customer_id=entry.customer_id,
            decision_id=entry.decision_id,
            message_id=entry.message_id,
            channel=entry.channel,
            offer_id=entry.offer_id,
            journey_id=entry.journey_id,
            outcome=entry.outcome,
            actor=entry.actor,
            payload=entry.payload,
            occurred_at=entry.occurred_at,
            idempotency_key=entry.idempotency_key,
            failure="audit unavailable",
        )
