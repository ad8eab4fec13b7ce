"""What the store checks share: the registry of checks (`_check`), the records they use, and
their small helpers (`_Raises`, `_leased`, `_same`, ...)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from types import TracebackType

from durable.store import (
    Lease,
    LeaseOwner,
    RunRecord,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
    Store,
)


class _Raises:
    """``with _Raises(LeaseLost): ...``: the block must raise ``kind`` (with a message matching
    the regular expression ``match``, if given); ``.value`` is the exception."""

    def __init__(self, kind: type[BaseException], match: str | None = None) -> None:
        self.kind = kind
        self.match = match
        self.value: BaseException | None = None

    def __enter__(self) -> _Raises:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None:
            raise AssertionError(f"expected {self.kind.__name__} to be raised; nothing was")
        if not isinstance(exc, self.kind):
            return False  # propagates, with its own traceback
        if self.match is not None and not re.search(self.match, str(exc)):
            raise AssertionError(
                f"expected {self.kind.__name__} matching {self.match!r}, got: {exc}"
            ) from exc
        self.value = exc
        return True


# -- records used by the checks ------------------------------------------------------------------

A = LeaseOwner("owner-a", "host-a", 101)
B = LeaseOwner("owner-b", "host-b", 202)
WORKFLOW = "app.book_trip"


def _run(
    run_id: str = "run-1",
    *,
    status: RunStatus = RunStatus.PENDING,
    created_at: float = 100.0,
    workflow: str = WORKFLOW,
    **fields: object,
) -> RunRecord:
    run = RunRecord(run_id, workflow, status, b"\x80args", created_at, created_at)
    return dataclasses.replace(run, **fields)  # type: ignore[arg-type]


def _step(
    run_id: str,
    seq: int,
    *,
    name: str = "app.charge",
    result: bytes | None = b"ok",
    status: StepStatus = StepStatus.COMPLETED,
    kind: StepKind = StepKind.ACTIVITY,
) -> StepRecord:
    return StepRecord(
        run_id=run_id,
        seq=seq,
        kind=kind,
        name=name,
        status=status,
        attempts=1,
        started_at=100.0 + seq,
        finished_at=100.5 + seq,
        result=result,
        location=f"app.py:{10 + seq}",
    )


async def _leased(
    store: Store,
    run_id: str = "run-1",
    *,
    now: float = 100.0,
    duration: float = 30.0,
    owner: LeaseOwner = A,
    workflow: str = WORKFLOW,
) -> Lease:
    await store.create_run(_run(run_id, created_at=now, workflow=workflow))
    lease = await store.acquire_lease(run_id, owner, now=now, duration=duration)
    assert lease is not None, f"acquire_lease of the new pending run {run_id!r} returned None"
    return lease


async def _get(store: Store, run_id: str) -> RunRecord:
    run = await store.get_run(run_id)
    assert run is not None, f"get_run({run_id!r}) returned None for a run that exists"
    return run


def _same(got: object, expected: object, what: str) -> None:
    assert got == expected, f"{what}: expected {expected!r}, got {got!r}"


# -- the registry of checks ----------------------------------------------------------------------

_CHECKS: dict[str, Callable[[Store], Awaitable[None]]] = {}


def _check(fn: Callable[[Store], Awaitable[None]]) -> Callable[[Store], Awaitable[None]]:
    """Register ``fn`` as the check named after it (in the order the modules define them)."""
    _CHECKS[fn.__name__] = fn
    return fn
