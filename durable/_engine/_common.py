"""What the parts of the engine share: the executor's hooks, the park signal, fatal errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from durable._config import Interceptor
from durable._errors import LeaseLost, NonDeterminismError, PayloadDecodeError, StoreError
from durable._registry import WorkflowDefinition

__all__ = [
    "FATAL",
    "PARKED",
    "ChildRunner",
    "Interceptor",
    "Park",
    "RunAbandoned",
    "only_parks",
]

ChildRunner = Callable[
    [WorkflowDefinition, str, tuple[Any, ...], dict[str, Any], str, float | None], Awaitable[Any]
]
"""Runs a child workflow ``(defn, child_id, args, kwargs, parent_id, deadline)`` to its
outcome (``deadline``: the child's, epoch seconds, when the child run is recorded now)."""


FATAL = (NonDeterminismError, LeaseLost, PayloadDecodeError, StoreError)
"""Errors that stop the run where they happen: the workflow cannot catch them and go on."""

PARKED = object()
"""What `Engine.run` returns when the run parked instead of finishing."""


class RunAbandoned(BaseException):
    """Raised (by a test's fault injection) to make the executor abandon the run as a killed
    process would: nothing more is written, its lease is left to expire."""


class Park(BaseException):
    """Unwinds a workflow that parks. A `BaseException`, so ``except Exception`` in workflow
    code cannot swallow it; it never leaves the engine."""


def only_parks(exc: BaseException) -> bool:
    """Whether ``exc`` is `Park`, or a group of nothing else."""
    if isinstance(exc, Park):
        return True
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(Park)
        return rest is None
    return False
