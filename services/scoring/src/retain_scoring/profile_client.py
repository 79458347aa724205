"""FeatureSource over ProfileService.GetFeatures (gRPC)."""

from __future__ import annotations

import grpc
from retain.profile.v1 import profile_pb2, profile_pb2_grpc
from retain_kit.enums import lifecycle_name
from retain_kit.errors import InvalidArgument, NotFound, RetainError, Unavailable

from retain_scoring.domain.btyd import DAYS_PER_WEEK
from retain_scoring.domain.scores import CustomerFeatures


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
