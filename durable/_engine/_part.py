"""`Part`: what every operation of the engine (activities, other runs, waits) works with."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import Engine

__all__ = ["Part"]


class Part:
    """The engine's state objects one operation uses: the run, its journal (the only
    writer), its replay cursor, its cancellation, what is in flight, and its clock."""

    def __init__(self, engine: Engine) -> None:
        """A part of ``engine``."""
        self._e = engine
        self._journal = engine.journal
        self._cursor = engine.cursor
        self._cancel = engine.cancellation
        self._flight = engine.flight
        self._clock = engine.clock
        self._run = engine.run_record
