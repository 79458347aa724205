import asyncpg
import sqlalchemy.exc
from retain_kit.grpcserver import database_unavailable


def _wrapped(orig: BaseException, cause: BaseException | None = None) -> sqlalchemy.exc.DBAPIError:
    if cause is not None:
        orig.__cause__ = cause
    return sqlalchemy.exc.DBAPIError("SELECT 1", None, orig)  # type: ignore[arg-type]


def test_database_starting_up_or_refusing_connections_is_unavailable() -> None:
    assert database_unavailable(_wrapped(Exception("adapted"), asyncpg.exceptions.CannotConnectNowError("starting")))
    assert database_unavailable(_wrapped(Exception("adapted"), ConnectionRefusedError()))
    assert database_unavailable(sqlalchemy.exc.OperationalError("SELECT 1", None, Exception("gone")))


def test_a_bad_query_is_not_unavailable() -> None:
    assert not database_unavailable(_wrapped(Exception("adapted"), asyncpg.exceptions.UndefinedTableError("no table")))
