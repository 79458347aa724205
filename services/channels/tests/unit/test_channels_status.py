import pytest
from retain_channels.domain.dispatch import Draft, validate
from retain_channels.domain.status import apply_event
from retain_kit.errors import InvalidArgument


@pytest.mark.parametrize(
    ("current", "event", "expected"),
    [
        ("sent", "delivered", "delivered"),
        ("queued", "delivered", "delivered"),
        ("delivered", "opened", "opened"),
        ("opened", "clicked", "clicked"),
        ("clicked", "opened", None),
        ("delivered", "delivered", None),
        ("opened", "delivered", None),
        ("sent", "bounced", "bounced"),
        ("delivered", "failed", "failed"),
        ("opened", "bounced", None),
        ("bounced", "opened", "opened"),
        ("failed", "delivered", None),
        ("suppressed", "delivered", None),
    ],
)
def test_status_moves_forward_only(current: str, event: str, expected: str | None) -> None:
    assert apply_event(current, event) == expected


def test_unknown_event_status_is_rejected() -> None:
    with pytest.raises(ValueError):
        apply_event("sent", "queued")


def draft(**overrides: str) -> Draft:
    values = {"idempotency_key": "k1", "customer_id": "cus_1", "channel": "sms", "recipient": "+66810000000",
              "body": "hi"}
    values.update(overrides)
    return Draft(**values)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"channel": ""}, "message.channel"),
        ({"channel": "fax"}, "message.channel"),
        ({"customer_id": ""}, "message.customer_id"),
        ({"idempotency_key": ""}, "message.idempotency_key"),
        ({"recipient": ""}, "message.recipient"),
        ({"channel": "line", "recipient": ""}, "message.recipient"),
        ({"body": ""}, "message.body"),
    ],
)
def test_validation_names_the_field(overrides: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate("ws", draft(**overrides))
    assert err.value.field == field


def test_in_app_needs_no_recipient_and_workspace_is_required() -> None:
    validate("ws", draft(channel="in_app", recipient=""))
    with pytest.raises(InvalidArgument) as err:
        validate("", draft())
    assert err.value.field == "workspace_id"
