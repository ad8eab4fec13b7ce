"""Calls that only workflow code makes: each checks its arguments, then asks the current run."""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar
from uuid import UUID

import anyio

from durable import _context
from durable._decorators import caller_location
from durable._errors import NotInWorkflowError
from durable._names import check_name
from durable._types import Info

__all__ = [
    "continue_as_new",
    "deprecate_patch",
    "gather",
    "info",
    "now",
    "patched",
    "random",
    "saga",
    "sleep",
    "uuid4",
    "wait_first",
    "wait_signal",
]

T = TypeVar("T")


def _seconds(delay: float | timedelta, call: str = "sleep") -> float:
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, int | float) and not isinstance(delay, bool):
        seconds = float(delay)
    else:
        raise TypeError(
            f"durable.{call}() takes seconds (int or float) or a datetime.timedelta, not {delay!r}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"durable.{call}() needs a finite delay >= 0, not {delay!r}")
    return seconds


def sleep(delay: float | timedelta) -> Awaitable[None]:
    """Wait ``delay`` (seconds or a `timedelta`) durably: ``await durable.sleep(60)``.

    The step is numbered when ``sleep`` is called (like an activity call), and its due time is
    recorded when the sleep starts, so a run resumed after a crash waits only for what is left
    and a replay of a finished sleep returns at once.

    Raises:
        NotInWorkflowError: called outside workflow code.
    """
    seconds = _seconds(delay)
    return _context.current("sleep").sleep(seconds, caller_location())


def wait_signal(name: str, timeout: float | timedelta | None = None) -> Awaitable[Any]:
    """Wait for the next signal ``name`` sent to this run and return its payload:
    ``approved = await durable.wait_signal("approve", timeout=timedelta(days=2))``.

    Signals sent before the wait are buffered, in order; each is consumed by exactly one wait,
    in the same transaction that records the step. The deadline is recorded when the wait
    starts, so a resumed run does not restart it. The run's status is ``waiting`` meanwhile.

    Args:
        name: the signal's name.
        timeout: seconds or a `timedelta`; ``None`` waits for ever.

    Raises:
        SignalTimeout: (a `TimeoutError`) the timeout passed first.
        NotInWorkflowError: called outside workflow code.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"durable.wait_signal() needs a non-empty signal name, not {name!r}")
    check_name(name, "durable.wait_signal(): the signal name")
    seconds = None if timeout is None else _seconds(timeout, "wait_signal")
    return _context.current("wait_signal").wait_signal(name, seconds, caller_location())


def now() -> datetime:
    """The current time (timezone-aware UTC), recorded as a step: a replay sees the same value.

    Raises:
        NotInWorkflowError: called outside workflow code.
    """
    return _context.current("now").now(caller_location())


def uuid4() -> UUID:
    """A random UUID, recorded as a step: a replay sees the same value.

    Raises:
        NotInWorkflowError: called outside workflow code.
    """
    return _context.current("uuid4").uuid4(caller_location())


def random() -> float:
    """A random float in [0, 1), recorded as a step: a replay sees the same value.

    Raises:
        NotInWorkflowError: called outside workflow code.
    """
    return _context.current("random").random(caller_location())


def patched(change_id: str) -> bool:
    """Whether this run takes the new code path of a change made while runs were in flight.

    Put a change to a workflow behind it, keeping the old code in the ``else`` branch::

        if durable.patched("send-receipt"):
            await send_receipt(order)  # new runs, and runs that reach here under this code

    It returns True for a run that reaches this point under code that has the call (a marker
    step of kind ``patch`` is recorded, so its replays return True too), and False for a run
    whose history was recorded before the change (nothing is consumed, so the old history still
    lines up) or that started under an earlier version of the workflow (see
    ``@workflow(version=...)``): such a run keeps the old path to its end.

    Raises:
        ValueError: ``change_id`` is empty.
        NotInWorkflowError: called outside workflow code.
    """
    _check_change_id(change_id, "patched")
    return _context.current("patched").patched(change_id, caller_location())


def deprecate_patch(change_id: str) -> None:
    """Mark a `patched` change whose old path is gone: once no run that started before the
    change remains, replace ``if durable.patched(id): new() else: old()`` by
    ``durable.deprecate_patch(id); new()``. Runs that recorded the marker replay past it; new
    runs record nothing.

    Raises:
        ValueError: ``change_id`` is empty.
        NotInWorkflowError: called outside workflow code.
    """
    _check_change_id(change_id, "deprecate_patch")
    _context.current("deprecate_patch").patched(change_id, caller_location(), deprecated=True)


def _check_change_id(change_id: object, call: str) -> None:
    if not isinstance(change_id, str) or not change_id:
        raise ValueError(f"durable.{call}() needs a non-empty change id, not {change_id!r}")


def info() -> Info:
    """Where the caller is: run id, workflow, step, attempt and the activity's idempotency key.

    Works in workflow code and inside an activity (where ``idempotency_key`` is set).

    Raises:
        NotInWorkflowError: called outside any run.
    """
    activity = _context.activity_info()
    if activity is not None:
        return activity
    ctx = _context.current_or_none()
    if ctx is None:
        raise NotInWorkflowError(
            "durable.info() was called outside any run; it describes the run and step that "
            "execute the caller, so call it from a @workflow body or an @activity"
        )
    return ctx.info()


def continue_as_new(*args: Any, **kwargs: Any) -> NoReturn:
    """End this generation of the run and start the workflow again, under the same run id,
    with these arguments and an empty history: ``durable.continue_as_new(cursor, total)``.

    For loops that run for ever (or for very long): a history that grows with every step
    makes each replay longer; continuing every few hundred steps keeps replay time and
    storage bounded. It never returns: it unwinds the workflow (like ``return``, it is not
    caught by ``except Exception``), the store records the next generation in one
    transaction, and the executor goes straight on with it.

    * ``handle.result()``, ``durable.run`` and ``durable.execute`` return the last
      generation's result; ``durable.info().generation`` counts the generations (1 first).
    * The steps of the generation that ends are **deleted**, with the signals it consumed;
      signals sent to the run and not consumed yet are kept for the next generation.
    * The run keeps its id, queue, key, priority, deadline and creation time. A cancel or
      pause requested and not yet delivered reaches the next generation.
    * The generation counts as completed: its undos (``compensate=``) are dropped, never run.
    * Child run ids, signal idempotency keys and activities' ``info().idempotency_key`` are
      ``"<run id>/g<generation>/<step>"`` from the second generation on, so they never meet
      an earlier generation's.

    Call it from the workflow body once nothing else of the run is under way: with an
    activity, child workflow, sleep or wait still running in another task it raises
    `NotInWorkflowError` instead (await those first).

    Raises:
        NotInWorkflowError: called outside workflow code (an activity, plain code), or while
            other steps of the run are under way.
        TypeError: the arguments do not fit the workflow's signature.
        SerializationError: the arguments cannot be encoded by the workflow's codec.
    """
    _context.current("continue_as_new").continue_as_new(args, kwargs, caller_location())


async def gather(*awaitables: Awaitable[T]) -> list[T]:
    """Await several steps concurrently and return their results in the order given.

    Works on asyncio and on trio. The steps are numbered when they are *called* (when the
    argument list is built), in the order written, so the run replays deterministically. This is
    the portable way to run activities or child workflows side by side; put a branch that makes
    several steps one after another into a child workflow, so its steps are numbered in its own
    run whatever the timing.

    Raises:
        The exception of a failed awaitable (the others are cancelled); an `ExceptionGroup` when
        several failed.
    """
    results: list[Any] = [None] * len(awaitables)

    async def one(index: int, awaitable: Awaitable[T]) -> None:
        results[index] = await awaitable

    try:
        async with anyio.create_task_group() as tg:
            for index, awaitable in enumerate(awaitables):
                tg.start_soon(one, index, awaitable)
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    return results


def wait_first(*awaitables: Awaitable[Any]) -> Awaitable[tuple[int, Any]]:
    """Wait for the first of several steps to finish: its index and its value.

    ``index, value = await durable.wait_first(durable.wait_signal("approve"),
    durable.sleep(timedelta(days=3)))``. Each argument is the awaitable an activity call, a
    child-workflow call, `durable.sleep` or `durable.wait_signal` of this run returned, not yet
    awaited. Which one won is recorded as a step (kind ``first``), so every replay returns the
    same winner whatever the timing. The others are cancelled: a sleep or signal wait stops (a
    signal is consumed only by a wait that completes), an activity attempt under way is
    cancelled as its ``timeout=`` would cancel it (its ``started`` step stays in the history;
    it never runs again), a child run is asked to cancel and waited for (it runs its own
    compensations). A loser that completed before it could be cancelled keeps its undo on the
    saga stack. A run waiting only on sleeps and signal waits this way parks like a single
    wait, due at its earliest timer, woken early by a signal.

    Raises:
        The error of the first step to finish, when it failed (as awaiting it would);
            `Cancelled` (`WorkflowTimeout` past the run's deadline) when the run's
            cancellation reached one of the steps, whichever won.
        ValueError: no awaitable, one already awaited, or the same one twice.
        TypeError: an argument is not such a step of this run (the message names its index).
        NotInWorkflowError: called outside workflow code.
    """
    try:
        ctx = _context.current("wait_first")
    except NotInWorkflowError:
        _close_unawaited(awaitables)
        raise
    return ctx.wait_first(awaitables, caller_location())


def _close_unawaited(awaitables: tuple[Awaitable[Any], ...]) -> None:
    """Close the coroutines given to a call that refused them, so none warns it was never
    awaited."""
    for awaitable in awaitables:
        if inspect.iscoroutine(awaitable) and (
            inspect.getcoroutinestate(awaitable) == inspect.CORO_CREATED
        ):
            awaitable.close()


def saga() -> AbstractAsyncContextManager[None]:
    """A saga scope: ``async with durable.saga(): ...`` inside a workflow.

    If the block raises, the undos (``compensate=``) of the activities that completed inside
    it run newest-first, each as a recorded step, and then the exception propagates; a
    workflow that catches it carries on. Activities outside the block are untouched. Blocks
    nest. If the block ends normally, its undos join the enclosing scope, so a later failure
    of the workflow still undoes them.

    Raises:
        NotInWorkflowError: called outside workflow code.
        CompensationFailed: (on leaving the block) some undos still failed after their retries.
    """
    return _context.current("saga").saga()
