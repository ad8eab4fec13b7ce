"""`Doorbell`: wakes the tasks of this process that wait on a store.

Two kinds of waiter: workers waiting for work (any write that may make a run runnable: a new
run, a signal, a request, a released lease), and tasks watching particular runs (an executor
for a cancel or pause of its run, a signal wait, `result()`), woken only by writes to those
runs. A ring names the run written (or none: then every waiter wakes).
"""

from __future__ import annotations

from collections.abc import Iterable

import anyio

__all__ = ["PUBLISHED", "Doorbell"]

PUBLISHED = "\x1f"
"""The first character of a doorbell key that names a run's publications (events, streams):
ringing it wakes that key's watchers only (see `._rules.published_bell`)."""


class Doorbell:
    """Tasks wait on it; `ring` wakes them. Use it from one event loop."""

    def __init__(self) -> None:
        self._waiting: list[anyio.Event] = []  # waiting for work
        self._watching: dict[str, list[anyio.Event]] = {}  # watching runs, by run id
        self._watched: dict[anyio.Event, tuple[str, ...]] = {}  # the runs each event watches

    def ring(self, run_id: str | None = None) -> None:
        """Wake the tasks waiting for work, and those watching ``run_id`` (every watcher when
        ``run_id`` is ``None``). A key that starts with ``PUBLISHED`` (a run's publications,
        `._rules.published_bell`) wakes only its watchers: no run became runnable."""
        if run_id is not None and run_id.startswith(PUBLISHED):
            waiting: list[anyio.Event] = []
        else:
            waiting, self._waiting = self._waiting, []
        if run_id is None:
            waiting += self._watched
        else:
            waiting += self._watching.get(run_id, ())
        for event in waiting:
            event.set()
            if event in self._watched:
                self.forget(event)

    def add(self, event: anyio.Event) -> None:
        """Set ``event`` at the next ring (as a task waiting for work)."""
        self._waiting.append(event)

    def work(self) -> anyio.Event:
        """An event set by the next ring (pass it to `forget` when done with it)."""
        event = anyio.Event()
        self._waiting.append(event)
        return event

    def watcher(self, run_ids: Iterable[str]) -> anyio.Event:
        """An event set by the next ring for one of ``run_ids`` (or a ring for every run)."""
        event = anyio.Event()
        ids = tuple(dict.fromkeys(run_ids))
        self._watched[event] = ids
        for run_id in ids:
            self._watching.setdefault(run_id, []).append(event)
        return event

    def forget(self, event: anyio.Event) -> None:
        """Stop ringing ``event`` (it was set, or its waiter gave up)."""
        if event in self._waiting:
            self._waiting.remove(event)
        for run_id in self._watched.pop(event, ()):
            events = self._watching[run_id]
            events.remove(event)
            if not events:
                del self._watching[run_id]

    async def wait(self, within: float) -> bool:
        """Wait for the next ring, at most ``within`` seconds.

        Returns:
            Whether it rang.
        """
        return await self.wait_event(self.work(), within)

    async def watch(self, run_ids: Iterable[str], within: float) -> bool:
        """Wait for the next ring for one of ``run_ids``, at most ``within`` seconds.

        Returns:
            Whether it rang.
        """
        return await self.wait_event(self.watcher(run_ids), within)

    async def wait_event(self, event: anyio.Event, within: float) -> bool:
        """Wait for ``event`` (from `work` or `watcher`), at most ``within`` seconds, then
        forget it.

        Returns:
            Whether it was set.
        """
        try:
            if within > 0:
                with anyio.move_on_after(within):
                    await event.wait()
            return event.is_set()
        finally:
            self.forget(event)
