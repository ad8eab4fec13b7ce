"""Store checks of commits and steps: fencing, steps and run updates written together or not at
all, outcomes replacing started steps, and requests that stop a starting step."""

from __future__ import annotations

import dataclasses

from durable.store import (
    Interruption,
    LeaseLost,
    RunStatus,
    RunUpdate,
    StepKind,
    StepRecord,
    StepStatus,
    Store,
    StoreError,
)

from ._support import B, _check, _get, _leased, _Raises, _run, _same, _step


@_check
async def a_taken_over_lease_can_write_nothing(store: Store) -> None:
    """A stale lease: commit and renew raise LeaseLost, release does nothing."""
    stale = await _leased(store, now=100.0, duration=30.0)
    current = await store.acquire_lease("run-1", B, now=200.0, duration=30.0)
    assert current is not None, "acquire_lease after expiry returned None"
    before = await store.get_run("run-1")
    done = RunUpdate(RunStatus.COMPLETED, result=b"stale", release=True)
    with _Raises(LeaseLost) as lost:
        await store.commit(stale, [_step("run-1", 1)], done, now=201.0)
    _same(getattr(lost.value, "run_id", None), "run-1", "LeaseLost.run_id")
    with _Raises(LeaseLost):
        await store.commit(stale, [_step("run-1", 1)], now=201.0)
    with _Raises(LeaseLost):
        await store.commit(stale, [_step("run-1", 1)], now=201.0, check_requests=True)
    with _Raises(LeaseLost):
        await store.renew_lease(stale, now=201.0, duration=30.0)
    await store.release_lease(stale)  # not ours any more: does nothing
    _same(await store.load_steps("run-1"), [], "steps written with a stale lease")
    _same(await store.get_run("run-1"), before, "the run after writes with a stale lease")


@_check
async def commit_records_steps_and_update_together(store: Store) -> None:
    """Steps and a run update in one commit; ``release`` frees the lease; finished is final."""
    lease = await _leased(store)
    steps = [_step("run-1", 1), _step("run-1", 2, name="app.ship")]
    written = await store.commit(lease, steps, RunUpdate(RunStatus.SLEEPING), now=105.0)
    _same(written, None, "commit")
    _same(await store.load_steps("run-1"), steps, "the steps")
    run = await _get(store, "run-1")
    _same(
        (run.status, run.updated_at, run.lease_owner),
        (RunStatus.SLEEPING, 105.0, "owner-a"),
        "the run after an update without release",
    )
    done = RunUpdate(RunStatus.COMPLETED, result=b"result", release=True)
    await store.commit(lease, [_step("run-1", 3)], done, now=106.0)
    run = await _get(store, "run-1")
    _same((run.status, run.result, run.updated_at), (RunStatus.COMPLETED, b"result", 106.0), "run")
    _same(
        (run.lease_owner, run.lease_expires_at, run.lease_token),
        (None, None, lease.token),
        "the lease after release",
    )
    _same([s.seq for s in await store.load_steps("run-1")], [1, 2, 3], "step numbers")
    _same(await store.acquire_lease("run-1", B, now=107.0, duration=30.0), None, "acquire")


@_check
async def commit_without_update_leaves_the_run_record_alone(store: Store) -> None:
    """Steps alone do not touch the run record (not even ``updated_at``)."""
    lease = await _leased(store, now=100.0)
    before = await store.get_run("run-1")
    await store.commit(lease, [_step("run-1", 1)], now=109.0)
    _same(await store.get_run("run-1"), before, "the run after a commit of steps only")
    _same([s.seq for s in await store.load_steps("run-1")], [1], "step numbers")


@_check
async def update_keeps_unset_payloads_and_replaces_error_text(store: Store) -> None:
    """A None result / error / cancelled_seq / wake_at keeps the value; error_text is replaced."""
    lease = await _leased(store)
    await store.commit(
        lease,
        (),
        RunUpdate(RunStatus.BLOCKED, error_text="diverged", cancelled_seq=4, wake_at=300.0),
        now=101.0,
    )
    await store.commit(lease, (), RunUpdate(RunStatus.COMPENSATING, error=b"boom"), now=102.0)
    run = await _get(store, "run-1")
    _same(
        (run.status, run.error, run.error_text, run.cancelled_seq, run.wake_at),
        (RunStatus.COMPENSATING, b"boom", None, 4, 300.0),
        "the run after two updates",
    )
    await store.commit(lease, (), RunUpdate(RunStatus.FAILED, error_text="boom"), now=103.0)
    run = await _get(store, "run-1")
    _same((run.status, run.error, run.error_text), (RunStatus.FAILED, b"boom", "boom"), "run")
    _same(run.updated_at, 103.0, "updated_at")


@_check
async def commit_with_a_repeated_seq_writes_nothing(store: Store) -> None:
    """A batch naming one step number twice raises StoreError naming the run; nothing written."""
    lease = await _leased(store)
    before = await store.get_run("run-1")
    batch = [_step("run-1", 1), _step("run-1", 2), _step("run-1", 1, result=b"dup")]
    with _Raises(StoreError, match="run-1"):
        await store.commit(lease, batch, RunUpdate(RunStatus.COMPLETED, result=b"r"), now=150.0)
    _same(await store.load_steps("run-1"), [], "steps after a refused commit")
    _same(await store.get_run("run-1"), before, "the run after a refused commit")


