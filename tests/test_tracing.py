"""OpenTelemetry: a span per run execution, per activity attempt and per compensation attempt,
none for replayed steps; the caller's trace context is recorded with the run, so a worker in
another process continues the caller's trace."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import PROGRAMS, Processes, eventually, python, read_log, stop

pytest.importorskip(
    "opentelemetry.sdk", reason="opentelemetry-sdk is not installed (pip install -e '.[test]')"
)

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import durable
from durable import _tracing
from durable.backends import MemoryStore, SQLStore
from durable.store import RunQuery

sys.path.insert(0, str(PROGRAMS))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans of this test, from a provider of its own (the global one can be set only once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with _tracing.use_provider(provider):
        yield exporter
    provider.shutdown()


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def _one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = _named(exporter, name)
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _span_id(span: ReadableSpan) -> int:
    context = span.get_span_context()
    assert context is not None
    return context.span_id


def _trace_id(span: ReadableSpan) -> int:
    context = span.get_span_context()
    assert context is not None
    return context.trace_id


# -- activities, retries, compensations ------------------------------------------------------

flaky_calls: list[int] = []


@durable.activity(name="tr.fetch")
async def fetch(x: int) -> int:
    return x * 2


@durable.activity(
    name="tr.flaky",
    retry=durable.RetryPolicy(max_attempts=3, initial_interval=0.001, backoff=1.0),
)
async def flaky(x: int) -> int:
    flaky_calls.append(x)
    if len(flaky_calls) == 1:
        raise ConnectionError("first attempt fails")
    return x + 1


@durable.workflow(name="tr.two")
async def two(x: int) -> int:
    return await flaky(await fetch(x))


async def test_a_run_makes_a_span_per_execution_and_activity_attempt(
    spans: InMemorySpanExporter,
) -> None:
    flaky_calls.clear()
    assert await durable.execute(two, 5, id="two-1", store=MemoryStore()) == 11

    run = _one(spans, "workflow tr.two")
    assert dict(run.attributes or {}) == {
        "durable.run_id": "two-1",
        "durable.workflow": "tr.two",
        "durable.outcome": "completed",
    }
    assert run.status.status_code is StatusCode.UNSET
    fetched = _one(spans, "activity tr.fetch")
    assert dict(fetched.attributes or {}) == {
        "durable.run_id": "two-1",
        "durable.workflow": "tr.two",
        "durable.step": 1,
        "durable.attempt": 1,
    }
    attempts = sorted(_named(spans, "activity tr.flaky"), key=lambda s: s.start_time or 0)
    assert [(a.attributes or {}).get("durable.attempt") for a in attempts] == [1, 2]
    assert {(a.attributes or {}).get("durable.step") for a in attempts} == {2}
    failed, succeeded = attempts
    assert failed.status.status_code is StatusCode.ERROR
    assert "ConnectionError: first attempt fails" in (failed.status.description or "")
    assert [e.name for e in failed.events] == ["exception"]
    assert (failed.events[0].attributes or {})["exception.type"] == "ConnectionError"
    assert succeeded.status.status_code is StatusCode.UNSET
    for step in (fetched, *attempts):
        assert _parent_id(step) == _span_id(run)
        assert _trace_id(step) == _trace_id(run)


@durable.activity(name="tr.release")
async def release(seat: str) -> None:
    return None


@durable.activity(name="tr.reserve", compensate=release)
async def reserve(seat: str) -> str:
    return seat


@durable.activity(name="tr.pay")
async def pay() -> None:
    raise ValueError("card declined")


@durable.workflow(name="tr.trip")
async def trip() -> None:
    await reserve("4A")
    await pay()


async def test_a_failed_run_makes_a_compensation_span_and_an_error_status(
    spans: InMemorySpanExporter,
) -> None:
    with pytest.raises(ValueError, match="card declined"):
        await durable.execute(trip, id="trip-1", store=MemoryStore())
    run = _one(spans, "workflow tr.trip")
    assert run.status.status_code is StatusCode.ERROR
    assert "card declined" in (run.status.description or "")
    assert [e.name for e in run.events] == ["exception"]
    undo = _one(spans, "compensation tr.release")
    assert dict(undo.attributes or {}) == {
        "durable.run_id": "trip-1",
        "durable.workflow": "tr.trip",
        "durable.step": 3,
        "durable.attempt": 1,
    }
    assert undo.status.status_code is StatusCode.UNSET
    assert _parent_id(undo) == _span_id(run)
    assert _one(spans, "activity tr.pay").status.status_code is StatusCode.ERROR


@durable.workflow(name="tr.naps")
async def naps() -> int:
    first = await fetch(1)
    await durable.sleep(0.05)
    return first + await fetch(2)


async def test_replayed_steps_make_no_spans(spans: InMemorySpanExporter) -> None:
    store = MemoryStore()
    with durable.executor_config(park_after=0.0):  # the sleep parks; the run is driven twice
        assert await durable.execute(naps, id="naps-1", store=store) == 6
    runs = _named(spans, "workflow tr.naps")
    outcomes = [(r.attributes or {}).get("durable.outcome") for r in runs]
    assert outcomes == ["parked", "completed"]
    steps = sorted((s.attributes or {})["durable.step"] for s in _named(spans, "activity tr.fetch"))
    assert steps == [1, 3]  # step 1 replayed in the second execution: no second span
    spans.clear()
    assert await durable.execute(naps, id="naps-1", store=store) == 6  # the recorded result
    assert spans.get_finished_spans() == ()


@durable.workflow(name="tr.child")
async def child(x: int) -> int:
    return await fetch(x)


@durable.workflow(name="tr.parent")
async def parent() -> int:
    return await child(4)


async def test_a_child_runs_execution_is_a_child_of_its_parents(
    spans: InMemorySpanExporter,
) -> None:
    tracer = _tracing.tracer()
    assert tracer is not None
    with tracer.start_as_current_span("caller") as caller:
        assert await durable.execute(parent, id="p-1", store=MemoryStore()) == 8
    parent_run = _one(spans, "workflow tr.parent")
    child_run = _one(spans, "workflow tr.child")
    assert _parent_id(parent_run) == caller.get_span_context().span_id
    assert _parent_id(child_run) == _span_id(parent_run)
    assert _parent_id(_one(spans, "activity tr.fetch")) == _span_id(child_run)
    assert len({_trace_id(s) for s in spans.get_finished_spans()}) == 1


async def test_a_child_run_inherits_its_parents_context_where_no_span_is_current() -> None:
    store = MemoryStore()
    provider = TracerProvider()
    with _tracing.use_provider(provider), provider.get_tracer("test").start_as_current_span("c"):
        await durable.start(parent, id="p-2", store=store)
    provider.shutdown()
    assert _tracing.tracer() is None  # executed where nothing is traced
    assert await durable.execute(parent, id="p-2", store=store) == 8
    recorded = await store.get_run("p-2")
    children = await store.find_runs(RunQuery(parent_id="p-2"))
    assert recorded is not None and recorded.trace_context is not None
    assert [c.trace_context for c in children] == [recorded.trace_context]


async def test_the_callers_trace_context_is_recorded_with_the_run(
    spans: InMemorySpanExporter,
) -> None:
    store = MemoryStore()
    tracer = _tracing.tracer()
    assert tracer is not None
    with tracer.start_as_current_span("caller") as caller:
        handle = await durable.start(two, 1, id="rec-1", store=store)
    await durable.start(two, 1, id="rec-2", store=store)  # outside any span
    recorded = await store.get_run(handle.id)
    assert recorded is not None and recorded.trace_context is not None
    carrier = json.loads(recorded.trace_context)
    context = caller.get_span_context()
    assert carrier["traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    untraced = await store.get_run("rec-2")
    assert untraced is not None and untraced.trace_context is None


async def test_a_fork_records_the_trace_context_of_who_forked_it(
    spans: InMemorySpanExporter,
) -> None:
    store = MemoryStore()
    flaky_calls.clear()
    assert await durable.execute(two, 3, id="src-1", store=store) == 7
    tracer = _tracing.tracer()
    assert tracer is not None
    with tracer.start_as_current_span("forker") as forker:
        await durable.get_handle("src-1", store).fork(from_step=2, id="fork-1")
    forked = await store.get_run("fork-1")
    assert forked is not None and forked.trace_context is not None
    context = forker.get_span_context()
    traceparent = json.loads(forked.trace_context)["traceparent"]
    assert traceparent.startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")


async def test_no_spans_and_no_context_without_a_provider() -> None:
    assert _tracing.tracer() is None  # the global provider is the default proxy in tests
    store = MemoryStore()
    flaky_calls.clear()
    assert await durable.execute(two, 2, id="plain-1", store=store) == 5
    run = await store.get_run("plain-1")
    assert run is not None and run.trace_context is None


# -- across processes ------------------------------------------------------------------------


def test_a_worker_in_another_process_joins_the_callers_trace(
    spans: InMemorySpanExporter, processes: Processes, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'traced.db'}"
    span_file = tmp_path / "spans.jsonl"
    log = tmp_path / "worker.log"
    env = {**os.environ, "SPAN_FILE": str(span_file)}
    worker = processes.spawn_worker("traced_app", url, log, env=env)
    import traced_app

    tracer = _tracing.tracer()
    assert tracer is not None
    exported: list[dict[str, Any]] = []

    async def start_and_wait() -> None:
        async with SQLStore(url) as store:
            with tracer.start_as_current_span("caller"):
                handle = await durable.start(traced_app.hello, "ann", id="x-1", store=store)
            assert await handle.result(timeout=60) == "hello ann"

        async def both_exported() -> bool:
            text = span_file.read_text() if span_file.exists() else ""
            exported[:] = [json.loads(line) for line in text.splitlines()]
            return len(exported) == 2

        await eventually("the worker's two spans", both_exported)

    try:
        anyio.run(start_and_wait)
    finally:
        assert stop(worker) == 0, read_log(log)
    caller = _one(spans, "caller")
    context = caller.get_span_context()
    assert context is not None
    by_name = {span["name"]: span for span in exported}
    run, greet = by_name["workflow traced.hello"], by_name["activity traced.greet"]
    assert run["trace_id"] == greet["trace_id"] == f"{context.trace_id:032x}"
    assert run["parent_id"] == f"{context.span_id:016x}"
    assert greet["parent_id"] == run["span_id"]
    assert run["attributes"] == {
        "durable.run_id": "x-1",
        "durable.workflow": "traced.hello",
        "durable.outcome": "completed",
    }
    assert greet["attributes"]["durable.step"] == 1


# -- without opentelemetry -------------------------------------------------------------------

_WITHOUT_OTEL = """
import sys
sys.modules["opentelemetry"] = None  # as if it were not installed
import durable
from durable.backends import MemoryStore

