"""Entry points: `run`, `execute`, `start`, `get_handle`, and `WorkflowHandle`.

Executing a run means: record it (or find it), take its lease, replay it with an `Engine` while a
background task renews the lease, and release the lease when the engine is done. The same id
again returns the recorded outcome without executing anything.

Leases and takeover: a run whose executor was a process on this host that no longer exists is
taken over at once; otherwise a run leased by someone else is waited for until that executor
finishes it or its lease expires (`LEASE_SECONDS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import math
import os
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio

from durable import _context
from durable._clock import Clock, SystemClock
from durable._codec import Payloads
from durable._decorators import caller_location, definition_of
from durable._engine import PARKED, Engine, Interceptor, RunAbandoned
from durable._errors import (
    DurableError,
    LeaseLost,
    NotAWorkflowError,
    PayloadDecodeError,
    RecoveryLimitExceeded,
    RunningLoopError,
    SerializationError,
    StoreError,
    WorkflowIdConflict,
    WorkflowNotFound,
)
from durable._history import dump_history
from durable._names import check_name
from durable._registry import WorkflowDefinition, lookup_workflow
from durable._signals import send_signal
from durable._stores import DEFAULT_URL, close_stores, resolve_store, using
from durable._trust import trust_of
from durable._types import RunStatus, Step, StepKind, StepStatus
from durable.store import Lease, LeaseOwner, RunRecord, RunUpdate, Store, UnreadableRecord

__all__ = [
    "DEFAULT_URL",
    "LEASE_SECONDS",
    "WorkflowHandle",
    "close_stores",
    "execute",
    "get_handle",
    "resolve_store",
    "run",
    "signal",
    "start",
]

R = TypeVar("R")

LEASE_SECONDS = 30.0
"""How long a lease lasts without renewal; an executor renews it every third of that."""

MIN_LEASE_SECONDS = 1.0
"""The shortest lease a worker accepts: it is renewed every third of its length, and an
executor renews it before starting a step when less than a third is left, so a shorter lease
would leave no time for a store round trip (and a worker would lose its own runs)."""

PARK_AFTER_SECONDS = 5.0
"""A wait longer than this parks the run (unwound, its lease released) instead of being waited
out in memory; `run` / `execute` then wait for the wake-up without holding the run."""

PARK_POLL_SECONDS = 0.5
"""How often a caller waiting for a parked run looks for a signal that woke it."""

RESULT_FALLBACK_SECONDS = 1.0
"""`WorkflowHandle.result` reads the run when a write to it wakes it, and at least this often."""

_HOST = socket.gethostname()
_active_owners: set[str] = set()


# -- stores ------------------------------------------------------------------------------------


# -- argument checks ---------------------------------------------------------------------------


def _workflow_definition(workflow: object, call: str, run_id: object) -> WorkflowDefinition:
    defn = definition_of(workflow)
    if isinstance(defn, WorkflowDefinition):
        return defn
    what = f"the @activity {defn.name!r}" if defn is not None else repr(workflow)
    raise NotAWorkflowError(
        f"durable.{call}(..., id={run_id!r}) needs a function decorated with @durable.workflow, "
        f"but got {what}; decorate the async function with @durable.workflow (activities run "
        "inside workflows)"
    )


def _with_instance(workflow: object, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """A workflow method bound to an instance runs with that instance as its first argument."""
    instance = getattr(workflow, "_self_instance", None)
    return args if instance is None else (instance, *args)


def _check_id(run_id: object, call: str) -> str:
    if not isinstance(run_id, str) or not run_id.strip():
        raise ValueError(
            f"durable.{call}() needs id=<non-empty string>, the run's idempotency key (for "
            f"example an order number), not {run_id!r}"
        )
    return check_name(run_id, f"durable.{call}(..., id=...): the id")


# -- executing a run ---------------------------------------------------------------------------


def _holder_is_dead(run: RunRecord) -> bool:
    """True when the lease holder is a process on this host that no longer runs."""
    if run.lease_owner is None or run.lease_host != _HOST or run.lease_pid is None:
        return False
    if run.lease_pid == os.getpid():
        return run.lease_owner not in _active_owners
    try:
        os.kill(run.lease_pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child not yet reaped by its parent is a zombie: dead for our purposes
        with open(f"/proc/{run.lease_pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return False


async def _acquire(store: Store, run: RunRecord, clock: Clock) -> Lease | None:
    owner = LeaseOwner(uuid.uuid4().hex, _HOST, os.getpid())
    takeover = run.lease_token if _holder_is_dead(run) else None
    return await store.acquire_lease(
        run.id, owner, now=clock.time(), duration=LEASE_SECONDS, takeover_token=takeover
    )


async def _ensure_run(
    store: Store,
    defn: WorkflowDefinition,
    run_id: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    parent_id: str | None,
    clock: Clock,
    check_args: bool = True,
) -> RunRecord:
    """The run ``run_id``, recorded now if it is new.

    Raises:
        WorkflowIdConflict: the id is recorded for another workflow; or, for a child run
            (``parent_id`` given), by a run that is not that parent's child; or, with
            ``check_args``, with other arguments.
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
    if check_args and not _same_arguments(
        existing, Payloads(defn.codec, trust_of(store)), defn, args, kwargs
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


def _payloads_of(store: Store, workflow: str) -> Payloads:
    """How to read the payloads of a run of ``workflow`` (by name) in ``store``: with the
    workflow's codec when this process knows it, else with any codec the store allows."""
    defn = lookup_workflow(workflow)
    return Payloads(defn.codec if defn is not None else None, trust_of(store))


def _outcome(store: Store, run: RunRecord) -> Any:
    """The recorded result of a finished run, or raise its recorded error."""
    payloads = _payloads_of(store, run.workflow)
    if run.status in (RunStatus.COMPLETED, RunStatus.COMPENSATED):
        return payloads.loads(run.result or b"", run_id=run.id, seq=None, what="result")
    error = payloads.loads(run.error or b"", run_id=run.id, seq=None, what="error")
    if isinstance(error, BaseException):
        raise error
    raise StoreError(f"run {run.id!r} is {run.status} but its recorded error is {error!r}")


async def _execute(
    store: Store,
    defn: WorkflowDefinition,
    run_id: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    parent_id: str | None,
    clock: Clock,
    wait_parked: bool = True,
    lease_seconds: float | None = None,
    park_after: float | None = None,
    interceptor: Interceptor | None = None,
    check_args: bool = True,
) -> Any:
    """Execute run ``run_id`` until it finishes. With ``wait_parked=False`` (a child run of a
    worker-executed parent) return `PARKED` as soon as the run is parked: the worker resumes
    it when due, and its completion wakes the parent."""
    run = await _ensure_run(store, defn, run_id, args, kwargs, parent_id, clock, check_args)
    delay = 0.02
    while True:
        if run.status.finished:
            return _outcome(store, run)
        pause = _parked_for(run, clock.time())
        if pause and not wait_parked:
            return PARKED
        lease = None if pause else await _acquire(store, run, clock)
        if lease is not None:
            outcome = await _drive(
                store,
                defn,
                run,
                lease,
                clock,
                lease_seconds,
                park_after,
                wait_parked,
                interceptor=interceptor,
            )
            if outcome is not PARKED or not wait_parked:
                return outcome
            delay = 0.02  # parked: this call waits for the wake-up, holding nothing of the run
        elif run.status == RunStatus.BLOCKED and run.lease_owner is None and not pause:
            # Blocked and free, yet not acquired: its stored status is one this version does
            # not know (see `durable.store.Store.acquire_lease`), unless someone took it
            # meanwhile (look again).
            latest = await store.get_run(run_id)
            if latest is None:
                raise WorkflowNotFound(run_id)
            if latest.status == RunStatus.BLOCKED and latest.lease_owner is None:
                raise StoreError(latest.error_text or f"run {run.id!r} cannot be executed")
            run = latest
            continue
        else:
            # Held by a live executor (wait for it to finish or expire), or parked until later:
            # a write to the run (its outcome, a signal, a release) wakes this wait at once.
            await store.watch([run_id], within=min(pause, 0.5) if pause else delay)
            delay = min(delay * 2, 1.0)
        latest = await store.get_run(run_id)
        if latest is None:
            raise WorkflowNotFound(run_id)
        run = latest


def _parked_for(run: RunRecord, now: float) -> float:
    """Seconds until a parked run is due (a signal makes it due at once); 0 if it is not
    parked or already due. A paused run is looked at again every `PARK_POLL_SECONDS`."""
    if run.status == RunStatus.PAUSED:
        return PARK_POLL_SECONDS
    if run.status not in (RunStatus.SLEEPING, RunStatus.WAITING) or run.lease_owner is not None:
        return 0.0
    if run.wake_at is None:
        return PARK_POLL_SECONDS
    return max(run.wake_at - now, 0.0)


async def _drive(
    store: Store,
    defn: WorkflowDefinition,
    run: RunRecord,
    lease: Lease,
    clock: Clock,
    lease_seconds: float | None = None,
    park_after: float | None = None,
    wait_parked: bool = True,
    *,
    interceptor: Interceptor | None = None,
    replay_only: bool = False,
) -> Any:
    """Execute ``run`` under ``lease``. ``wait_parked=False``: the executor is a worker, so a
    parked child does not keep its parent in memory: the parent parks too, and is woken when
    the child finishes. ``interceptor`` wraps activity attempts (tests); ``replay_only``
    stops at the first step the history does not have (`ReplayEnd`)."""

    async def run_child(
        child: WorkflowDefinition,
        child_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        parent_id: str,
    ) -> Any:
        return await _execute(
            store,
            child,
            child_id,
            args,
            kwargs,
            parent_id,
            clock,
            wait_parked,
            lease_seconds,
            park_after,
            interceptor,
        )

    _active_owners.add(lease.owner.owner)
    engine: Engine | None = None
    abandoned = False
    ended = False  # the run's end was recorded here, without an engine
    try:
        try:
            _check_recoveries(defn, run)
            steps = await store.load_steps(run.id)
        except (RecoveryLimitExceeded, UnreadableRecord) as exc:
            await _end_early(store, lease, defn, run, exc, clock)
            ended = True
            raise
        engine = Engine(
            store=store,
            run=run,
            lease=lease,
            defn=defn,
            steps=steps,
            clock=clock,
            child_runner=run_child,
            park_after=PARK_AFTER_SECONDS if park_after is None else park_after,
            interceptor=interceptor,
            replay_only=replay_only,
            lease_seconds=lease_seconds or LEASE_SECONDS,
        )
        outcome: list[tuple[bool, Any]] = []
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    _keep_lease,
                    store,
                    lease,
                    clock,
                    engine,
                    tg.cancel_scope,
                    lease_seconds or LEASE_SECONDS,
                )
                try:
                    outcome.append((True, await engine.run()))
                except Exception as exc:
                    outcome.append((False, exc))
                finally:
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # a BaseException (cancellation, exit) went through
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        if not outcome:  # the renewal task cancelled the engine: the lease was lost
            raise engine.fatal if engine.fatal is not None else LeaseLost(run.id)
        ok, value = outcome[0]
        if not ok:
            raise value
        return value
    except RunAbandoned:
        abandoned = True  # as if this process died: write nothing, leave the lease to expire
        raise
    finally:
        _active_owners.discard(lease.owner.owner)
        if not abandoned:  # an abandoned run is left as a killed process leaves it
            with anyio.CancelScope(shield=True):
                if not ended:
                    await _let_go(store, lease, engine, clock)
                finished = ended or (engine is not None and engine.finished)
                if finished and run.parent_id is not None:
                    with contextlib.suppress(Exception):  # a parked parent waits for this outcome
                        await store.wake(run.parent_id, now=clock.time())


