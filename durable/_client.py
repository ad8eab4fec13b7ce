"""The client: `run`, `execute`, `start`, `signal`, `get_handle` and `WorkflowHandle`.

Every entry point checks its arguments, resolves the store (`durable._stores`) and hands the
run to an `Executor` (`durable._executor`) configured by `durable.executor_config` (default:
the production timings). A handle reads and writes the run through the store, from any process
that reaches it; `result()` waits on the store's notifications (`Store.watch`).
"""

from __future__ import annotations

import asyncio
import functools
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import anyio

from durable import _context
from durable import _operate as operate
from durable import _streams as streams
from durable._clock import Clock
from durable._config import current_config
from durable._decorators import caller_location, definition_of, with_instance
from durable._errors import (
    DurableError,
    NotAWorkflowError,
    RunningLoopError,
    WorkflowNotFound,
)
from durable._executor import Executor
from durable._history import dump_history
from durable._names import check_name
from durable._recording import ensure_run, outcome, payloads_of
from durable._registry import WorkflowDefinition, lookup_workflow
from durable._runs import RunInfo, run_info
from durable._signals import send_signal
from durable._stores import open_store, resolve_store, using, using_async
from durable._types import RunStatus, Step, StepKind, StepStatus, utc
from durable.store import RunRecord, Store

__all__ = [
    "RESULT_FALLBACK_SECONDS",
    "WorkflowHandle",
    "deadline_of",
    "execute",
    "get_handle",
    "record_start",
    "run",
    "signal",
    "start",
    "start_deadline",
]

R = TypeVar("R")

RESULT_FALLBACK_SECONDS = 1.0
"""`WorkflowHandle.result` reads the run when a write to it wakes it, and at least this often."""


async def _call(awaited: Callable[[], Awaitable[Any]]) -> Any:
    return await awaited()


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


def _check_id(run_id: object, call: str) -> str:
    if not isinstance(run_id, str) or not run_id.strip():
        raise ValueError(
            f"durable.{call}() needs id=<non-empty string>, the run's idempotency key (for "
            f"example an order number), not {run_id!r}"
        )
    return check_name(run_id, f"durable.{call}(..., id=...): the id")


def timeout_seconds(timeout: float | timedelta | None, call: str) -> float | None:
    """``timeout=`` of ``call`` (e.g. ``"durable.start(..., id='x')"``) checked: seconds > 0,
    or ``None`` for no timeout.

    Raises:
        ValueError: not a number of seconds or a timedelta, not finite, or not > 0.
    """
    if timeout is None:
        return None
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"{call}: timeout= takes seconds or a timedelta, not {timeout!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(
            f"{call}: timeout= must be a finite number of seconds > 0 (or a positive "
            f"timedelta), not {timeout!r}; leave it out for a run without a deadline"
        )
    return float(seconds)


def deadline_of(timeout: float | timedelta | None, now: float, call: str) -> float | None:
    """The deadline (epoch seconds) of a run that may start at ``now`` with ``timeout=`` (see
    `timeout_seconds`, which checks it and whose errors name ``call``), or ``None``."""
    seconds = timeout_seconds(timeout, call)
    return None if seconds is None else now + seconds


# -- public entry points -----------------------------------------------------------------------


