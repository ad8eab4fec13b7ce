"""`Queue`: runs started on a queue execute only while the queue's limits allow, across every
worker and machine that shares the store.

The limits are enforced by the store (`durable.store.QueueSettings`): `Store.claim` and
`Store.acquire_lease` lock the queue, count its executing and recently started runs, and lease
a queued run only when it fits. A queue's declaration (its limits) is written to the store the
first time the `Queue` starts a run there, and by every `durable.Worker` that knows the queue
when it starts: the latest write wins and every worker reads it.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

import anyio

from durable._client import (
    WorkflowHandle,
    _check_id,
    _refuse_running_loop,
    _start_time,
    _workflow_definition,
    record_start,
    start_deadline,
    timeout_seconds,
)
from durable._config import current_config
from durable._decorators import with_instance
from durable._executor import Executor
from durable._names import check_name
from durable._recording import ensure_run
from durable._stores import open_store, using, using_async
from durable.store import QueueSettings, Store

__all__ = ["Queue", "declared_queues"]

R = TypeVar("R")

_declared: dict[str, Queue] = {}
"""The queues this process declared, by name (the latest declaration of a name wins)."""


def declared_queues() -> list[Queue]:
    """The queues declared in this process (a worker writes their limits when it starts)."""
    return list(_declared.values())


class Queue:
    """A named queue whose runs execute only while its limits allow, across all workers.

    ``q = durable.Queue("payments", concurrency=10)`` then ``await q.start(charge, order, id=...)``.
    Its runs are claimed like any other run (by a `durable.Worker`, or executed by ``q.run`` /
    ``q.execute``), but only while, counting the run, at most ``concurrency`` runs of the queue
    execute at once, at most ``per_key_concurrency`` of them share its ``key``, and at most
    ``rate_limit[0]`` runs of the queue started in the last ``rate_limit[1]`` seconds. Smaller
    ``priority`` runs first; runs of one priority go in the order they became due. A parked run
    (a long sleep, a signal wait) does not count as executing; it counts again when it wakes,
    and may then wait for room like a new run (a wake is not a new start for the rate limit).

    Args:
        name: the queue's name (letters, digits, ``._-:@/``; at most 200 characters).
        concurrency: at most this many of its runs execute at once; ``None``: no limit.
        per_key_concurrency: at most this many of its runs with the same ``key`` execute at
            once (e.g. per tenant); runs started without a key are not limited per key.
        rate_limit: ``(count, period)``: at most ``count`` runs start per ``period`` (seconds
            or a timedelta), over a sliding window; ``None``: no limit.

    Raises:
        ValueError: a limit is not a positive int, or the period is not a positive number.
    """

    def __init__(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        per_key_concurrency: int | None = None,
        rate_limit: tuple[int, float | timedelta] | None = None,
    ) -> None:
        """See the class docstring."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"durable.Queue(name) needs a non-empty string, not {name!r}")
        self.name = check_name(name, "durable.Queue(name)")
        self.concurrency = _limit(concurrency, name, "concurrency")
        self.per_key_concurrency = _limit(per_key_concurrency, name, "per_key_concurrency")
        self.rate_limit = _rate(rate_limit, name)
        self._written: weakref.WeakKeyDictionary[Any, QueueSettings] = weakref.WeakKeyDictionary()
        _declared[self.name] = self

    def __repr__(self) -> str:
        limits = [
            f"{field}={value!r}"
            for field, value in (
                ("concurrency", self.concurrency),
                ("per_key_concurrency", self.per_key_concurrency),
                ("rate_limit", self.rate_limit),
            )
            if value is not None
        ]
        return f"Queue({', '.join([repr(self.name), *limits])})"

    def settings(self, now: float) -> QueueSettings:
        """The limits as the store keeps them, written at ``now``."""
        count, period = self.rate_limit if self.rate_limit is not None else (None, None)
        return QueueSettings(
            self.name, self.concurrency, self.per_key_concurrency, count, period, now
        )

    async def declare(self, store: Store | str | None = None) -> None:
        """Write this queue's limits to the store now (the latest write wins). `start`,
        `run` and `execute` do it on their first use of a store, and a worker that knows the
        queue when it starts; call it after changing a queue's limits in a running process."""
        resolved = await open_store(store)
        await self._declare(resolved, force=True)

    async def _declare(self, store: Store, *, force: bool = False) -> None:
        settings = self.settings(current_config().clock.time())
        written = self._written.get(store)
        if not force and written is not None and _same_limits(written, settings):
            return
        await store.put_queue(settings)
        self._written[store] = settings

    async def start(
        self,
        workflow: Callable[..., Any],
        /,
        *args: Any,
        id: str,
        key: str | None = None,
        priority: int = 0,
        delay: float | timedelta | None = None,
        start_at: datetime | None = None,
        timeout: float | timedelta | None = None,
        store: Store | str | None = None,
        **kwargs: Any,
    ) -> WorkflowHandle:
        """Record run ``id`` on this queue as pending (unless it exists) and return its
        `durable.WorkflowHandle`; a worker executes it when the queue's limits allow.

        Args:
            key: the run's key for ``per_key_concurrency`` (a tenant id, say).
            priority: smaller runs first among the queue's runnable runs (default 0; may be
                negative).
            delay / start_at: a delayed start, as `durable.start` takes it.
            timeout: a deadline, as `durable.start` takes it (counted from when the run may
                start; waiting for room in the queue counts).

        Raises:
            WorkflowIdConflict: ``id`` is recorded for another workflow.
            ValueError: a bad ``key``, ``priority``, ``delay``, ``start_at`` or ``timeout``.
        """
        defn, args = _checked(workflow, "start", id, args)
        call = f"{self!r}.start(..., id={id!r})"
        at, after = _start_time(delay, start_at, id, call)
        _check_placement(key, priority, id)
        seconds = timeout_seconds(timeout, call)
        resolved = await open_store(store)
        await self._declare(resolved)
        timing = (at, after, seconds)
        placement = {"queue": self.name, "queue_key": key, "priority": priority}
        await record_start(resolved, defn, id, args, kwargs, timing, call, **placement)
        return WorkflowHandle(id, resolved)

    async def execute(
        self,
        workflow: Callable[..., Coroutine[Any, Any, R]],
        /,
        *args: Any,
        id: str,
        key: str | None = None,
        priority: int = 0,
        timeout: float | timedelta | None = None,
        store: Store | str | None = None,
        **kwargs: Any,
    ) -> R:
        """Record run ``id`` on this queue (unless it exists) and execute it in this task when
        the queue's limits allow (waiting for room, woken by the store when a run of the queue
        releases its slot), until it finishes; return its result or raise its error, as
        `durable.execute` does (``timeout=``: a deadline for a new run, counted from now)."""
        defn, args = _checked(workflow, "execute", id, args)
        _check_placement(key, priority, id)
        call = f"{self!r}.execute(..., id={id!r})"
        seconds = timeout_seconds(timeout, call)
        async with using_async(store) as resolved:
            await self._declare(resolved)
            config = current_config()
            _, _, deadline = start_deadline(seconds, None, None, config.clock.time(), call)
            await ensure_run(
                resolved,
                defn,
                id,
                args,
                kwargs,
                None,
                config.clock,
                queue=self.name,
                queue_key=key,
                priority=priority,
                deadline=deadline,
            )
            result: R = await Executor(resolved, config).execute(defn, id, args, kwargs)
            return result

    def run(
        self,
        workflow: Callable[..., Coroutine[Any, Any, R]],
        /,
        *args: Any,
        id: str,
        key: str | None = None,
        priority: int = 0,
        timeout: float | timedelta | None = None,
        store: Store | str | None = None,
        **kwargs: Any,
    ) -> R:
        """Synchronous `execute` (from code without a running event loop), as `durable.run`."""
        _checked(workflow, "run", id, args)
        _check_placement(key, priority, id)
        timeout_seconds(timeout, f"{self!r}.run(..., id={id!r})")
        _refuse_running_loop(id)
        with using(store) as resolved:
            call = functools.partial(
                self.execute,
                workflow,
                *args,
                id=id,
                key=key,
                priority=priority,
                timeout=timeout,
                store=resolved,
            )
            result: R = anyio.run(functools.partial(call, **kwargs))
        return result


