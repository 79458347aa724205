"""The one place errors become HTTP responses: `{"error": <code>, "detail": <message>, "field": ...}`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from retain_kit.errors import FIELD_METADATA_KEY
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

_GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.OUT_OF_RANGE: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
}
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_argument",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Exception):
    """An error the gateway itself raises (auth, limits, input it checks before calling a service)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        field: str = "",
        error: str = "",
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.error = error or _HTTP_CODES.get(status, "error")
        self.headers = headers or {}
        self.extra = extra or {}


def unauthorized(detail: str) -> ApiError:
    # Basic is advertised so Segment-style clients know to send the write key as the user name.
    return ApiError(401, detail, headers={"WWW-Authenticate": 'Bearer, Basic realm="retain"'})


def error_body(error: str, detail: str, field: str = "", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error, "detail": detail}
    if field:
        body["field"] = field
    body.update(extra)
    return body


def field_path(loc: Sequence[int | str]) -> str:
    """('body', 'consents', 0, 'channel') -> 'consents[0].channel'."""
    parts = list(loc)
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def first_error(errors: Sequence[Any]) -> tuple[str, str]:
    """(field, message) of the first validation error, with the field as a dotted path."""
    if not errors:
        return "", "invalid input"
    err = errors[0]
    loc = err.get("loc", ()) if isinstance(err, dict) else ()
    msg = err.get("msg", "invalid value") if isinstance(err, dict) else str(err)
    return field_path(loc), str(msg)


def grpc_status(
    exc: grpc.aio.AioRpcError, *, retry_after: int = 1
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """HTTP status, body and headers for a failed downstream call."""
    code = exc.code()
    trailing = dict(exc.trailing_metadata() or ())
    field = str(trailing.get(FIELD_METADATA_KEY, ""))
    status = _GRPC_TO_HTTP.get(code, 502)
    if code == grpc.StatusCode.INVALID_ARGUMENT and not field:
        status = 400
    headers = {"Retry-After": str(retry_after)} if code in _RETRYABLE else {}
    error = code.name.lower() if status != 502 else "bad_gateway"
    return status, error_body(error, exc.details() or code.name.lower(), field), headers


def install(app: FastAPI, *, retry_after_seconds: int = 1) -> None:
    """Register every handler; nothing else in the gateway turns errors into responses."""

    async def on_api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse(
            error_body(exc.error, exc.detail, exc.field, **exc.extra), exc.status, headers=exc.headers
        )

    async def on_rpc_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, grpc.aio.AioRpcError)
        status, body, headers = grpc_status(exc, retry_after=retry_after_seconds)
        if status >= 500:
            log.warning("downstream %s failed on %s: %s", exc.code().name, request.url.path, exc.details())
        return JSONResponse(body, status, headers=headers)

    async def on_validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError | ValidationError)
        field, message = first_error(list(exc.errors()))
        return JSONResponse(error_body("invalid_argument", message, field), 422)

    async def on_http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        error = _HTTP_CODES.get(exc.status_code, "error")
        return JSONResponse(
            error_body(error, str(exc.detail)), exc.status_code, headers=dict(exc.headers or {})
        )

    async def on_out_of_range(request: Request, exc: Exception) -> JSONResponse:
        # protobuf refuses numbers that do not fit its fields (int32/int64): bad input, not a server fault.
        if "out of range" not in str(exc):
            raise exc
        log.info("out-of-range input on %s: %s", request.url.path, exc)
        return JSONResponse(error_body("invalid_argument", f"a number is out of range: {exc}", ""), 422)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(ValueError, on_out_of_range)
    app.add_exception_handler(grpc.aio.AioRpcError, on_rpc_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(ValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
