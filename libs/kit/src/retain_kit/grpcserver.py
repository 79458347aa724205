"""`serve()` for every gRPC service: health, reflection, error interceptor, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import redis.exceptions
import sqlalchemy.exc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from retain_kit import telemetry
from retain_kit.errors import FIELD_METADATA_KEY, RetainError

log = logging.getLogger(__name__)

# Connection-level failures of the stores behind a service (not bad input, not bugs).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)


# SQLSTATE classes meaning "the database cannot serve right now": connection exceptions, shutdown or
# starting up (57P01-57P03), too many connections.
_UNAVAILABLE_SQLSTATES = ("08", "57P", "53300")


def database_unavailable(exc: sqlalchemy.exc.DBAPIError) -> bool:
    """True when a database error is the database being unreachable, not a bad query or a bug."""
    if exc.connection_invalidated or isinstance(exc, sqlalchemy.exc.OperationalError):
        return True
    cause: BaseException | None = exc.orig
    while cause is not None:
        state = str(getattr(cause, "sqlstate", "") or "")
        if state.startswith(_UNAVAILABLE_SQLSTATES) or isinstance(cause, ConnectionError | TimeoutError):
            return True
        cause = cause.__cause__
    return False


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns RetainError into a gRPC abort with its status; anything else is logged as INTERNAL."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await inner(request, context)  # type: ignore[arg-type]  # aio handler
            except RetainError as exc:
                if exc.field:
                    context.set_trailing_metadata(((FIELD_METADATA_KEY, exc.field),))
                await context.abort(exc.code, exc.message)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except sqlalchemy.exc.DBAPIError as exc:
                if not database_unavailable(exc):
                    log.exception("database error in %s", handler_call_details.method)
                    await context.abort(grpc.StatusCode.INTERNAL, "internal error")
                log.warning("database unavailable in %s: %s", handler_call_details.method, exc)
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the database is unavailable; retry later")
            except UNAVAILABLE_ERRORS as exc:
                # A dependency (database, Redis) is down: a retryable UNAVAILABLE, never INTERNAL.
                log.warning("dependency unavailable in %s: %s", handler_call_details.method, exc)
                await context.abort(grpc.StatusCode.UNAVAILABLE, "a dependency is unavailable; retry later")
            except Exception:
                log.exception("unhandled error in %s", handler_call_details.method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@dataclass
class Registration:
    """A servicer plus the generated `add_*_to_server` function and its full service name."""

    servicer: object
    add_to_server: Callable[[Any, Any], None]
    service_name: str


async def start(
    registrations: Sequence[Registration], *, host: str = "127.0.0.1", port: int = 0
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Build and start a server; returns it with the bound port (port 0 picks a free one)."""
    server = grpc.aio.server(
        interceptors=[*telemetry.server_interceptors(), ErrorInterceptor()],
        options=[("grpc.so_reuseport", 0)],
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
    for reg in registrations:
        reg.add_to_server(reg.servicer, server)
        names.append(reg.service_name)
    reflection.enable_server_reflection(names, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    for reg in registrations:
        await health_servicer.set(reg.service_name, health_pb2.HealthCheckResponse.SERVING)
    return server, bound, health_servicer


async def serve(
    registrations: Sequence[Registration],
    *,
    host: str,
    port: int,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    grace_seconds: float = 5.0,
) -> None:
    """Serve until SIGTERM/SIGINT, then report NOT_SERVING, drain in-flight calls and stop."""
    server, bound, health_servicer = await start(registrations, host=host, port=port)
    log.info("serving %s on %s:%d", ",".join(r.service_name for r in registrations), host, bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace_seconds)
    if on_stop is not None:
        await on_stop()
    telemetry.shutdown()


def channel(target: str) -> grpc.aio.Channel:
    """Client channel with tracing and transparent retries for UNAVAILABLE."""
    service_config = (
        '{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s",'
        ' "maxBackoff": "0.5s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}'
    )
    return grpc.aio.insecure_channel(
        target,
        interceptors=telemetry.client_interceptors(),
        # round_robin spreads calls over every address a name resolves to (headless Services, replicas).
        options=[
            ("grpc.service_config", service_config),
            ("grpc.enable_retries", 1),
            ("grpc.lb_policy_name", "round_robin"),
        ],
    )
