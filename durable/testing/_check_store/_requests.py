"""Store checks of requests and signals: cancel, pause, resume and rollback requests, buffering,
consuming and de-duplicating signals."""

from __future__ import annotations

import dataclasses

from durable.store import LeaseLost, RunStatus, RunUpdate, StepKind, StepStatus, Store, StoreError

from ._support import WORKFLOW, A, B, _check, _leased, _Raises, _run, _same, _step


@_check
async def request_cancel_marks_unfinished_runs_and_wakes_parked_ones(store: Store) -> None:
    """`request_cancel`: ``cancel_requested`` on an unfinished run; a parked run nobody
    executes becomes due now; a finished run is unchanged."""
    await store.create_run(_run("pending"))
    run = await store.request_cancel("pending", now=150.0)
    _same(run, await store.get_run("pending"), "the returned run")
    assert run is not None
    _same((run.cancel_requested, run.status, run.updated_at), (True, RunStatus.PENDING, 150.0), "")
    await store.create_run(_run("parked", status=RunStatus.SLEEPING, wake_at=5_000.0))
    run = await store.request_cancel("parked", now=151.0)
    _same(run is not None and run.wake_at, 151.0, "wake_at of a cancelled parked run")
    lease = await _leased(store, "leased")
    await store.commit(lease, (), RunUpdate(RunStatus.SLEEPING, wake_at=5_000.0), now=101.0)
    run = await store.request_cancel("leased", now=152.0)
    _same(run is not None and run.wake_at, 5_000.0, "wake_at of a leased sleeping run")
    done = _run("done", status=RunStatus.COMPLETED)
    await store.create_run(done)
    _same(await store.request_cancel("done", now=153.0), done, "a finished run")


@_check
async def request_pause_and_resume(store: Store) -> None:
    """`request_pause` pauses an idle run at once and marks a leased one; `resume` clears
    the request and makes a paused run ``pending``; finished runs are unchanged."""
    await store.create_run(_run("idle"))
    run = await store.request_pause("idle", now=150.0)
    _same(run and (run.status, run.pause_requested), (RunStatus.PAUSED, True), "paused idle run")
    run = await store.resume("idle", now=151.0)
    _same(run and (run.status, run.pause_requested), (RunStatus.PENDING, False), "resumed")
    _same(run and run.updated_at, 151.0, "updated_at after resume")
    await store.create_run(_run("parked", status=RunStatus.WAITING, wake_at=5_000.0))
    run = await store.request_pause("parked", now=152.0)
    _same(run and run.status, RunStatus.PAUSED, "a paused parked run")
    await _leased(store, "leased")
    run = await store.request_pause("leased", now=153.0)
    _same(run and (run.status, run.pause_requested), (RunStatus.RUNNING, True), "leased run")
    run = await store.resume("leased", now=154.0)
    _same(run and (run.status, run.pause_requested), (RunStatus.RUNNING, False), "resumed")
    done = _run("done", status=RunStatus.FAILED)
    await store.create_run(done)
    _same(await store.request_pause("done", now=155.0), done, "request_pause of a finished run")
    _same(await store.resume("done", now=155.0), done, "resume of a finished run")


@_check
async def request_rollback_turns_only_completed_runs_compensating(store: Store) -> None:
    """`request_rollback`: a ``completed`` run becomes ``compensating`` with
    ``rollback_requested``; any other run is left as it is."""
    await store.create_run(_run("done", status=RunStatus.COMPLETED, result=b"r"))
    run = await store.request_rollback("done", now=150.0)
    _same(
        run and (run.status, run.rollback_requested, run.result, run.updated_at),
        (RunStatus.COMPENSATING, True, b"r", 150.0),
        "a completed run after request_rollback",
    )
    for status in (RunStatus.FAILED, RunStatus.PENDING, RunStatus.COMPENSATED):
        other = _run(f"run-{status.value}", status=status)
        await store.create_run(other)
        _same(await store.request_rollback(other.id, now=151.0), other, f"a {status.value} run")


@_check
async def signals_are_consumed_oldest_first_by_name(store: Store) -> None:
    """`send_signal` buffers; `receive_signal` consumes the oldest of a name once, records
    the step with the payload as its result (replacing its ``started`` row), and returns
    None (writing nothing) when none is buffered."""
    lease = await _leased(store)
    for name, payload in [("go", b"1"), ("other", b"x"), ("go", b"2")]:
        run = await store.send_signal("run-1", name, payload, now=101.0)
        _same(run and run.id, "run-1", "send_signal's run")
    wait = _step("run-1", 1, kind=StepKind.SIGNAL, status=StepStatus.STARTED, result=None)
    await store.commit(lease, [wait], now=102.0)
    got = _step("run-1", 1, kind=StepKind.SIGNAL, result=None)
    _same(await store.receive_signal(lease, "go", got, now=103.0), b"1", "the first signal")
    step2 = _step("run-1", 2, kind=StepKind.SIGNAL, result=None)
    _same(await store.receive_signal(lease, "go", step2, now=104.0), b"2", "the second")
    step3 = _step("run-1", 3, kind=StepKind.SIGNAL, result=None)
    _same(await store.receive_signal(lease, "go", step3, now=105.0), None, "none left")
    _same(await store.receive_signal(lease, "other", step3, now=106.0), b"x", "another name")
    steps = await store.load_steps("run-1")
    _same(
        steps,
        [
            dataclasses.replace(got, result=b"1"),
            dataclasses.replace(step2, result=b"2"),
            dataclasses.replace(step3, result=b"x"),
        ],
        "the signal steps",
    )


