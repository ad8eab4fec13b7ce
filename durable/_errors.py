"""Every error `durable` raises, rooted at `DurableError`.

    DurableError
    ├── NotInWorkflowError        a workflow-only call made outside a run
    ├── NotAWorkflowError         (also TypeError) `run`/`start` given a non-@workflow
    ├── RunningLoopError          (also RuntimeError) `durable.run` called inside an event loop
    ├── WorkflowIdConflict        an id already recorded for another workflow, other arguments
    │                             or another parent
    ├── WorkflowNotFound          no run with that id
    ├── ScheduleNotFound          no schedule with that name
    ├── WorkflowFinished          a signal sent to a run that has finished
    ├── SignalTimeout             (also TimeoutError) `wait_signal` timed out
    ├── NonDeterminismError       replayed code diverged from the recorded history; run is blocked
    ├── LeaseLost                 another executor took the run over; stop touching it
    ├── ActivityError             stand-in for an activity exception that could not be serialised
    ├── ActivityTimeout           (also TimeoutError) an activity attempt ran past its timeout
    ├── SerializationError        a result or argument could not be encoded
    ├── PayloadDecodeError        a recorded payload could not be decoded
    ├── Cancelled                 the run was cancelled (raised into the workflow)
    │   └── WorkflowTimeout       (also TimeoutError) the run's deadline passed (``timeout=``)
    ├── CompensationFailed        undos still failed after their retries
    ├── OutcomeUnknown            a final activity's intent was recorded, but not its outcome
    ├── ActivityInterrupted       every attempt an activity had was cut off by a crash
    ├── RecoveryLimitExceeded     a run was taken over from dead executors too often
    └── StoreError                the store cannot be used as asked
        └── SchemaVersionError    the database was written by an unknown (newer) schema

Every error pickles and cloudpickles by its public name (``durable.X``) with its fields intact:
`DurableError.__reduce__` rebuilds the instance from its ``args`` and ``__dict__`` without calling
``__init__``, so subclasses may take any constructor signature.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ActionRefused",
    "ActivityError",
    "ActivityInterrupted",
    "ActivityTimeout",
    "Cancelled",
    "CodecNotAllowed",
    "CompensationFailed",
    "DurableError",
    "LeaseLost",
    "NonDeterminismError",
    "NotAWorkflowError",
    "NotInWorkflowError",
    "OutcomeUnknown",
    "PayloadDecodeError",
    "PoolTimeout",
    "RecoveryLimitExceeded",
    "RunningLoopError",
    "ScheduleNotFound",
    "SchemaVersionError",
    "SerializationError",
    "SignalTimeout",
    "StoreError",
    "WorkflowFinished",
    "WorkflowIdConflict",
    "WorkflowNotFound",
    "WorkflowTimeout",
]


class DurableError(Exception):
    """Base class of every error raised by `durable`."""

    @classmethod
    def _rebuild(cls, args: tuple[Any, ...], state: dict[str, Any]) -> DurableError:
        self = cls.__new__(cls)
        self.args = args
        self.__dict__.update(state)
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self)._rebuild, (self.args, dict(self.__dict__)))


class NotInWorkflowError(DurableError):
    """A call that only makes sense inside a running workflow was made outside one.

    Attributes:
        call: the `durable` function called (``"wait_signal"``), when known.
        in_activity: it was called from inside an activity (whose body is not workflow code).
    """

    def __init__(self, message: str, *, call: str | None = None, in_activity: bool = False) -> None:
        super().__init__(message)
        self.call = call
        self.in_activity = in_activity


class NotAWorkflowError(DurableError, TypeError):
    """`durable.run`, `execute` or `start` was given a callable that is not a ``@workflow``."""


class RunningLoopError(DurableError, RuntimeError):
    """`durable.run` was called from inside a running event loop; use ``await durable.execute``."""


class WorkflowIdConflict(DurableError):
    """The run id is already taken: recorded for a different workflow, with different
    arguments, or (for a child run) by a run that is not this parent's child.

    Attributes:
        run_id: the id that was asked for.
        recorded: the workflow name recorded under that id.
        requested: the workflow name that was asked for now.
        reason: the explanation when the workflow names match but the arguments or the
            parent differ (``None`` for a workflow mismatch).
    """

    def __init__(
        self, run_id: str, recorded: str, requested: str, reason: str | None = None
    ) -> None:
        super().__init__(
            reason
            or (
                f"run {run_id!r} is already recorded for workflow {recorded!r}, not "
                f"{requested!r}; a run id is an idempotency key for one workflow: choose "
                "another id for this call"
            )
        )
        self.run_id = run_id
        self.recorded = recorded
        self.requested = requested
        self.reason = reason


class WorkflowNotFound(DurableError):
    """No run is recorded under the given id.

    Attributes:
        run_id: the id that was looked up.
    """

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"no run {run_id!r} in this store; start it with durable.start(...) or "
            "durable.run(...), or check the id and the store URL"
        )
        self.run_id = run_id


class ScheduleNotFound(DurableError):
    """No schedule is stored under the given name (pausing, resuming, deleting or triggering
    it).

    Attributes:
        name: the schedule name that was looked up.
    """

    def __init__(self, name: str) -> None:
        super().__init__(
            f"no schedule {name!r} in this store; create it with durable.schedule(...), or "
            "check the name and the store URL (durable.list_schedules() lists them)"
        )
        self.name = name


class ActionRefused(DurableError):
    """An operation on a run (retry, fork, delete) does not apply to it as it is now; nothing
    was changed.

    Attributes:
        run_id: the run.
        action: what was asked (``"retry"``, ``"fork"``, ``"delete"``).
        status: the run's status when it was refused.
        reason: why, and what to do instead.
    """

    def __init__(self, run_id: str, action: str, status: str, reason: str) -> None:
        super().__init__(f"cannot {action} run {run_id!r} ({status}): {reason}")
        self.run_id = run_id
        self.action = action
        self.status = status
        self.reason = reason


class WorkflowFinished(DurableError):
    """A signal was sent to a run that has already finished; it was not recorded.

    Attributes:
        run_id: the run.
        status: its final status.
    """

    def __init__(self, run_id: str, status: str, signal: str) -> None:
        super().__init__(
            f"cannot signal {signal!r} to run {run_id!r}: it is {status} and waits for nothing "
            "any more; the signal was not recorded (start a new run to act on it)"
        )
        self.run_id = run_id
        self.status = status
        self.signal = signal


class SignalTimeout(DurableError, TimeoutError):
    """`durable.wait_signal` reached its timeout before the signal arrived.

    The deadline is recorded when the wait starts, so a resumed run does not restart it.

    Attributes:
        run_id: the run.
        seq: the step number of the wait.
        signal: the signal name.
        timeout: the timeout in seconds.
    """

    def __init__(self, run_id: str, seq: int, signal: str, timeout: float) -> None:
        super().__init__(
            f"run {run_id!r} waited {timeout:g} s for signal {signal!r} (step {seq}) and none "
            "came; catch durable.SignalTimeout to go on without it, or wait longer"
        )
        self.run_id = run_id
        self.seq = seq
        self.signal = signal
        self.timeout = timeout


class EventTimeout(DurableError, TimeoutError):
    """`WorkflowHandle.get_event` found no value for the event: none was set within its
    timeout, or the run finished without setting it.

    Attributes:
        run_id: the run.
        key: the event key.
        timeout: the seconds waited, or ``None`` (no timeout: the run finished without it).
        finished: the run had finished without setting the event.
    """

    def __init__(
        self, run_id: str, key: str, timeout: float | None, *, finished: bool = False
    ) -> None:
        if finished:
            reason = "finished without setting it"
        else:
            reason = f"did not set it within {timeout:g} s"
        super().__init__(
            f"run {run_id!r} {reason}: event {key!r} has no value (it is set by "
            "durable.set_event in the workflow); catch durable.EventTimeout to go on without "
            "it, or wait longer"
        )
        self.run_id = run_id
        self.key = key
        self.timeout = timeout
        self.finished = finished


class StreamClosed(DurableError):
    """A value was written to a stream the run had closed (`durable.stream_close`).

    Attributes:
        run_id: the run.
        key: the stream.
    """

    def __init__(self, run_id: str, key: str) -> None:
        super().__init__(
            f"run {run_id!r} closed its stream {key!r} (durable.stream_close) and cannot "
            "write to it again; write to another key, or close it only after the last write"
        )
        self.run_id = run_id
        self.key = key


class NonDeterminismError(DurableError):
    """Replaying a run made a different call than the one recorded at the same step.

    The run is not failed: it keeps its history, its status becomes ``blocked``, and running it
    again with code that makes the recorded calls resumes it.

    Attributes:
        run_id: the run whose history diverged.
        seq: the step number (from 1).
        recorded: ``"<kind> <name>"`` recorded at that step.
        called: ``"<kind> <name>"`` called now.
        started_version: the code version the run started under (``None``: unknown).
        current_version: the code version replaying it now.
    """

    def __init__(
        self,
        run_id: str,
        seq: int,
        recorded: str,
        recorded_at: str | None,
        called: str,
        called_at: str | None,
        *,
        started_version: str | None = None,
        current_version: str | None = None,
    ) -> None:
        if started_version is not None and started_version != current_version:
            versions = (
                f" The run started under code version {started_version!r}; this code is "
                f"version {current_version!r}."
            )
        else:
            versions = ""
        super().__init__(
            f"run {run_id!r} diverged from its history at step {seq}: it recorded {recorded} "
            f"(first called at {recorded_at or 'an unknown line'}), but the code now calls "
            f"{called} (at {called_at or 'an unknown line'}).{versions} Workflow code must "
            "make the same calls in the same order when it replays: put the change behind "
            '`if durable.patched("<change-id>"):` so that runs started before it keep the '
            "old path (or restore the code this run started with), then run the same id "
            "again: the run is blocked, not failed, and keeps its recorded steps."
        )
        self.run_id = run_id
        self.seq = seq
        self.recorded = recorded
        self.recorded_at = recorded_at
        self.called = called
        self.called_at = called_at
        self.started_version = started_version
        self.current_version = current_version


class LeaseLost(DurableError):
    """This executor's lease on the run was taken over; it must stop advancing the run.

    Attributes:
        run_id: the run whose lease was lost.
    """

    def __init__(self, run_id: str, detail: str = "") -> None:
        super().__init__(
            f"lost the lease on run {run_id!r}{': ' + detail if detail else ''}; another executor "
            "took it over (this one stalled past its lease), so this executor stops and writes "
            "nothing more for the run"
        )
        self.run_id = run_id


class ActivityError(DurableError):
    """Recorded stand-in for an activity exception that could not be serialised.

    The workflow sees this same error on the first run and on every replay.

    Attributes:
        type_name: qualified name of the original exception type.
        message: ``str()`` of the original exception.
        traceback: the original traceback, formatted as text.
    """

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback


class ActivityTimeout(DurableError, TimeoutError):
    """An activity attempt ran past its ``timeout`` and was cancelled. Counts as a failed attempt.

    Attributes:
        activity: the activity name.
        timeout: the timeout in seconds.
        run_id: the run, when known.
        seq: the step number, when known.
    """

    def __init__(
        self, activity: str, timeout: float, *, run_id: str | None = None, seq: int | None = None
    ) -> None:
        where = f" (run {run_id!r}, step {seq})" if run_id is not None else ""
        super().__init__(
            f"activity {activity!r} timed out after {timeout:g} s{where}; the attempt was "
            "cancelled and counts as failed: raise @activity(timeout=...) or retry it with "
            "@activity(retry=RetryPolicy(...))"
        )
        self.activity = activity
        self.timeout = timeout
        self.run_id = run_id
        self.seq = seq


class SerializationError(DurableError):
    """A value could not be encoded by the run's codec. Never retried.

    Attributes:
        what: what was being encoded (for example ``"result of activity 'app.charge'"``).
        type_name: the type of the value.
    """

    def __init__(self, what: str, type_name: str, reason: str) -> None:
        super().__init__(
            f"cannot encode the {what}: a {type_name} value is not serialisable ({reason}); "
            "return plain data (or make the type picklable / use a codec that supports it)"
        )
        self.what = what
        self.type_name = type_name
        self.reason = reason


class CodecNotAllowed(SerializationError):
    """The store does not allow the workflow's codec (``allowed_codecs=`` or
    ``DURABLE_ALLOWED_CODECS``): nothing of the run was written.

    Attributes:
        codec: the workflow's codec name.
        allowed: the codec names the store allows.
    """

    def __init__(self, what: str, codec: str, allowed: str) -> None:
        DurableError.__init__(
            self,
            f"cannot encode the {what}: the workflow's codec is {codec}, and the store allows "
            f"only {allowed} payloads (allowed_codecs); declare the workflow with a codec the "
            f"store allows, e.g. @workflow(codec=JSONCodec())",
        )
        self.what = what
        self.type_name = ""
        self.reason = f"codec {codec} is not allowed"
        self.codec = codec
        self.allowed = allowed


class PayloadDecodeError(DurableError):
    """A recorded payload could not be decoded (corrupt, or from a class that no longer exists).

    Attributes:
        run_id: the run that owns the payload.
        seq: the step number, or ``None`` for the run's own arguments / result.
        what: which payload (``"result"``, ``"error"``, ``"arguments"``).
    """

    def __init__(self, run_id: str, seq: int | None, what: str, reason: str) -> None:
        where = f"step {seq}" if seq is not None else "the run record"
        super().__init__(
            f"cannot decode the {what} of run {run_id!r} at {where}: {reason}. The row is left "
            "as it is; restore the code (classes) that wrote it, or repair the store row"
        )
        self.run_id = run_id
        self.seq = seq
        self.what = what
        self.reason = reason


class Cancelled(DurableError):
    """The run was cancelled (`WorkflowHandle.cancel`).

    Raised into the workflow at its next step boundary (at once if it is sleeping). If it
    propagates out of the workflow, the compensations of completed activities run and the run
    ends ``cancelled``; a workflow that catches it carries on.

    Attributes:
        run_id: the cancelled run.
    """

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"run {run_id!r} was cancelled; the compensations of its completed activities run "
            "unless the workflow catches this error"
        )
        self.run_id = run_id


class WorkflowTimeout(Cancelled, TimeoutError):
    """The run's deadline passed (``timeout=`` of `durable.run` / `execute` / `start`).

    Delivered exactly as a `Cancelled` is: raised into the workflow at its first step not yet
    recorded after the deadline (at once in a sleep or signal wait); unless the workflow
    catches it, the compensations of completed activities run and the run ends ``timed_out``.
    It is a `Cancelled`, so code that cleans up on a cancel cleans up on a timeout too, and a
    `TimeoutError`. The caller (`durable.run`, `execute`, ``handle.result()``) gets it.

    Attributes:
        run_id: the run that timed out.
        deadline: when it timed out (timezone-aware, UTC).
    """

    def __init__(self, run_id: str, deadline: datetime) -> None:
        at = deadline.astimezone(UTC)
        DurableError.__init__(
            self,
            f"run {run_id!r} timed out: its deadline {at:%Y-%m-%d %H:%M:%S}."
            f"{at.microsecond // 1000:03d} UTC passed; the compensations of its completed "
            "activities run unless the workflow catches this error (give it a longer timeout= "
            "to let it finish)",
        )
        self.run_id = run_id
        self.deadline = deadline


class CompensationFailed(DurableError):
    """Some undos still failed after their retries; the others ran.

    Attributes:
        run_id: the run.
        error: the error that started the compensation (``None`` for a rollback).
        undo_errors: every undo's final error, in the order the undos ran.
    """

    def __init__(
        self,
        run_id: str,
        error: BaseException | None,
        undo_errors: list[BaseException],
        undos: list[str] | None = None,
    ) -> None:
        names = undos or ["an undo"] * len(undo_errors)
        listed = [
            f"{n}: {type(e).__qualname__}: {e}" for n, e in zip(names, undo_errors, strict=False)
        ]
        first = "; ".join(listed[:3])
        more = f" (and {len(undo_errors) - 3} more)" if len(undo_errors) > 3 else ""
        cause = f" after {type(error).__qualname__}: {error}" if error is not None else ""
        super().__init__(
            f"run {run_id!r}: {len(undo_errors)} compensation(s) failed{cause}: {first}{more}. "
            "The other undos ran; repair what the failed ones left undone by hand (the run's "
            "history shows each failed compensation step and the step it undoes)"
        )
        self.run_id = run_id
        self.error = error
        self.undo_errors = list(undo_errors)
        self.undos = list(names)


class OutcomeUnknown(DurableError):
    """A ``final=True`` activity was started (its intent is recorded), but the process died
    before its outcome was recorded: it may or may not have taken effect.

    The workflow may catch it, ask the outside world (with ``idempotency_key``) and decide.

    Attributes:
        run_id: the run.
        seq: the activity's step number.
        activity: the activity name.
        idempotency_key: the key the interrupted attempt ran with.
    """

    def __init__(
        self, run_id: str, seq: int, activity: str, *, idempotency_key: str | None = None
    ) -> None:
        key = idempotency_key or f"{run_id}/{seq}"
        super().__init__(
            f"activity {activity!r} (run {run_id!r}, step {seq}) is final and was interrupted: "
            f"its outcome is unknown, so it is not run again. Check the outside world with "
            f"idempotency key {key} and decide in the workflow, or declare it "
            "@activity(final=True, idempotent=True) to have it re-run with the same key"
        )
        self.run_id = run_id
        self.seq = seq
        self.activity = activity
        self.idempotency_key = key


class ActivityInterrupted(DurableError):
    """Every attempt an activity's retry policy allows was started, and the last one never
    reported back: its executor died (or lost the run) in the middle of it. Crashed attempts
    count toward ``RetryPolicy.max_attempts`` so that an activity which kills its process is
    not retried forever.

    Attributes:
        run_id: the run.
        seq: the activity's step number.
        activity: the activity name.
        attempts: the attempts started, crashed ones included.
    """

    def __init__(self, run_id: str, seq: int, activity: str, attempts: int) -> None:
        super().__init__(
            f"activity {activity!r} (run {run_id!r}, step {seq}) was interrupted: its "
            f"executor died or lost the run during attempt {attempts}, and its RetryPolicy "
            f"allows {attempts} attempt(s) in all, so it is not started again. If the "
            "activity itself kills the process (memory, a native crash), fix it; otherwise "
            "raise RetryPolicy.max_attempts"
        )
        self.run_id = run_id
        self.seq = seq
        self.activity = activity
        self.attempts = attempts


class RecoveryLimitExceeded(DurableError):
    """A run was taken over from executors that died while holding it more often than its
    workflow's ``max_recoveries`` allows; it is ended ``failed`` instead of crashing the
    next worker too. Its history is kept.

    Attributes:
        run_id: the run.
        recoveries: how often it was taken over.
        limit: the workflow's ``max_recoveries``.
    """

    def __init__(self, run_id: str, recoveries: int, limit: int) -> None:
        super().__init__(
            f"run {run_id!r} was taken over from a dead executor {recoveries} times, more "
            f"than its workflow's max_recoveries={limit}: something in it keeps killing the "
            "process that runs it, so it is ended failed (no compensations ran; its history "
            "is kept). Find the crash in the workflow's code or activities; raise "
            "@workflow(max_recoveries=...) if the takeovers had other causes"
        )
        self.run_id = run_id
        self.recoveries = recoveries
        self.limit = limit


class StoreError(DurableError):
    """The store cannot be opened or used as asked (bad URL, not a durable database...)."""


class PoolTimeout(StoreError):
    """Every connection of the store's pool stayed busy for as long as a call may wait for one:
    the store serves more concurrent calls than it has connections. Raise
    ``SQLStore(pool_size=...)`` (and the server's ``max_connections``) or lower the worker's
    ``concurrency``."""


class SchemaVersionError(StoreError):
    """The database schema was written by a newer (or unknown) version of `durable`.

    Attributes:
        found: the schema version in the database.
        supported: the newest schema version this code understands.
    """

    def __init__(self, url: str, found: int, supported: int) -> None:
        super().__init__(
            f"the database {url!r} has durable schema version {found}, but this version of "
            f"durable understands up to {supported}; upgrade durable (or point at another "
            "database)"
        )
        self.url = url
        self.found = found
        self.supported = supported
