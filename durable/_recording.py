"""Recording a run and reading its outcome: the run record (created once per id, its
arguments checked against a repeated call) and the decoding of a finished run's result or error.
Shared by the client entry points and the executor."""

from __future__ import annotations

import inspect
from typing import Any

from durable import _tracing as tracing
from durable._clock import Clock
from durable._codec import Payloads
from durable._errors import (
    PayloadDecodeError,
    SerializationError,
    StoreError,
    WorkflowIdConflict,
)
from durable._registry import WorkflowDefinition, lookup_workflow
from durable._trust import trust_of
from durable._types import RunStatus
from durable.store import RunRecord, Store

__all__ = ["ensure_run", "outcome", "payloads_of"]


async def ensure_run(
    store: Store,
    defn: WorkflowDefinition,
    run_id: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    parent_id: str | None,
    clock: Clock,
    check_args: bool = True,
    start_at: float | None = None,
    delay: float | None = None,
    *,
    queue: str | None = None,
    queue_key: str | None = None,
    priority: int = 0,
    deadline: float | None = None,
) -> RunRecord:
    """The run ``run_id``, recorded now if it is new (with ``start_at``, or ``delay`` seconds
    after its creation: a delayed start, which workers claim from then on; on ``queue`` under
    ``queue_key`` with ``priority``; timing out at ``deadline``, epoch seconds). A run that
    exists keeps what it was recorded with.

    Raises:
        WorkflowIdConflict: the id is recorded for another workflow; or, for a child run
            (``parent_id`` given), by a run that is not that parent's child; or, with
            ``check_args``, with other arguments (not checked once the run continued as
            new: it no longer holds the arguments it was started with).
    """
    existing = await store.get_run(run_id)
    created = False
    if existing is None:
        payloads = Payloads(defn.codec, trust_of(store))
        payload = payloads.dumps((args, kwargs), what=f"arguments of run {run_id!r}")
        now = clock.time()
        record = RunRecord(
            id=run_id,
            workflow=defn.name,
            status=RunStatus.PENDING,
            args=payload,
            created_at=now,
            updated_at=now,
            parent_id=parent_id,
            code_version=defn.version,
            wake_at=now + delay if delay is not None else start_at,
            trace_context=tracing.current_context(),  # executions join the caller's trace
            queue=queue,
            queue_key=queue_key,
            priority=priority,
            deadline=deadline,
        )
        existing, created = await store.create_run(record)
    if created:
        return existing
    if parent_id is not None and existing.parent_id != parent_id:
        owner = f"child of run {existing.parent_id!r}" if existing.parent_id else "top-level run"
        raise WorkflowIdConflict(
            run_id,
            existing.workflow,
            defn.name,
            reason=(
                f"run {parent_id!r} cannot use {run_id!r} as the id of its child run: that id "
                f"is already taken by a {owner} of workflow {existing.workflow!r}; choose "
                'child ids that no other run uses (the default "<parent id>/<step>" is '
                "free unless someone else chose it)"
            ),
        )
    if existing.workflow != defn.name:
        raise WorkflowIdConflict(run_id, existing.workflow, defn.name)
    # A run that continued as new holds its latest generation's arguments, not the ones it
    # was started with: a caller resuming it with those must not be refused.
    if (
        check_args
        and existing.generation <= 1
        and not _same_arguments(existing, Payloads(defn.codec, trust_of(store)), defn, args, kwargs)
    ):
        raise WorkflowIdConflict(
            run_id,
            existing.workflow,
            defn.name,
            reason=(
                f"run {run_id!r} of workflow {defn.name!r} is already recorded with other "
                "arguments than the ones given now; the id is the run's idempotency key: "
                "call it with the arguments it was started with (to resume it or get its "
                "result), or choose another id for a new run"
            ),
        )
    return existing


def _same_arguments(
    run: RunRecord,
    payloads: Payloads,
    defn: WorkflowDefinition,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> bool:
    """Whether ``(args, kwargs)`` are the ones ``run`` was recorded with: the same encoding,
    or equal once the recorded ones are decoded. Arguments that cannot be encoded or
    decoded, or compared, are not held against the caller."""
    try:
        if payloads.dumps((args, kwargs), what="arguments") == run.args:
            return True
        recorded: Any = payloads.loads(run.args, run_id=run.id, seq=None, what="arguments")
    except (SerializationError, PayloadDecodeError):
        return True
    recorded_args, recorded_kwargs = recorded
    # Bound to the workflow's signature, defaults filled in: greet("ann") and greet(name="ann")
    # are the same call.
    try:
        signature = inspect.signature(defn.fn)
        then = signature.bind(*recorded_args, **recorded_kwargs)
        now = signature.bind(*args, **kwargs)
        then.apply_defaults()
        now.apply_defaults()
    except (TypeError, ValueError):
        return _equal((tuple(recorded_args), dict(recorded_kwargs)), (args, kwargs))
    if set(then.arguments) != set(now.arguments):
        return False
    return all(_equal(then.arguments[k], now.arguments[k]) for k in now.arguments)


def _equal(recorded: Any, given: Any) -> bool:
    """Equality for argument values; objects of a class without ``__eq__`` (which compare by
    identity) compare by type and attributes."""
    try:
        if recorded == given:
            return True
    except Exception:
        return True  # cannot be compared (an array, say): not a reason to refuse the call
    cls = type(recorded)
    if cls is type(given) and getattr(cls, "__eq__", None) is object.__eq__:
        return _equal(getattr(recorded, "__dict__", None), getattr(given, "__dict__", None))
    return False


def payloads_of(store: Store, workflow: str) -> Payloads:
    """How to read the payloads of a run of ``workflow`` (by name) in ``store``: with the
    workflow's codec when this process knows it, else with any codec the store allows."""
    defn = lookup_workflow(workflow)
    return Payloads(defn.codec if defn is not None else None, trust_of(store))


def outcome(store: Store, run: RunRecord) -> Any:
    """The recorded result of a finished run, or raise its recorded error."""
    payloads = payloads_of(store, run.workflow)
    if run.status in (RunStatus.COMPLETED, RunStatus.COMPENSATED):
        return payloads.loads(run.result or b"", run_id=run.id, seq=None, what="result")
    error = payloads.loads(run.error or b"", run_id=run.id, seq=None, what="error")
    if isinstance(error, BaseException):
        raise error
    raise StoreError(f"run {run.id!r} is {run.status} but its recorded error is {error!r}")