@_check
async def a_signal_to_a_finished_run_is_not_buffered(store: Store) -> None:
    """`send_signal` to a finished run returns it unchanged and buffers nothing."""
    lease = await _leased(store)
    done = RunUpdate(RunStatus.COMPLETED, result=b"r")
    await store.commit(lease, (), done, now=101.0)
    finished = await store.get_run("run-1")
    _same(await store.send_signal("run-1", "go", b"1", now=102.0), finished, "the finished run")
    # its lease still writes, but no signal is there to receive
    step = _step("run-1", 1, kind=StepKind.SIGNAL)
    _same(await store.receive_signal(lease, "go", step, now=103.0), None, "receive_signal")
    _same(await store.load_steps("run-1"), [], "steps")


@_check
async def a_signal_wakes_a_waiting_run(store: Store) -> None:
    """A signal makes a ``waiting`` run due now, one that an executor still holds included
    (it keeps that when it parks: the earlier wake time wins), and a signal the executor then
    takes itself spends it; a sleeping run keeps its timer."""
    await store.create_run(_run("waiting", status=RunStatus.WAITING))
    run = await store.send_signal("waiting", "go", b"1", now=150.0)
    _same(run and run.wake_at, 150.0, "wake_at of a signalled waiting run")
    await store.create_run(_run("sleeping", status=RunStatus.SLEEPING, wake_at=5_000.0))
    run = await store.send_signal("sleeping", "go", b"1", now=151.0)
    _same(run and run.wake_at, 5_000.0, "wake_at of a signalled sleeping run")
    lease = await _leased(store, "leased", now=140.0)
    await store.commit(lease, (), RunUpdate(RunStatus.WAITING, wake_at=5_000.0), now=141.0)
    run = await store.send_signal("leased", "go", b"1", now=152.0)
    _same(run and run.wake_at, 152.0, "wake_at of a signalled leased waiting run")
    claimed = await store.claim(A, now=150.0, duration=30.0, limit=5, workflows=[WORKFLOW])
    _same([run.id for run, _ in claimed], ["waiting"], "the claim after the signal")
    # it parks without having seen the signal: due at the signal, not at its own wake time
    update = RunUpdate(RunStatus.WAITING, wake_at=5_000.0, release=True)
    await store.commit(lease, (), update, now=153.0)
    parked = await store.get_run("leased")
    _same(parked and parked.wake_at, 152.0, "wake_at of a run parked after a signal")
    # an executor that takes a signal itself spends the wake time the signal set
    lease = await _leased(store, "taker", now=160.0)
    await store.commit(lease, (), RunUpdate(RunStatus.WAITING), now=161.0)
    await store.send_signal("taker", "go", b"1", now=162.0)
    step = _step("taker", 1, kind=StepKind.SIGNAL)
    _same(await store.receive_signal(lease, "go", step, now=163.0), b"1", "the signal taken")
    await store.commit(lease, (), RunUpdate(RunStatus.WAITING, release=True), now=164.0)
    taken = await store.get_run("taker")
    _same(taken and taken.wake_at, None, "wake_at after the executor took the signal")


@_check
async def a_signal_idempotency_key_buffers_once(store: Store) -> None:
    """A second signal with the same ``idempotency_key`` to one run buffers nothing (even
    after the first was consumed); other runs and keys are independent."""
    lease = await _leased(store)
    other = await _leased(store, "run-2")
    for _ in range(2):
        await store.send_signal("run-1", "go", b"1", now=101.0, idempotency_key="k")
    await store.send_signal("run-2", "go", b"2", now=101.0, idempotency_key="k")
    step = _step("run-1", 1, kind=StepKind.SIGNAL)
    _same(await store.receive_signal(lease, "go", step, now=102.0), b"1", "the first send")
    await store.send_signal("run-1", "go", b"3", now=103.0, idempotency_key="k")
    step2 = _step("run-1", 2, kind=StepKind.SIGNAL)
    _same(await store.receive_signal(lease, "go", step2, now=104.0), None, "a repeated send")
    await store.send_signal("run-1", "go", b"4", now=105.0, idempotency_key="k2")
    _same(await store.receive_signal(lease, "go", step2, now=106.0), b"4", "another key")
    step_b = _step("run-2", 1, kind=StepKind.SIGNAL)
    _same(await store.receive_signal(other, "go", step_b, now=107.0), b"2", "another run")


@_check
async def receive_signal_is_fenced_and_writes_a_step_once(store: Store) -> None:
    """`receive_signal` with a stale lease raises LeaseLost, over a finished step StoreError;
    either way the signal stays buffered."""
    stale = await _leased(store, now=100.0, duration=30.0)
    await store.send_signal("run-1", "go", b"1", now=101.0)
    lease = await store.acquire_lease("run-1", B, now=200.0, duration=30.0)
    assert lease is not None, "acquire_lease after expiry returned None"
    step = _step("run-1", 1, kind=StepKind.SIGNAL)
    with _Raises(LeaseLost):
        await store.receive_signal(stale, "go", step, now=201.0)
    await store.commit(lease, [_step("run-1", 1)], now=202.0)
    with _Raises(StoreError, match="already recorded"):
        await store.receive_signal(lease, "go", step, now=203.0)
    _same(await store.load_steps("run-1"), [_step("run-1", 1)], "the steps")
    step2 = _step("run-1", 2, kind=StepKind.SIGNAL)
    _same(await store.receive_signal(lease, "go", step2, now=204.0), b"1", "the kept signal")
