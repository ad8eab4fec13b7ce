"""Store checks of what operators do to runs: creating a run with copied steps (a fork),
making a stopped run runnable again (a retry) and deleting a finished run."""

from __future__ import annotations

from durable.store import RunRecord, RunStatus, RunUpdate, StepStatus, Store

from ._support import A, _check, _get, _run, _same, _step


async def _failed(
    store: Store, run_id: str = "run-1", *, steps: int = 3, parent_id: str | None = None
) -> RunRecord:
    """A run with ``steps`` steps (the last one failed), a cancel request and a buffered
    signal, ended ``failed``."""
    await store.create_run(_run(run_id, parent_id=parent_id))
    lease = await store.acquire_lease(run_id, A, now=100.0, duration=30)
    assert lease is not None, f"acquire_lease of {run_id!r} returned None"
    recorded = [_step(run_id, seq) for seq in range(1, steps)]
    recorded.append(_step(run_id, steps, status=StepStatus.FAILED, result=None))
    await store.commit(lease, recorded, now=101.0)
    await store.send_signal(run_id, "approve", b"yes", now=101.5)
    await store.request_cancel(run_id, now=101.6)
    update = RunUpdate(RunStatus.FAILED, error=b"boom", error_text="boom", release=True)
    await store.commit(lease, update=update, now=102.0)
    return await _get(store, run_id)


@_check
async def create_run_with_steps_records_both_or_neither(store: Store) -> None:
    """`create_run(run, steps)` records the run with its steps; when the id exists, neither
    the new run nor its steps are written."""
    steps = [_step("fork", 1), _step("fork", 2, status=StepStatus.FAILED, result=None)]
    stored, created = await store.create_run(_run("fork"), steps)
    _same((created, stored.id), (True, "fork"), "the created fork")
    _same(await store.load_steps("fork"), steps, "the fork's steps")
    again = [_step("fork", 3)]
    _, created = await store.create_run(_run("fork", created_at=200.0), again)
    _same(created, False, "created, for an id that exists")
    _same(await store.load_steps("fork"), steps, "the steps after a second create")


@_check
async def reset_run_drops_the_steps_and_makes_the_run_pending(store: Store) -> None:
    """`reset_run` deletes exactly the steps in ``drop``, makes the run ``pending`` with its
    outcome, requests and recoveries cleared, increments its token, keeps signals."""
    run = await _failed(store, steps=4)
    reset = await store.reset_run(
        "run-1",
        token=run.lease_token,
        status=RunStatus.FAILED,
        drop=[2, 4],
        rollback=False,
        now=300.0,
    )
    assert reset is not None, "reset_run returned None for a run that exists"
    _same(
        (reset.status, reset.result, reset.error, reset.error_text, reset.cancel_requested),
        (RunStatus.PENDING, None, None, None, False),
        "the reset run",
    )
    _same(
        (reset.lease_token, reset.lease_owner, reset.recoveries),
        (run.lease_token + 1, None, 0),
        "the reset run's lease",
    )
    _same(reset.updated_at, 300.0, "updated_at of the reset run")
    _same(await _get(store, "run-1"), reset, "the stored run")
    _same([s.seq for s in await store.load_steps("run-1")], [1, 3], "the steps kept")
    lease = await store.acquire_lease("run-1", A, now=301.0, duration=30)
    assert lease is not None, "the reset run could not be leased"
    payload = await store.receive_signal(lease, "approve", _step("run-1", 2), now=302.0)
    _same(payload, b"yes", "the signal buffered before the reset")


@_check
async def reset_run_refuses_a_run_that_changed(store: Store) -> None:
    """`reset_run` changes nothing when the token or status differ from what the caller read
    or an executor holds the lease."""
    run = await _failed(store)
    for token, status in (
        (run.lease_token - 1, RunStatus.FAILED),
        (run.lease_token, RunStatus.BLOCKED),
    ):
        got = await store.reset_run(
            "run-1", token=token, status=status, drop=[1], rollback=False, now=300.0
        )
        _same(got, run, f"the run after a reset with token {token} and status {status}")
    await store.create_run(_run("leased"))
    lease = await store.acquire_lease("leased", A, now=100.0, duration=30)
    assert lease is not None
    leased = await _get(store, "leased")
    got = await store.reset_run(
        "leased", token=lease.token, status=RunStatus.RUNNING, drop=[], rollback=False, now=300.0
    )
    _same(got, leased, "a leased run after reset_run")
    missing = await store.reset_run(
        "nope", token=1, status=RunStatus.FAILED, drop=[], rollback=False, now=300.0
    )
    _same(missing, None, "reset_run of a missing run")
    _same(len(await store.load_steps("run-1")), 3, "the steps of the refused run")


@_check
async def delete_run_deletes_only_finished_runs_without_unfinished_ancestors(
    store: Store,
) -> None:
    """`delete_run` deletes a finished run with its steps and signals, refuses an unfinished
    one and one below an unfinished ancestor, and reports a missing one."""
    await _failed(store, "done")
    _same(await store.delete_run("done"), True, "delete_run of a failed run")
    _same((await store.get_run("done"), await store.load_steps("done")), (None, []), "after it")
    _same(await store.delete_run("done"), None, "delete_run of a deleted run")
    await store.create_run(_run("parent"))
    await _failed(store, "child", parent_id="parent")
    await _failed(store, "grandchild", parent_id="child")
    await store.create_run(_run("orphan", parent_id="gone", status=RunStatus.COMPLETED))
    _same(await store.delete_run("parent"), False, "delete_run of a pending run")
    _same(await store.delete_run("child"), False, "delete_run of a child of a pending run")
    _same(await store.delete_run("grandchild"), False, "delete_run below a pending run")
    _same(len(await store.load_steps("grandchild")), 3, "steps of the refused grandchild")
    _same(await store.delete_run("orphan"), True, "delete_run of a run whose parent is gone")
    _same(await store.delete_run("nope"), None, "delete_run of a missing run")
