"""Store checks of continue-as-new: `Store.continue_run` starts a run's next generation in one
fenced write (its history emptied, its buffered signals kept)."""

from __future__ import annotations

import dataclasses

from durable.store import LeaseLost, RunStatus, RunUpdate, StepKind, Store

from ._support import A, B, _check, _get, _Raises, _run, _same, _step


@_check
async def continue_run_starts_the_next_generation_under_the_same_lease(store: Store) -> None:
    """`continue_run` deletes the run's steps and consumed signals, keeps its buffered ones
    (and the idempotency key of a consumed one), stores the new arguments and ``generation
    + 1``, clears the outcome and a delivered cancel, and keeps the id, queue, deadline,
    times and the lease, which goes on fencing the new generation."""
    await store.create_run(
        _run(queue="mail", queue_key="tenant-1", priority=3, deadline=9_000.0, code_version="v2")
    )
    lease = await store.acquire_lease("run-1", A, now=100.0, duration=30)
    assert lease is not None, "acquire_lease of a new pending run returned None"
    await store.commit(lease, [_step("run-1", 1), _step("run-1", 2)], now=101.0)
    await store.send_signal("run-1", "add", b"one", now=102.0, idempotency_key="k-1")
    await store.send_signal("run-1", "add", b"two", now=103.0)
    await store.send_signal("run-1", "stop", b"now", now=104.0, idempotency_key="k-3")
    wait = _step("run-1", 3, kind=StepKind.SIGNAL, name="add", result=None)
    _same(await store.receive_signal(lease, "add", wait, now=105.0), b"one", "the first signal")
    await store.request_cancel("run-1", now=106.0)
    await store.commit(lease, (), RunUpdate(RunStatus.RUNNING, cancelled_seq=3), now=107.0)
    before = await _get(store, "run-1")

    run = await store.continue_run(lease, b"\x80next", now=200.0)
    _same(run, await _get(store, "run-1"), "the run continue_run returned")
    expected = dataclasses.replace(
        before,
        args=b"\x80next",
        generation=before.generation + 1,
        status=RunStatus.RUNNING,
        cancel_requested=False,
        cancelled_seq=None,
        updated_at=200.0,
    )
    _same(run, expected, "the continued run")
    _same(await store.load_steps("run-1"), [], "the steps of the continued run")

    # The lease fences the new generation: its steps are numbered from 1 again.
    await store.commit(lease, [_step("run-1", 1)], now=201.0)
    _same([s.seq for s in await store.load_steps("run-1")], [1], "the new generation's steps")
    await store.send_signal("run-1", "add", b"one again", now=202.0, idempotency_key="k-1")
    for seq, name, payload in ((2, "add", b"two"), (3, "stop", b"now"), (4, "add", None)):
        step = _step("run-1", seq, kind=StepKind.SIGNAL, name=name, result=None)
        got = await store.receive_signal(lease, name, step, now=203.0 + seq)
        _same(got, payload, f"signal {name!r} received in the new generation (step {seq})")
    again = await store.continue_run(lease, b"\x80third", now=300.0)
    _same((again.generation, again.args), (before.generation + 2, b"\x80third"), "a third one")


@_check
async def continue_run_keeps_an_undelivered_cancel_and_is_fenced(store: Store) -> None:
    """`continue_run` keeps a cancel request not delivered yet (the next generation takes
    it), resets ``recoveries``, and is refused with `LeaseLost`, writing nothing, when the
    run's token moved on or the run is missing."""
    await store.create_run(_run())
    stale = await store.acquire_lease("run-1", A, now=100.0, duration=30)
    assert stale is not None, "acquire_lease of a new pending run returned None"
    await store.commit(stale, [_step("run-1", 1)], now=101.0)
    lease = await store.acquire_lease("run-1", B, now=200.0, duration=30)  # A's expired
    assert lease is not None, "acquire_lease of a run whose lease expired returned None"
    before = await _get(store, "run-1")
    _same(before.recoveries, 1, "recoveries after a takeover")
    with _Raises(LeaseLost):
        await store.continue_run(stale, b"\x80next", now=201.0)
    _same(await _get(store, "run-1"), before, "the run after a refused continue_run")
    _same(len(await store.load_steps("run-1")), 1, "the steps after a refused continue_run")
    await store.request_cancel("run-1", now=202.0)
    run = await store.continue_run(lease, b"\x80next", now=203.0)
    _same(
        (run.generation, run.cancel_requested, run.recoveries, run.lease_token),
        (before.generation + 1, True, 0, lease.token),
        "generation, cancel request, recoveries and token of the continued run",
    )
    missing = dataclasses.replace(lease, run_id="nope")
    with _Raises(LeaseLost):
        await store.continue_run(missing, b"\x80next", now=204.0)