def _checked(
    workflow: Callable[..., Any], call: str, run_id: str, args: tuple[Any, ...]
) -> tuple[Any, tuple[Any, ...]]:
    """The workflow's definition and its arguments (a method's instance first), checked as
    `durable.start` / `execute` / `run` check them."""
    defn = _workflow_definition(workflow, call, run_id)
    _check_id(run_id, call)
    return defn, with_instance(workflow, args)


def _same_limits(a: QueueSettings, b: QueueSettings) -> bool:
    return (a.concurrency, a.per_key_concurrency, a.rate_count, a.rate_period) == (
        b.concurrency,
        b.per_key_concurrency,
        b.rate_count,
        b.rate_period,
    )


def _limit(value: object, name: str, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"durable.Queue({name!r}, {field}=...) must be an int >= 1 (or None for no "
            f"limit), not {value!r}"
        )
    return value


def _rate(value: object, name: str) -> tuple[int, float] | None:
    if value is None:
        return None
    what = f"durable.Queue({name!r}, rate_limit=...)"
    if not isinstance(value, tuple | list) or len(value) != 2:  # a list: from JSON config
        raise ValueError(
            f"{what} takes (count, period), e.g. (100, 60) for 100 starts a minute, not {value!r}"
        )
    count, period = value
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"{what}: the count must be an int >= 1, not {count!r}")
    seconds = period.total_seconds() if isinstance(period, timedelta) else period
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"{what}: the period takes seconds or a timedelta, not {period!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{what}: the period must be a finite number of seconds > 0")
    return count, float(seconds)


def _check_placement(key: object, priority: object, run_id: str) -> None:
    if key is not None and (not isinstance(key, str) or not key or len(key) > 200):
        raise ValueError(
            f"queue start of run {run_id!r}: key= must be a non-empty string of at most 200 "
            f"characters (a tenant id, say) or None, not {key!r}"
        )
    if (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not -(2**31) <= priority < 2**31
    ):
        raise ValueError(
            f"queue start of run {run_id!r}: priority= must be an int (smaller runs first) "
            f"between -2**31 and 2**31 - 1, not {priority!r}"
        )
