"""OpenTelemetry wiring: one incoming request is one trace across every process it touches.

Spans are exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set (standard OTEL_* variables apply).
Logs are JSON lines carrying the current trace and span ids.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from sqlalchemy.ext.asyncio import AsyncEngine

_provider: TracerProvider | None = None


def setup(service_name: str, *, log_level: str = "INFO") -> TracerProvider:
    """Install the tracer provider, Redis instrumentation and JSON logging for this process."""
    global _provider
    if _provider is not None:
        return _provider
    resource = Resource.create({"service.name": service_name, "service.namespace": "retain"})
    exporting = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    if exporting or os.environ.get("OTEL_TRACES_SAMPLER"):
        provider = TracerProvider(resource=resource)  # the standard OTEL_TRACES_SAMPLER* variables apply
    else:
        # Nothing would read recorded spans: keep them non-recording. Trace and span ids still exist and
        # propagate (traceparent across every process, trace ids in the logs); recording them costs a good
        # share of each request's CPU.
        provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_OFF))
    if exporting:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    if not RedisInstrumentor().is_instrumented_by_opentelemetry:
        RedisInstrumentor().instrument(tracer_provider=provider)
    configure_logging(service_name, log_level)
    _provider = provider
    return provider


def shutdown() -> None:
    """Flush pending spans (call on graceful stop)."""
    if _provider is not None:
        _provider.shutdown()


def instrument_engine(engine: AsyncEngine) -> None:
    """Database spans for one engine.

    The packaged SQLAlchemyInstrumentor refuses SQLAlchemy 2.1 by version check (and instruments only once per
    process), so its EngineTracer is attached per engine directly; the event API it relies on is unchanged in 2.1.
    """
    from opentelemetry.instrumentation.sqlalchemy import __name__ as scope
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter

    usage = get_meter(scope).create_up_down_counter("db.client.connections.usage", unit="connections")
    EngineTracer(trace.get_tracer(scope), engine.sync_engine, usage)  # type: ignore[no-untyped-call]


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    return [aio_server_interceptor()]  # type: ignore[no-untyped-call]


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the trace id so logs join traces."""

    def __init__(self, service_name: str) -> None:
        super().__init__()
        self.service_name = service_name

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "service": self.service_name,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            entry["trace_id"] = format(ctx.trace_id, "032x")
            entry["span_id"] = format(ctx.span_id, "016x")
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(service_name: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
