"""`VirtualClock`: time that passes only when a test moves it."""

from __future__ import annotations

import heapq
import itertools

import anyio
import anyio.lowlevel

__all__ = ["VirtualClock"]


class VirtualClock:
    """A `durable._clock.Clock` whose time moves only by `move_to`; `sleep` waits for that.

    Args:
        start: the initial time, seconds since the Unix epoch (UTC).
    """

    def __init__(self, start: float) -> None:
        self._now = float(start)
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()

    def time(self) -> float:
        """The virtual time, seconds since the Unix epoch."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been moved ``seconds`` past now."""
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        entry = (self._now + seconds, next(self._order), event)
        heapq.heappush(self._sleepers, entry)
        try:
            await event.wait()
        finally:
            if not event.is_set():
                self._sleepers.remove(entry)
                heapq.heapify(self._sleepers)

    def next_due(self) -> float | None:
        """When the earliest sleeper wakes, or ``None`` when nothing sleeps."""
        return self._sleepers[0][0] if self._sleepers else None

    def move_to(self, when: float) -> None:
        """Set the time to ``when`` and wake every sleeper due by then.

        Raises:
            ValueError: ``when`` is in the past (time never goes back).
        """
        if when < self._now:
            raise ValueError(f"the virtual clock cannot go back from {self._now} to {when}")
        self._now = float(when)
        while self._sleepers and self._sleepers[0][0] <= when:
            _, _, event = heapq.heappop(self._sleepers)
            event.set()
