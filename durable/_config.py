"""`ExecutorConfig`: every timing constant of an executor, its clock and its interceptor.

An executor (`durable.run` / `execute`, a `durable.Worker`, `durable.testing`) takes all its
timings from one frozen config, so a test builds a fast one instead of patching module globals:
``Worker(store, config=ExecutorConfig(park_after=0.1))``, or for the module-level entry points
of the current task and the tasks it starts, ``with durable.executor_config(park_after=0.1):``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

from durable._clock import Clock, SystemClock
from durable._registry import ActivityDefinition
from durable._types import Info

__all__ = [
    "MIN_LEASE_SECONDS",
    "ConfigToken",
    "ExecutorConfig",
    "Interceptor",
    "current_config",
    "executor_config",
    "reset_current",
    "set_current",
]

Interceptor = Callable[
    [ActivityDefinition, Info, tuple[Any, ...], dict[str, Any], Callable[[], Awaitable[Any]]],
    Awaitable[Any],
]
"""Wraps every activity attempt: ``(defn, info, args, kwargs, proceed) -> awaitable``, where
``proceed()`` runs the activity itself (tests use it to fail, crash or replace attempts)."""

MIN_LEASE_SECONDS = 1.0
"""The shortest lease an executor accepts: it is renewed every third of it, and an executor
renews it before starting a step when less than a third is left, so a shorter lease would
leave no time for a store round trip (and a worker would lose its own runs)."""


@dataclass(frozen=True, slots=True)
class ExecutorConfig:
    """How an executor times what it does. Every field has the production default.

    Attributes:
        lease_seconds: how long a lease lasts without renewal; it is renewed every third of
            it. A run whose executor died is taken over by another after at most this long
            (at once when the executor was a process of the same host).
        park_after: a wait longer than this parks the run (unwound, its lease released)
            instead of being waited out in memory; ``None`` never parks.
        park_poll_seconds: how often `run` / `execute`, waiting for a parked run that has no
            wake-up time, reads it again when no write to it woke them.
        supervise_tick_seconds: how often an executor looks at its clock to renew the lease
            on time (no store call).
        request_fallback_seconds: while a run holds a wait in memory, its executor reads it
            when a write wakes it (`Store.watch`) and at the latest this often.
        signal_fallback_seconds: a signal wait (or a wait for a parked child) tries again at
            the latest this often when no write woke it.
        halt_seconds: how long a resumed, compensating run waits for its recorded failure to
            be raised again before it calls the divergence.
        clock: the clock of the runs (`durable.testing.VirtualClock` in tests).
        interceptor: wraps every activity attempt (`durable.testing`'s fault injection).
    """

    lease_seconds: float = 30.0
    park_after: float | None = 5.0
    park_poll_seconds: float = 0.5
    supervise_tick_seconds: float = 0.2
    request_fallback_seconds: float = 30.0
    signal_fallback_seconds: float = 30.0
    halt_seconds: float = 5.0
    clock: Clock = field(default_factory=SystemClock)
    interceptor: Interceptor | None = None

    def __post_init__(self) -> None:
        """Refuse timings that cannot work.

        Raises:
            ValueError: a duration is not a finite number > 0 (``park_after`` may be 0 or
                ``None``), or the lease is shorter than `MIN_LEASE_SECONDS`.
        """
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("clock", "interceptor") or (f.name == "park_after" and value is None):
                continue
            low_ok = f.name == "park_after" and value == 0
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"ExecutorConfig({f.name}=...) must be a number of seconds >= 0")
            if value == 0 and not low_ok:
                raise ValueError(f"ExecutorConfig({f.name}=...) must be > 0")
        if self.lease_seconds < MIN_LEASE_SECONDS:
            raise ValueError(
                f"ExecutorConfig(lease_seconds={self.lease_seconds!r}) is too short: a lease "
                f"must last at least {MIN_LEASE_SECONDS:g} s (it is renewed every third of it, "
                "and a store round trip must fit in that)"
            )

    def replace(self, **changes: Any) -> ExecutorConfig:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


_current: ContextVar[ExecutorConfig | None] = ContextVar("durable_executor_config", default=None)

ConfigToken = Token[ExecutorConfig | None]
"""What `set_current` returns, for `reset_current`."""


def set_current(config: ExecutorConfig) -> ConfigToken:
    """Make ``config`` the current one in this context until `reset_current` (what
    `executor_config` does for a ``with`` block; `durable.testing.WorkflowEnvironment` does it
    between its enter and exit)."""
    return _current.set(config)


def reset_current(token: ConfigToken | None) -> None:
    """Undo `set_current` (``None``: nothing to undo)."""
    if token is not None:
        _current.reset(token)


def current_config() -> ExecutorConfig:
    """The config of the module-level entry points in this task (see `executor_config`)."""
    return _current.get() or ExecutorConfig()


@contextmanager
def executor_config(**changes: Any) -> Iterator[ExecutorConfig]:
    """Run `durable.run` / `execute` (and the runs they start) in this block, and in tasks
    started from it, with these `ExecutorConfig` fields changed, e.g.
    ``with durable.executor_config(park_after=0.1): ...``. Workers take their own
    ``Worker(config=...)``.

    Raises:
        ValueError, TypeError: a field is unknown or out of range.
    """
    config = current_config().replace(**changes)
    token = _current.set(config)
    try:
        yield config
    finally:
        _current.reset(token)
