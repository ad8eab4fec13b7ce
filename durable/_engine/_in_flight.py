"""`InFlight`: what of a run is under way, so that it parks or pauses only when nothing is.

A run parks (is unwound and released while it waits long) or pauses only when no step it
called is still to be recorded and no commit is under way: otherwise the step's effect could
happen with nobody left to record it. A step counts from the moment it is *called* (its number
is taken then), not from when its task first runs, so a branch about to start is never missed.

It stops counting when its body ends, or when the awaitable the workflow got is dropped without
ever being awaited (a bug in workflow code, but one that must not keep the run from parking
forever): the ticket watches the coroutine with a weak reference, whose callback fires when
the coroutine object is freed.
"""

from __future__ import annotations

import weakref
from collections.abc import Coroutine
from typing import Any

import anyio

__all__ = ["InFlight", "Ticket"]


class Ticket:
    """One step counted in flight; `close` (idempotent) stops counting it."""

    __slots__ = ("_flight", "_key", "_open", "_watch")

    def __init__(self, flight: InFlight) -> None:
        self._flight = flight
        self._open = True
        self._watch: weakref.ref[Coroutine[Any, Any, Any]] | None = None
        self._key = 0

    def watch(self, body: Coroutine[Any, Any, Any]) -> None:
        """Stop counting when ``body`` is freed, if it never ran to its end (never awaited)."""
        self._watch = weakref.ref(body, self._freed)
        self._key = id(body)
        self._flight.watched[self._key] = self

    def _freed(self, _: object) -> None:
        self.close()

    def close(self) -> None:
        """The step is recorded (or failed, or was dropped): it no longer counts."""
        if self._open:
            self._open = False
            if self._watch is not None:
                self._flight.watched.pop(self._key, None)
                self._watch = None
            self._flight.leave()


class InFlight:
    """Counts the steps and commits of one run that are under way; `wait_idle` waits for none.

    Attributes:
        watched: the open tickets whose body is watched, by ``id`` of the body (see `drop`).
    """

    __slots__ = ("_count", "_idle", "watched")

    def __init__(self) -> None:
        self._count = 0
        self._idle: anyio.Event | None = None
        self.watched: dict[int, Ticket] = {}

    @property
    def busy(self) -> bool:
        """Whether anything is in flight."""
        return self._count > 0

    def ticket(self) -> Ticket:
        """Count a step from its call; the ticket is closed by its body (or when dropped)."""
        self._count += 1
        return Ticket(self)

    def drop(self, body: object) -> None:
        """``body`` (a step's coroutine) will never be awaited (`durable.wait_first` closed a
        loser it did not start): stop counting its step now rather than when it is freed."""
        ticket = self.watched.get(id(body))
        if ticket is not None and ticket._watch is not None and ticket._watch() is body:
            ticket.close()

    def enter(self) -> None:
        """Count something under way (a commit, a step that stops waiting)."""
        self._count += 1

    def leave(self) -> None:
        """It is done (or waits, and must not keep the run from parking)."""
        self._count -= 1
        if self._count == 0 and self._idle is not None:
            self._idle.set()
            self._idle = None

    async def wait_idle(self) -> None:
        """Return once nothing is in flight."""
        while self._count:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()
