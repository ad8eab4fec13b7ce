"""Small value types shared by the engine, the stores and the public API. No I/O here."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Info", "RunStatus", "Step", "StepKind", "StepStatus", "step_key", "utc"]


class RunStatus(enum.StrEnum):
    """Where a run is in its life. Stored as the lower-case string value."""

    PENDING = "pending"
    RUNNING = "running"
    SLEEPING = "sleeping"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPENSATING = "compensating"
    COMPENSATION_FAILED = "compensation_failed"
    COMPENSATED = "compensated"
    TIMED_OUT = "timed_out"
    BLOCKED = "blocked"
    PAUSED = "paused"

    @property
    def finished(self) -> bool:
        """True for statuses a run never leaves (its result or error is recorded)."""
        return self in _FINISHED


_FINISHED = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.COMPENSATION_FAILED,
        RunStatus.COMPENSATED,
        RunStatus.TIMED_OUT,
    }
)


class StepKind(enum.StrEnum):
    """What a recorded step was."""

    ACTIVITY = "activity"
    TIMER = "timer"
    SIGNAL = "signal"
    NOW = "now"
    UUID4 = "uuid4"
    RANDOM = "random"
    CHILD = "child"
    COMPENSATION = "compensation"
    PATCH = "patch"
    SIGNAL_SEND = "signal_send"
    FIRST = "first"
    EVENT = "event"
    STREAM = "stream"
    STREAM_CLOSE = "stream_close"


class StepStatus(enum.StrEnum):
    """How a recorded step ended. ``started``: an attempt (or a signal wait) began and its
    outcome is not recorded yet; ``attempts`` then counts the attempts started so far."""

    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Info:
    """What `durable.info()` returns: where the caller is in which run.

    Attributes:
        run_id: the run's id.
        workflow: the workflow's registered name.
        step: inside an activity, its step number; in workflow code, the number of the last
            step called so far (0 before the first).
        attempt: inside an activity, the attempt number (from 1); otherwise 0.
        idempotency_key: inside an activity, ``"<run id>/<step>"`` (from the second
            generation on ``"<run id>/g<generation>/<step>"``, see `step_key`): the same for
            every attempt and after a crash or takeover, so external calls can be
            de-duplicated with it. ``None`` in workflow code.
        generation: which generation of the run this is: 1, plus one for each
            ``durable.continue_as_new`` before it.
    """

    run_id: str
    workflow: str
    step: int
    attempt: int
    idempotency_key: str | None
    generation: int = 1


@dataclass(frozen=True, slots=True)
class Step:
    """One recorded step of a run, as `WorkflowHandle.history()` returns it.

    Attributes:
        seq: step number, from 1 in call order.
        kind: what the step was.
        name: the activity / workflow name, or the helper's name.
        status: completed or failed.
        attempts: attempts made (1 for steps that are not retried).
        started_at: when the (first attempt of the) step started, UTC.
        finished_at: when it was recorded, UTC.
        result: the decoded result (``None`` when failed).
        error: the decoded exception (``None`` when completed).
    """

    seq: int
    kind: StepKind
    name: str
    status: StepStatus
    attempts: int
    started_at: datetime
    finished_at: datetime
    result: object
    error: BaseException | None


def utc(seconds: float) -> datetime:
    """A stored time (seconds since the Unix epoch) as a timezone-aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)


def step_key(run_id: str, generation: int, seq: int) -> str:
    """The name of what step ``seq`` of a run's ``generation`` reaches outside the run: the
    default id of its child run, the idempotency key of its signal send or activity.

    ``"<run id>/<step>"`` in the first generation (as before generations existed), then
    ``"<run id>/g<generation>/<step>"``: a generation started by ``durable.continue_as_new``
    numbers its steps from 1 again, and must not find the runs and signals of an earlier
    generation's step of the same number.
    """
    return f"{run_id}/{seq}" if generation <= 1 else f"{run_id}/g{generation}/{seq}"
