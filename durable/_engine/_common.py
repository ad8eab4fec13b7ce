"""What the parts of the engine share: the executor's hooks, the park signal, fatal errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from durable._config import Interceptor
from durable._errors import LeaseLost, NonDeterminismError, PayloadDecodeError, StoreError
from durable._registry import WorkflowDefinition
from durable.store import RunRecord

__all__ = [
    "FATAL",
    "PARKED",
    "ChildRunner",
    "ContinueAsNew",
    "Continued",
    "Interceptor",
    "Park",
    "RunAbandoned",
    "continue_of",
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


class ContinueAsNew(BaseException):
    """Unwinds a workflow that called `durable.continue_as_new`, carrying the next
    generation's encoded ``(args, kwargs)``. A `BaseException`, like `Park`: ``except
    Exception`` in workflow code cannot swallow it; it never leaves the engine.

    Attributes:
        payload: the next generation's encoded arguments.
        location: where workflow code called it (``"file:line"``).
    """

    def __init__(self, payload: bytes, location: str | None) -> None:
        super().__init__()
        self.payload = payload
        self.location = location


def continue_of(exc: BaseException) -> tuple[ContinueAsNew | None, BaseException | None]:
    """Split what unwound a workflow into the `ContinueAsNew` in it (if any) and the rest
    (``None`` when nothing else was raised beside it)."""
    if isinstance(exc, ContinueAsNew):
        return exc, None
    if isinstance(exc, BaseExceptionGroup):
        found, rest = exc.split(ContinueAsNew)
        if found is not None:
            leaf: BaseException = found
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            assert isinstance(leaf, ContinueAsNew)
            return leaf, rest
    return None, exc


@dataclass(frozen=True, slots=True)
class Continued:
    """What `Engine.run` returns when the workflow continued as new: the run's next
    generation, recorded (empty history, new arguments) and still leased by the executor."""

    run: RunRecord
