"""Listing and describing runs: `list_runs`, `RunPage`, `RunInfo`.

A page holds runs newest first; its ``next_cursor`` (an opaque string) asks for the runs after
the page's last one, so a listing stays consistent while new runs are started (they are newer
than every page already read).
"""

from __future__ import annotations

import base64
import binascii
import json
import traceback
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from durable._errors import DurableError
from durable._recording import payloads_of
from durable._stores import open_store
from durable._types import RunStatus, utc
from durable.store import RunQuery, RunRecord, Store

__all__ = ["RunInfo", "RunPage", "list_runs", "run_info"]

MAX_LIMIT = 1000
"""The largest page `list_runs` returns."""


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What is known about one run, without its steps.

    Attributes:
        id: the run id.
        workflow: the workflow's registered name.
        status: where the run is.
        parent_id: the parent run of a child run, else ``None``.
        created_at: when the run was recorded (UTC).
        updated_at: when its record last changed (UTC).
        wake_at: when a parked run becomes runnable (UTC), else ``None``.
        attempts: how often an executor took the run up: its first start, each resumption
            after a park, pause or retry, each takeover (the lease's fencing token); 0 for a
            run nobody has executed yet.
        recoveries: how often an executor took the run over from one that stopped.
        error: a failed, cancelled or blocked run's error, with the traceback where it was
            first raised when the error could be decoded, else ``None``.
        code_version: the code version the run started under.
        generation: which generation of the run this is: 1, plus one for each
            ``durable.continue_as_new`` (only the current generation's steps are kept).
        deadline: when the run times out (UTC; set by ``timeout=``), else ``None``.
        queue: the `durable.Queue` the run was started on, else ``None``.
        queue_key: its key within the queue (``per_key_concurrency``), else ``None``.
        priority: its priority within the queue (smaller first; 0 off a queue).
    """

    id: str
    workflow: str
    status: RunStatus
    parent_id: str | None
    created_at: datetime
    updated_at: datetime
    wake_at: datetime | None
    attempts: int
    recoveries: int
    error: str | None
    code_version: str | None
    generation: int = 1
    deadline: datetime | None = None
    queue: str | None = None
    queue_key: str | None = None
    priority: int = 0


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of `list_runs`: ``runs`` newest first, and ``next_cursor`` to ask for the
    next page (``None`` when this is the last)."""

    runs: list[RunInfo]
    next_cursor: str | None


async def list_runs(
    *,
    status: RunStatus | str | Collection[RunStatus | str] | None = None,
    workflow: str | Collection[str] | None = None,
    id_prefix: str | None = None,
    parent: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: int = 100,
    cursor: str | None = None,
    store: Store | str | None = None,
) -> RunPage:
    """Runs newest first, filtered, one page at a time.

    Args:
        status: one status or several (``RunStatus`` or its string value).
        workflow: one workflow name or several.
        id_prefix: only runs whose id starts with this.
        parent: only the children of this run.
        created_after: only runs created after this time (timezone-aware).
        created_before: only runs created before this time (timezone-aware).
        limit: runs per page, 1 to 1,000.
        cursor: the ``next_cursor`` of the previous page.
        store: a store, a URL, or ``None`` for ``DURABLE_URL`` / ``sqlite:///durable.db``.

    Raises:
        ValueError: an unknown status, a limit out of range, a naive datetime, or a cursor
            that is not one `list_runs` returned.
    """
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(
            f"list_runs(limit=...) must be an int from 1 to {MAX_LIMIT}, not {limit!r}"
        )
    query = RunQuery(
        statuses=_statuses(status),
        workflows=None if workflow is None else frozenset(_several(workflow)),
        id_prefix=id_prefix,
        parent_id=parent,
        created_after=_epoch(created_after, "created_after"),
        created_before=_epoch(created_before, "created_before"),
        older_than=None if cursor is None else _decode_cursor(cursor),
        limit=limit + 1,
    )
    resolved = await open_store(store)
    records = await resolved.find_runs(query)
    more = len(records) > limit
    records = records[:limit]
    runs = [run_info(resolved, record) for record in records]
    last = records[-1] if more and records else None
    return RunPage(runs, None if last is None else _encode_cursor(last))


def run_info(store: Store, run: RunRecord) -> RunInfo:
    """The `RunInfo` of a stored run; its error decoded (with its traceback) when it can be."""
    return RunInfo(
        id=run.id,
        workflow=run.workflow,
        status=run.status,
        parent_id=run.parent_id,
        created_at=utc(run.created_at),
        updated_at=utc(run.updated_at),
        wake_at=None if run.wake_at is None else utc(run.wake_at),
        attempts=run.lease_token,
        recoveries=run.recoveries,
        error=_error_text(store, run),
        code_version=run.code_version,
        generation=run.generation,
        deadline=None if run.deadline is None else utc(run.deadline),
        queue=run.queue,
        queue_key=run.queue_key,
        priority=run.priority,
    )


def _error_text(store: Store, run: RunRecord) -> str | None:
    if run.error:
        try:
            error = payloads_of(store, run.workflow).loads(
                run.error, run_id=run.id, seq=None, what="error"
            )
        except DurableError:
            error = None
        if isinstance(error, BaseException):
            return "".join(traceback.format_exception(error)).rstrip()
    return run.error_text


def _statuses(given: Any) -> frozenset[RunStatus] | None:
    if given is None:
        return None
    found = set()
    for item in _several(given):
        try:
            found.add(RunStatus(item))
        except ValueError:
            known = ", ".join(s.value for s in RunStatus)
            raise ValueError(
                f"list_runs(status=...): unknown status {item!r}; one of {known}"
            ) from None
    return frozenset(found)


def _several(given: Any) -> list[Any]:
    return [given] if isinstance(given, str) else list(given)


def _epoch(when: datetime | None, name: str) -> float | None:
    if when is None:
        return None
    if when.tzinfo is None:
        raise ValueError(f"list_runs({name}=...) needs a timezone-aware datetime, not {when!r}")
    return when.timestamp()


def _encode_cursor(run: RunRecord) -> str:
    raw = json.dumps([run.created_at, run.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        at, run_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if isinstance(at, int | float) and isinstance(run_id, str):
            return float(at), run_id
    except (ValueError, TypeError, binascii.Error):
        pass
    raise ValueError(f"list_runs(cursor=...): {cursor!r} is not a cursor list_runs returned")
