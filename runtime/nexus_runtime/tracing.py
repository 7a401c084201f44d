"""OpenTelemetry tracing for our Python processes, set up only when asked for.

With ``NEXUS_OTLP_ENDPOINT`` unset nothing of the SDK is imported, no
instrumentation is installed and the only cost is one ``None`` check per log
line: spans made through :func:`tracer` are the API's no-ops. With it set,
spans go over OTLP/HTTP (``<endpoint>/v1/traces``) in batches, sampled
parent-based at ``NEXUS_TRACE_SAMPLE_PERCENT``, so a request Envoy sampled is
traced through every hop and one it did not is traced by none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

__all__ = [
    "TracingSettings",
    "active_provider",
    "configure_tracing",
    "current_ids",
    "shutdown_tracing",
    "tracer",
]

DEFAULT_SAMPLE_PERCENT = 100.0
BATCH_DELAY_MS = 1000
"""How long finished spans wait before export: short, so a trace is whole within seconds."""


class TracingSettings(BaseSettings):
    """Where spans go, and how many requests are traced."""

    model_config = SettingsConfigDict(env_prefix="NEXUS_", extra="ignore")

    otlp_endpoint: str | None = None
    """OTLP/HTTP collector base URL (e.g. Jaeger's ``http://127.0.0.1:4318``); unset: no tracing."""
    trace_sample_percent: float = Field(default=DEFAULT_SAMPLE_PERCENT, ge=0, le=100)
    """Share of root traces sampled (parent-based: an incoming sampled context always is)."""


_provider: TracerProvider | None = None


def configure_tracing(service_name: str, settings: TracingSettings | None = None) -> bool:
    """Install the SDK, the OTLP exporter and the httpx/SQLAlchemy instrumentations.

    Call before any engine or client is made (the instrumentations patch their
    constructors). Returns whether tracing is on; a second call is a no-op.
    """
    global _provider
    settings = settings or TracingSettings()
    if settings.otlp_endpoint is None:
        return False
    if _provider is not None:
        return True
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_percent / 100)),
    )
    exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=BATCH_DELAY_MS))
    trace.set_tracer_provider(provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    SQLAlchemyInstrumentor().instrument(tracer_provider=provider)
    _provider = provider
    return True


def active_provider() -> TracerProvider | None:
    """The SDK's provider while tracing is on (`nexus_runtime.server.instrument_app`)."""
    return _provider


def tracer(name: str) -> Tracer:
    """A tracer for hand-made spans (rollout steps): the API's no-op one when tracing is off."""
    from opentelemetry import trace

    return trace.get_tracer(name)


def current_ids() -> dict[str, Any]:
    """``trace_id`` and ``span_id`` of the current span, for a log line; empty when off."""
    if _provider is None:
        return {}
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}


def shutdown_tracing() -> None:
    """Flush spans still queued, remove the instrumentations and stop tracing.

    OpenTelemetry's global provider is set once per process, so it stays, shut
    down: what a later call traces is dropped, not exported."""
    global _provider
    if _provider is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    HTTPXClientInstrumentor().uninstrument()
    SQLAlchemyInstrumentor().uninstrument()
    _provider.shutdown()
    _provider = None
