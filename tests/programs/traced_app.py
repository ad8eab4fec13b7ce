"""A worker's application that traces: imported by ``durable worker traced_app`` with
$SPAN_FILE set, it sets the process's global tracer provider, whose spans go (one JSON object
per line, as each ends) to that file. tests/test_tracing.py reads them (and imports this
module without $SPAN_FILE, for the workflow only)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import durable


class FileExporter(SpanExporter):
    """Appends each finished span to a file: ids as hex, parent, name, attributes, status."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            context = span.get_span_context()
            assert context is not None
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "trace_id": f"{context.trace_id:032x}",
                        "span_id": f"{context.span_id:016x}",
                        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
                        "attributes": dict(span.attributes or {}),
                        "status": span.status.status_code.name,
                    }
                )
            )
        with self.lock, open(self.path, "a") as f:
            f.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS


if os.environ.get("SPAN_FILE"):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(os.environ["SPAN_FILE"])))
    trace.set_tracer_provider(provider)


@durable.activity(name="traced.greet")
async def greet(name: str) -> str:
    return f"hello {name}"


@durable.workflow(name="traced.hello")
async def hello(name: str) -> str:
    return await greet(name)
