"""OpenTelemetry tracing (the ``otel`` extra: ``pip install 'durable-sdk[otel]'``).

When the application has configured a tracer provider (``opentelemetry.trace.
set_tracer_provider`` with the SDK's, or an auto-instrumentation that does it), durable makes a
span for each execution of a run (an executor driving it until it parks, finishes or stops),
for each activity attempt and for each compensation attempt. Replayed steps make none. The
trace context of the code that records a run (``durable.start`` / ``run`` / ``execute``; a
parent run for its children) is stored with the run (`durable.store.RunRecord.trace_context`),
so the executions of that run, in whichever process, are children of that code's span.

durable never imports opentelemetry itself unless asked: tracing is on when the application
imported ``opentelemetry.trace`` and set a real provider. The environment variable
``DURABLE_TRACING`` says otherwise: ``off`` (no spans, no recorded contexts), ``on`` (import
opentelemetry, and fail with an error naming the extra when it is not installed), ``auto``
(the default).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from types import ModuleType
from typing import TYPE_CHECKING, Any

from durable._errors import Cancelled

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = [
    "ENV",
    "check",
    "current_context",
    "inherited",
    "run_span",
    "step_span",
    "tracer",
    "use_provider",
]

ENV = "DURABLE_TRACING"
"""The environment variable that turns tracing ``on``, ``off`` or leaves it ``auto``."""

_MODES = ("auto", "on", "off")
_INSTRUMENTATION = "durable"

_override: list[TracerProvider] = []  # `use_provider`: tests' providers, innermost last
_cached: tuple[object, Tracer] | None = None  # the tracer of the provider last seen
_inherited: ContextVar[str | None] = ContextVar("durable_trace_context", default=None)


def _mode() -> str:
    mode = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if mode not in _MODES:
        raise ValueError(f"{ENV}={mode!r} is not one of {', '.join(_MODES)}")
    return mode


def _trace_module() -> ModuleType | None:
    """``opentelemetry.trace`` when tracing may be on, else ``None``; imported only when
    ``DURABLE_TRACING=on`` asks for it (otherwise only if the application already did).

    Raises:
        ImportError: ``DURABLE_TRACING=on`` and opentelemetry is not installed.
    """
    mode = _mode()
    if mode == "off":
        return None
    module = sys.modules.get("opentelemetry.trace")
    if module is not None or mode == "auto":
        return module
    try:
        import opentelemetry.trace
    except ImportError:
        raise ImportError(
            f"{ENV}=on asks for OpenTelemetry tracing, but opentelemetry is not installed; "
            "install it with: pip install 'durable-sdk[otel]' (or unset "
            f"{ENV} to trace only when it is there)"
        ) from None
    return opentelemetry.trace


def check() -> None:
    """Fail now, not at the first run, when tracing is asked for and cannot be had.

    Raises:
        ImportError: ``DURABLE_TRACING=on`` and opentelemetry is not installed.
        ValueError: ``DURABLE_TRACING`` has an unknown value.
    """
    _trace_module()


def tracer() -> Tracer | None:
    """The tracer durable's spans are made with, or ``None`` when tracing is off (no
    provider configured, opentelemetry not in use, or ``DURABLE_TRACING=off``)."""
    global _cached
    if _override:
        provider: object = _override[-1]
    else:
        trace = _trace_module()
        if trace is None:
            return None
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return None  # nobody configured one: spans would go nowhere
    cached = _cached
    if cached is not None and cached[0] is provider:
        return cached[1]
    made: Tracer = provider.get_tracer(_INSTRUMENTATION)  # type: ignore[attr-defined]
    _cached = (provider, made)
    return made


@contextmanager
def use_provider(provider: TracerProvider) -> Iterator[None]:
    """Make spans with ``provider`` in this block instead of the global one (for tests: the
    global provider can be set only once per process)."""
    _override.append(provider)
    try:
        yield
    finally:
        _override.remove(provider)


def current_context() -> str | None:
    """The trace context of the calling code as JSON of its W3C carrier (``traceparent``,
    ``tracestate``); else, inside a run, the run's recorded one (a child run inherits its
    parent's even where no span is current); else ``None``."""
    trace = _trace_module()
    if trace is not None and trace.get_current_span().get_span_context().is_valid:
        from opentelemetry import propagate

        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        if carrier:
            return json.dumps(carrier, sort_keys=True)
    return _inherited.get() if _mode() != "off" else None


@contextmanager
def inherited(trace_context: str | None) -> Iterator[None]:
    """Inside this block (the execution of a run), runs recorded without a current span
    inherit ``trace_context`` (the executing run's)."""
    token = _inherited.set(trace_context)
    try:
        yield
    finally:
        _inherited.reset(token)


def _parent(trace_context: str | None) -> Any:
    """The context a recorded carrier describes, or ``None`` (the current one) when there is
    none or it cannot be read."""
    if not trace_context:
        return None
    try:
        carrier = json.loads(trace_context)
    except ValueError:
        return None
    if not isinstance(carrier, dict):
        return None
    from opentelemetry import propagate

    return propagate.extract({str(k): str(v) for k, v in carrier.items()})


@contextmanager
def _span(
    tracer: Tracer, name: str, attributes: dict[str, Any], parent: Any = None
) -> Iterator[Span]:
    """A span current in the block; an `Exception` through it is recorded and sets the
    error status (a durable `Cancelled` only marks the outcome)."""
    from opentelemetry.trace import Status, StatusCode, use_span

    span = tracer.start_span(name, context=parent, attributes=attributes)
    with use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
        try:
            yield span
        except Cancelled:
            span.set_attribute("durable.outcome", "cancelled")
            raise
        except Exception as exc:
            span.record_exception(exc, escaped=True)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__qualname__}: {exc}"))
            raise


def run_span(
    tracer: Tracer, run_id: str, workflow: str, trace_context: str | None
) -> AbstractContextManager[Span]:
    """The span of one execution of a run, a child of the recorded ``trace_context`` (else of
    the current span); named ``workflow <name>``."""
    attributes = {"durable.run_id": run_id, "durable.workflow": workflow}
    return _span(tracer, f"workflow {workflow}", attributes, _parent(trace_context))


def step_span(
    tracer: Tracer, kind: str, name: str, run_id: str, workflow: str, seq: int, attempt: int
) -> AbstractContextManager[Span]:
    """The span of one attempt of an activity or compensation step: ``activity <name>`` /
    ``compensation <name>``, a child of the current span (the run's execution)."""
    attributes = {
        "durable.run_id": run_id,
        "durable.workflow": workflow,
        "durable.step": seq,
        "durable.attempt": attempt,
    }
    return _span(tracer, f"{kind} {name}", attributes)
