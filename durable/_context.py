"""The run context: what workflow code may ask of the engine that executes it.

The public functions (`durable.sleep`, `durable.now`, the decorators...) never import the engine;
they read the `RunContext` that the engine put in a `ContextVar` and delegate to it. A
`ContextVar` follows the workflow into the tasks it spawns (``asyncio.gather``, task groups), so
concurrent branches share their run's context.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, Protocol
from uuid import UUID

from durable._errors import NotInWorkflowError
from durable._types import Info

if TYPE_CHECKING:
    from durable._registry import ActivityDefinition, WorkflowDefinition

__all__ = [
    "RunContext",
    "StreamWriter",
    "activity_info",
    "activity_writer",
    "current",
    "current_or_none",
    "in_workflow",
]


class RunContext(Protocol):
    """Implemented by the engine for the run it executes."""

    def call_activity(
        self,
        defn: ActivityDefinition,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        location: str | None,
        instance: Any = None,
    ) -> Awaitable[Any]:
        """Number the call as the next step now; the awaitable replays or executes it.
        ``instance`` is the object of a bound activity method (its undo receives it)."""
        ...

    def saga(self) -> AbstractAsyncContextManager[None]:
        """A block whose compensable activities are undone if the block raises."""
        ...

    def call_workflow(
        self,
        defn: WorkflowDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        location: str | None,
        child_id: str | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Number the call as the next step now; the coroutine runs it as a child run (whose
        deadline is ``timeout`` seconds away, or the calling run's, whichever comes first)."""
        ...

    def send_signal(
        self,
        run_id: str,
        name: str,
        payload: Any,
        idempotency_key: str | None,
        location: str | None,
    ) -> Awaitable[None]:
        """Number the send as the next step now; the awaitable sends it once."""
        ...

    def sleep(self, seconds: float, location: str | None) -> Awaitable[None]:
        """Number the timer step now; the awaitable records its due time and waits."""
        ...

    def wait_signal(self, name: str, timeout: float | None, location: str | None) -> Awaitable[Any]:
        """Number the wait now; the awaitable returns the next signal's payload."""
        ...

    def wait_first(
        self, awaitables: Sequence[Awaitable[Any]], location: str | None
    ) -> Awaitable[tuple[int, Any]]:
        """Number the ``first`` step now; the awaitable returns the index and outcome of the
        first of ``awaitables`` (steps of this run) to finish."""
        ...

    def now(self, location: str | None) -> datetime:
        """The recorded current time (UTC)."""
        ...

    def uuid4(self, location: str | None) -> UUID:
        """A recorded random UUID."""
        ...

    def random(self, location: str | None) -> float:
        """A recorded random float in [0, 1)."""
        ...

    def info(self) -> Info:
        """Where the workflow code is."""
        ...

    def patched(self, change_id: str, location: str | None, *, deprecated: bool = False) -> bool:
        """Whether this run takes the new code path of ``change_id`` (see `durable.patched`)."""
        ...

    def set_event(self, key: str, value: Any, location: str | None) -> Awaitable[None]:
        """Number the step now; the awaitable records it and sets the event."""
        ...

    def stream_write(self, key: str, value: Any, location: str | None) -> Awaitable[None]:
        """Number the step now; the awaitable records it and appends to the stream."""
        ...

    def stream_close(self, key: str, location: str | None) -> Awaitable[None]:
        """Number the step now; the awaitable records it and closes the stream."""
        ...

    def continue_as_new(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], location: str | None
    ) -> NoReturn:
        """End this generation of the run and start the next with these arguments (see
        `durable.continue_as_new`): unwinds the workflow."""
        ...


class StreamWriter(Protocol):
    """Implemented by the engine for the activity attempts of the run it executes."""

    async def write_from_activity(self, info: Info, key: str, value: Any) -> None:
        """Append ``value`` to stream ``key`` from the attempt ``info`` (withdrawn if it
        fails)."""
        ...


_current: ContextVar[RunContext | None] = ContextVar("durable_run_context", default=None)
_activity: ContextVar[Info | None] = ContextVar("durable_activity_info", default=None)
_writer: ContextVar[StreamWriter | None] = ContextVar("durable_stream_writer", default=None)


def current_or_none() -> RunContext | None:
    """The context of the run executing this code, or ``None`` outside workflow code."""
    return _current.get()


def current(call: str) -> RunContext:
    """The context of the run executing this code.

    Raises:
        NotInWorkflowError: outside workflow code; the message names ``call``.
    """
    ctx = _current.get()
    if ctx is None:
        in_activity = _activity.get() is not None
        where = "inside an activity" if in_activity else "outside any run"
        raise NotInWorkflowError(
            f"durable.{call}() was called {where}; it records a step, so it may only be called "
            "from the body of a @durable.workflow that is being run (durable.run / execute / "
            "start), not from an activity or plain code",
            call=call,
            in_activity=in_activity,
        )
    return ctx


def in_workflow() -> bool:
    """True when called from workflow code that a run is executing (not from an activity)."""
    return _current.get() is not None


def activity_info() -> Info | None:
    """The `Info` of the activity attempt executing this code, or ``None``."""
    return _activity.get()


def enter_run(ctx: RunContext | None) -> Any:
    """Make ``ctx`` current; returns the token for `leave_run`."""
    return _current.set(ctx)


def leave_run(token: Any) -> None:
    """Undo `enter_run`."""
    _current.reset(token)


def activity_writer() -> tuple[Info, StreamWriter] | None:
    """The activity attempt executing this code and its run's stream writer, or ``None``."""
    info, writer = _activity.get(), _writer.get()
    if info is None or writer is None:
        return None
    return info, writer


def enter_activity(info: Info, writer: StreamWriter | None = None) -> tuple[Any, Any, Any]:
    """Mark the current task as running an activity attempt (no run context inside it) whose
    stream writes go to ``writer``."""
    return _current.set(None), _activity.set(info), _writer.set(writer)


def leave_activity(tokens: tuple[Any, Any, Any]) -> None:
    """Undo `enter_activity`."""
    _writer.reset(tokens[2])
    _activity.reset(tokens[1])
    _current.reset(tokens[0])