@durable.workflow(name="plain.hello")
async def hello() -> str:
    return "hello"

print(durable.run(hello, id="h", store=MemoryStore()))
"""


def test_without_opentelemetry_tracing_is_off(tmp_path: Path) -> None:
    done = python("-c", _WITHOUT_OTEL, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello"


def test_asking_for_tracing_without_opentelemetry_names_the_extra(tmp_path: Path) -> None:
    env = {**os.environ, "DURABLE_TRACING": "on"}
    done = python("-c", _WITHOUT_OTEL, cwd=tmp_path, env=env)
    assert done.returncode != 0
    assert "pip install 'durable-sdk[otel]'" in done.stderr
    (tmp_path / "app.py").write_text(
        "import sys\nsys.modules['opentelemetry'] = None\nimport durable\n\n"
        "@durable.workflow(name='app.w')\nasync def w() -> None: ...\n"
    )
    code = "import sys; from durable._cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["-c", code, "worker", "app", "--store", "memory:"]
    refused = python(*args, cwd=tmp_path, env=env)
    assert refused.returncode == 2, refused.stderr
    assert "pip install 'durable-sdk[otel]'" in refused.stderr


def test_durable_does_not_import_opentelemetry_on_its_own(tmp_path: Path) -> None:
    code = _WITHOUT_OTEL.replace('sys.modules["opentelemetry"] = None', "") + (
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')]\n"
    )
    done = python("-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
