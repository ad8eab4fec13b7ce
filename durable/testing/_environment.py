"""`WorkflowEnvironment`: a store, a virtual clock and a worker, for instant workflow tests."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self, cast

import anyio
import anyio.abc
import anyio.lowlevel

from durable import _config
from durable._client import WorkflowHandle, _start_time, start_deadline, timeout_seconds
from durable._config import ExecutorConfig, current_config
from durable._decorators import definition_of, with_instance
from durable._errors import LeaseLost
from durable._recording import ensure_run, outcome
from durable._registry import ActivityDefinition, WorkflowDefinition, registered_workflows
from durable._types import Info, Step
from durable._worker import Worker
from durable.backends import MemoryStore
from durable.backends import _rules as rules
from durable.store import QueueSettings, Store, due_at

from ._faults import Faults
from ._virtual_clock import VirtualClock

__all__ = ["WorkflowEnvironment"]

_WRITES = frozenset(
    {
        "create_run",
        "acquire_lease",
        "release_lease",
        "load_steps",
        "commit",
        "request_cancel",
        "request_pause",
        "resume",
        "request_rollback",
        "send_signal",
        "wake",
        "receive_signal",
        "continue_run",
        "put_schedule",
        "set_schedule_paused",
        "fire_schedule",
        "publish",
        "withdraw",
    }
)
"""Store calls that mean a run is moving (the rest are reads, polls and lease renewals)."""


class _Watched:
    """The environment's store, counting the calls that move runs along."""

    def __init__(
        self,
        store: Store,
        moved: Callable[[], None],
        skip: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]],
    ) -> None:
        self._store = store
        self._moved = moved
        self._env_skip = skip

    async def wait_in_virtual_time(self, awaited: Callable[[], Awaitable[Any]]) -> Any:
        """Await ``awaited()`` while the environment skips virtual time (``auto_skip``): a
        `durable.WorkflowHandle` on this store (from `durable.start` or `durable.Queue.start`)
        waits for ``result()`` this way."""
        return await self._env_skip(awaited)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in _WRITES and name != "claim":
            return attr

        @functools.wraps(attr)
        async def call(*args: Any, **kwargs: Any) -> Any:
            result = await attr(*args, **kwargs)
            if name != "claim" or result:
                self._moved()
            return result

        return call


