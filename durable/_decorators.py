"""``@workflow`` and ``@activity``: transparent wrappers that hand calls to the current run.

Outside a run a decorated function behaves exactly like the undecorated one (same result, same
signature, same ``inspect`` answers, works on methods), so decorating existing code breaks no
caller. Inside a run, calling an activity or a workflow returns an awaitable that the run's
engine replays or executes as one step; the step number is taken at the moment of the call, so
steps started together (``asyncio.gather``, ``start_soon``) are numbered in the order written.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, SupportsIndex, TypeVar, overload

import wrapt

from durable import _context
from durable._codec import DEFAULT_CODEC, Codec
from durable._registry import ActivityDefinition, WorkflowDefinition, register_workflow
from durable._retry import NO_RETRY, RetryPolicy
from durable._saga import undo_definition

__all__ = ["activity", "caller_location", "definition_of", "with_instance", "workflow"]

P = ParamSpec("P")
R = TypeVar("R")

_HERE = os.path.dirname(os.path.abspath(__file__))
_SKIP = (_HERE, os.path.dirname(os.path.abspath(wrapt.__file__)))


def caller_location() -> str | None:
    """``"file:line"`` of the first frame outside `durable` and `wrapt`: the user's call site."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_SKIP):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return None
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


class _Durable(wrapt.FunctionWrapper[Any, Any]):
    """A wrapt proxy that also carries the definition (``_self_`` attributes stay on the proxy)."""

    def __init__(self, wrapped: Callable[..., Any], wrapper: Any, defn: Any) -> None:
        super().__init__(wrapped, wrapper)
        self._self_durable_definition = defn

    def __reduce_ex__(self, protocol: SupportsIndex) -> str | tuple[Any, ...]:
        # By reference when importable (like a plain function), so unpickling a class that
        # holds decorated methods never swaps them for undecorated ones; else by value.
        qualname: str = self.__qualname__
        module = sys.modules.get(self.__module__)
        target: Any = module
        for part in qualname.split("."):
            target = getattr(target, part, None)
        if target is self:
            return qualname
        return (_Durable, (self.__wrapped__, self._self_wrapper, self._self_durable_definition))


def definition_of(obj: object) -> WorkflowDefinition | ActivityDefinition | None:
    """The definition behind a decorated function (or a bound method of one), else ``None``."""
    defn = getattr(obj, "_self_durable_definition", None)
    if defn is None:
        parent = getattr(obj, "_self_parent", None)
        defn = getattr(parent, "_self_durable_definition", None)
    if isinstance(defn, WorkflowDefinition | ActivityDefinition):
        return defn
    return None


def _default_name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def source_version(fn: Callable[..., Any]) -> str | None:
    """A short hash of ``fn``'s source code, or ``None`` when the source is not available."""
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return None
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def _check_name(name: str | None, decorator: str) -> None:
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"@{decorator}(name=...) must be a non-empty string, not {name!r}")


DEFAULT_MAX_RECOVERIES = 20
"""How often a run may be taken over from a dead executor before it is ended ``failed``."""


@overload
def workflow(fn: Callable[P, Coroutine[Any, Any, R]], /) -> Callable[P, Coroutine[Any, Any, R]]: ...


@overload
def workflow(
    *,
    name: str | None = None,
    codec: Codec | None = None,
    version: str | None = None,
    max_recoveries: int | None = DEFAULT_MAX_RECOVERIES,
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]: ...


