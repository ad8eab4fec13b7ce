"""`SQLStore`'s requests and signals: cancel, pause, resume and rollback requests (conditional
updates, tried again when a concurrent transaction changed the run in between), buffering a
signal for a run and consuming it in a fenced step, and waking a parked run."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from durable.store import Lease, LeaseLost, RunRecord, RunStatus, StepRecord, StoreError

from ._rules import check_step_batch
from ._schema import run_from_row, step_values
from ._sql_calls import Calls, execute, fence_detail, fetch_one
from ._sql_errors import duplicate
from ._statements import Compiled
from ._verify import NOT_APPLIED

__all__ = ["Requests"]

_UNFINISHED = frozenset(s.value for s in RunStatus if not s.finished)


class Requests:
    """Requests to runs, their signals and wake-ups, for one store."""

    def __init__(self, calls: Calls) -> None:
        self._calls = calls
        self._s = calls.s

    async def request(self, statement: Compiled, run_id: str, now: float) -> RunRecord | None:
        """Apply a request (``statement``: one of `Statements.request_cancel`,
        ``request_pause``, ``resume``, ``request_rollback``) to run ``run_id``.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        values = {"rid": run_id, "now": now}
        return await self._calls.call(
            True, self._request, statement, values, notify=True, run_id=run_id
        )

    async def _request(
        self, cur: Any, statement: Compiled, values: Mapping[str, Any]
    ) -> RunRecord | None:
        """Apply a conditional request update and return the run, in one transaction.

        If the update matched nothing but the run now qualifies (created or changed by a
        concurrent transaction between the two statements, as Postgres' read-committed
        statements can see), the update is tried again, so a request is never reported done
        without having been applied.
        """
        for _ in range(5):
            changed = await execute(cur, statement, values)
            row = await fetch_one(cur, self._s.get_run, {"rid": values["rid"]})
            run = None if row is None else run_from_row(row)
            if changed == 1 or run is None:
                return run
            qualifies = (
                run.status == RunStatus.COMPLETED
                if statement is self._s.request_rollback
                else not run.status.finished
            )
            if not qualifies:
                return run
        raise StoreError(
            f"the durable store {self._calls.url!r} could not apply a request to run "
            f"{values['rid']!r}: it kept changing; try again"
        )

    async def send_signal(
        self,
        run_id: str,
        name: str,
        payload: bytes,
        *,
        now: float,
        idempotency_key: str | None,
    ) -> RunRecord | None:
        """Buffer signal ``name`` for an unfinished run (see `SQLStore.send_signal`)."""
        values = {
            "rid": run_id,
            "name": name,
            "payload": payload,
            "now": now,
            "key": idempotency_key,
        }
        verify = partial(self._verify_signal, values)
        return await self._calls.call(
            True, self._send_signal, values, verify=verify, notify=True, run_id=run_id
        )

    async def _verify_signal(self, values: Mapping[str, Any], cur: Any) -> Any:
        if await fetch_one(cur, self._s.find_signal, values) is None:
            return NOT_APPLIED
        found = await fetch_one(cur, self._s.get_run, {"rid": values["rid"]})
        return None if found is None else run_from_row(found)

    async def _send_signal(self, cur: Any, values: Mapping[str, Any]) -> RunRecord | None:
        # The run row is locked (Postgres FOR SHARE) so it cannot finish between the check and
        # the insert: a signal is never buffered for a run that no longer waits.
        row = await fetch_one(cur, self._s.run_status_locked, {"rid": values["rid"]})
        if row is None:
            return None
        known = row[0] in _UNFINISHED
        if known and await execute(cur, self._s.insert_signal, values) == 1:
            await execute(cur, self._s.wake_waiting, {"rid": values["rid"], "now": values["now"]})
        found = await fetch_one(cur, self._s.get_run, {"rid": values["rid"]})
        return None if found is None else run_from_row(found)

    async def wake(self, run_id: str, *, now: float) -> None:
        """Make a parked run due now (see `durable.store.Store.wake`)."""
        values = {"rid": run_id, "now": now}
        await self._calls.call(
            True, execute, self._s.wake_parked, values, notify=True, run_id=run_id
        )

    async def receive_signal(
        self, lease: Lease, name: str, step: StepRecord, *, now: float
    ) -> bytes | None:
        """Consume the oldest buffered signal ``name`` and record ``step`` with its payload,
        in one fenced transaction (see `SQLStore.receive_signal`)."""
        check_step_batch(lease.run_id, [step])
        verify = partial(self._verify_receive, step)
        return await self._calls.call(
            True,
            self._receive_signal,
            lease,
            name,
            step,
            verify=verify,
            run_id=lease.run_id,
            steps=(step,),
        )

    async def _verify_receive(self, step: StepRecord, cur: Any) -> Any:
        row = await fetch_one(cur, self._s.step_status, {"rid": step.run_id, "seq": step.seq})
        return NOT_APPLIED if row is None else bytes(row[2])

    async def _receive_signal(
        self, cur: Any, lease: Lease, name: str, step: StepRecord
    ) -> bytes | None:
        s = self._s
        # Fenced, and `_rules.signal_taken` (a wake time a signal set while leased is spent
        # once the signal is taken here; a rollback keeps it, since nothing was taken).
        if await execute(cur, s.clear_wake, {"rid": lease.run_id, "token": lease.token}) != 1:
            raise LeaseLost(lease.run_id, await fence_detail(cur, s, lease))
        found = await fetch_one(cur, s.oldest_signal, {"rid": lease.run_id, "name": name})
        if found is None:
            return None
        signal_id, payload = found[0], bytes(found[1])
        await execute(cur, s.consume_signal, {"sid": signal_id, "seq": step.seq})
        values = {**step_values(step), "rid": step.run_id, "result": payload}
        await cur.execute(s.replace_step.sql, s.replace_step.args(values))
        if cur.rowcount != 1:
            try:
                await cur.execute(s.insert_step.sql, s.insert_step.args(values))
            except self._calls.integrity_error as exc:  # a finished step is never rewritten
                if not duplicate(exc):
                    raise
                raise self._calls.say.already_recorded(lease, exc) from exc
        return payload
