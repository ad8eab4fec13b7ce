"""The faults a `WorkflowEnvironment` injects into activities: failed attempts, crashes of the
process around an activity, and fakes that run instead of it."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal

from durable._decorators import definition_of
from durable._engine import RunAbandoned
from durable._registry import ActivityDefinition
from durable._types import Info

__all__ = ["Faults"]


class _Failure:
    def __init__(self, attempts: frozenset[int], exc: BaseException | type[BaseException]) -> None:
        self.attempts = attempts
        self.exc = exc

    def error(self, info: Info, name: str) -> BaseException:
        if isinstance(self.exc, BaseException):
            return self.exc
        return self.exc(f"injected failure of {name!r}, attempt {info.attempt} (run {info.run_id})")


class Faults:
    """What one environment injects, by activity name, and the activity call that applies it
    (see `WorkflowEnvironment.fail`, ``crash`` and ``mock``)."""

    def __init__(self) -> None:
        self._failures: dict[str, _Failure] = {}
        self._crashes: dict[str, str] = {}
        self._mocks: dict[str, Callable[..., Any]] = {}

    def fail(
        self,
        activity: Callable[..., Any],
        attempts: Iterable[int],
        exc: BaseException | type[BaseException],
    ) -> None:
        numbers = frozenset(attempts)
        if not numbers or any(not isinstance(n, int) or n < 1 for n in numbers):
            raise ValueError(f"fail(attempts=...) takes attempt numbers >= 1, not {attempts!r}")
        self._failures[activity_of(activity).name] = _Failure(numbers, exc)

    def crash(self, activity: Callable[..., Any], when: Literal["before", "after"]) -> None:
        if when not in ("before", "after"):
            raise ValueError(f"crash(when=...) is 'before' or 'after', not {when!r}")
        self._crashes[activity_of(activity).name] = when

    def mock(self, activity: Callable[..., Any], fake: Callable[..., Any]) -> None:
        self._mocks[activity_of(activity).name] = fake

    async def call(
        self,
        defn: ActivityDefinition,
        info: Info,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        proceed: Callable[[], Awaitable[Any]],
    ) -> Any:
        """One attempt of ``defn``, with whatever fault is injected into it."""
        crash = self._crashes.get(defn.name)
        if crash == "before":
            del self._crashes[defn.name]
            raise RunAbandoned(defn.name)
        failure = self._failures.get(defn.name)
        if failure is not None and info.attempt in failure.attempts:
            raise failure.error(info, defn.name)
        fake = self._mocks.get(defn.name)
        if fake is None:
            value = await proceed()
        else:
            value = fake(*args, **kwargs)
            if inspect.isawaitable(value):
                value = await value
        if crash == "after":
            del self._crashes[defn.name]
            raise RunAbandoned(defn.name)
        return value


def activity_of(fn: Callable[..., Any]) -> ActivityDefinition:
    defn = definition_of(fn)
    if not isinstance(defn, ActivityDefinition):
        raise TypeError(f"expected an @activity function, not {fn!r}")
    return defn
