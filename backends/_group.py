"""`GroupCommit`: several runs' commits made at the same moment share one database transaction.

A worker executes many runs at once, and each step of each run ends in a commit. Alone, every
commit pays for its own transaction (``BEGIN``, the write-ahead log's append and sync,
``COMMIT``); together they can pay once, as databases have long done for their own clients
(group commit). Nothing is weakened: every request's statements run inside the shared
transaction, and its caller learns its outcome only after that transaction committed, so a
step a workflow saw as recorded is on disk like before.

How a batch forms: the first request becomes the *leader*. It lets the other ready tasks run
once (one pass of the event loop, no timer: a run alone waits for nothing), so the runs whose
previous step just completed reach their next commit and queue behind it; then it writes every
queued request in one transaction. The others wait for it (shielded: a write that started ends,
and its caller is told how). Each request of a batch runs inside a savepoint: one that fails
(its lease was lost, its step already recorded) is rolled back alone and gets its error, the
rest commit. A failure of the transaction itself (the database is locked past its timeout, the
disk is full) fails every request of the batch, and nothing of it is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.lowlevel

__all__ = ["GroupCommit", "Grouped", "fail_all", "others_ready", "run_in_savepoint"]


class Grouped:
    """One request of a batch: the transaction body and what came of it."""

    __slots__ = ("args", "done", "error", "fn", "relaxed", "result")

    def __init__(
        self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], relaxed: bool
    ) -> None:
        self.fn = fn
        self.args = args
        self.relaxed = relaxed  # may commit without waiting for the disk (see `Store.commit`)
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """Gathers the grouped writes of one runner's callers into batches (see the module
    docstring). ``alone`` runs one request's transaction as the runner always does (raising
    its error); ``flush`` writes a batch in one transaction and sets each request's ``result``
    or ``error``. Use it from one event loop."""

    def __init__(
        self,
        alone: Callable[[Callable[..., Awaitable[Any]], tuple[Any, ...], bool], Awaitable[Any]],
        flush: Callable[[Sequence[Grouped]], Awaitable[None]],
    ) -> None:
        self._alone = alone
        self._flush = flush
        self._queue: list[Grouped] = []
        self._leading = False
        self.batches = 0  # how many shared transactions were written, with how many requests
        self.requests = 0

    async def run(
        self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], relaxed: bool
    ) -> Any:
        """Run ``fn(cursor, *args)``, in a transaction shared with the requests queued at the
        same moment; its result, or its error."""
        if self._leading:  # a batch is forming: join it, and wait to know how it went
            request = Grouped(fn, args, relaxed)
            self._queue.append(request)
            with anyio.CancelScope(shield=True):
                await request.done.wait()
            if request.error is not None:
                raise request.error
            return request.result
        self._leading = True
        try:
            if others_ready():
                # One pass of the event loop (not cancellable: whoever queues meanwhile relies
                # on this leader), so the runs ready now reach their commits and queue them.
                await anyio.lowlevel.cancel_shielded_checkpoint()
            if not self._queue:  # alone: the plain transaction, no batch
                try:
                    return await self._alone(fn, args, relaxed)
                finally:  # it may have waited for another process's lock: others queued
                    await self._drain()
            own = Grouped(fn, args, relaxed)
            self._queue.insert(0, own)
            await self._drain()
        finally:
            self._leading = False
        if own.error is not None:
            raise own.error
        return own.result

    async def _drain(self) -> None:
        """Write what is queued, batch after batch, until nothing is (shielded: the queued
        callers wait for it, and a leader that leaves early would strand them)."""
        if not self._queue:  # the common case of a run alone: no scope to enter
            return
        with anyio.CancelScope(shield=True):
            while self._queue:
                batch, self._queue = self._queue, []
                await self._write(batch)

    async def _write(self, batch: list[Grouped]) -> None:
        self.batches += 1
        self.requests += len(batch)
        try:
            await self._flush(batch)
        except BaseException as exc:  # nothing of the batch is known to be written
            fail_all(batch, exc)
            raise
        finally:
            for request in batch:
                request.done.set()


def others_ready() -> bool:
    """Whether other tasks of this event loop are ready to run (so a pass of the loop may
    bring more requests). A run alone then commits at once: nothing can join it."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio (trio runs a batch of tasks it does not count): yield
        return True
    # asyncio's run queue, which holds the rest of this pass's tasks too (uvloop has none
    # to look at: yield)
    ready = getattr(loop, "_ready", None)
    return ready is None or len(ready) > 0


def fail_all(batch: Sequence[Grouped], error: BaseException) -> None:
    """The batch's transaction failed: nothing of it was written, every request gets
    ``error`` (those that had failed on their own keep their own error)."""
    for request in batch:
        if request.error is None:
            request.error = error
            request.result = None


async def run_in_savepoint(request: Grouped, cur: Any) -> None:
    """Run one request of a larger batch inside a savepoint: if it fails, its writes are
    rolled back and it gets its error; the others go on."""
    await cur.execute("SAVEPOINT durable_group")
    try:
        request.result = await request.fn(cur, *request.args)
    except Exception as exc:
        await cur.execute("ROLLBACK TO SAVEPOINT durable_group")
        await cur.execute("RELEASE SAVEPOINT durable_group")
        request.error = exc
        return
    await cur.execute("RELEASE SAVEPOINT durable_group")