def execute(
    workflow: Callable[..., Coroutine[Any, Any, R]],
    /,
    *args: Any,
    id: str,
    store: Store | str | None = None,
    timeout: float | timedelta | None = None,
    **kwargs: Any,
) -> Coroutine[Any, Any, R]:
    """Run (or resume) the run ``id`` of ``workflow`` in this task until it finishes.

    ``await durable.execute(workflow, *args, id=..., **kwargs)``. The same id again never
    repeats completed work: a finished run returns its recorded result (or raises its recorded
    error) without executing anything; an unfinished one resumes. A resumed run uses the
    arguments recorded when it started.

    Inside a workflow, it starts a child run under the given id (``store`` must be left out:
    children live in their parent's store) whose outcome is one step of the parent, like
    calling the workflow directly, which picks the id ``"<parent id>/<step>"``. A child
    run's deadline is its parent's (it inherits the remaining time), or ``timeout`` from its
    start if that comes sooner.

    Args:
        workflow: a ``@durable.workflow`` function.
        *args: its positional arguments.
        id: the run id, the idempotency key of this run.
        store: a store, a URL, or ``None`` for ``DURABLE_URL`` / ``sqlite:///durable.db``.
        timeout: a deadline for a new run, this long after it is recorded (seconds or a
            timedelta): past it, the run is cancelled (its compensations run) and ends
            ``timed_out`` with `WorkflowTimeout`. A run that exists keeps its own deadline.
        **kwargs: its keyword arguments.

    Returns:
        The workflow's result.

    Raises:
        WorkflowIdConflict: ``id`` is recorded for another workflow.
        WorkflowTimeout: the run's deadline passed (the run is timed out).
        NonDeterminismError: the code diverged from the run's history (the run is blocked).
        ValueError: ``timeout`` is not a positive number of seconds or timedelta.
        Exception: whatever the workflow raised (the run is failed).
    """
    defn = _workflow_definition(workflow, "execute", id)
    _check_id(id, "execute")
    seconds = timeout_seconds(timeout, f"durable.execute(..., id={id!r})")
    args = with_instance(workflow, args)
    ctx = _context.current_or_none()
    if ctx is not None:
        if store is not None:
            raise ValueError(
                f"durable.execute(..., id={id!r}) inside a workflow starts a child run in the "
                "parent's store; leave out store="
            )
        location = caller_location()
        return ctx.call_workflow(defn, args, kwargs, location, child_id=id, timeout=seconds)
    return _execute_top(defn, id, store, args, kwargs, seconds)


async def _execute_top(
    defn: WorkflowDefinition,
    run_id: str,
    store: Store | str | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
) -> Any:
    config = current_config()
    async with using_async(store) as resolved:
        # counted from now, once the store is open (opening it may take a while)
        deadline = None if timeout is None else config.clock.time() + timeout
        executor = Executor(resolved, config)
        return await executor.execute(defn, run_id, args, kwargs, deadline=deadline)


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
    timeout: float | timedelta | None = None,
    **kwargs: Any,
) -> R:
    """Synchronous `execute`: run or resume run ``id`` until it finishes and return its result
    (``timeout``: a deadline for a new run, as for `execute`).

    Raises:
        RunningLoopError: called from inside a running event loop (use `execute`).
        (and everything `execute` raises)
    """
    defn = _workflow_definition(workflow, "run", id)
    _check_id(id, "run")
    seconds = timeout_seconds(timeout, f"durable.run(..., id={id!r})")
    args = with_instance(workflow, args)
    _refuse_running_loop(id)
    config = current_config()
    with using(store) as resolved:
        # counted from now, once the store is open (opening it may take a while)
        deadline = None if seconds is None else config.clock.time() + seconds
        executor = Executor(resolved, config)
        call = functools.partial(executor.execute, defn, id, args, kwargs, deadline=deadline)
        result: R = anyio.run(call)
    return result


async def start(
    workflow: Callable[..., Any],
    /,
    *args: Any,
    id: str,
    store: Store | str | None = None,
    delay: float | timedelta | None = None,
    start_at: datetime | None = None,
    timeout: float | timedelta | None = None,
    **kwargs: Any,
) -> WorkflowHandle:
    """Record run ``id`` as pending (unless it exists) and return its handle without running it.

    A later `run` / `execute` of the same id (or a worker) executes it.

    Args:
        delay: a delayed start: workers take the run up this long from now (seconds or a
            timedelta), not at once. ``run`` / ``execute`` of its id start it at once.
        start_at: the same, as a timezone-aware time (``delay`` or ``start_at``, not both).
            A time in the past starts at once.
        timeout: a deadline for a new run, this long after it is recorded (after its
            delayed start, with ``delay`` / ``start_at``): see `execute`. The handle's
            ``result()`` then raises `WorkflowTimeout`.

    Raises:
        WorkflowIdConflict: ``id`` is recorded for another workflow.
        ValueError: a negative or non-finite ``delay``, a naive ``start_at``, or both given;
            a ``timeout`` that is not a positive number of seconds or timedelta.
    """
    defn = _workflow_definition(workflow, "start", id)
    _check_id(id, "start")
    at, after = _start_time(delay, start_at, id)
    call = f"durable.start(..., id={id!r})"
    seconds = timeout_seconds(timeout, call)
    args = with_instance(workflow, args)
    resolved = await open_store(store)
    await record_start(resolved, defn, id, args, kwargs, (at, after, seconds), call)
    return WorkflowHandle(id, resolved)


