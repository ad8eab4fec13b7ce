"""`Helpers`: the steps without side effects: `durable.now`, `uuid4`, `random` (a value made
once and recorded) and the version markers of `durable.patched`. They are buffered and written
with the run's next commit (`Journal.buffer`), always before the next activity starts."""

from __future__ import annotations

import random as _random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from durable._types import StepKind

if TYPE_CHECKING:
    from . import Engine

__all__ = ["Helpers"]


class Helpers:
    """The helper steps of one run."""

    def __init__(self, engine: Engine) -> None:
        """The helper steps of ``engine``'s run."""
        self._e = engine

    def _value(self, kind: StepKind, location: str | None, make: Callable[[], Any]) -> Any:
        seq, recorded = self._e.gate.step(kind, str(kind), location)
        if recorded is not None:
            return self._e.journal.replayed(recorded)
        value = make()
        what = f"value of {kind}() (run {self._e.run_record.id!r}, step {seq})"
        self._e.journal.buffer(
            seq, kind, str(kind), self._e.journal.payloads.dumps(value, what=what), location
        )
        return value

    def patched(self, change_id: str, location: str | None, *, deprecated: bool = False) -> bool:
        """True when the run takes the new path of ``change_id``: its history has the marker
        here (it took the new path before), or the run reaches this point for the first time
        and started under this very code version (the marker is recorded). False when the
        history has another step here (recorded before the change: nothing is consumed) or the
        run started under other code. ``deprecated``: only consume a marker, never record."""
        if self._e.fatal is not None:
            raise self._e.fatal
        taken, marker_seq = self._e.cursor.patched(change_id, deprecated=deprecated)
        if marker_seq is not None:
            marker = self._e.journal.payloads.dumps(True, what=f"marker of change {change_id!r}")
            self._e.journal.buffer(marker_seq, StepKind.PATCH, change_id, marker, location)
        return taken

    def now(self, location: str | None) -> datetime:
        """The current time (UTC), recorded."""
        return self._value(  # type: ignore[no-any-return]
            StepKind.NOW, location, lambda: datetime.fromtimestamp(self._e.clock.time(), UTC)
        )

    def uuid4(self, location: str | None) -> uuid.UUID:
        """A random UUID, recorded."""
        return self._value(StepKind.UUID4, location, uuid.uuid4)  # type: ignore[no-any-return]

    def random(self, location: str | None) -> float:
        """A random float in [0, 1), recorded."""
        return self._value(StepKind.RANDOM, location, _random.random)  # type: ignore[no-any-return]
