"""`Doorbell`: wakes the tasks of this process that wait for work when a store write made a run
runnable (a new run, a signal, a cancel, a released lease)."""

from __future__ import annotations

import anyio

__all__ = ["Doorbell"]


class Doorbell:
    """Tasks `wait` on it; `ring` wakes every one of them. Use it from one event loop."""

    def __init__(self) -> None:
        self._waiting: list[anyio.Event] = []

    def ring(self) -> None:
        """Wake every task waiting now."""
        waiting, self._waiting = self._waiting, []
        for event in waiting:
            event.set()

    async def wait(self, within: float) -> bool:
        """Wait for the next `ring`, at most ``within`` seconds.

        Returns:
            Whether it rang.
        """
        if within <= 0:
            return False
        event = anyio.Event()
        self._waiting.append(event)
        try:
            with anyio.move_on_after(within):
                await event.wait()
            return event.is_set()
        finally:
            if event in self._waiting:
                self._waiting.remove(event)