def _check_recoveries(defn: WorkflowDefinition, run: RunRecord) -> None:
    """Raise `RecoveryLimitExceeded` when taking ``run`` (as it was before its lease was
    taken) over once more goes past its workflow's ``max_recoveries``."""
    limit = defn.max_recoveries
    recoveries = run.recoveries + (run.lease_owner is not None)  # as the store just counted
    if limit is not None and recoveries > limit:
        raise RecoveryLimitExceeded(run.id, recoveries, limit)


async def _end_early(
    store: Store,
    lease: Lease,
    defn: WorkflowDefinition,
    run: RunRecord,
    exc: RecoveryLimitExceeded | UnreadableRecord,
    clock: Clock,
) -> None:
    """Record the end of a run that cannot be executed: ``failed`` past its recovery limit
    (nothing more of it runs: its compensations neither), ``blocked`` when a stored row is
    unreadable (it resumes once the row is repaired)."""
    if isinstance(exc, UnreadableRecord):
        update = RunUpdate(RunStatus.BLOCKED, error_text=str(exc), release=True)
    else:
        payloads = Payloads(defn.codec, trust_of(store))
        encoded, _ = payloads.dumps_error(exc, what=f"error of run {run.id!r}")
        text = f"{type(exc).__qualname__}: {exc}"
        update = RunUpdate(RunStatus.FAILED, error=encoded, error_text=text, release=True)
    await store.commit(lease, (), update, now=clock.time())


