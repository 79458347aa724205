from datetime import UTC, datetime

import grpc
import pytest
from retain.common.v1 import common_pb2
from retain.decision.v1 import decision_pb2
from retain.profile.v1 import profile_pb2
from retain_gateway.convert import enum_name, enum_value, to_json
from retain_gateway.errors import field_path, grpc_status
from retain_gateway.segment import ItemError, client_field, parse_item
from retain_kit.protoconv import to_timestamp


def rpc_error(code: grpc.StatusCode, details: str, field: str = "") -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata(("retain-field", field)) if field else grpc.aio.Metadata()
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details)


@pytest.mark.parametrize(
    ("code", "field", "status", "retry"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "customer_id", 422, False),
        (grpc.StatusCode.INVALID_ARGUMENT, "", 400, False),
        (grpc.StatusCode.NOT_FOUND, "", 404, False),
        (grpc.StatusCode.ALREADY_EXISTS, "", 409, False),
        (grpc.StatusCode.FAILED_PRECONDITION, "", 409, False),
        (grpc.StatusCode.PERMISSION_DENIED, "", 403, False),
        (grpc.StatusCode.UNAVAILABLE, "", 503, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "", 503, True),
        (grpc.StatusCode.INTERNAL, "", 502, False),
        (grpc.StatusCode.UNKNOWN, "", 502, False),
    ],
)
def test_grpc_status_mapping(code: grpc.StatusCode, field: str, status: int, retry: bool) -> None:
    got, body, headers = grpc_status(rpc_error(code, "it broke", field), retry_after=7)
    assert got == status
    assert body["detail"] == "it broke"
    assert body.get("field", "") == field
    assert (headers.get("Retry-After") == "7") is retry
    assert body["error"] == (code.name.lower() if status != 502 else "bad_gateway")


def test_field_path_reads_like_the_request() -> None:
    assert field_path(("body", "consents", 0, "channel")) == "consents[0].channel"
    assert field_path(("query", "limit")) == "limit"
    assert field_path(("batch", 3, "userId")) == "batch[3].userId"


def test_enum_names_strip_the_type_prefix() -> None:
    assert enum_name(common_pb2.LifecycleStage.DESCRIPTOR, common_pb2.LIFECYCLE_STAGE_AT_RISK) == "at_risk"
    assert enum_name(decision_pb2.PlayType.DESCRIPTOR, decision_pb2.PLAY_TYPE_CROSS_SELL) == "cross_sell"
    assert enum_name(common_pb2.Channel.DESCRIPTOR, 0) == ""
    assert enum_value(common_pb2.Channel.DESCRIPTOR, "in_app") == common_pb2.CHANNEL_IN_APP
    with pytest.raises(ValueError, match="fax"):
        enum_value(common_pb2.Channel.DESCRIPTOR, "fax")


def test_to_json_keeps_ints_enums_maps_and_unset_messages() -> None:
    profile = profile_pb2.Profile(
        customer_id="cus_1",
        events_count=3,
        identifiers=[profile_pb2.Identifier(kind=profile_pb2.IDENTIFIER_KIND_EMAIL, value="a@b.co")],
        features=profile_pb2.Features(
            frequency=4,
            lifecycle_stage=common_pb2.LIFECYCLE_STAGE_ACTIVE,
            category_affinity={"shoes": 0.5},
            last_seen=to_timestamp(datetime(2025, 1, 2, tzinfo=UTC)),
        ),
    )
    out = to_json(profile)
    assert out["events_count"] == 3 and isinstance(out["events_count"], int)
    assert out["identifiers"] == [{"kind": "email", "value": "a@b.co"}]
    assert out["features"]["frequency"] == 4
    assert out["features"]["lifecycle_stage"] == "active"
    assert out["features"]["category_affinity"] == {"shoes": 0.5}
    assert out["features"]["last_seen"] == datetime(2025, 1, 2, tzinfo=UTC)
    assert out["features"]["first_seen"] is None
    assert out["first_seen"] is None and out["traits"] == {}


def test_batch_items_name_their_bad_field() -> None:
    with pytest.raises(ItemError) as err:
        parse_item({"type": "track", "userId": "u1"})
    assert err.value.field == "event"
    with pytest.raises(ItemError) as err:
        parse_item({"type": "track", "event": "x"})
    assert err.value.field == "userId"
    with pytest.raises(ItemError) as err:
        parse_item({"type": "group", "userId": "u1"})
    assert err.value.field == "type"
    with pytest.raises(ItemError) as err:
        parse_item({"type": "identify", "userId": "u1", "timestamp": "yesterday"})
    assert err.value.field == "timestamp"
    assert parse_item({"type": "track", "event": "x", "userId": 42, "anonymousId": None}).user_id == "42"


def test_profile_field_names_become_segment_names() -> None:
    assert client_field("events[3].user_id") == "userId"
    assert client_field("properties.revenue") == "properties.revenue"
    assert client_field("timestamp") == "timestamp"
