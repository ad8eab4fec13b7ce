"""`SQLStore`'s fenced writes: commits (steps, outcomes and the run update in one transaction;
the hot paths in one statement each), renewing and releasing a lease, and re-reading a
commit whose outcome is unknown (Postgres: the connection broke during it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from durable.store import (
    Interruption,
    Lease,
    LeaseLost,
    RunUpdate,
    StepRecord,
    StoreError,
)

from ._rules import check_step_batch
from ._schema import run_from_row, step_values
from ._sql_calls import Calls, execute, fence_detail, fenced_write, fetch_one
from ._sql_errors import duplicate
from ._statements import Compiled
from ._verify import NOT_APPLIED

__all__ = ["Commits", "interruption"]


class Commits:
    """Commits and lease writes fenced by the run's token, for one store."""

    def __init__(self, calls: Calls) -> None:
        self._calls = calls
        self._s = calls.s

    async def renew_lease(self, lease: Lease, *, now: float, duration: float) -> Lease:
        """Extend the lease to ``now + duration`` (see `SQLStore.renew_lease`)."""
        expires = now + duration
        values = {"rid": lease.run_id, "token": lease.token, "expires": expires}
        await self._calls.call(
            True, fenced_write, self._s, self._s.renew, lease, values, run_id=lease.run_id
        )
        return Lease(lease.run_id, lease.owner, lease.token, expires)

    async def release_lease(self, lease: Lease) -> None:
        """Clear owner / host / pid / expiry if the lease is still ours; otherwise do nothing."""
        values = {"rid": lease.run_id, "token": lease.token}
        await self._calls.call(
            True, execute, self._s.release, values, notify=True, run_id=lease.run_id
        )

    async def commit(
        self,
        lease: Lease,
        steps: Sequence[StepRecord],
        update: RunUpdate | None,
        now: float,
        outcomes: Sequence[StepRecord],
        check_requests: bool,
        relaxed: bool,
    ) -> Interruption | None:
        """Insert ``steps``, replace ``outcomes`` and apply ``update`` in one transaction
        (see `SQLStore.commit`)."""
        check_step_batch(lease.run_id, [*steps, *outcomes])
        # Re-reading an unknown commit outcome: only where a reply can be lost (Postgres).
        verify = (
            partial(self._verify_commit, lease, steps, outcomes, update, now)
            if self._calls.loses_replies
            else None
        )
        if update is None and len(steps) + len(outcomes) == 1 and not (check_requests and outcomes):
            # The hot paths, one statement each (Postgres: one round trip, no BEGIN / COMMIT;
            # SQLite: one statement inside BEGIN IMMEDIATE): a step starting or recorded at
            # once, or the outcome of a started one.
            fenced = self._s.insert_step_fenced
            if outcomes:
                fenced = self._s.replace_step_fenced
            elif check_requests:
                starting = self._s.insert_step_starting
                fenced = starting[relaxed and self._calls.relaxes_by_statement]
            step = (steps or outcomes)[0]
            args = fenced.args({**step_values(step), "rid": lease.run_id, "token": lease.token})
            return await self._calls.call(
                True,
                self._write_fenced,
                fenced,
                lease,
                args,
                step,
                verify=verify,
                single=True,
                no_flush=relaxed,
                run_id=lease.run_id,
                steps=(step,),
                group=True,
                pipelined=(fenced.sql, args),
            )
        values: dict[str, Any] = {"rid": lease.run_id, "token": lease.token, "now": now}
        if update is not None:
            values["new_status"] = str(update.status)
            values["new_result"] = update.result
            values["new_error"] = update.error
            values["new_error_text"] = update.error_text
            values["new_cancelled_seq"] = update.cancelled_seq
            values["new_wake_at"] = update.wake_at
        insert = self._s.insert_step
        rows = [insert.args(step_values(step)) for step in steps]
        replacements = [
            (self._s.replace_step.args({**step_values(step), "rid": step.run_id}), step)
            for step in outcomes
        ]
        return await self._calls.call(
            True,
            self._commit,
            update,
            lease,
            values,
            rows,
            replacements,
            check_requests,
            verify=verify,
            notify=update is not None and update.release,
            no_flush=relaxed,
            run_id=lease.run_id,
            steps=[*steps, *outcomes],
            group=True,
        )

    async def _verify_commit(
        self,
        lease: Lease,
        steps: Sequence[StepRecord],
        outcomes: Sequence[StepRecord],
        update: RunUpdate | None,
        now: float,
        cur: Any,
    ) -> Any:
        """Whether a commit whose outcome is unknown was applied (it is all or nothing, so one
        of its effects tells)."""
        if steps or outcomes:
            step = steps[0] if steps else outcomes[0]
            row = await fetch_one(cur, self._s.step_status, {"rid": lease.run_id, "seq": step.seq})
            applied = row is not None and (
                bool(steps) or (row[0], row[1]) == (str(step.status), step.attempts)
            )
            return None if applied else NOT_APPLIED
        if update is not None:
            row = await fetch_one(cur, self._s.get_run, {"rid": lease.run_id})
            run = None if row is None else run_from_row(row)
            applied = run is not None and (run.status, run.updated_at) == (update.status, now)
            return None if applied else NOT_APPLIED
        return NOT_APPLIED  # a token check only: running it again is harmless

    async def _write_fenced(
        self, cur: Any, statement: Compiled, lease: Lease, args: Any, step: StepRecord
    ) -> Interruption | None:
        """One fenced statement that writes one step row; if it wrote nothing, say why (read
        in a statement of its own: if what stopped a starting step is gone by then, a
        request delivered meanwhile, the step is tried again)."""
        for _ in range(5):
            try:
                await cur.execute(statement.sql, args)
            except self._calls.integrity_error as exc:
                if not duplicate(exc):
                    raise
                raise self._calls.say.already_recorded(lease, exc) from exc
            if cur.rowcount == 1:
                return None
            row = await fetch_one(cur, self._s.check_control, {"rid": lease.run_id})
            if row is None or row[0] != lease.token:
                raise LeaseLost(lease.run_id, await fence_detail(cur, self._s, lease))
            if statement is self._s.replace_step_fenced:
                await self._insert_lost_start(cur, lease, step)
                return None
            stopped = interruption(row)
            if stopped is not None:
                return stopped
        raise StoreError(
            f"the durable store {self._calls.url!r} could not start a step of run "
            f"{lease.run_id!r}: its requests kept changing; try again"
        )

    async def _commit(
        self,
        cur: Any,
        update: RunUpdate | None,
        lease: Lease,
        values: Mapping[str, Any],
        rows: list[Any],
        replacements: list[tuple[Any, StepRecord]],
        check_requests: bool,
    ) -> Interruption | None:
        if update is None or check_requests:
            row = await fetch_one(cur, self._s.check_control, {"rid": lease.run_id})
            if row is None or row[0] != lease.token:
                raise LeaseLost(lease.run_id, await fence_detail(cur, self._s, lease))
            stopped = interruption(row) if check_requests else None
            if stopped is not None:
                return stopped
        if update is not None:
            statement = self._s.update_release if update.release else self._s.update
            await fenced_write(cur, self._s, statement, lease, values)
        for args, step in replacements:
            await cur.execute(self._s.replace_step.sql, args)
            if cur.rowcount != 1:
                await self._insert_lost_start(cur, lease, step)
        if not rows:
            return None
        try:
            if len(rows) == 1:  # the common case; psycopg's executemany opens a pipeline
                await cur.execute(self._s.insert_step.sql, rows[0])
            else:
                await cur.executemany(self._s.insert_step.sql, rows)
        except self._calls.integrity_error as exc:
            if not duplicate(exc):
                raise
            raise self._calls.say.already_recorded(lease, exc) from exc
        return None

    async def _insert_lost_start(self, cur: Any, lease: Lease, step: StepRecord) -> None:
        """A step whose ``started`` row is missing gets its row now (fenced). A relaxed start
        can be lost when the database crashes before the outcome's commit flushes it; the
        outcome is then written again after reconnecting, and must not be refused."""
        s, calls = self._s, self._calls
        found = await fetch_one(cur, s.step_status, {"rid": lease.run_id, "seq": step.seq})
        if found is not None:
            raise StoreError(
                f"cannot record the outcome of step {step.seq} of run {lease.run_id!r} in "
                f"{calls.url!r}: it is already recorded as {found[0]!r} (a step is written "
                "once); nothing was written"
            )
        fenced = s.insert_step_fenced
        args = fenced.args({**step_values(step), "rid": lease.run_id, "token": lease.token})
        try:
            await cur.execute(fenced.sql, args)
        except calls.integrity_error as exc:
            if not duplicate(exc):
                raise
            raise calls.say.already_recorded(lease, exc) from exc
        if cur.rowcount != 1:
            raise LeaseLost(lease.run_id, await fence_detail(cur, s, lease))


def interruption(row: Sequence[Any]) -> Interruption | None:
    """The requests in a `Statements.check_control` row that stop a starting step."""
    _, pause, cancel, cancelled_seq = row
    stop_cancel = bool(cancel) and cancelled_seq is None
    if stop_cancel or pause:
        return Interruption(cancel=stop_cancel, pause=bool(pause))
    return None
