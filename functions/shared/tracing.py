"""OpenTelemetry set-up driven by the standard OTEL_* variables, and trace-context helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context

from functions.shared.config import Config, config

_configured = False


def enabled(settings: Config) -> bool:
    """Tracing is on when an OTLP endpoint (or a traces exporter) is configured, the standard way,
    and OTEL_SDK_DISABLED is not true. Off, no span is made and requests pay nothing for it."""
    if settings.optional("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return bool(
        settings.optional("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        or settings.optional("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
        or settings.optional("OTEL_TRACES_EXPORTER", "none") != "none"
    )


def configure_tracing(service: str, settings: Config | None = None) -> bool:
    """Installs an SDK tracer provider exporting over OTLP, when enabled(); returns whether it did."""
    global _configured
    if _configured:
        return True
    if not enabled(settings or config()):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = service  # one process is one service: a shared OTEL_SERVICE_NAME would merge them all
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True
    return True


def configure(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """configure_tracing for a process whose OTEL_* settings live in `environ` (the local runtime)."""
    if environ is None:
        return configure_tracing(service)
    otel = {name: value for name, value in environ.items() if name.startswith("OTEL_")}
    # The SDK's exporter reads its own settings from the process environment.
    for name, value in otel.items():
        os.environ.setdefault(name, value)
    return configure_tracing(service, Config({**otel, **config().environ}))


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, for the CloudEvents `traceparent` extension."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Adds the active span's traceparent (and tracestate) to outgoing headers."""
    propagate.inject(headers)
    return headers


def parent_of(traceparent: object) -> Context:
    """The context a span should start in to continue the trace `traceparent` names (if any)."""
    return propagate.extract({"traceparent": traceparent}) if isinstance(traceparent, str) else context.get_current()


@contextmanager
def span(
    name: str,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    *,
    parent: Context | None = None,
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> Iterator[trace.Span]:
    """A span (a no-op one when tracing is off), made current while the block runs; errors are recorded."""
    with tracer("shop").start_as_current_span(name, context=parent, kind=kind, attributes=attributes) as current:
        yield current


def traceparent_of(current: trace.Span) -> str | None:
    """The traceparent naming `current`, or None for a non-recording span (tracing off)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(current))
    return carrier.get("traceparent")
