"""Store checks of waiting and pruning: waking parked runs, pruning finished runs, blocking
unreadable ones, ``wait_for_work`` and ``watch``."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from durable.store import RunStatus, RunUpdate, StepKind, Store

from ._support import WORKFLOW, A, _check, _get, _leased, _run, _same, _step


@_check
async def wake_makes_a_parked_run_due(store: Store) -> None:
    """`wake`: a parked run nobody executes becomes due now; other runs are unchanged."""
    await store.create_run(_run("sleeping", status=RunStatus.SLEEPING, wake_at=5_000.0))
    await store.create_run(_run("waiting", status=RunStatus.WAITING))
    await store.create_run(_run("pending"))
    await _leased(store, "leased")
    before = {run.id: run for run in await store.list_runs()}
    for run_id in before:
        await store.wake(run_id, now=150.0)
    _same((await _get(store, "sleeping")).wake_at, 150.0, "wake_at of a woken sleeping run")
    _same((await _get(store, "waiting")).wake_at, 150.0, "wake_at of a woken waiting run")
    for run_id in ("pending", "leased"):
        _same(await store.get_run(run_id), before[run_id], f"the {run_id} run after wake")


async def _finish(store: Store, run_id: str, at: float, status: RunStatus) -> None:
    """Record one step and a signal for the run, then finish it with ``status`` at ``at``."""
    lease = await store.acquire_lease(run_id, A, now=at, duration=30)
    assert lease is not None, f"acquire_lease of {run_id!r} returned None"
    await store.commit(lease, [_step(run_id, 1)], now=at)
    await store.send_signal(run_id, "approve", b"yes", now=at)
    await store.commit(lease, update=RunUpdate(status, result=b"r", release=True), now=at)


@_check
async def prune_deletes_only_old_finished_runs_with_their_steps_and_signals(
    store: Store,
) -> None:
    """`prune` deletes finished runs last updated before ``before``, in batches of at most
    ``limit``, with their steps and signals; unfinished runs stay; the id is free again."""
    day = 86_400.0
    for i, status in enumerate([RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.COMPENSATED]):
        await store.create_run(_run(f"old-{i}", created_at=1_000.0))
        await _finish(store, f"old-{i}", 1_000.0, status)
    await store.create_run(_run("recent", created_at=1_000.0))
    await _finish(store, "recent", 40 * day, RunStatus.COMPLETED)
    await store.create_run(_run("old-but-pending", created_at=1_000.0))
    parked = await _leased(store, "old-but-parked", now=1_000.0)
    update = RunUpdate(RunStatus.SLEEPING, wake_at=90 * day, release=True)
    await store.commit(parked, update=update, now=1_000.0)

    _same(await store.prune(before=30 * day, limit=2), 2, "the first batch")
    _same(await store.prune(before=30 * day, limit=2), 1, "the second batch")
    _same(await store.prune(before=30 * day, limit=2), 0, "the third batch")
    left = {run.id for run in await store.list_runs(limit=100)}
    _same(left, {"recent", "old-but-pending", "old-but-parked"}, "the runs left")
    for i in range(3):
        _same(await store.load_steps(f"old-{i}"), [], f"steps of the pruned old-{i}")
    _same([s.seq for s in await store.load_steps("recent")], [1], "steps of a kept run")
    stored, created = await store.create_run(_run("old-0", created_at=50 * day))
    _same((created, stored.status), (True, RunStatus.PENDING), "a new run with a pruned id")
    _same(await store.load_steps("old-0"), [], "steps of the new run")
    lease = await store.acquire_lease("old-0", A, now=50 * day, duration=30)
    assert lease is not None, "acquire_lease of the new run returned None"
    step = _step("old-0", 1, kind=StepKind.SIGNAL)
    _same(await store.receive_signal(lease, "approve", step, now=50 * day), None, "old signal")


@_check
async def prune_keeps_runs_below_an_unfinished_ancestor(store: Store) -> None:
    """A finished child (or grandchild) of an unfinished run is kept until the ancestor
    finishes: the ancestor may still need its outcome."""
    await store.create_run(_run("parent", created_at=1.0))
    await store.create_run(_run("child", created_at=1.0, parent_id="parent"))
    await store.create_run(_run("grandchild", created_at=1.0, parent_id="child"))
    await _finish(store, "grandchild", 10.0, RunStatus.COMPLETED)
    await _finish(store, "child", 10.0, RunStatus.COMPLETED)
    _same(await store.prune(before=1_000.0, limit=10), 0, "runs pruned under a running parent")
    await _finish(store, "parent", 20.0, RunStatus.FAILED)
    _same(await store.prune(before=1_000.0, limit=10), 3, "runs pruned once the parent ended")
    _same(await store.list_runs(), [], "the runs left")


@_check
async def block_unreadable_finds_nothing_in_a_healthy_store(store: Store) -> None:
    """`block_unreadable` blocks nothing when every run has a known status."""
    await store.create_run(_run())
    _same(await store.block_unreadable(now=100.0), [], "runs blocked")
    _same((await _get(store, "run-1")).status, RunStatus.PENDING, "the run's status")


@_check
async def wait_for_work_returns_at_once_when_a_run_is_pending(store: Store) -> None:
    """A pending run of the workflows is work now: `wait_for_work` returns at once."""
    await store.create_run(_run("r", created_at=time.time()))
    with anyio.move_on_after(5) as scope:  # the wait asked for is 60 s
        await store.wait_for_work(workflows=[WORKFLOW], now=time.time(), within=60)
    assert not scope.cancelled_caught, "wait_for_work did not return with a run pending"


@_check
async def wait_for_work_wakes_when_a_run_is_started(store: Store) -> None:
    """A run created while a worker waits wakes it (not after the 60 s it asked for)."""
    woke: list[bool] = []

    async def waiter() -> None:
        await store.wait_for_work(workflows=[WORKFLOW], now=time.time(), within=60)
        woke.append(True)

    with anyio.move_on_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.2)
            await store.create_run(_run("r", created_at=time.time()))
    assert woke, "wait_for_work did not return when a run was created"


@_check
async def wait_for_work_wakes_when_a_timer_is_due(store: Store) -> None:
    """A parked run's wake time ends the wait (it is not a write: the store keeps time)."""
    now = time.time()
    lease = await _leased(store, "parked", now=now)
    update = RunUpdate(RunStatus.SLEEPING, wake_at=now + 0.5, release=True)
    await store.commit(lease, update=update, now=now)
    with anyio.move_on_after(20) as scope:
        await store.wait_for_work(workflows=[WORKFLOW], now=time.time(), within=60)
    assert not scope.cancelled_caught, "wait_for_work slept past a parked run's wake time"


