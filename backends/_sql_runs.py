"""`SQLStore`'s reads of runs and steps, and its writes to runs and leases: recording a run,
acquiring and claiming leases (atomic conditional ``UPDATE``s; claiming uses ``FOR UPDATE SKIP
LOCKED``), blocking runs this version cannot read, and pruning finished ones."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from functools import partial
from typing import Any

from durable.store import (
    Lease,
    LeaseOwner,
    QueueSettings,
    RunQuery,
    RunRecord,
    RunStatus,
    StepRecord,
    StoreError,
)

from . import _sql_queues as queued
from ._rules import WITHDRAW_ALL, check_step_batch, deletable, merge_claims
from ._schema import run_from_row, run_values, step_from_row, step_values, unknown_status_text
from ._sql_calls import Calls, execute, fenced_write, fetch_all, fetch_one
from ._sql_errors import duplicate
from ._verify import NOT_APPLIED

Withdraw = Callable[[Any, str, int, Collection[int], int, float], Awaitable[int]]
"""`._sql_streams.Streams.withdraw_steps`: withdraw what dropped steps wrote to streams."""

__all__ = ["Runs"]


class _RunExists(Exception):
    """Internal: the run id is already recorded (raised inside the insert's transaction)."""


class Runs:
    """Reading and recording runs, leasing them, and the upkeep of the runs table, for one
    store."""

    def __init__(self, calls: Calls, queues: queued.QueueStatements) -> None:
        self._calls = calls
        self._s = calls.s
        self._q = queues

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this id, or ``None``."""
        row = await self._calls.call(
            False, fetch_one, self._s.get_run, {"rid": run_id}, run_id=run_id
        )
        return None if row is None else run_from_row(row)

    async def find_runs(self, query: RunQuery) -> list[RunRecord]:
        """The runs ``query`` selects, newest first (see `SQLStore.find_runs`)."""
        self._calls.check_open()
        if query.limit <= 0:
            return []
        statement, values = self._s.find_runs(query)
        rows = await self._calls.call(False, fetch_all, statement, values)
        return [run_from_row(row) for row in rows]

    async def list_runs(self, *, status: RunStatus | None, limit: int) -> list[RunRecord]:
        """Runs, optionally only those with ``status``, oldest first (see `SQLStore.list_runs`)."""
        self._calls.check_open()
        if limit <= 0:
            return []
        values: dict[str, Any] = {"lim": limit}
        statement = self._s.list_all
        if status is not None:
            statement = self._s.list_status
            values["filter_status"] = str(status)
        rows = await self._calls.call(False, fetch_all, statement, values)
        return [run_from_row(row) for row in rows]

    async def load_steps(self, run_id: str) -> list[StepRecord]:
        """Every recorded step of the run, ordered by ``seq``."""
        rows = await self._calls.call(
            False, fetch_all, self._s.load_steps, {"rid": run_id}, run_id=run_id
        )
        return [step_from_row(row) for row in rows]

    async def leased_on(self, host: str, *, workflows: Sequence[str]) -> list[RunRecord]:
        """Unfinished runs of ``workflows`` leased by an executor on ``host``."""
        if not workflows:
            return []
        statement = self._s.leased_on(tuple(sorted(set(workflows))))
        rows = await self._calls.call(False, fetch_all, statement, {"host": host})
        return [run_from_row(row) for row in rows]

    async def create_run(
        self, run: RunRecord, steps: Sequence[StepRecord] = ()
    ) -> tuple[RunRecord, bool]:
        """Insert ``run`` unless a run with its id exists, with ``steps`` (see
        `SQLStore.create_run`)."""
        check_step_batch(run.id, steps)
        try:
            values = run_values(run)
            await self._calls.call(
                True,
                self._insert_run,
                values,
                [step_values(step) for step in steps],
                verify=partial(self._verify_insert_run, values),
                notify=True,
                run_id=run.id,
            )
        except _RunExists as exc:
            # Someone recorded the id first (maybe at the same moment): theirs is the run.
            existing = await self.get_run(run.id)
            if existing is None:
                raise StoreError(
                    f"cannot record run {run.id!r} in {self._calls.url!r}: "
                    f"{self._calls.say.reason(exc.__cause__ or exc)}"
                ) from exc
            return existing, False
        return run, True

    async def _insert_run(
        self, cur: Any, values: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]
    ) -> None:
        try:
            await execute(cur, self._s.insert_run, values)
        except self._calls.integrity_error as exc:
            if not duplicate(exc):
                raise  # another constraint: not a run recorded first
            raise _RunExists() from exc
        if values["queue"] is not None:  # `Store.list_queues`: every run's queue is listed
            limits = queued.queue_values(QueueSettings(values["queue"]))
            await execute(cur, self._q.add_if_absent, limits | {"updated_at": values["created_at"]})
        if steps:
            insert = self._s.insert_step
            await cur.executemany(insert.sql, [insert.args(step) for step in steps])

    async def reset_run(
        self,
        run_id: str,
        *,
        token: int,
        status: RunStatus,
        drop: Collection[int],
        rollback: bool,
        now: float,
        withdraw: Withdraw,
    ) -> RunRecord | None:
        """Make a stopped run runnable again (see `SQLStore.reset_run`); ``withdraw``
        withdraws the stream entries of the dropped steps in the same transaction."""
        values = {
            "rid": run_id,
            "token": token,
            "old_status": str(status),
            "rollback": rollback,
            "now": now,
        }
        return await self._calls.call(
            True,
            self._reset,
            values,
            sorted(drop),
            withdraw,
            verify=partial(self._verify_reset, values),
            notify=True,
            run_id=run_id,
        )

    async def _reset(
        self, cur: Any, values: Mapping[str, Any], drop: Sequence[int], withdraw: Withdraw
    ) -> RunRecord | None:
        reset = await execute(cur, self._s.reset_run, values) == 1
        if reset and drop:
            delete = self._s.delete_step
            rows = [delete.args({"rid": values["rid"], "seq": seq}) for seq in drop]
            await cur.executemany(delete.sql, rows)
        row = await fetch_one(cur, self._s.get_run, {"rid": values["rid"]})
        run = None if row is None else run_from_row(row)
        if reset and drop and run is not None:
            await withdraw(cur, run.id, run.generation, drop, WITHDRAW_ALL, values["now"])
        return run

    async def _verify_reset(self, values: Mapping[str, Any], cur: Any) -> Any:
        row = await fetch_one(cur, self._s.get_run, {"rid": values["rid"]})
        if row is None:
            return None
        run = run_from_row(row)
        return run if run.lease_token == values["token"] + 1 else NOT_APPLIED

    async def continue_run(self, lease: Lease, args: bytes, *, now: float) -> RunRecord:
        """Start the run's next generation under the same lease (see
        `SQLStore.continue_run`)."""
        values = {"rid": lease.run_id, "token": lease.token, "args": args, "now": now}
        return await self._calls.call(
            True,
            self._continue,
            lease,
            values,
            verify=partial(self._verify_continue, values),
            run_id=lease.run_id,
        )

    async def _continue(self, cur: Any, lease: Lease, values: Mapping[str, Any]) -> RunRecord:
        await fenced_write(cur, self._s, self._s.continue_run, lease, values)
        rid = {"rid": lease.run_id}
        for statement in (
            self._s.delete_steps,
            self._s.delete_consumed_signals,
            self._s.empty_consumed_signals,
        ):
            await execute(cur, statement, rid)
        return run_from_row(await fetch_one(cur, self._s.get_run, rid))

    async def _verify_continue(self, values: Mapping[str, Any], cur: Any) -> Any:
        """Whether a continue whose commit outcome is unknown was applied (all or nothing:
        the run row tells)."""
        row = await fetch_one(cur, self._s.get_run, {"rid": values["rid"]})
        run = None if row is None else run_from_row(row)
        if run is not None and (run.lease_token, run.updated_at, run.args) == (
            values["token"],
            values["now"],
            values["args"],
        ):
            return run
        return NOT_APPLIED

    async def delete_run(self, run_id: str) -> bool | None:
        """Delete a finished run without an unfinished ancestor (see `SQLStore.delete_run`)."""
        return await self._calls.call(
            True,
            self._delete,
            run_id,
            verify=partial(self._verify_delete, run_id),
            run_id=run_id,
        )

    async def _delete(self, cur: Any, run_id: str) -> bool | None:
        chain: dict[str, RunRecord] = {}
        next_id: str | None = run_id
        while next_id is not None and next_id not in chain:
            row = await fetch_one(cur, self._s.get_run, {"rid": next_id})
            if row is None:
                break
            chain[next_id] = run_from_row(row)
            next_id = chain[next_id].parent_id
        if run_id not in chain:
            return None
        if not deletable(chain, run_id):
            return False
        for statement in self._s.delete_run_rows:
            await execute(cur, statement, {"rid": run_id})
        return True

    async def _verify_delete(self, run_id: str, cur: Any) -> Any:
        found = await fetch_one(cur, self._s.get_run, {"rid": run_id})
        return True if found is None else NOT_APPLIED

    async def _verify_insert_run(self, values: Mapping[str, Any], cur: Any) -> Any:
        row = await fetch_one(cur, self._s.get_run, {"rid": values["id"]})
        if row is not None and run_values(run_from_row(row)) == values:
            return None
        return NOT_APPLIED  # not there (or someone else's: the retry reports it)

    async def acquire_lease(
        self,
        run_id: str,
        owner: LeaseOwner,
        *,
        now: float,
        duration: float,
        takeover_token: int | None = None,
    ) -> Lease | None:
        """Atomically take the lease on an unfinished run (see `SQLStore.acquire_lease`)."""
        expires = now + duration
        values = {
            "rid": run_id,
            "owner": owner.owner,
            "host": owner.host,
            "pid": owner.pid,
            "expires": expires,
            "now": now,
            "takeover": takeover_token,
        }
        token = await self._calls.call(
            True,
            self._acquire_admitted,
            values,
            verify=partial(self._verify_acquire, values),
            run_id=run_id,
        )
        return None if token is None else Lease(run_id, owner, token, expires)

    async def _verify_acquire(self, values: Mapping[str, Any], cur: Any) -> Any:
        owned = {"owner": values["owner"], "expires": values["expires"]}
        for run_id, token in await fetch_all(cur, self._s.leased_by, owned):
            if run_id == values["rid"]:
                return int(token)
        return NOT_APPLIED

    async def _acquire_admitted(self, cur: Any, values: Mapping[str, Any]) -> int | None:
        """`_acquire`, if the run's queue (if any) admits it now."""
        if not await queued.admits_run(cur, self._q, values["rid"], values["now"]):
            return None
        return await self._acquire(cur, values)

    async def _acquire(self, cur: Any, values: Mapping[str, Any]) -> int | None:
        if await execute(cur, self._s.acquire, values) != 1:
            return None
        row = await fetch_one(cur, self._s.token, {"rid": values["rid"]})
        return int(row[0])

    async def claim(
        self,
        owner: LeaseOwner,
        *,
        now: float,
        duration: float,
        limit: int,
        workflows: Sequence[str],
        queues: Collection[str] | None,
    ) -> list[tuple[RunRecord, Lease]]:
        """Atomically lease up to ``limit`` runnable runs of ``workflows`` and ``queues``
        (see `SQLStore.claim`)."""
        if limit <= 0 or not workflows or (queues is not None and not queues):
            return []
        owned = {"owner": owner.owner, "expires": now + duration}
        return await self._calls.call(
            True,
            self._claim,
            tuple(sorted(set(workflows))),
            queues,
            owner,
            now,
            duration,
            limit,
            verify=partial(self._forget_claim, owned),
        )

    async def _forget_claim(self, owned: Mapping[str, Any], cur: Any) -> list[Any]:
        """After a claim whose commit outcome is unknown: expire whatever it leased, so any
        worker (this one included) claims those runs again at once."""
        await execute(cur, self._s.expire_leases_of, owned)
        return []

    async def _claim(
        self,
        cur: Any,
        workflows: tuple[str, ...],
        queues: Collection[str] | None,
        owner: LeaseOwner,
        now: float,
        duration: float,
        limit: int,
    ) -> list[tuple[RunRecord, Lease]]:
        batches: list[list[RunRecord]] = []
        if queues is None:
            unqueued = self._s.claimable(workflows)
            rows = await fetch_all(cur, unqueued, {"now": now, "lim": limit})
            batches.append([run_from_row(row) for row in rows])
        for name in await queued.queue_names(cur, self._q, queues):
            batches.append(await queued.admitted_runs(cur, self._q, name, workflows, now, limit))
        claimed = []
        for run in merge_claims(batches, limit):
            acquire = {
                "rid": run.id,
                "owner": owner.owner,
                "host": owner.host,
                "pid": owner.pid,
                "expires": now + duration,
                "now": now,
                "takeover": run.lease_token,
            }
            token = await self._acquire(cur, acquire)
            if token is not None:
                claimed.append((run, Lease(run.id, owner, token, now + duration)))
        return claimed

    async def put_queue(self, settings: QueueSettings) -> None:
        """Record a queue's limits (see `SQLStore.put_queue`)."""
        await self._calls.call(
            True, execute, self._q.put, queued.queue_values(settings), notify=True
        )

    async def list_queues(self) -> list[QueueSettings]:
        """Every queue's stored limits, by name."""
        rows = await self._calls.call(False, fetch_all, self._q.list, {})
        return [queued.settings_from_row(row) for row in rows]

    async def next_due(
        self, workflows: Sequence[str], now: float, queues: Collection[str] | None
    ) -> float | None:
        """When `claim` may next take a run by time alone (see `SQLStore.next_due`)."""
        if not workflows or (queues is not None and not queues):
            return None
        return await self._calls.call(
            False, self._next_due, tuple(sorted(set(workflows))), now, queues
        )

    async def _next_due(
        self, cur: Any, workflows: tuple[str, ...], now: float, queues: Collection[str] | None
    ) -> float | None:
        dues: list[float | None] = []
        if queues is None:
            row = await fetch_one(cur, self._s.due(workflows), {})
            dues.append(None if row is None or row[0] is None else float(row[0]))
        for name in await queued.queue_names(cur, self._q, queues):
            dues.append(await queued.queue_due(cur, self._q, name, workflows, now))
        return min((d for d in dues if d is not None), default=None)

    async def block_unreadable(self, *, now: float, limit: int) -> list[RunRecord]:
        """Make runs whose stored status this version does not know ``blocked``; the runs
        blocked now."""
        if limit <= 0:
            return []
        return await self._calls.call(True, self._block_unreadable, now, limit)

    async def _block_unreadable(self, cur: Any, now: float, limit: int) -> list[RunRecord]:
        blocked = []
        for run_id, status in await fetch_all(cur, self._s.unknown_status, {"lim": limit}):
            text = unknown_status_text(run_id, status)
            values = {"rid": run_id, "old_status": status, "text": text, "now": now}
            if await execute(cur, self._s.block_run, values) == 1:
                row = await fetch_one(cur, self._s.get_run, {"rid": run_id})
                blocked.append(run_from_row(row))
        return blocked

    async def prune(self, *, before: float, limit: int) -> int:
        """Delete up to ``limit`` finished runs (see `SQLStore.prune`); how many were."""
        if limit <= 0:
            return 0
        values = {"before": before, "lim": limit}
        return await self._calls.call(True, self._prune, values)

    async def _prune(self, cur: Any, values: Mapping[str, Any]) -> int:
        ids = [{"rid": row[0]} for row in await fetch_all(cur, self._s.prune_ids, values)]
        if ids:
            for statement in self._s.delete_run_rows:
                await cur.executemany(statement.sql, [statement.args(v) for v in ids])
        return len(ids)
