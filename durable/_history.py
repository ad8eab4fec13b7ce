"""A run's history as portable JSON: `WorkflowHandle.export_history` writes it,
`durable.testing.replay` reads it. Payloads stay encoded (base64), exactly as stored."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from durable._types import RunStatus, StepKind, StepStatus
from durable.store import RunRecord, StepRecord

__all__ = ["FORMAT", "dump_history", "load_history"]

FORMAT = "durable-history/1"
"""The ``format`` field of an exported history."""

_RUN_FIELDS = (
    "id",
    "workflow",
    "status",
    "args",
    "created_at",
    "parent_id",
    "code_version",
    "cancel_requested",
    "cancelled_seq",
    "rollback_requested",
    "generation",  # absent from histories exported before generations existed: 1
    "deadline",
)
_BYTES = frozenset({"args", "result", "error"})


def _plain(name: str, value: Any) -> Any:
    if name in _BYTES and value is not None:
        return base64.b64encode(value).decode("ascii")
    return str(value) if isinstance(value, RunStatus | StepKind | StepStatus) else value


def dump_history(run: RunRecord, steps: list[StepRecord]) -> str:
    """The run and its steps as JSON text (see `FORMAT`)."""
    data = {
        "format": FORMAT,
        "run": {name: _plain(name, getattr(run, name)) for name in _RUN_FIELDS},
        "steps": [
            {f.name: _plain(f.name, getattr(step, f.name)) for f in fields(StepRecord)}
            for step in steps
        ],
    }
    return json.dumps(data, indent=1)


def load_history(history: str | Mapping[str, Any]) -> tuple[RunRecord, list[StepRecord]]:
    """Parse an exported history (its JSON text, or that text parsed).

    Returns:
        The run (as a pending, unleased record) and its steps in order.

    Raises:
        ValueError: it is not an exported durable history.
    """
    try:
        data = json.loads(history) if isinstance(history, str) else history
        if data.get("format") != FORMAT:
            raise ValueError(f"its format is {data.get('format')!r}, not {FORMAT!r}")
        raw = dict(data["run"])
        for name in _BYTES & raw.keys():
            raw[name] = base64.b64decode(raw[name]) if raw[name] is not None else None
        raw["status"] = RunStatus(raw["status"])
        run = RunRecord(updated_at=raw["created_at"], **raw)
        steps = []
        for item in data["steps"]:
            step = dict(item)
            for name in _BYTES & step.keys():
                step[name] = base64.b64decode(step[name]) if step[name] is not None else None
            step["kind"] = StepKind(step["kind"])
            step["status"] = StepStatus(step["status"])
            steps.append(StepRecord(**step))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"not an exported durable history ({exc}); export one with "
            "`await handle.export_history()`"
        ) from exc
    run = replace(run, status=RunStatus.PENDING)
    return run, sorted(steps, key=lambda s: s.seq)
