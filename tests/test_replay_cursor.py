"""The replay cursor on plain lists of step records: no store, no event loop."""

from __future__ import annotations

import pytest

from durable import NonDeterminismError
from durable._engine._replay import ReplayCursor, ReplayEnd
from durable._types import StepKind, StepStatus
from durable.store import StepRecord


def step(
    seq: int, kind: StepKind, name: str, status: StepStatus = StepStatus.COMPLETED
) -> StepRecord:
    return StepRecord(
        run_id="r",
        seq=seq,
        kind=kind,
        name=name,
        status=status,
        attempts=1,
        started_at=1.0,
        finished_at=2.0,
        result=b"x",
        location=f"flow.py:{seq}",
    )


def cursor(*steps: StepRecord, started: str = "v1", now: str = "v1", **kw: bool) -> ReplayCursor:
    return ReplayCursor("r", steps, started_version=started, current_version=now, **kw)


def test_calls_are_numbered_and_matched_with_their_records() -> None:
    first = step(1, StepKind.ACTIVITY, "charge")
    c = cursor(first)
    assert c.next(StepKind.ACTIVITY, "charge", "flow.py:1") == (1, first)
    assert c.next(StepKind.TIMER, "sleep", "flow.py:2") == (2, None)
    assert c.seq == 2


def test_another_call_where_the_history_has_one_is_nondeterminism() -> None:
    c = cursor(step(1, StepKind.ACTIVITY, "charge"), started="v1", now="v2")
    with pytest.raises(NonDeterminismError) as info:
        c.next(StepKind.ACTIVITY, "refund", "flow.py:9")
    message = str(info.value)
    assert "'charge'" in message and "'refund'" in message and "step 1" in message
    assert "v1" in message and "v2" in message


def test_an_unreported_start_may_be_replaced_by_another_replaceable_call() -> None:
    c = cursor(step(1, StepKind.ACTIVITY, "old", StepStatus.STARTED))
    assert c.next(StepKind.SIGNAL_SEND, "approve", None) == (1, None)
    assert c.overwrite == {1}
    c = cursor(step(1, StepKind.ACTIVITY, "old", StepStatus.STARTED))
    with pytest.raises(NonDeterminismError):
        c.next(StepKind.TIMER, "sleep", None)  # a timer may not take an activity's place


def test_a_replay_only_cursor_ends_where_it_would_execute() -> None:
    c = cursor(step(1, StepKind.ACTIVITY, "a"), replay_only=True)
    c.next(StepKind.ACTIVITY, "a", None)
    assert c.next(StepKind.TIMER, "sleep", None) == (2, None)  # waits are not executions
    with pytest.raises(ReplayEnd):
        c.next(StepKind.ACTIVITY, "b", None)


def test_patch_markers() -> None:
    marker = step(1, StepKind.PATCH, "fix-1")
    c = cursor(marker)
    assert c.patched("fix-1", deprecated=False) == (True, None) and c.seq == 1
    c = cursor(step(1, StepKind.ACTIVITY, "a"))
    assert c.patched("fix-1", deprecated=False) == (False, None) and c.seq == 0
    assert cursor().patched("fix-1", deprecated=False) == (True, 1)
    assert cursor(started="v1", now="v2").patched("fix-1", deprecated=False) == (False, None)
    assert cursor(started="v1", now="v2").patched("fix-1", deprecated=True) == (True, None)


def test_history_left_unreplayed() -> None:
    c = cursor(step(1, StepKind.ACTIVITY, "a"), step(2, StepKind.COMPENSATION, "undo"))
    c.next(StepKind.ACTIVITY, "a", None)
    assert c.unreached(compensations_expected=True) is None
    unreached = c.unreached()
    assert unreached is not None and unreached.seq == 2
    error = c.diverged("return from the workflow")
    assert error.seq == 2 and "return from the workflow" in str(error)