async def record_start(
    store: Store,
    defn: WorkflowDefinition,
    run_id: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timing: tuple[float | None, float | None, float | None],
    call: str,
    **placement: Any,
) -> None:
    """Record a started run (`start`, `durable.Queue.start`) at the current config's clock:
    ``timing`` is the checked ``(start_at, delay, timeout seconds)``, the deadline counting
    from when the run may start; ``placement``: its queue, key and priority."""
    at, after, seconds = timing
    clock = current_config().clock
    at, after, deadline = start_deadline(seconds, at, after, clock.time(), call)
    await ensure_run(
        store,
        defn,
        run_id,
        args,
        kwargs,
        None,
        clock,
        start_at=at,
        delay=after,
        deadline=deadline,
        **placement,
    )


def start_deadline(
    seconds: float | None, at: float | None, after: float | None, now: float, call: str
) -> tuple[float | None, float | None, float | None]:
    """A new run's ``(start_at, delay, deadline)`` for a checked ``timeout`` of ``seconds``
    and a delayed start (`_start_time`), ``now`` being read once the store is open (opening
    it may take a while): the deadline counts from when the run may start."""
    if seconds is not None and after is not None:
        at, after = now + after, None
    return at, after, deadline_of(seconds, now if at is None else max(at, now), call)


def _start_time(
    delay: float | timedelta | None,
    start_at: datetime | None,
    run_id: str,
    call: str | None = None,
) -> tuple[float | None, float | None]:
    """A delayed start checked: ``(start time in epoch seconds, delay in seconds)``, at most
    one of them set; errors name ``call`` (default: ``durable.start``)."""
    call = call or f"durable.start(..., id={run_id!r})"
    if delay is not None and start_at is not None:
        raise ValueError(f"{call}: give delay= or start_at=, not both")
    if start_at is not None:
        if not isinstance(start_at, datetime) or start_at.tzinfo is None:
            raise ValueError(
                f"{call}: start_at= needs a timezone-aware datetime (e.g. "
                f"datetime.now(timezone.utc) + timedelta(hours=1)), not {start_at!r}"
            )
        return start_at.timestamp(), None
    if delay is None:
        return None, None
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"{call}: delay= takes seconds or a timedelta, not {delay!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{call}: delay= must be a finite number of seconds >= 0, not {delay!r}")
    return None, float(seconds)


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
    return _send(store, id, name, payload, idempotency_key)


async def _send(
    store: Store | str | None, id: str, name: str, payload: Any, key: str | None
) -> None:
    await send_signal(await open_store(store), id, name, payload, now=time.time(), key=key)


async def _as_coroutine(awaitable: Awaitable[None]) -> None:
    await awaitable


def get_handle(id: str, store: Store | str | None = None) -> WorkflowHandle:
    """A handle on run ``id``. Only builds the handle: nothing is read until it is used."""
    _check_id(id, "get_handle")
    return WorkflowHandle(id, store)


