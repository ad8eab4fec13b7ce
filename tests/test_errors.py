"""Every public error survives pickle and cloudpickle with its message and fields."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from typing import Any

import cloudpickle
import pytest

import durable

ERRORS: list[BaseException] = [
    durable.DurableError("plain"),
    durable.NotInWorkflowError("outside"),
    durable.NotInWorkflowError("in an activity", call="wait_signal", in_activity=True),
    durable.NotAWorkflowError("not a workflow"),
    durable.RunningLoopError("loop"),
    durable.WorkflowIdConflict("id-1", "a.wf", "b.wf"),
    durable.WorkflowNotFound("id-2"),
    durable.ScheduleNotFound("nightly"),
    durable.NonDeterminismError("id-3", 4, "activity 'a'", "x.py:1", "activity 'b'", "x.py:2"),
    durable.NonDeterminismError(
        "id-3",
        4,
        "timer 'sleep'",
        None,
        "activity 'b'",
        None,
        started_version="v1",
        current_version="v2",
    ),
    durable.LeaseLost("id-4", "token moved"),
    durable.ActivityError("pkg.Err", "boom", "Traceback ..."),
    durable.ActivityTimeout("pkg.act", 1.5),
    durable.SerializationError("result of activity 'a'", "Lock", "cannot pickle"),
    durable.PayloadDecodeError("id-5", 2, "result", "bad magic"),
    durable.CodecNotAllowed("arguments of run 'id-11'", "pickle", "json"),
    durable.StoreError("bad url"),
    durable.PoolTimeout("all 10 connections stayed busy"),
    durable.Cancelled("id-6"),
    durable.WorkflowTimeout("id-13", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
    durable.WorkflowFinished("id-9", "completed", "approve"),
    durable.SignalTimeout("id-10", 2, "approve", 30.0),
    durable.EventTimeout("id-14", "status", 5.0),
    durable.EventTimeout("id-14", "status", None, finished=True),
    durable.StreamClosed("id-15", "output"),
    durable.CompensationFailed("id-7", ValueError("first"), [KeyError("undo 1"), OSError("2")]),
    durable.OutcomeUnknown("id-8", 3, "mail.send"),
    durable.ActionRefused("id-12", "retry", "completed", "only a failed run can be retried"),
    durable.ActivityInterrupted("id-9", 2, "mail.send", 3),
    durable.RecoveryLimitExceeded("id-10", 21, 20),
    durable.SchemaVersionError("sqlite:///x.db", 9, 1),
]


def test_every_public_error_is_listed() -> None:
    public = {
        name
        for name in durable.__all__
        if isinstance(getattr(durable, name), type)
        and issubclass(getattr(durable, name), BaseException)
    }
    assert public == {type(e).__name__ for e in ERRORS}


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_round_trip(error: BaseException, dumps: Any) -> None:
    copy = pickle.loads(dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert repr(vars(copy)) == repr(vars(error))  # exceptions inside compare by repr
    assert type(error).__module__ == "durable"
    assert isinstance(copy, durable.DurableError)


def test_messages_name_the_run_and_the_fix() -> None:
    conflict = str(durable.WorkflowIdConflict("id-1", "a.wf", "b.wf"))
    assert "'id-1'" in conflict and "'a.wf'" in conflict and "another id" in conflict
    nd = str(
        durable.NonDeterminismError("r", 4, "activity 'a'", "x.py:1", "activity 'b'", "y.py:2")
    )
    assert all(part in nd for part in ("'r'", "step 4", "x.py:1", "y.py:2", "blocked"))
    assert isinstance(durable.ActivityTimeout("a", 1), TimeoutError)
    timeout = durable.WorkflowTimeout("r-9", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert isinstance(timeout, TimeoutError) and isinstance(timeout, durable.Cancelled)
    assert "'r-9'" in str(timeout) and "2030-01-02 03:04:05.000 UTC" in str(timeout)