@_check
async def watch_returns_when_within_passes(store: Store) -> None:
    """`watch` with nothing written returns by ``within`` (woken early is allowed)."""
    await store.create_run(_run("a"))
    with anyio.move_on_after(10) as scope:
        woken = await store.watch(["a"], within=0.05)
    assert not scope.cancelled_caught, "watch(within=0.05) did not return"
    assert isinstance(woken, bool), f"watch returned {woken!r}, not a bool"


@_check
async def watch_wakes_on_writes_to_the_run(store: Store) -> None:
    """A signal, a cancel, pause, resume or rollback request, or a release of the lease
    (with its outcome) wakes the tasks watching the run, at once."""
    now = time.time()

    async def release(run_id: str) -> None:
        lease = await store.acquire_lease(run_id, A, now=now, duration=30)
        assert lease is not None, f"acquire_lease of {run_id!r} returned None"
        await store.commit(lease, (), RunUpdate(RunStatus.COMPLETED, release=True), now=now)

    async def resume(run_id: str) -> None:
        await store.resume(run_id, now=now)

    writes: dict[str, Callable[[str], Awaitable[object]]] = {
        "send_signal": lambda run_id: store.send_signal(run_id, "go", b"x", now=now),
        "request_cancel": lambda run_id: store.request_cancel(run_id, now=now),
        "request_pause": lambda run_id: store.request_pause(run_id, now=now),
        "resume": resume,
        "request_rollback": lambda run_id: store.request_rollback(run_id, now=now),
        "commit with release": release,
    }
    for what, write in writes.items():
        run_id = f"run-{what.replace(' ', '-')}"
        status = RunStatus.COMPLETED if what == "request_rollback" else RunStatus.PENDING
        await store.create_run(_run(run_id, status=status, created_at=now))
        if what == "resume":
            await store.request_pause(run_id, now=now)
        result: list[bool] = []

        async def watcher(run_id: str = run_id, result: list[bool] = result) -> None:
            result.append(await store.watch([run_id], within=10.0))

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher)
            await anyio.wait_all_tasks_blocked()
            await write(run_id)
        took = time.monotonic() - started
        assert result == [True] and took < 5, f"{what} did not wake the run's watcher"