class WorkflowHandle:
    """A reference to one run, usable from any process that can reach its store.

    Args:
        id: the run id.
        store: the store that records the run, or its URL (opened on first use), or ``None``
            for ``DURABLE_URL`` / ``sqlite:///durable.db``.
    """

    def __init__(self, id: str, store: Store | str | None = None) -> None:
        self._id = id
        self._store_arg = store
        self._clock: Clock = current_config().clock

    @property
    def _store(self) -> Store:
        # A URL is resolved at each use: the store opened for it may have been closed since
        # (durable.close_stores(), or more URLs in use than DURABLE_MAX_OPEN_STORES).
        return resolve_store(self._store_arg)

    async def _opened(self) -> Store:
        """The store, opened (for a URL, on a worker thread, so the event loop never waits for
        a database to connect)."""
        return await open_store(self._store_arg)

    @property
    def id(self) -> str:
        """The run id."""
        return self._id

    def __repr__(self) -> str:
        return f"WorkflowHandle(id={self._id!r})"

    async def _record(self) -> RunRecord:
        store = await self._opened()
        run = await store.get_run(self._id)
        if run is None:
            raise WorkflowNotFound(self._id)
        return run

    async def describe(self) -> RunInfo:
        """What is known about the run: status, times, parent, recoveries, error.

        Raises:
            WorkflowNotFound: no such run.
        """
        return run_info(await self._opened(), await self._record())

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
            WorkflowTimeout: the run timed out (its own deadline, ``timeout=`` when it was
                started); also a `TimeoutError`: catch it first to tell them apart.
            WorkflowNotFound: no such run.
        """
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise ValueError(f"timeout must be a finite number of seconds >= 0, not {timeout!r}")
        store = await self._opened()

        async def wait() -> Any:
            with anyio.fail_after(timeout):
                while True:
                    run = await self._record()
                    if run.status.finished:
                        return outcome(store, run)
                    # Recording the outcome rings the run's watchers (in any process, where
                    # the store can tell); the fallback reads again after
                    # RESULT_FALLBACK_SECONDS.
                    await store.watch([self._id], within=RESULT_FALLBACK_SECONDS)

        # The store of a `durable.testing.WorkflowEnvironment` moves its virtual clock while
        # a handle waits (a handle from `durable.start` or `Queue.start` on it included).
        in_virtual_time = getattr(store, "wait_in_virtual_time", None)
        if in_virtual_time is not None:
            return await in_virtual_time(wait)
        return await wait()

    async def _waiter(self) -> tuple[Store, streams.Waiter]:
        """The store, and how to await on it: a `durable.testing.WorkflowEnvironment`'s
        store moves its virtual clock while a reader waits."""
        store = await self._opened()
        in_virtual_time = getattr(store, "wait_in_virtual_time", None)
        return store, (in_virtual_time or _call)

    async def get_event(self, key: str, timeout: float | None = None) -> Any:
        """The latest value the run set for event ``key`` (`durable.set_event`), waiting until
        it sets one: ``status = await handle.get_event("status", timeout=30)``.

        Woken by the store's notifications (another process's write included, where the
        store can tell), not by a fast poll.

        Args:
            key: the event key.
            timeout: seconds to wait at most; ``None`` waits until the run sets it.

        Raises:
            EventTimeout: (a `TimeoutError`) no value within ``timeout``, or the run finished
                without setting one.
            WorkflowNotFound: no such run.
        """
        store, waiter = await self._waiter()
        return await streams.get_event(store, self._id, key, timeout, waiter)

    async def events(self) -> dict[str, Any]:
        """Every event the run has set so far, each key's latest value (by key).

        Raises:
            WorkflowNotFound: no such run.
        """
        return await streams.read_events(await self._opened(), self._id)

    async def stream(self, key: str, after: int = 0) -> AsyncIterator[Any]:
        """The values of the run's stream ``key`` (`durable.stream_write`), as they come:
        ``async for token in handle.stream("output"): print(token, end="")``.

        Ends at the stream's close (`durable.stream_close`), or once the run has finished
        and everything it wrote was read. Started while the run is going, it yields values
        live, in order, and a `durable.StreamRetry` marker when values it yielded are
        withdrawn (an activity attempt that wrote them failed): discard them. Started after
        the run finished, it yields each value of the successful attempts once, in order.

        Args:
            key: the stream.
            after: skip the entries up to this position. Every value takes the next position
                (from 1), withdrawn ones and markers too: a live reader that counted the
                values and markers it received resumes with ``after=`` that count.

        Raises:
            WorkflowNotFound: no such run.
        """
        store, waiter = await self._waiter()
        async for item in streams.read_stream(store, self._id, key, after, waiter):
            yield item

    async def signal(
        self, name: str, payload: Any = None, *, idempotency_key: str | None = None
    ) -> None:
        """Send signal ``name`` with ``payload`` to this run (see `durable.signal`: from
        workflow code it is a step, and ``idempotency_key`` makes a repeated send a no-op)."""
        store = await self._opened()
        ctx = _context.current_or_none()
        if ctx is not None:
            location = caller_location()
            await ctx.send_signal(self._id, name, payload, idempotency_key, location)
            return
        now = self._clock.time()
        await send_signal(store, self._id, name, payload, now=now, key=idempotency_key)

    async def pause(self) -> None:
        """Stop the run at its next step boundary: the steps in flight finish and are
        recorded, then the run is ``paused`` and released; no executor takes it until
        `resume`. A run nobody executes right now is paused at once.

        Raises:
            WorkflowNotFound: no such run.
        """
        store = await self._opened()
        if await store.request_pause(self._id, now=self._clock.time()) is None:
            raise WorkflowNotFound(self._id)

    async def resume(self) -> None:
        """Let a paused run continue: it becomes ``pending`` for the next executor (a
        worker, or a waiting `run` / `execute`).

        Raises:
            WorkflowNotFound: no such run.
        """
        store = await self._opened()
        if await store.resume(self._id, now=self._clock.time()) is None:
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
        store = await self._opened()
        if await store.request_cancel(self._id, now=self._clock.time()) is None:
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
        store = await self._opened()
        current = await self._record()
        defn = lookup_workflow(current.workflow)
        if defn is None:
            raise DurableError(
                f"cannot roll back run {self._id!r}: its workflow {current.workflow!r} is not "
                "registered in this process; import the module that defines it first"
            )
        run = await store.request_rollback(self._id, now=self._clock.time())
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
            outcome(store, run)
        executor = Executor(store, current_config().replace(clock=self._clock))
        await executor.execute(defn, self._id, (), {}, run.parent_id, check_args=False)

    async def retry(self, *, after_compensation: bool = False) -> None:
        """Resume a ``failed``, ``cancelled``, ``timed_out``, ``blocked`` or
        ``compensation_failed`` run with the code deployed now: the steps before its first
        failed (or unfinished) step stay recorded; that step and those after it run again, the
        failing one with a fresh attempt budget. The run becomes ``pending`` (without a
        deadline); a worker (or `durable.execute` with its id) takes it up. A
        ``compensation_failed`` run re-attempts only the undos that failed. The README
        ("Retrying, forking and deleting runs") says exactly what is kept.

        Args:
            after_compensation: for a run whose compensations already ran: delete every step
                and run the whole workflow again from the start (without it, such a run is
                refused: the work it would continue from was undone).

        Raises:
            WorkflowNotFound: no such run.
            ActionRefused: the run is in another status, its compensations ran, or it changed
                while being retried; nothing was changed.
        """
        store = await self._opened()
        await operate.retry(
            store, self._id, after_compensation=after_compensation, clock=self._clock
        )

    async def fork(
        self,
        from_step: int,
        *,
        id: str | None = None,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> WorkflowHandle:
        """Start a new run of this run's workflow whose steps before ``from_step`` are copies
        of this run's (their results are replayed, not executed again) and which executes from
        step ``from_step`` on. The new run is ``pending`` for a worker (or `durable.execute`
        with its id); this run is left as it is.

        Args:
            from_step: the first step the new run executes itself (1: run everything again);
                at most one past this run's last recorded step.
            id: the new run's id; default ``"<this id>-fork<from_step>-<8 hex digits>"``.
            args: the new run's positional arguments; default: this run's arguments.
            kwargs: its keyword arguments (with ``args``: default none).

        Returns:
            The new run's handle (``handle.id`` is its id).

        Raises:
            WorkflowNotFound: no such run.
            ValueError: ``from_step`` is not a positive int, or ``id`` is not a valid id.
            ActionRefused: ``from_step`` is past the run's steps, or the id is taken.
        """
        store = await self._opened()
        forked = await operate.fork(
            store,
            self._id,
            from_step=from_step,
            new_id=id,
            args=args,
            kwargs=kwargs,
            clock=self._clock,
        )
        return WorkflowHandle(forked.id, self._store_arg)

    async def delete(self) -> None:
        """Delete this finished run, its steps and its signals, for good (its child runs stay).

        Raises:
            WorkflowNotFound: no such run.
            ActionRefused: the run has not finished, or its parent (or an ancestor) has not:
                it may still need the outcome.
        """
        await operate.delete(await self._opened(), self._id)

    async def export_history(self) -> str:
        """The run and its recorded steps as JSON text, payloads included as stored, to keep
        as a regression test: `durable.testing.replay` checks that today's code replays it.

        Raises:
            WorkflowNotFound: no such run.
        """
        store = await self._opened()
        run = await self._record()
        return dump_history(run, await store.load_steps(self._id))

    async def history(self) -> list[Step]:
        """Every recorded step of the run, in step order, with decoded results and errors.

        Raises:
            WorkflowNotFound: no such run.
            PayloadDecodeError: a step's payload cannot be decoded (names run and step).
        """
        store = await self._opened()
        run = await self._record()
        payloads = payloads_of(store, run.workflow)
        steps = []
        for rec in await store.load_steps(self._id):
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
                    started_at=utc(rec.started_at),
                    finished_at=utc(rec.finished_at),
                    result=None if failed else value,
                    error=value if failed and isinstance(value, BaseException) else None,
                )
            )
        return steps
