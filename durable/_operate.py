"""What an operator does to a stopped run: `retry` it, `fork` it, `delete` it.

Retry keeps what a run did and re-attempts what went wrong, with the code deployed now:

* The steps kept are those before the run's *restart point*: its first step that failed or has
  no recorded outcome (``started``), or where a cancel was delivered. That step and every step
  after it are deleted, so the run re-executes them (the failing step with a fresh attempt
  budget). A run with no such step (``blocked`` by a replay check, say) keeps all its steps.
* A run whose compensations already ran (a ``failed`` or ``cancelled`` run inside a saga) is
  refused: its earlier steps were undone, so continuing from them would build on work that no
  longer exists. ``after_compensation=True`` deletes every step and runs the whole body again.
* A ``compensation_failed`` run re-attempts only the undos that failed (fresh budgets); the
  failure they undo and the undos that succeeded stay recorded, so nothing is undone twice.
  It then ends as its undos allow: ``failed`` / ``cancelled`` with the original error, or
  ``compensated`` after a rollback.
* A failed child workflow behind a deleted step (under its default id) is retried first, so the
  parent's re-executed step finds the child running again rather than its recorded failure.
* A ``timed_out`` run is retried like a cancelled one, without a deadline (a retry gets no
  ``timeout``).
* The run becomes ``pending`` with its recoveries reset; whoever executes runs (a worker, or
  `durable.execute` / `durable.run` with its id) takes it up. Signals still buffered stay;
  signals that deleted steps had received are not delivered again.

Fork copies a run's first steps into a new run that continues from there; delete removes a
finished run for good.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from durable import _tracing as tracing
from durable._clock import Clock
from durable._codec import DEFAULT_CODEC, Payloads
from durable._errors import ActionRefused, WorkflowNotFound
from durable._names import check_name
from durable._registry import lookup_workflow
from durable._trust import trust_of
from durable._types import RunStatus, StepKind, StepStatus, step_key
from durable.store import RunRecord, StepRecord, Store

__all__ = ["RETRYABLE", "delete", "fork", "retry"]

RETRYABLE = frozenset(
    {
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.TIMED_OUT,
        RunStatus.BLOCKED,
        RunStatus.COMPENSATION_FAILED,
    }
)
"""The statuses `retry` accepts."""


async def _get(store: Store, run_id: str) -> RunRecord:
    run = await store.get_run(run_id)
    if run is None:
        raise WorkflowNotFound(run_id)
    return run


async def retry(store: Store, run_id: str, *, after_compensation: bool, clock: Clock) -> RunRecord:
    """Make a stopped run ``pending`` again from its restart point (see the module docstring).

    Returns:
        The run as it is now (``pending``).

    Raises:
        WorkflowNotFound: no such run.
        ActionRefused: the run is not in a status that can be retried, its compensations ran
            (and ``after_compensation`` is False), or it changed while being retried.
    """
    run = await _get(store, run_id)
    if run.status not in RETRYABLE:
        allowed = ", ".join(sorted(str(s) for s in RETRYABLE))
        hint = (
            "wait until it stops"
            if not run.status.finished
            else "it has nothing to re-attempt; fork it to run it again"
        )
        raise ActionRefused(
            run_id, "retry", run.status, f"only a {allowed} run can be retried: {hint}"
        )
    steps = await store.load_steps(run_id)
    drop, rollback = _restart(run, steps, after_compensation)
    dropped = set(drop)
    for step in steps:  # children behind deleted steps first (see the module docstring)
        if step.seq in dropped and step.kind == StepKind.CHILD:
            child = await store.get_run(step_key(run_id, run.generation, step.seq))
            if child is not None and child.parent_id == run_id and child.status in RETRYABLE:
                await retry(store, child.id, after_compensation=after_compensation, clock=clock)
    reset = await store.reset_run(
        run_id,
        token=run.lease_token,
        status=run.status,
        drop=drop,
        rollback=rollback,
        now=clock.time(),
    )
    if reset is None:
        raise WorkflowNotFound(run_id)
    if reset.lease_token != run.lease_token + 1 or reset.status != RunStatus.PENDING:
        raise ActionRefused(
            run_id, "retry", reset.status, "it changed while it was being retried; try again"
        )
    return reset


def _restart(
    run: RunRecord, steps: Sequence[StepRecord], after_compensation: bool
) -> tuple[list[int], bool]:
    """The steps a retry deletes, and whether the run keeps its rollback request."""
    if after_compensation:
        return [step.seq for step in steps], False
    undos = [step for step in steps if step.kind == StepKind.COMPENSATION]
    failed_undos = [step.seq for step in undos if step.status != StepStatus.COMPLETED]
    if run.status == RunStatus.COMPENSATION_FAILED and failed_undos:
        return failed_undos, run.rollback_requested
    if any(step.status == StepStatus.COMPLETED for step in undos):
        done = ", ".join(str(step.seq) for step in undos)
        raise ActionRefused(
            run.id,
            "retry",
            run.status,
            f"its compensations already ran (steps {done}), so the work before its failure "
            "is undone; retry(after_compensation=True) (durable runs retry "
            "--after-compensation) runs the whole workflow again from its first step",
        )
    stops = [step.seq for step in steps if step.status != StepStatus.COMPLETED]
    if run.cancelled_seq is not None:
        stops.append(run.cancelled_seq)
    start = min(stops, default=None)
    keep_rollback = run.rollback_requested and run.status == RunStatus.COMPENSATION_FAILED
    if start is None:
        return [], keep_rollback
    return [step.seq for step in steps if step.seq >= start], keep_rollback


async def fork(
    store: Store,
    run_id: str,
    *,
    from_step: int,
    new_id: str | None,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    clock: Clock,
) -> RunRecord:
    """Record a new run of ``run_id``'s workflow whose steps before ``from_step`` are copies of
    that run's; it starts ``pending`` (see `durable.WorkflowHandle.fork`).

    Returns:
        The new run.

    Raises:
        WorkflowNotFound: no such run.
        ValueError: ``from_step`` is not a positive int, or ``new_id`` is not a valid id.
        ActionRefused: ``from_step`` is past the run's steps, or ``new_id`` is taken.
    """
    if isinstance(from_step, bool) or not isinstance(from_step, int) or from_step < 1:
        raise ValueError(
            f"fork(from_step=...) must be a step number from 1, not {from_step!r} "
            "(see the run's steps: durable runs show ID)"
        )
    source = await _get(store, run_id)
    steps = await store.load_steps(run_id)
    last = max((step.seq for step in steps), default=0)
    if from_step > last + 1:
        raise ActionRefused(
            run_id,
            "fork",
            source.status,
            f"it has {last} recorded step(s), so a fork starts at step {last + 1} at the latest, "
            f"not {from_step}",
        )
    if new_id is None:
        new_id = f"{run_id}-fork{from_step}-{secrets.token_hex(4)}"
    elif not isinstance(new_id, str) or not new_id.strip():
        raise ValueError(f"fork(id=...) must be a non-empty string or None, not {new_id!r}")
    check_name(new_id, "fork(id=...): the id")
    defn = lookup_workflow(source.workflow)
    encoded = source.args
    if args is not None or kwargs is not None:
        payloads = Payloads(defn.codec if defn is not None else DEFAULT_CODEC, trust_of(store))
        value = (tuple(args or ()), dict(kwargs or {}))
        encoded = payloads.dumps(value, what=f"arguments of run {new_id!r}")
    now = clock.time()
    record = RunRecord(
        id=new_id,
        workflow=source.workflow,
        status=RunStatus.PENDING,
        args=encoded,
        created_at=now,
        updated_at=now,
        code_version=defn.version if defn is not None else source.code_version,
        trace_context=tracing.current_context(),  # the fork joins the trace of who forked it
        generation=source.generation,  # the copied steps are that generation's
    )
    copies = [replace(step, run_id=new_id) for step in steps if step.seq < from_step]
    _, created = await store.create_run(record, copies)
    if not created:
        raise ActionRefused(
            run_id, "fork", source.status, f"the id {new_id!r} is taken; choose another id"
        )
    return record


async def delete(store: Store, run_id: str) -> None:
    """Delete a finished run with its steps and signals.

    Raises:
        WorkflowNotFound: no such run.
        ActionRefused: the run is unfinished, or below an unfinished ancestor.
    """
    deleted = await store.delete_run(run_id)
    if deleted is None:
        raise WorkflowNotFound(run_id)
    if not deleted:
        run = await _get(store, run_id)
        reason = (
            "it has not finished: cancel it and wait until it ends, then delete it"
            if not run.status.finished
            else f"its parent run {run.parent_id!r} (or an ancestor of it) has not finished "
            "and may still need its outcome; delete it after the parent ends"
        )
        raise ActionRefused(run_id, "delete", run.status, reason)
