"""What a run shows while it runs: events (`set_event`) and streams (`stream_write`,
`stream_close`), called from workflow code (each a step) or, for `stream_write`, from inside an
activity (published at once; withdrawn if the attempt fails). Readers use `WorkflowHandle`'s
``get_event``, ``events`` and ``stream`` (`durable._streams`)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from durable import _context
from durable._decorators import caller_location
from durable._errors import NotInWorkflowError
from durable._names import check_name

__all__ = ["set_event", "stream_close", "stream_write"]


def _key(key: object, call: str) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"durable.{call}() needs a non-empty string key, not {key!r}")
    return check_name(key, f"durable.{call}(): the key")


def set_event(key: str, value: Any) -> Awaitable[None]:
    """Set the run's event ``key`` to ``value``: ``await durable.set_event("status", "paid")``.

    Readers in any process get the latest value with ``handle.get_event(key)`` (waiting until
    one is set) or all of them with ``handle.events()``. The call is a step, recorded in the
    same transaction that publishes the value: a replay of the run does not publish it again.
    The value is encoded with the workflow's codec.

    Raises:
        NotInWorkflowError: called outside workflow code (an activity included: return the
            value and set the event from the workflow).
        ValueError: the key is empty, too long or holds a control character.
    """
    key = _key(key, "set_event")
    return _context.current("set_event").set_event(key, value, caller_location())


def stream_write(key: str, value: Any) -> Awaitable[None]:
    """Append ``value`` to the run's stream ``key``: ``await durable.stream_write("output",
    token)``.

    From workflow code the write is a step, recorded with the value in one transaction: a
    replay writes nothing again. From inside an activity the value is published at once,
    tagged with the attempt; if the attempt fails (or is cut off by a crash, or cancelled), its
    values are withdrawn: a live reader gets a `durable.StreamRetry` marker naming them, and a
    reader of the finished run never sees them. So the stream of a finished run holds each
    value of the successful attempts once, in order.

    Raises:
        NotInWorkflowError: called outside a run (neither workflow code nor an activity).
        StreamClosed: the workflow closed the stream.
        ValueError: the key is empty, too long or holds a control character.
    """
    key = _key(key, "stream_write")
    ctx = _context.current_or_none()
    if ctx is not None:
        return ctx.stream_write(key, value, caller_location())
    attempt = _context.activity_writer()
    if attempt is None:
        raise NotInWorkflowError(
            "durable.stream_write() was called outside any run; it appends to the stream of "
            "the run executing it, so call it from a @durable.workflow or from an @activity "
            "that a run is executing"
        )
    info, writer = attempt
    return writer.write_from_activity(info, key, value)


def stream_close(key: str) -> Awaitable[None]:
    """Close the run's stream ``key``: readers stop after its last value. A later write to it
    raises `durable.StreamClosed`. A step, like a write from workflow code; streams that are
    never closed end for readers when the run finishes.

    Raises:
        NotInWorkflowError: called outside workflow code (an activity included: close the
            stream from the workflow once the activity returned).
        ValueError: the key is empty, too long or holds a control character.
    """
    key = _key(key, "stream_close")
    return _context.current("stream_close").stream_close(key, caller_location())