class WorkflowEnvironment:
    """Runs workflows in this process against a store and a virtual clock, for tests.

    ``durable.sleep(timedelta(days=3))`` takes no wall time: the clock moves by `advance` /
    `advance_to`, or by itself with ``auto_skip``. Every wait parks its run (as a worker would
    after ``park_after``), and the environment's own worker executes whatever is runnable, so
    `start`, `execute`, `signal` and `get_handle` behave as in production. Its worker also
    fires the cron schedules (`durable.schedule`, with ``store=env.store``) of its workflows at
    their ticks on the virtual clock.

    Args:
        auto_skip: while the test awaits the environment (a handle's ``result()``,
            `execute`) and no run can move on except by time passing, jump the clock to the
            earliest due time (a timer, a signal wait's timeout, an abandoned lease's expiry)
            and let the woken runs run; repeat. Never while the test's own code runs, so a
            signal sent right after `start` is never raced by a jump.
        start: the virtual time to begin at (timezone-aware); default: now.
        store: the store to use (default: a new `MemoryStore`, closed on exit; a given store
            is left open).
        workflows: the workflows its worker executes (default: all imported ones).
        lease: seconds (virtual) a lease lasts; after `crash` the run is taken over when it
            expires.

    Example:
        >>> async with WorkflowEnvironment() as env:  # doctest: +SKIP
        ...     assert await env.execute(expense, "e-1", 100, id="e-1") == "expired"
    """

    def __init__(
        self,
        *,
        auto_skip: bool = True,
        start: datetime | None = None,
        store: Store | None = None,
        workflows: Iterable[Callable[..., Any]] | None = None,
        lease: float = 30.0,
    ) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("WorkflowEnvironment(start=...) must be timezone-aware (UTC)")
        self.auto_skip = auto_skip
        self.clock = VirtualClock(start.timestamp() if start is not None else time.time())
        self._own_store = store is None
        self._inner: Store = store if store is not None else MemoryStore()
        self._moves = 0
        self._in_flight = 0
        self._store = cast(Store, _Watched(self._inner, self._moved, self._skip_while))
        self._workflows = list(workflows) if workflows is not None else None
        self._lease = float(lease)
        self._faults = Faults()
        self._worker: Worker | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._config_token: _config.ConfigToken | None = None

    def _moved(self) -> None:
        self._moves += 1

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Start the environment's worker."""
        if self._workflows is None and not registered_workflows():
            raise ValueError(
                "WorkflowEnvironment found no workflows: import the modules that define them "
                "before entering it, or pass workflows=[...]"
            )
        self._worker = Worker(
            self._store,
            self._workflows,
            concurrency=10_000,
            lease=self._lease,
            grace=0.05,
            config=ExecutorConfig(clock=self.clock, interceptor=self._intercept, park_after=0),
        )
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._worker.run)
        # `durable.start`, `durable.Queue.start` and the other module-level entry points
        # record runs at the virtual time inside the environment too.
        self._config_token = _config.set_current(current_config().replace(clock=self.clock))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Stop the worker (runs in flight are put back, as on a worker's shutdown)."""
        assert self._worker is not None and self._tg is not None
        _config.reset_current(self._config_token)
        self._worker.stop()
        if exc is not None:
            self._tg.cancel_scope.cancel()
        try:
            # The test's own exception goes on as it is, not wrapped in a task group's.
            await self._tg.__aexit__(None, None, None)
        finally:
            if self._own_store:
                await self._inner.close()
        return None

    # -- what tests call ----------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The environment's store (to look at runs directly)."""
        return self._store

    def now(self) -> datetime:
        """The virtual time (UTC)."""
        return datetime.fromtimestamp(self.clock.time(), UTC)

    async def start(
        self,
        workflow: Callable[..., Any],
        /,
        *args: Any,
        id: str,
        timeout: float | timedelta | None = None,
        delay: float | timedelta | None = None,
        start_at: datetime | None = None,
        **kwargs: Any,
    ) -> WorkflowHandle:
        """Record a run (as `durable.start` does, at the virtual time); the environment's
        worker executes it. Returns its handle. ``timeout``: the run's deadline, this long
        after now (or after its delayed start) on the virtual clock; ``delay`` /
        ``start_at``: a delayed start on the virtual clock (see `durable.start`)."""
        defn = _workflow(workflow)
        call = f"WorkflowEnvironment.start(..., id={id!r})"
        at, after = _start_time(delay, start_at, id)
        seconds = timeout_seconds(timeout, call)
        at, after, deadline = start_deadline(seconds, at, after, self.clock.time(), call)
        args = with_instance(workflow, args)
        await ensure_run(
            self._store,
            defn,
            id,
            args,
            kwargs,
            None,
            self.clock,
            start_at=at,
            delay=after,
            deadline=deadline,
        )
        return self.get_handle(id)

    async def execute(
        self,
        workflow: Callable[..., Any],
        /,
        *args: Any,
        id: str,
        timeout: float | timedelta | None = None,
        **kwargs: Any,
    ) -> Any:
        """Start a run and wait for its result (skipping time if ``auto_skip``); a run past
        its ``timeout`` (virtual time) raises `durable.WorkflowTimeout`."""
        handle = await self.start(workflow, *args, id=id, timeout=timeout, **kwargs)
        return await handle.result()

    def get_handle(self, id: str) -> WorkflowHandle:
        """A handle on run ``id`` whose ``result()`` skips time (if ``auto_skip``)."""
        return _EnvHandle(self, id)

    async def signal(self, id: str, name: str, payload: Any = None) -> None:
        """Send a signal to run ``id`` (as `durable.signal` does, at the virtual time)."""
        await self.get_handle(id).signal(name, payload)

    async def history(self, id: str) -> list[Step]:
        """The run's recorded steps (as `WorkflowHandle.history` returns them)."""
        return await self.get_handle(id).history()

    async def advance(self, delta: timedelta | float) -> None:
        """Move the clock forward by ``delta`` (seconds or a timedelta), waking timers in due
        order; return once the runs woken have run as far as they can."""
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        if seconds < 0:
            raise ValueError(f"advance() cannot go back in time ({delta!r})")
        await self._advance_to(self.clock.time() + seconds)

    async def advance_to(self, when: datetime) -> None:
        """Move the clock forward to ``when`` (timezone-aware); see `advance`."""
        if when.tzinfo is None:
            raise ValueError("advance_to() needs a timezone-aware datetime")
        target = when.timestamp()
        if target < self.clock.time():
            raise ValueError(f"advance_to() cannot go back in time (to {when}, now {self.now()})")
        await self._advance_to(target)

    # -- fault injection ------------------------------------------------------------------

    def fail(
        self,
        activity: Callable[..., Any],
        *,
        attempts: Iterable[int] = (1,),
        exc: BaseException | type[BaseException] = RuntimeError,
    ) -> None:
        """Make these attempts of ``activity`` (in every run) raise ``exc`` instead of running
        it; an exception class is instantiated with a message naming the attempt."""
        self._faults.fail(activity, attempts, exc)

    def crash(self, activity: Callable[..., Any], *, when: Literal["before", "after"]) -> None:
        """Make the next call of ``activity`` abandon its run as a killed process would:
        ``"before"`` the activity runs, or ``"after"`` it ran but before its result is
        recorded. Nothing is cleaned up; the run's lease expires on the virtual clock and
        the environment's worker takes the run over (so a ``final`` activity's outcome is
        unknown)."""
        self._faults.crash(activity, when)

    def mock(self, activity: Callable[..., Any], fake: Callable[..., Any]) -> None:
        """Run ``fake`` (sync or async, same arguments) instead of ``activity`` from now on."""
        self._faults.mock(activity, fake)

    async def _intercept(
        self,
        defn: ActivityDefinition,
        info: Info,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        proceed: Callable[[], Awaitable[Any]],
    ) -> Any:
        self._in_flight += 1
        try:
            return await self._faults.call(defn, info, args, kwargs, proceed)
        finally:
            self._in_flight -= 1
            self._moves += 1

    # -- time -----------------------------------------------------------------------------

    async def _settle(self) -> None:
        """Return once no run can move on without time passing: no activity in flight, no
        run claimable now, and no store write for a few turns of the event loop."""
        while True:
            seen = self._moves
            for _ in range(20):
                await anyio.lowlevel.checkpoint()
            if self._moves != seen:
                continue
            if self._in_flight or await self._claimable_now():
                await anyio.sleep(0.001)
                continue
            return

    async def _claimable_now(self) -> bool:
        due = await self._runs_due()
        return due is not None and due <= self.clock.time()

    async def _runs_due(self) -> float | None:
        """When the first run becomes claimable by time alone. Leases of runs executing here
        are renewed whenever the clock moves, so only abandoned ones count."""
        assert self._worker is not None
        executing = self._worker.leases
        runs = await self._inner.list_runs(limit=1_000_000)
        idle = [run for run in runs if run.lease_owner is None or run.id not in executing]
        due = [due_at(run) for run in idle if run.queue is None]
        settings = {queue.name: queue for queue in await self._inner.list_queues()}
        for name in {run.queue for run in idle if run.queue is not None}:
            limits = settings.get(name) or QueueSettings(name)
            load = rules.queue_load(limits, runs, self.clock.time())
            due.append(rules.queue_due(limits, load, (run for run in idle if run.queue == name)))
        return min([d for d in due if d is not None] + await self._ticks_due(), default=None)

    async def _ticks_due(self) -> list[float]:
        """The next ticks of the schedules the worker fires (a due one is work now, even
        before the worker's scheduler has looked)."""
        list_schedules = getattr(self._inner, "list_schedules", None)
        if list_schedules is None:
            return []
        known = (
            {_workflow(fn).name for fn in self._workflows}
            if self._workflows is not None
            else set(registered_workflows())
        )
        schedules = await list_schedules()
        return [
            s.next_tick
            for s in schedules
            if not s.paused and s.next_tick is not None and s.workflow in known
        ]

    async def _next_due(self) -> float | None:
        due = [d for d in (await self._runs_due(), self.clock.next_due()) if d is not None]
        return min(due, default=None)

    async def _move_to(self, when: float) -> None:
        assert self._worker is not None
        for lease in list(self._worker.leases.values()):
            try:  # runs executing here keep their leases across the jump
                await self._inner.renew_lease(lease, now=when, duration=self._lease)
            except LeaseLost:
                pass
        self.clock.move_to(max(when, self.clock.time()))
        wake = getattr(self._inner, "wake_waiters", None)
        if wake is not None:
            wake()
        self._moves += 1

    async def _advance_to(self, target: float) -> None:
        while True:
            await self._settle()
            due = await self._next_due()
            if due is None or due > target:
                break
            await self._move_to(due)
        await self._move_to(target)
        await self._settle()

    async def _skip_while(self, awaited: Callable[[], Awaitable[Any]]) -> Any:
        """Await ``awaited()``; meanwhile (with ``auto_skip``) jump the clock whenever the
        runs wait for time alone."""
        if not self.auto_skip:
            return await awaited()
        result: list[Any] = []
        error: list[Exception] = []
        async with anyio.create_task_group() as tg:

            async def skipper() -> None:
                while True:
                    await self._settle()
                    due = await self._next_due()
                    if due is None:
                        await anyio.sleep(0.005)  # only a signal (or the test) can move things
                    else:
                        await self._move_to(due)

            tg.start_soon(skipper)
            try:
                result.append(await awaited())
            except Exception as exc:  # raised after the group, not wrapped in a group
                error.append(exc)
            finally:
                tg.cancel_scope.cancel()
        if error:
            raise error[0]
        return result[0]


class _EnvHandle(WorkflowHandle):
    """A handle whose ``result()`` skips time while it waits."""

    def __init__(self, env: WorkflowEnvironment, id: str) -> None:
        super().__init__(id, env.store)
        self._clock = env.clock
        self._env = env

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the run's outcome, skipping virtual time (if ``auto_skip``); ``timeout``
        is in real seconds."""

        async def wait() -> Any:
            with anyio.fail_after(timeout):
                while True:
                    run = await self._record()
                    if run.status.finished:
                        return outcome(self._store, run)
                    await anyio.sleep(0.001)

        return await self._env._skip_while(wait)


def _workflow(fn: Callable[..., Any]) -> WorkflowDefinition:
    defn = definition_of(fn)
    if not isinstance(defn, WorkflowDefinition):
        raise TypeError(f"expected a @workflow function, not {fn!r}")
    return defn
