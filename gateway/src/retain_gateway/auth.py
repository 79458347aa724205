"""Authentication and authorisation as FastAPI dependencies: `Depends(require(Action.X))`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import (
    APIKeyHeader,
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import HTTPConnection

from retain_gateway import keys
from retain_gateway.domain.apikey import Principal, extract_key
from retain_gateway.errors import ApiError, unauthorized
from retain_gateway.roles import Action, is_allowed
from retain_gateway.state import GatewayState, state_of

log = logging.getLogger(__name__)


# These only declare the security schemes in OpenAPI; the key itself is read once, by `extract_key`.
class _Bearer(HTTPBearer):
    async def __call__(self, request: HTTPConnection) -> HTTPAuthorizationCredentials | None:
        return None


class _Basic(HTTPBasic):
    async def __call__(self, request: HTTPConnection) -> HTTPBasicCredentials | None:  # type: ignore[override]
        return None


class _Header(APIKeyHeader):
    async def __call__(self, request: HTTPConnection) -> str | None:
        return None


_bearer = _Bearer(scheme_name="bearer", description="`Authorization: Bearer rk_…`", auto_error=False)
_basic = _Basic(
    scheme_name="basic", description="The key as user name, empty password (Segment write key).", auto_error=False
)
_header = _Header(name="X-API-Key", scheme_name="apiKey", auto_error=False)


async def authenticate(request: Request, state: GatewayState) -> Principal:
    key = extract_key(
        authorization=request.headers.get("authorization"),
        api_key_header=request.headers.get("x-api-key"),
    )
    if key is None:
        raise unauthorized("missing API key")
    try:
        principal = await keys.authenticate(state.sessions, key, cache=state.auth_cache)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("key store unavailable: %s", exc)
        raise ApiError(
            503,
            "authentication is temporarily unavailable",
            headers={"Retry-After": str(state.settings.retry_after_seconds)},
        ) from exc
    if principal is None:
        raise unauthorized("invalid, expired or revoked API key")
    return principal


def require(action: Action) -> Callable[..., Awaitable[Principal]]:
    # The state is read from the request rather than declared as a dependency: every sub-dependency costs
    # FastAPI a resolution pass per request, even when its value is cached.
    async def dependency(
        request: Request,
        _b: Annotated[object, Security(_bearer)] = None,
        _s: Annotated[object, Security(_basic)] = None,
        _h: Annotated[object, Security(_header)] = None,
    ) -> Principal:
        state = state_of(request)
        principal = await authenticate(request, state)
        if not is_allowed(principal.roles, action):
            raise ApiError(403, f"this key's roles do not allow {action.value}")
        if state.limiter is not None and state.limiter.limit > 0:
            wait = await state.limiter.hit(principal.key_id)
            if wait is not None:
                raise ApiError(429, "rate limit exceeded for this key", headers={"Retry-After": str(wait)})
        return principal

    return dependency
