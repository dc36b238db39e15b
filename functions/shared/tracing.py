"""OpenTelemetry set-up driven by the standard OTEL_* variables, and trace-context helpers."""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context

_configured = False


def enabled() -> bool:
    """Tracing is on when an OTLP endpoint (or a traces exporter) is configured, the standard way,
    and OTEL_SDK_DISABLED is not true. Off, no span is made and requests pay nothing for it."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_TRACES_EXPORTER", "none") not in ("", "none")
    )


def configure_tracing(service: str) -> bool:
    """Installs an SDK tracer provider exporting over OTLP, when enabled(); returns whether it did."""
    global _configured
    if _configured:
        return True
    if not enabled():
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME", service)
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True
    return True


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, for the CloudEvents `traceparent` extension."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def context_from(carrier: Mapping[str, str]) -> Context:
    """A context whose parent is the span named by `traceparent` (and `tracestate`) in carrier."""
    return propagate.extract(dict(carrier))


def attach(ctx: Context) -> object:
    return context.attach(ctx)


def detach(token: object) -> None:
    context.detach(token)  # type: ignore[arg-type]