@_check
async def commit_of_an_already_recorded_step_writes_nothing(store: Store) -> None:
    """A step is written once: recording it again raises StoreError; nothing is written."""
    lease = await _leased(store)
    first = _step("run-1", 1)
    await store.commit(lease, [first], now=101.0)
    before = await store.get_run("run-1")
    batch = [_step("run-1", 2), _step("run-1", 1, result=b"second time")]
    with _Raises(StoreError, match="already recorded"):
        await store.commit(lease, batch, RunUpdate(RunStatus.COMPLETED, result=b"r"), now=150.0)
    with _Raises(StoreError, match="already recorded"):
        await store.commit(lease, [_step("run-1", 1, result=b"again")], now=151.0)
    _same(await store.load_steps("run-1"), [first], "steps after refused commits")
    _same(await store.get_run("run-1"), before, "the run after refused commits")


@_check
async def commit_refuses_a_step_of_another_run(store: Store) -> None:
    """A step of another run under this run's lease raises StoreError; nothing is written."""
    lease = await _leased(store)
    await store.create_run(_run("run-2"))
    with _Raises(StoreError, match="run-2"):
        await store.commit(lease, [_step("run-1", 1), _step("run-2", 2)], now=101.0)
    _same(await store.load_steps("run-1"), [], "steps of run-1")
    _same(await store.load_steps("run-2"), [], "steps of run-2")


@_check
async def load_steps_is_ordered_by_seq_and_per_run(store: Store) -> None:
    """`load_steps` returns one run's steps by ``seq``, every field as written."""
    lease = await _leased(store)
    other = await _leased(store, "run-2")
    failed = StepRecord(
        "run-1", 2, StepKind.TIMER, "sleep", StepStatus.FAILED, 3, 1.0, 2.0, None, b"err", None
    )
    await store.commit(lease, [_step("run-1", 3), _step("run-1", 1)], now=101.0)
    await store.commit(other, [_step("run-2", 1, name="app.other")], now=101.0)
    await store.commit(lease, [failed], now=102.0)
    steps = await store.load_steps("run-1")
    _same([s.seq for s in steps], [1, 2, 3], "step numbers")
    _same(steps[1], failed, "the failed step")
    _same(steps[0], _step("run-1", 1), "step 1")
    _same([s.name for s in await store.load_steps("run-2")], ["app.other"], "run-2's steps")


@_check
async def outcomes_replace_started_rows_and_stand_in_for_lost_ones(store: Store) -> None:
    """An outcome replaces a ``started`` row (another attempt's start, then the outcome), is
    inserted when the row is missing, never rewrites a finished step; a commit that starts a
    step is refused while a pause waits."""
    lease = await _leased(store)
    started = _step("run-1", 1, status=StepStatus.STARTED, result=None)
    _same(await store.commit(lease, [started], now=101.0, check_requests=True), None, "start")
    again = dataclasses.replace(started, attempts=2)
    await store.commit(lease, outcomes=[again], now=102.0, relaxed=True)
    steps = await store.load_steps("run-1")
    _same([(s.status, s.attempts) for s in steps], [(StepStatus.STARTED, 2)], "second attempt")
    await store.commit(lease, outcomes=[_step("run-1", 1)], now=103.0)
    await store.commit(lease, outcomes=[_step("run-1", 2)], now=104.0)  # no started row
    _same(await store.load_steps("run-1"), [_step("run-1", 1), _step("run-1", 2)], "steps")
    with _Raises(StoreError, match="already recorded"):
        await store.commit(lease, outcomes=[_step("run-1", 2, result=b"x")], now=105.0)
    await store.request_pause("run-1", now=106.0)
    stopped = await store.commit(
        lease, [dataclasses.replace(started, seq=3)], now=107.0, check_requests=True
    )
    _same(stopped, Interruption(cancel=False, pause=True), "a step started while paused")
    _same([s.seq for s in await store.load_steps("run-1")], [1, 2], "step numbers")


@_check
async def check_requests_stops_a_step_until_the_request_is_handled(store: Store) -> None:
    """A ``check_requests`` commit writes nothing while a cancel is undelivered or a pause
    is requested; delivering the cancel (``cancelled_seq``) or resuming lets it through."""
    lease = await _leased(store)
    start = _step("run-1", 1, status=StepStatus.STARTED, result=None)
    await store.request_cancel("run-1", now=101.0)
    stopped = await store.commit(lease, [start], now=102.0, check_requests=True)
    _same(stopped, Interruption(cancel=True, pause=False), "a step started after a cancel")
    _same(await store.load_steps("run-1"), [], "steps after the interruption")
    # without check_requests (an outcome, a compensation) the commit is written
    await store.commit(lease, [_step("run-1", 1, kind=StepKind.COMPENSATION)], now=103.0)
    await store.commit(lease, (), RunUpdate(RunStatus.RUNNING, cancelled_seq=2), now=104.0)
    start2 = dataclasses.replace(start, seq=2)
    _same(await store.commit(lease, [start2], now=105.0, check_requests=True), None, "delivered")
    await store.request_pause("run-1", now=106.0)
    start3 = dataclasses.replace(start, seq=3)
    stopped = await store.commit(lease, [start3], now=107.0, check_requests=True)
    _same(stopped, Interruption(cancel=False, pause=True), "a step started after a pause")
    stopped = await store.commit(
        lease, (), RunUpdate(RunStatus.RUNNING), now=107.5, check_requests=True
    )
    _same(stopped, Interruption(cancel=False, pause=True), "an update with check_requests")
    _same((await _get(store, "run-1")).updated_at, 106.0, "updated_at after the interruption")
    await store.resume("run-1", now=108.0)
    _same(await store.commit(lease, [start3], now=109.0, check_requests=True), None, "resumed")
    _same([s.seq for s in await store.load_steps("run-1")], [1, 2, 3], "step numbers")