async def _let_go(store: Store, lease: Lease, engine: Engine | None, clock: Clock) -> None:
    """Give the run up. One whose outcome is not recorded (cancelled, interrupted, the store
    failed) goes back to ``pending`` so that the next executor picks it up; nothing else."""
    if engine is not None and (engine.finished or isinstance(engine.fatal, LeaseLost)):
        return  # the final commit released the lease, or the run is someone else's now
    try:
        update = RunUpdate(RunStatus.PENDING, release=True)
        await store.commit(lease, (), update, now=clock.time())
    except (LeaseLost, StoreError):
        pass  # taken over, or the store is down: the lease expires on its own


SUPERVISE_TICK_SECONDS = 0.2
"""How often the executor looks at its clock to renew the lease on time (no store call)."""

REQUEST_FALLBACK_SECONDS = 30.0
"""While a wait is held in memory, the executor reads its run when a write to it wakes it
(`Store.watch`), and at the latest this often: the fallback for a wake-up that was missed."""


async def _keep_lease(
    store: Store,
    lease: Lease,
    clock: Clock,
    engine: Engine,
    scope: anyio.CancelScope,
    duration: float,
) -> None:
    """Renew the lease every third of its duration, and pass on cancel and pause requests to
    the waits the run holds in memory."""
    renew_at = clock.time() + duration / 3
    cancel_seen = False
    watching = False
    look_by = 0.0
    real_clock = isinstance(clock, SystemClock)  # else renewals follow a test's clock: tick
    while True:
        # A step that starts is refused by the store while a request is pending, so requests
        # need looking for only to wake a wait held in memory (a sleep, a signal wait) or to
        # pass a cancel on to children in flight. A request rings the run's watchers.
        if not cancel_seen and engine.waits_in_memory():
            if watching:
                until = renew_at - clock.time() if real_clock else SUPERVISE_TICK_SECONDS
                within = max(0.0, min(until, look_by - anyio.current_time()))
                woken = await store.watch([lease.run_id], within=within)
                look = woken or anyio.current_time() >= look_by
            else:
                look = watching = True  # a wait began: a request may have come just before
            if look:
                look_by = anyio.current_time() + REQUEST_FALLBACK_SECONDS
                cancel_seen = await _pass_on_requests(store, lease, clock, engine)
        else:
            watching = False
            await anyio.sleep(SUPERVISE_TICK_SECONDS)
        if clock.time() < renew_at:
            continue
        try:
            lease = await store.renew_lease(lease, now=clock.time(), duration=duration)
            engine.lease_renewed(lease)
        except LeaseLost as exc:
            engine.fatal = exc
            scope.cancel()
            return
        except Exception:
            if clock.time() < lease.expires_at:
                renew_at = clock.time() + min(1.0, duration / 10)  # transient: soon again
                continue
            # Past its expiry another executor may take the run over at any moment, so this
            # one must stop running side effects.
            engine.fatal = LeaseLost(lease.run_id, "could not renew it before it expired")
            scope.cancel()
            return
        renew_at = clock.time() + duration / 3


