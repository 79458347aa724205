import typing

import pytest
from retain.audit.v1 import audit_pb2
from retain.common.v1 import common_pb2
from retain.decision.v1 import decision_pb2
from retain_gateway import schemas
from retain_gateway.convert import enum_names
from retain_gateway.roles import ALLOWED, Action, Role, is_allowed, parse_roles


def test_every_action_has_an_entry() -> None:
    assert set(ALLOWED) == set(Action)


@pytest.mark.parametrize("action", list(Action))
def test_admin_may_do_everything(action: Action) -> None:
    assert is_allowed({"admin"}, action)


@pytest.mark.parametrize("action", list(Action))
def test_no_roles_may_do_nothing(action: Action) -> None:
    assert not is_allowed(set(), action)


@pytest.mark.parametrize(
    ("roles", "action", "allowed"),
    [
        ({"ingest"}, Action.INGEST_EVENTS, True),
        ({"app"}, Action.INGEST_EVENTS, False),
        ({"auditor"}, Action.READ_AUDIT, True),
        ({"auditor"}, Action.VERIFY_AUDIT, True),
        ({"auditor"}, Action.SEND_MESSAGE, False),
        ({"auditor"}, Action.WRITE_CONSENTS, False),
        ({"auditor"}, Action.READ_CUSTOMER, True),
        ({"app"}, Action.GET_NEXT_BEST_ACTIONS, True),
        ({"app"}, Action.SEND_MESSAGE, False),
        ({"app"}, Action.READ_AUDIT, False),
        ({"ingest"}, Action.WRITE_CONSENTS, True),
        ({"ingest"}, Action.READ_CUSTOMER, False),
        ({"contact_centre"}, Action.SEND_MESSAGE, True),
        ({"contact_centre"}, Action.WRITE_OFFERS, False),
        ({"operator"}, Action.WRITE_OFFERS, True),
        ({"ingest", "auditor"}, Action.READ_AUDIT, True),
    ],
)
def test_role_table(roles: set[str], action: Action, allowed: bool) -> None:
    assert is_allowed(roles, action) is allowed


def test_parse_roles_normalises_and_rejects_unknown() -> None:
    assert parse_roles([" Ingest", "app"]) == {Role.INGEST, Role.APP}
    with pytest.raises(ValueError, match="superuser"):
        parse_roles(["ingest", "superuser"])


@pytest.mark.parametrize(
    ("literal", "enum"),
    [
        (schemas.ChannelName, common_pb2.Channel.DESCRIPTOR),
        (schemas.ConsentStatusName, common_pb2.ConsentStatus.DESCRIPTOR),
        (schemas.PlayTypeName, decision_pb2.PlayType.DESCRIPTOR),
        (schemas.OutcomeName, decision_pb2.Outcome.DESCRIPTOR),
        (schemas.RecordKindName, audit_pb2.RecordKind.DESCRIPTOR),
    ],
)
def test_rest_enum_names_match_the_protos(literal: typing.Any, enum: typing.Any) -> None:
    assert set(typing.get_args(literal)) == set(enum_names(enum))
