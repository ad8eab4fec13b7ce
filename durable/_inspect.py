"""One run as an operator sees it: `RunView` (its `RunInfo`, decoded arguments and outcome, its
step timeline and its children), read by `inspect_run` for the CLI (``durable runs show``) and
the web view alike, and turned into plain JSON by `run_json` / `info_json`.

Payloads are decoded where this process can (the workflow's codec when it is registered here,
else any codec the store allows); a payload that cannot be decoded (a class this process cannot
import, a codec the store refuses, a bad signature) is shown as ``<not decoded: reason>``
instead of failing the whole view. Values are shown as bounded ``repr`` text: a view is for
reading, not a way to get the objects back (`WorkflowHandle.result` and `history` do that).
"""

from __future__ import annotations

import reprlib
import traceback
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from durable._codec import Payloads
from durable._errors import DurableError
from durable._recording import payloads_of
from durable._runs import RunInfo, run_info
from durable._types import RunStatus, StepKind, StepStatus, step_key, utc
from durable.store import RunQuery, RunRecord, StepRecord, Store

__all__ = ["RunView", "StepView", "info_json", "inspect_run", "run_json"]

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 2000
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = 50
_REPR.maxlevel = 6
MAX_CHILDREN = 1000
"""The most children a view lists (the rest are found with ``list_runs(parent=...)``)."""


@dataclass(frozen=True, slots=True)
class StepView:
    """One recorded step, for reading.

    Attributes:
        seq: the step number, from 1.
        kind: what the step was.
        name: the activity / workflow name, or the helper's name.
        status: completed, failed, or started (in progress, or cut off by a crash).
        attempts: attempts started.
        started_at: when its first attempt started (UTC).
        finished_at: when its outcome was recorded (UTC); ``None`` while it is started.
        result: the decoded result as text (completed steps).
        error: the decoded error with its traceback (failed steps).
        child_id: for a child workflow step, the child run's id when it is known.
    """

    seq: int
    kind: StepKind
    name: str
    status: StepStatus
    attempts: int
    started_at: datetime
    finished_at: datetime | None
    result: str | None
    error: str | None
    child_id: str | None

    @property
    def duration(self) -> float | None:
        """Seconds from start to outcome, or ``None`` while started."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class RunView:
    """A run with everything an operator reads about it.

    Attributes:
        info: the run's `RunInfo`.
        args: its decoded ``(args, kwargs)`` as text.
        result: its decoded result as text, once completed.
        steps: its recorded steps, in step order.
        children: its child runs, oldest first.
    """

    info: RunInfo
    args: str
    result: str | None
    steps: list[StepView]
    children: list[RunInfo]


async def inspect_run(store: Store, run_id: str) -> RunView | None:
    """Read run ``run_id`` with its steps and children, or ``None`` when there is no such run."""
    run = await store.get_run(run_id)
    if run is None:
        return None
    steps = await store.load_steps(run_id)
    children = await store.find_runs(RunQuery(parent_id=run_id, limit=MAX_CHILDREN))
    children.reverse()
    payloads = payloads_of(store, run.workflow)
    child_ids = {child.id for child in children}
    return RunView(
        info=run_info(store, run),
        args=_args_text(payloads, run),
        result=_result_text(payloads, run),
        steps=[_step_view(payloads, step, child_ids, run.generation) for step in steps],
        children=[run_info(store, child) for child in children],
    )


def _decoded(
    payloads: Payloads, data: bytes | None, run_id: str, seq: int | None, what: str
) -> Any:
    try:
        return payloads.loads(data or b"", run_id=run_id, seq=seq, what=what)
    except DurableError as exc:
        return _Undecoded(str(exc))


class _Undecoded:
    """A payload this process could not decode; shown as its reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<not decoded: {self.reason}>"


def _text(value: Any) -> str:
    if isinstance(value, _Undecoded):
        return repr(value)
    if isinstance(value, BaseException):
        return "".join(traceback.format_exception(value)).rstrip()
    return _REPR.repr(value)


def _args_text(payloads: Payloads, run: RunRecord) -> str:
    value = _decoded(payloads, run.args, run.id, None, "arguments")
    if isinstance(value, tuple) and len(value) == 2:
        args, kwargs = value
        if isinstance(args, tuple | list) and isinstance(kwargs, dict):
            parts = [_REPR.repr(arg) for arg in args]
            parts += [f"{key}={_REPR.repr(item)}" for key, item in kwargs.items()]
            return f"({', '.join(parts)})"
    return _text(value)


def _result_text(payloads: Payloads, run: RunRecord) -> str | None:
    if run.status not in (RunStatus.COMPLETED, RunStatus.COMPENSATED) or run.result is None:
        return None
    return _text(_decoded(payloads, run.result, run.id, None, "result"))


def _step_view(
    payloads: Payloads, step: StepRecord, child_ids: set[str], generation: int
) -> StepView:
    result = error = None
    if step.status == StepStatus.COMPLETED:
        result = _text(_decoded(payloads, step.result, step.run_id, step.seq, "result"))
    elif step.status == StepStatus.FAILED:
        error = _text(_decoded(payloads, step.error, step.run_id, step.seq, "error"))
    child_id = None
    if step.kind == StepKind.CHILD:
        derived = step_key(step.run_id, generation, step.seq)
        child_id = derived if derived in child_ids else None
    started = step.status == StepStatus.STARTED
    return StepView(
        seq=step.seq,
        kind=StepKind(step.kind),
        name=step.name,
        status=StepStatus(step.status),
        attempts=step.attempts,
        started_at=utc(step.started_at),
        finished_at=None if started else utc(step.finished_at),
        result=result,
        error=error,
        child_id=child_id,
    )


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def info_json(info: RunInfo) -> dict[str, Any]:
    """A `RunInfo` as a JSON object: every field, times as ISO 8601 UTC strings."""
    return {
        "id": info.id,
        "workflow": info.workflow,
        "status": str(info.status),
        "parent_id": info.parent_id,
        "created_at": _iso(info.created_at),
        "updated_at": _iso(info.updated_at),
        "wake_at": _iso(info.wake_at),
        "attempts": info.attempts,
        "recoveries": info.recoveries,
        "code_version": info.code_version,
        "generation": info.generation,
        "deadline": _iso(info.deadline),
        "queue": info.queue,
        "queue_key": info.queue_key,
        "priority": info.priority,
        "error": info.error,
    }


def run_json(view: RunView) -> dict[str, Any]:
    """A `RunView` as a JSON object: `info_json` of the run plus ``args``, ``result``,
    ``steps`` (objects with ``seq``, ``kind``, ``name``, ``status``, ``attempts``,
    ``started_at``, ``finished_at``, ``duration``, ``result``, ``error``, ``child_id``) and
    ``children`` (`info_json` objects)."""
    data = info_json(view.info)
    data["args"] = view.args
    data["result"] = view.result
    data["steps"] = [
        {
            "seq": step.seq,
            "kind": str(step.kind),
            "name": step.name,
            "status": str(step.status),
            "attempts": step.attempts,
            "started_at": _iso(step.started_at),
            "finished_at": _iso(step.finished_at),
            "duration": step.duration,
            "result": step.result,
            "error": step.error,
            "child_id": step.child_id,
        }
        for step in view.steps
    ]
    data["children"] = [info_json(child) for child in view.children]
    return data