async def _pass_on_requests(store: Store, lease: Lease, clock: Clock, engine: Engine) -> bool:
    """Read the run and pass a pause or cancel request on to the engine (and a cancel to the
    children in flight). Returns whether a cancel was passed on."""
    try:
        run = await store.get_run(lease.run_id)
    except Exception:
        return False  # a transient store error: look again at the next wake-up or fallback
    if run is None:
        return False
    engine.set_paused(run.pause_requested)
    if not run.cancel_requested:
        return False
    engine.request_cancel()
    for child in engine.children:  # a cancel reaches the children in flight
        with contextlib.suppress(Exception):
            await store.request_cancel(child, now=clock.time())
    return True


# -- public entry points -----------------------------------------------------------------------


def execute(
    workflow: Callable[..., Coroutine[Any, Any, R]],
    /,
    *args: Any,
    id: str,
    store: Store | str | None = None,
    **kwargs: Any,
) -> Coroutine[Any, Any, R]:
    """Run (or resume) the run ``id`` of ``workflow`` in this task until it finishes.

    ``await durable.execute(workflow, *args, id=..., **kwargs)``. The same id again never
    repeats completed work: a finished run returns its recorded result (or raises its recorded
    error) without executing anything; an unfinished one resumes. A resumed run uses the
    arguments recorded when it started.

    Inside a workflow, it starts a child run under the given id (``store`` must be left out:
    children live in their parent's store) whose outcome is one step of the parent, like
    calling the workflow directly, which picks the id ``"<parent id>/<step>"``.

    Args:
        workflow: a ``@durable.workflow`` function.
        *args: its positional arguments.
        id: the run id, the idempotency key of this run.
        store: a store, a URL, or ``None`` for ``DURABLE_URL`` / ``sqlite:///durable.db``.
        **kwargs: its keyword arguments.

    Returns:
        The workflow's result.

    Raises:
        WorkflowIdConflict: ``id`` is recorded for another workflow.
        NonDeterminismError: the code diverged from the run's history (the run is blocked).
        Exception: whatever the workflow raised (the run is failed).
    """
    defn = _workflow_definition(workflow, "execute", id)
    _check_id(id, "execute")
    args = _with_instance(workflow, args)
    ctx = _context.current_or_none()
    if ctx is not None:
        if store is not None:
            raise ValueError(
                f"durable.execute(..., id={id!r}) inside a workflow starts a child run in the "
                "parent's store; leave out store="
            )
        return ctx.call_workflow(defn, args, kwargs, caller_location(), child_id=id)
    return _execute_top(defn, id, store, args, kwargs)


