"""The profile service over gRPC: live features (GetFeatures), training orders and score write-back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

import grpc
from retain.common.v1 import common_pb2
from retain.profile.v1 import profile_pb2, profile_pb2_grpc
from retain_kit.enums import lifecycle_name
from retain_kit.errors import InvalidArgument, NotFound, RetainError, Unavailable
from retain_kit.protoconv import to_timestamp

from retain_scoring.data.cdnow import Transaction
from retain_scoring.domain.btyd import DAYS_PER_WEEK
from retain_scoring.domain.scores import CustomerFeatures
from retain_scoring.ports import ScoreRecord


def features_from_proto(features: profile_pb2.Features) -> CustomerFeatures:
    return CustomerFeatures(
        repeat_transactions=float(features.repeat_transactions),
        recency_weeks=features.recency_weeks,
        age_weeks=features.age_weeks,
        average_order_value=features.average_order_value,
        orders=float(features.frequency),
        tenure_weeks=features.tenure_days / DAYS_PER_WEEK,
        as_of=features.as_of.seconds + features.as_of.nanos / 1e9 if features.HasField("as_of") else 0.0,
        recency_days=features.recency_days,
        monetary_total=features.monetary_total,
        orders_30d=float(features.orders_30d),
        spend_30d=features.spend_30d,
        orders_90d=float(features.orders_90d),
        spend_90d=features.spend_90d,
        activity_level=features.activity_level,
        negative_feedback_streak=float(features.negative_feedback_streak),
        open_tickets=float(features.open_tickets),
        lifecycle_stage=lifecycle_name(features.lifecycle_stage),
    )


class ProfileFeatures:
    def __init__(self, channel: grpc.aio.Channel, *, timeout: float) -> None:
        self.stub = profile_pb2_grpc.ProfileServiceStub(channel)
        self.timeout = timeout

    async def features(self, workspace_id: str, customer_id: str, *, field: str) -> tuple[str, CustomerFeatures]:
        request = profile_pb2.GetFeaturesRequest(workspace_id=workspace_id, customer_id=customer_id)
        try:
            response = await self.stub.GetFeatures(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, field=field) from exc
        return response.customer_id or customer_id, features_from_proto(response.features)


def _translate(exc: grpc.aio.AioRpcError, *, field: str) -> RetainError:
    detail = f"profile: {exc.details()}"
    if exc.code() == grpc.StatusCode.NOT_FOUND:
        return NotFound(detail, field=field)
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(detail, field=field)
    return Unavailable(detail, field=field)


class ProfileOrders:
    """Training data and score write-back over ProfileService.ExportOrders / StoreScores."""

    PAGE_SIZE = 5000
    MAX_SCORES = 5000

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float) -> None:
        self.stub = profile_pb2_grpc.ProfileServiceStub(channel)
        self.timeout = timeout

    async def orders(self, workspace_id: str) -> list[Transaction]:
        """Every order of the workspace, as (internal customer id, UTC day, revenue)."""
        out: list[Transaction] = []
        token = ""
        while True:
            request = profile_pb2.ExportOrdersRequest(workspace_id=workspace_id, page_size=self.PAGE_SIZE,
                                                      page_token=token)
            try:
                page = await self.stub.ExportOrders(request, timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                raise _translate(exc, field="workspace_id") from exc
            out.extend(
                Transaction(r.customer_id, r.timestamp.ToDatetime(tzinfo=UTC).date(), r.revenue) for r in page.rows
            )
            token = page.next_page_token
            if not token:
                return out

    async def store(self, workspace_id: str, scores: Sequence[ScoreRecord]) -> int:
        stored = 0
        for start in range(0, len(scores), self.MAX_SCORES):
            request = profile_pb2.StoreScoresRequest(
                workspace_id=workspace_id,
                scores=[
                    profile_pb2.StoredScore(
                        customer_id=s.customer_id, name=s.name, value=s.value,
                        model=common_pb2.ModelRef(name=s.model.name, version=s.model.version),
                        scored_at=to_timestamp(s.scored_at), horizon_days=s.horizon_days,
                    )
                    for s in scores[start:start + self.MAX_SCORES]
                ],
            )
            try:
                stored += (await self.stub.StoreScores(request, timeout=self.timeout)).stored
            except grpc.aio.AioRpcError as exc:
                raise _translate(exc, field="scores") from exc
        return stored
