"""`SQLStore`'s waiting: for work (a run of the worker's workflows may have become runnable)
and for writes to given runs. This process's writes ring the store's doorbell at once; other
processes' writes reach the runner (Postgres: ``NOTIFY``; SQLite: its data version, looked at
every 50 ms by one waiting task at a time)."""

from __future__ import annotations

from collections.abc import Collection

from ._doorbell import Doorbell
from ._sql_calls import Calls, Runner

__all__ = ["Waits"]


class Waits:
    """Waiting for one store's writes."""

    def __init__(self, calls: Calls, runner: Runner, doorbell: Doorbell) -> None:
        self._calls = calls
        self._runner = runner
        self._doorbell = doorbell

    async def wait_for_work(self, within: float) -> None:
        """Return at the next write that may make a run runnable, or after ``within``."""
        if within <= 0:
            return
        event = self._doorbell.work()
        try:
            await self._runner.wait(event, within)
        finally:
            self._doorbell.forget(event)

    async def watch(self, run_ids: Collection[str], within: float) -> bool:
        """Wait for a write to one of ``run_ids``; whether one came within ``within``."""
        self._calls.check_open()
        event = self._doorbell.watcher(run_ids)
        try:
            return await self._runner.wait(event, within)
        finally:
            self._doorbell.forget(event)
