"""`Cancellation`: where a run's cancel request is delivered, decided once.

`cancel()` records a request; the executor passes it to the engine (`request`). The workflow
is told at one step: the first step *called* after the request that is not recorded yet, or a
wait in progress (a sleep, a signal wait). That step number is decided the moment a step claims
it, so two concurrent calls cannot both take the delivery, and it is then recorded in the run
(``cancelled_seq``) so every replay raises `Cancelled` at that same step. Steps that meet the
request after another step claimed it wait for that record (`delivered`).
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
    """

    __slots__ = ("_unrecorded", "at", "delivered", "requested")

    def __init__(self, *, requested: bool, delivered_at: int | None) -> None:
        """See the class docstring."""
        self.requested = requested
        self.at = delivered_at  # the step at which Cancelled is raised
        self._unrecorded = False  # `at` is decided but not committed yet
        self.delivered = anyio.Event()  # `at` is recorded in the run
        if delivered_at is not None:
            self.delivered.set()

    def request(self) -> None:
        """The run was asked to cancel."""
        self.requested = True

    @property
    def unclaimed(self) -> bool:
        """Requested, and no step has taken the delivery yet."""
        return self.requested and self.at is None

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
        if not self.requested or self.at not in (None, seq):
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
