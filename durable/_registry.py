"""Workflow and activity definitions, and the name -> workflow map that executors look up."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from durable._codec import DEFAULT_CODEC, Codec
from durable._retry import NO_RETRY, RetryPolicy

__all__ = [
    "ActivityDefinition",
    "WorkflowDefinition",
    "lookup_workflow",
    "register_workflow",
    "registered_workflows",
]


@dataclass(frozen=True, slots=True, eq=False)
class WorkflowDefinition:
    """A ``@workflow``: its name, the undecorated function, the codec for its payloads, its
    code version (recorded with every run it starts), and how many takeovers from dead
    executors a run may have before it is ended ``failed`` (``None``: no limit)."""

    name: str
    fn: Callable[..., Any]
    codec: Codec = field(default=DEFAULT_CODEC)
    version: str | None = None
    max_recoveries: int | None = None


@dataclass(frozen=True, slots=True, eq=False)
class ActivityDefinition:
    """An ``@activity``: name, function, whether it is ``async def``, retry, timeout, and its
    saga settings (the undo step's definition, whether the undo takes ``result=``, the
    activity's signature to bind arguments for the undo, ``final`` / ``idempotent``), and
    ``crash_limit``: its retry policy was given explicitly, so attempts cut off by a crash count
    toward ``max_attempts`` (without one, an interrupted activity is simply run again)."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    retry: RetryPolicy = NO_RETRY
    timeout: float | None = None
    compensate: Callable[..., Any] | None = None
    undo: ActivityDefinition | None = None
    undo_wants_result: bool = False
    signature: inspect.Signature | None = None
    final: bool = False
    idempotent: bool = False
    crash_limit: bool = False


_lock = threading.Lock()
_workflows: dict[str, WorkflowDefinition] = {}


def _origin(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def register_workflow(defn: WorkflowDefinition) -> None:
    """Make ``defn`` findable by name.

    Re-registering the same function origin (a module reloaded, a function defined in a loop or
    a test) replaces the entry. Two different functions claiming one name is an error.

    Raises:
        ValueError: ``defn.name`` is taken by a different function.
    """
    with _lock:
        existing = _workflows.get(defn.name)
        if existing is not None and _origin(existing.fn) != _origin(defn.fn):
            raise ValueError(
                f"workflow name {defn.name!r} is already used by {_origin(existing.fn)}; "
                f"{_origin(defn.fn)} needs another name: @workflow(name='...')"
            )
        _workflows[defn.name] = defn


def registered_workflows() -> dict[str, WorkflowDefinition]:
    """A copy of every workflow registered in this process, by name."""
    with _lock:
        return dict(_workflows)


def lookup_workflow(name: str) -> WorkflowDefinition | None:
    """The workflow registered under ``name`` in this process, if any."""
    return _workflows.get(name)
