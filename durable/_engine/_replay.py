"""`ReplayCursor`: where a run's replay stands in its recorded history. Pure: no I/O, no clock.

Every intercepted call takes the next step number. The cursor answers, for that number, what
the history recorded there (or nothing: the step is new), and says when today's call is not the
call recorded there (`NonDeterminismError`). It also decides the version markers of
`durable.patched` and finds history left unreplayed when the workflow ends.
"""

from __future__ import annotations

from collections.abc import Iterable

from durable._errors import NonDeterminismError
from durable._types import StepKind, StepStatus
from durable.store import StepRecord

__all__ = ["REPLACEABLE", "REPLAY_ONLY_STOPS", "ReplayCursor", "ReplayEnd"]

REPLACEABLE = frozenset({StepKind.ACTIVITY, StepKind.SIGNAL_SEND})
"""Kinds of step whose ``started`` row another call of these kinds may replace (see `next`)."""

REPLAY_ONLY_STOPS = frozenset(
    {
        StepKind.ACTIVITY,
        StepKind.CHILD,
        StepKind.COMPENSATION,
        StepKind.EVENT,
        StepKind.STREAM,
        StepKind.STREAM_CLOSE,
    }
)
"""Kinds of step a replay-only cursor refuses to execute (they reach the world, or readers):
the replay ends there."""


class ReplayEnd(BaseException):
    """A replay-only engine reached a step its history does not have: the replay is over."""


class ReplayCursor:
    """The recorded steps of one run and the number of the last step called.

    Args:
        run_id: the run, for error messages.
        steps: its recorded steps.
        started_version: the code version the run started under.
        current_version: the code version replaying it now.
        replay_only: end the replay (`ReplayEnd`) at the first activity, child or compensation
            step the history does not have, instead of executing it.
    """

    __slots__ = (
        "_current_version",
        "_recorded",
        "_replay_only",
        "_run_id",
        "_started_version",
        "overwrite",
        "seq",
    )

    def __init__(
        self,
        run_id: str,
        steps: Iterable[StepRecord],
        *,
        started_version: str | None,
        current_version: str | None,
        replay_only: bool = False,
    ) -> None:
        """See the class docstring."""
        self._run_id = run_id
        self._recorded = {step.seq: step for step in steps}
        self._started_version = started_version
        self._current_version = current_version
        self._replay_only = replay_only
        self.seq = 0
        self.overwrite: set[int] = set()  # steps whose started row belongs to another call

    def next(
        self, kind: StepKind, name: str, location: str | None
    ) -> tuple[int, StepRecord | None]:
        """Number the call now made, and return what is recorded at that number.

        A ``started`` row of an activity or signal send that never reported back may be
        replaced by a call of the other of those kinds (the workflow saw nothing of it, so
        code changed since may call something else there): then nothing is returned and the
        number joins `overwrite`.

        Raises:
            NonDeterminismError: the history records another call at this number.
            ReplayEnd: a replay-only cursor reached a step to execute.
        """
        self.seq += 1
        seq = self.seq
        recorded = self._recorded.get(seq)
        if (
            self._replay_only
            and (recorded is None or recorded.status == StepStatus.STARTED)
            and kind in REPLAY_ONLY_STOPS
        ):
            raise ReplayEnd(seq)
        if recorded is not None and (recorded.kind != kind or recorded.name != name):
            if recorded.status == StepStatus.STARTED and {recorded.kind, kind} <= REPLACEABLE:
                self.overwrite.add(seq)
                return seq, None
            raise self.nondeterminism(
                seq,
                f"{recorded.kind} {recorded.name!r}",
                recorded.location,
                f"{kind} {name!r}",
                location,
            )
        return seq, recorded

    def recorded(self, seq: int) -> StepRecord | None:
        """What the history has at step ``seq`` (``None``: nothing)."""
        return self._recorded.get(seq)

    def patched(self, change_id: str, *, deprecated: bool) -> tuple[bool, int | None]:
        """Decide `durable.patched(change_id)` here.

        Returns:
            ``(new path taken, step number of a marker to record now or None)``: the marker
            is consumed when the history has it here; recorded when the run reaches this point
            for the first time under the code version it started with (never when
            ``deprecated``); the old path is taken when the history has another step here or
            the run started under other code.
        """
        recorded = self._recorded.get(self.seq + 1)
        if recorded is not None:
            if recorded.kind == StepKind.PATCH and recorded.name == change_id:
                self.seq += 1
                return True, None
            return False, None
        if deprecated:
            return True, None
        if self._started_version != self._current_version:
            return False, None
        self.seq += 1
        return True, self.seq

    def unreached(self, *, compensations_expected: bool = False) -> StepRecord | None:
        """The first recorded step beyond the last one called, if the history goes further
        (compensation steps are expected there when the run is about to compensate)."""
        beyond = [seq for seq in self._recorded if seq > self.seq]
        if not beyond:
            return None
        first = self._recorded[min(beyond)]
        if compensations_expected and first.kind == StepKind.COMPENSATION:
            return None
        return first

    def diverged(self, called: str) -> NonDeterminismError:
        """The error for a workflow that did ``called`` where its history goes on."""
        step = self.unreached(compensations_expected=False)
        assert step is not None
        return self.nondeterminism(
            step.seq, f"{step.kind} {step.name!r}", step.location, called, None
        )

    def nondeterminism(
        self,
        seq: int,
        recorded: str,
        recorded_at: str | None,
        called: str,
        called_at: str | None,
    ) -> NonDeterminismError:
        """A `NonDeterminismError` at step ``seq`` of this run, naming both code versions."""
        return NonDeterminismError(
            self._run_id,
            seq,
            recorded,
            recorded_at,
            called,
            called_at,
            started_version=self._started_version,
            current_version=self._current_version,
        )