def workflow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    codec: Codec | None = None,
    version: str | None = None,
    max_recoveries: int | None = DEFAULT_MAX_RECOVERIES,
) -> Any:
    """Declare an ``async def`` as a durable workflow.

    Args:
        fn: the workflow function (when used as ``@workflow`` without parentheses).
        name: the name recorded with its runs; defaults to ``"module.qualname"``. Keep it
            stable: runs are matched to code by this name.
        codec: how its arguments, results and steps are encoded; defaults to cloudpickle.
        version: the code version recorded with each run it starts (``handle`` and
            `durable.NonDeterminismError` show it); defaults to a hash of the function's
            source. A run started under another version takes the old path at every
            `durable.patched` it reaches.
        max_recoveries: how many times a run may be taken over from an executor that died
            (or stalled past its lease) while running it; one more and the run ends
            ``failed`` with `durable.RecoveryLimitExceeded` instead of crashing the next
            worker too. ``None``: no limit. Graceful stops and parks do not count.

    Outside a run, calling the workflow just runs the function. Inside a run, calling it starts a
    child run (id ``"<parent id>/<step>"``) whose result or error becomes one step of the parent.

    Raises:
        TypeError: the function is not ``async def``.
        ValueError: ``max_recoveries`` is not an int >= 0 or ``None``.
    """
    _check_name(name, "workflow")
    if max_recoveries is not None and (
        not isinstance(max_recoveries, int)
        or isinstance(max_recoveries, bool)
        or max_recoveries < 0
    ):
        raise ValueError(
            f"@workflow(max_recoveries=...) must be an int >= 0 or None, not {max_recoveries!r}"
        )

    def decorate(f: Callable[..., Any]) -> Any:
        if not inspect.iscoroutinefunction(f):
            raise TypeError(
                f"@workflow needs an 'async def' function, but {_default_name(f)} is not one; "
                "declare it 'async def' (blocking work belongs in an @activity)"
            )
        defn = WorkflowDefinition(
            name or _default_name(f),
            f,
            codec or DEFAULT_CODEC,
            version or source_version(f),
            max_recoveries,
        )
        register_workflow(defn)

        def call(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            ctx = _context.current_or_none()
            if ctx is None:
                return wrapped(*args, **kwargs)
            if instance is not None:
                args = (instance, *args)
            return ctx.call_workflow(defn, args, kwargs, caller_location())

        return _Durable(f, call, defn)

    return decorate if fn is None else decorate(fn)


@overload
def activity(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def activity(
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    compensate: Callable[..., Any] | None = None,
    compensate_retry: RetryPolicy | None = None,
    final: bool = False,
    idempotent: bool = False,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def activity(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    compensate: Callable[..., Any] | None = None,
    compensate_retry: RetryPolicy | None = None,
    final: bool = False,
    idempotent: bool = False,
) -> Any:
    """Declare a function as an activity: a side effect whose result is recorded once.

    Args:
        fn: the activity (``async def``, or a plain ``def`` that runs in a worker thread).
        name: the name recorded in history; defaults to ``"module.qualname"``.
        retry: how failed attempts are retried; without it the activity is attempted once
            (and run again if a crash cuts that attempt off). With it, attempts cut off by a
            crash count toward ``max_attempts`` too: the step then fails with
            `durable.ActivityInterrupted` rather than kill process after process.
        timeout: seconds an attempt may take; a slower attempt is cancelled and fails with
            `durable.ActivityTimeout` (a plain ``def`` activity's thread is abandoned, not
            stopped).
        compensate: the undo to run if the workflow (or the `durable.saga` block) that called
            the activity fails later: called with the activity's own arguments, plus
            ``result=`` (the activity's return value) if it declares a keyword-only ``result``.
            A plain function, ``async def`` or another ``@activity``. Its signature is checked
            now.
        compensate_retry: how a failing undo is retried (default: the undo activity's own
            policy, else 5 attempts with backoff, about 7.5 s).
        final: the activity cannot be undone (a sent e-mail, a shipped parcel): it may not
            have ``compensate``; its intent is recorded before it runs, and if a crash leaves
            the intent without an outcome, the resumed run raises `durable.OutcomeUnknown` into
            the workflow instead of running it again.
        idempotent: with ``final=True``: after such a crash, run it again (with the same
            idempotency key) instead of raising `durable.OutcomeUnknown`.

    Outside a run, calling the activity just runs it. Inside a run the call returns an
    awaitable (also for a plain ``def``): ``await charge(order)``.

    Raises:
        TypeError / ValueError: an argument has the wrong type or range.
    """
    _check_name(name, "activity")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError(f"@activity(retry=...) must be a durable.RetryPolicy, not {retry!r}")
    if timeout is not None and (
        not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0
    ):
        raise ValueError(f"@activity(timeout=...) must be a number of seconds > 0, not {timeout!r}")
    if compensate is not None and not callable(compensate):
        raise TypeError(f"@activity(compensate=...) must be callable, not {compensate!r}")
    if compensate_retry is not None and not isinstance(compensate_retry, RetryPolicy):
        raise TypeError(
            "@activity(compensate_retry=...) must be a durable.RetryPolicy, "
            f"not {compensate_retry!r}"
        )
    if final and compensate is not None:
        raise TypeError(
            f"@activity(final=True, compensate={getattr(compensate, '__qualname__', compensate)})"
            ": final marks an activity that cannot be undone, so it cannot have an undo; drop "
            "one of them"
        )
    if idempotent and not final:
        raise ValueError(
            "@activity(idempotent=True) only applies together with final=True (it says whether "
            "a final activity interrupted by a crash may run again)"
        )

    def decorate(f: Callable[..., Any]) -> Any:
        if not callable(f):
            raise TypeError(f"@activity needs a function, not {f!r}")
        if definition_of(f) is not None:
            raise TypeError(f"{_default_name(f)} is already decorated with @workflow/@activity")
        activity_name = name or _default_name(f)
        undo: ActivityDefinition | None = None
        wants_result = False
        if compensate is not None:
            undo_own = definition_of(compensate)
            if isinstance(undo_own, WorkflowDefinition):
                raise TypeError(
                    f"@activity(compensate={undo_own.name!r}) on {activity_name!r}: an undo "
                    "must be a function or an @activity, not a @workflow"
                )
            undo, wants_result = undo_definition(
                f, activity_name, compensate, undo_own, compensate_retry
            )
        defn = ActivityDefinition(
            name=activity_name,
            fn=f,
            is_async=inspect.iscoroutinefunction(f),
            retry=retry or NO_RETRY,
            crash_limit=retry is not None,
            timeout=float(timeout) if timeout is not None else None,
            compensate=compensate,
            undo=undo,
            undo_wants_result=wants_result,
            signature=inspect.signature(f) if undo is not None else None,
            final=final,
            idempotent=idempotent,
        )

        def call(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            ctx = _context.current_or_none()
            if ctx is None:
                return wrapped(*args, **kwargs)
            return ctx.call_activity(defn, wrapped, args, kwargs, caller_location(), instance)

        return _Durable(f, call, defn)

    return decorate if fn is None else decorate(fn)


def with_instance(workflow: object, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """A workflow method bound to an instance runs with that instance as its first argument."""
    instance = getattr(workflow, "_self_instance", None)
    return args if instance is None else (instance, *args)