async def _execute_top(
    defn: WorkflowDefinition,
    run_id: str,
    store: Store | str | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    with using(store) as resolved:
        return await _execute(resolved, defn, run_id, args, kwargs, None, SystemClock())


def _refuse_running_loop(run_id: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = "trio" in sys.modules and _in_trio()
    else:
        running = True
    if running:
        raise RunningLoopError(
            f"durable.run(..., id={run_id!r}) was called inside a running event loop; it would "
            "block that loop. Use 'await durable.execute(workflow, ..., id=...)' from async code "
            "instead"
        )


def _in_trio() -> bool:
    trio = sys.modules["trio"]
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def run(
    workflow: Callable[..., Coroutine[Any, Any, R]],
    /,
    *args: Any,
    id: str,
    store: Store | str | None = None,
    **kwargs: Any,
) -> R:
    """Synchronous `execute`: run or resume run ``id`` until it finishes and return its result.

    Raises:
        RunningLoopError: called from inside a running event loop (use `execute`).
        (and everything `execute` raises)
    """
    defn = _workflow_definition(workflow, "run", id)
    _check_id(id, "run")
    args = _with_instance(workflow, args)
    _refuse_running_loop(id)
    with using(store) as resolved:
        call = functools.partial(_execute, resolved, defn, id, args, kwargs, None, SystemClock())
        result: R = anyio.run(call)
    return result


async def start(
    workflow: Callable[..., Any],
    /,
    *args: Any,
    id: str,
    store: Store | str | None = None,
    **kwargs: Any,
) -> WorkflowHandle:
    """Record run ``id`` as pending (unless it exists) and return its handle without running it.

    A later `run` / `execute` of the same id (or a worker) executes it.

    Raises:
        WorkflowIdConflict: ``id`` is recorded for another workflow.
    """
    defn = _workflow_definition(workflow, "start", id)
    _check_id(id, "start")
    args = _with_instance(workflow, args)
    resolved = resolve_store(store)
    await _ensure_run(resolved, defn, id, args, kwargs, None, SystemClock())
    return WorkflowHandle(id, resolved)


def signal(
    id: str,
    name: str,
    payload: Any = None,
    *,
    idempotency_key: str | None = None,
    store: Store | str | None = None,
) -> Coroutine[Any, Any, None]:
    """Send signal ``name`` with ``payload`` to run ``id``, from any process.

    The signal is buffered until the run's next ``durable.wait_signal(name)`` consumes it
    (signals of one name are consumed in the order sent, each by exactly one wait).

    Called from workflow code it is a step (kind ``signal_send``): sent once, however often
    the sending run replays (``store`` must be left out: it goes through the run's store).

    Args:
        id: the receiving run.
        name: the signal name.
        payload: any value the receiving workflow's codec can encode.
        idempotency_key: a second send with the same key to the same run is a no-op (it
            returns normally and buffers nothing), so a sender that retries (an activity, a
            webhook handler) sends once. Inside a workflow it defaults to
            ``"<sending run id>/<step>"``.
        store: a store, a URL, or ``None`` for ``DURABLE_URL`` / ``sqlite:///durable.db``.

    Raises:
        WorkflowNotFound: no such run.
        WorkflowFinished: the run has finished; the signal was not recorded.
        SerializationError: the payload cannot be encoded.
    """
    _check_id(id, "signal")
    ctx = _context.current_or_none()
    if ctx is not None:
        if store is not None:
            raise ValueError(
                f"durable.signal({id!r}, ...) inside a workflow is a step of the run and goes "
                "through the run's store; leave out store="
            )
        return _as_coroutine(ctx.send_signal(id, name, payload, idempotency_key, caller_location()))
    return send_signal(
        resolve_store(store), id, name, payload, now=time.time(), key=idempotency_key
    )


async def _as_coroutine(awaitable: Awaitable[None]) -> None:
    await awaitable


def get_handle(id: str, store: Store | str | None = None) -> WorkflowHandle:
    """A handle on run ``id``. Only builds the handle: nothing is read until it is used."""
    _check_id(id, "get_handle")
    return WorkflowHandle(id, store)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class WorkflowHandle:
    """A reference to one run, usable from any process that can reach its store.

    Args:
        id: the run id.
        store: the store that records the run, or its URL (opened on first use), or ``None``
            for ``DURABLE_URL`` / ``sqlite:///durable.db``.
    """

    def __init__(
        self, id: str, store: Store | str | None = None, *, _clock: Clock | None = None
    ) -> None:
        self._id = id
        self._store_arg = store
        self._clock: Clock = _clock or SystemClock()

    @property
    def _store(self) -> Store:
        # A URL is resolved at each use: the store opened for it may have been closed since
        # (durable.close_stores(), or more URLs in use than DURABLE_MAX_OPEN_STORES).
        return resolve_store(self._store_arg)

    @property
    def id(self) -> str:
        """The run id."""
        return self._id

    def __repr__(self) -> str:
        return f"WorkflowHandle(id={self._id!r})"

    async def _record(self) -> RunRecord:
        run = await self._store.get_run(self._id)
        if run is None:
            raise WorkflowNotFound(self._id)
        return run

    async def status(self) -> RunStatus:
        """The run's current status.

        Raises:
            WorkflowNotFound: no such run.
        """
        return (await self._record()).status

    async def result(self, timeout: float | None = None) -> Any:
        """Wait until the run finishes and return its result (or raise its error).

        Never executes the run: another process (or a `run` / `execute` call) must. A run that
        is ``blocked`` is waited for too, since compatible code may resume it.

        Args:
            timeout: seconds to wait at most; ``None`` waits forever.

        Raises:
            TimeoutError: the run did not finish within ``timeout``.
            WorkflowNotFound: no such run.
        """
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise ValueError(f"timeout must be a finite number of seconds >= 0, not {timeout!r}")
        store = self._store
        with anyio.fail_after(timeout):
            while True:
                run = await self._record()
                if run.status.finished:
                    return _outcome(store, run)
                # Recording the outcome rings the run's watchers (in any process, where the
                # store can tell); the fallback reads again after RESULT_FALLBACK_SECONDS.
                await store.watch([self._id], within=RESULT_FALLBACK_SECONDS)

    async def signal(
        self, name: str, payload: Any = None, *, idempotency_key: str | None = None
    ) -> None:
        """Send signal ``name`` with ``payload`` to this run (see `durable.signal`: from
        workflow code it is a step, and ``idempotency_key`` makes a repeated send a no-op)."""
        ctx = _context.current_or_none()
        if ctx is not None:
            location = caller_location()
            await ctx.send_signal(self._id, name, payload, idempotency_key, location)
            return
        now = self._clock.time()
        await send_signal(self._store, self._id, name, payload, now=now, key=idempotency_key)

    async def pause(self) -> None:
        """Stop the run at its next step boundary: the steps in flight finish and are
        recorded, then the run is ``paused`` and released; no executor takes it until
        `resume`. A run nobody executes right now is paused at once.

        Raises:
            WorkflowNotFound: no such run.
        """
        if await self._store.request_pause(self._id, now=self._clock.time()) is None:
            raise WorkflowNotFound(self._id)

    async def resume(self) -> None:
        """Let a paused run continue: it becomes ``pending`` for the next executor (a
        worker, or a waiting `run` / `execute`).

        Raises:
            WorkflowNotFound: no such run.
        """
        if await self._store.resume(self._id, now=self._clock.time()) is None:
            raise WorkflowNotFound(self._id)

    async def cancel(self) -> None:
        """Ask for the run to be cancelled.

        Its executor raises `durable.Cancelled` into the workflow at the next step boundary
        (at once if it is sleeping); unless the workflow catches it, the compensations of
        completed activities run and the run ends ``cancelled``. A run nobody executes right
        now is cancelled when it is next executed. Cancelling a finished run does nothing.

        Raises:
            WorkflowNotFound: no such run.
        """
        if await self._store.request_cancel(self._id, now=self._clock.time()) is None:
            raise WorkflowNotFound(self._id)

    async def rollback(self) -> None:
        """Undo a ``completed`` run: run the compensations of all its activities, newest
        first, durably, and end it ``compensated``. Runs here, in this task; the workflow must
        be importable in this process. Calling it again on a compensated run does nothing; a
        rollback interrupted by a crash resumes where it stopped.

        Raises:
            WorkflowNotFound: no such run.
            CompensationFailed: some undos still failed after their retries (the run ends
                ``compensation_failed``).
            DurableError: the run is not completed (nothing to roll back), or its workflow is
                not registered in this process.
        """
        current = await self._record()
        defn = lookup_workflow(current.workflow)
        if defn is None:
            raise DurableError(
                f"cannot roll back run {self._id!r}: its workflow {current.workflow!r} is not "
                "registered in this process; import the module that defines it first"
            )
        run = await self._store.request_rollback(self._id, now=self._clock.time())
        if run is None:
            raise WorkflowNotFound(self._id)
        if run.status == RunStatus.COMPENSATED:
            return
        if not run.rollback_requested:
            hint = (
                "it failed or was cancelled, so its undos already ran"
                if run.status in (RunStatus.FAILED, RunStatus.CANCELLED)
                else "wait until it completes, then roll it back"
            )
            raise DurableError(
                f"run {self._id!r} is {run.status}; only a completed run can be rolled back: {hint}"
            )
        if run.status.finished:  # compensation_failed after an earlier rollback
            _outcome(self._store, run)
        await _execute(
            self._store, defn, self._id, (), {}, run.parent_id, self._clock, check_args=False
        )

    async def export_history(self) -> str:
        """The run and its recorded steps as JSON text, payloads included as stored, to keep
        as a regression test: `durable.testing.replay` checks that today's code replays it.

        Raises:
            WorkflowNotFound: no such run.
        """
        run = await self._record()
        return dump_history(run, await self._store.load_steps(self._id))

    async def history(self) -> list[Step]:
        """Every recorded step of the run, in step order, with decoded results and errors.

        Raises:
            WorkflowNotFound: no such run.
            PayloadDecodeError: a step's payload cannot be decoded (names run and step).
        """
        run = await self._record()
        payloads = _payloads_of(self._store, run.workflow)
        steps = []
        for rec in await self._store.load_steps(self._id):
            failed = rec.status == StepStatus.FAILED
            payload = rec.error if failed else rec.result
            value = None
            if rec.status != StepStatus.STARTED:  # an intent has no outcome yet
                what = "error" if failed else "result"
                value = payloads.loads(payload or b"", run_id=self._id, seq=rec.seq, what=what)
            steps.append(
                Step(
                    seq=rec.seq,
                    kind=StepKind(rec.kind),
                    name=rec.name,
                    status=StepStatus(rec.status),
                    attempts=rec.attempts,
                    started_at=_utc(rec.started_at),
                    finished_at=_utc(rec.finished_at),
                    result=None if failed else value,
                    error=value if failed and isinstance(value, BaseException) else None,
                )
            )
        return steps
