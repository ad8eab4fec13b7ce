"""`Cancellation`: where a run's cancel request is delivered, decided once.

`cancel()` records a request; the executor passes it to the engine (`request`). The workflow
is told at one step: the first step *called* after the request that is not recorded yet, or a
wait in progress (a sleep, a signal wait). That step number is decided the moment a step claims
it, so two concurrent calls cannot both take the delivery, and it is then recorded in the run
(``cancelled_seq``) so every replay raises `Cancelled` at that same step. Steps that meet the
request after another step claimed it wait for that record (`delivered`).

A run's deadline (``timeout=``) is delivered the same way, as `WorkflowTimeout`: once the
clock passes it (`check_deadline`), the run is treated as asked to cancel. The reason needs no
column of its own: a delivered cancel (``cancelled_seq``) on a run that has a deadline and no
``cancel_requested`` is a timeout, so every replay raises `WorkflowTimeout` at that step too.
A cancel requested before the timeout is delivered wins (the run ends ``cancelled``).
"""

from __future__ import annotations

import anyio

from durable.store import StepRecord

__all__ = ["Cancellation"]


class Cancellation:
    """The cancel state of one run.

    Args:
        requested: the run's ``cancel_requested`` when the engine starts.
        delivered_at: the run's ``cancelled_seq``: the step where it was delivered before.
        deadline: the run's deadline (epoch seconds), or ``None``.
        armed: whether the deadline may still be delivered (not while a run whose failure is
            recorded replays it to finish compensating, nor during a rollback).
    """

    __slots__ = (
        "_armed",
        "_unrecorded",
        "at",
        "called_before",
        "deadline",
        "delivered",
        "requested",
        "timed_out",
    )

    def __init__(
        self,
        *,
        requested: bool,
        delivered_at: int | None,
        deadline: float | None = None,
        armed: bool = True,
    ) -> None:
        """See the class docstring."""
        self.deadline = deadline
        # A delivered cancel on a run with a deadline and no cancel request is its timeout.
        self.timed_out = delivered_at is not None and deadline is not None and not requested
        self.requested = requested or self.timed_out
        self.at = delivered_at  # the step at which Cancelled is raised
        self._armed = armed
        self._unrecorded = False  # `at` is decided but not committed yet
        self.delivered = anyio.Event()  # `at` is recorded in the run
        if delivered_at is not None:
            self.delivered.set()
        # The last step called when the delivery was raised: the other steps up to it that
        # have not started yet were called beside it (a gather's other branches, numbered
        # before or after it) and are about to be cancelled.
        self.called_before = 0

    def request(self) -> None:
        """The run was asked to cancel (a timeout not delivered yet becomes this cancel: the
        run records ``cancel_requested``)."""
        self.requested = True
        if not self.delivered.is_set():
            self.timed_out = False

    @property
    def open_deadline(self) -> float | None:
        """The deadline while it may still be delivered: armed, and no cancel (nor timeout)
        requested yet; else ``None`` (a wait need not wake for it)."""
        if not self._armed or self.requested or self.timed_out:
            return None
        return self.deadline

    def check_deadline(self, now: float) -> bool:
        """At ``now`` past the open deadline, the run is to time out: like a cancel request
        the store holds (see `timeout_pending`), its error `WorkflowTimeout`. Returns whether
        that happened now."""
        deadline = self.open_deadline
        if deadline is None or now < deadline:
            return False
        self.timed_out = True
        return True

    @property
    def timeout_pending(self) -> bool:
        """The deadline passed and its delivery is not recorded yet: as the store refuses a
        step while a cancel is pending, the gate stops every step that would start
        meanwhile, and a wait in progress takes the delivery."""
        return self.timed_out and not self.delivered.is_set()

    @property
    def unclaimed(self) -> bool:
        """Requested (or timed out), and no step has taken the delivery yet."""
        return (self.requested or self.timed_out) and self.at is None

    def claim_at_call(self, seq: int, recorded: StepRecord | None) -> bool:
        """Whether step ``seq``, now called, raises `Cancelled`: where it was delivered before
        (a replay), or the first step not yet recorded after the request."""
        if self.at is not None:
            return self.at == seq
        if self.requested and recorded is None:
            self._claim(seq)
            return True
        return False

    def claim_at_wait(self, seq: int) -> bool:
        """Whether the wait at step ``seq`` (in progress) takes the delivery."""
        if not (self.requested or self.timed_out) or self.at not in (None, seq):
            return False
        if self.at is None:
            self._claim(seq)
        return True

    def claim_refused(self, seq: int) -> None:
        """Step ``seq`` was refused by the store because a cancel is pending: it takes the
        delivery unless another step has."""
        self.requested = True
        if self.at is None:
            self._claim(seq)

    def beside_delivery(self, seq: int) -> bool:
        """Whether step ``seq``, about to start, was called beside the step that raised the
        delivery (before that was raised): its task group is about to cancel it."""
        return self.at is not None and seq != self.at and seq <= self.called_before

    @property
    def unrecorded(self) -> bool:
        """A step has taken the delivery and it is not recorded yet."""
        return self._unrecorded

    def to_record(self, seq: int | None) -> bool:
        """Whether the delivery at ``seq`` is to be recorded now (once: the caller records it
        and then sets `delivered`)."""
        if self._unrecorded and seq is not None and self.at == seq:
            self._unrecorded = False
            return True
        return False

    def _claim(self, seq: int) -> None:
        self.at = seq
        self._unrecorded = True
