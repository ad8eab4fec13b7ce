"""Store checks of runs and leases: recording and reading runs, acquiring, renewing and
releasing leases, claiming, listing, and a closed store."""

from __future__ import annotations

from typing import Any

import anyio

from durable.store import (
    Lease,
    LeaseOwner,
    RunQuery,
    RunRecord,
    RunStatus,
    RunUpdate,
    Store,
    StoreError,
)

from ._support import WORKFLOW, A, B, _check, _get, _leased, _Raises, _run, _same


@_check
async def satisfies_the_protocol(store: Store) -> None:
    """Has every method of `Store` (a runtime-checkable protocol)."""
    assert isinstance(store, Store), f"{store!r} lacks methods of durable.store.Store"


@_check
async def create_run_is_idempotent(store: Store) -> None:
    """A second `create_run` with the same id keeps and returns the first record."""
    first = _run()
    _same(await store.create_run(first), (first, True), "create_run of a new id")
    again = RunRecord("run-1", "app.other", RunStatus.PENDING, b"other", 200.0, 200.0)
    _same(await store.create_run(again), (first, False), "create_run of an existing id")
    _same(await store.get_run("run-1"), first, "the stored run")


@_check
async def unknown_run_reads_as_absent(store: Store) -> None:
    """A missing run: `get_run` None, no steps, no lease, requests and signals return None."""
    _same(await store.get_run("nope"), None, "get_run of a missing run")
    _same(await store.load_steps("nope"), [], "load_steps of a missing run")
    _same(await store.acquire_lease("nope", A, now=0.0, duration=10.0), None, "acquire_lease")
    for request in (store.request_cancel, store.request_pause, store.resume):
        _same(await request("nope", now=1.0), None, f"{request.__name__} of a missing run")
    _same(await store.request_rollback("nope", now=1.0), None, "request_rollback")
    _same(await store.send_signal("nope", "go", b"x", now=1.0), None, "send_signal")
    await store.wake("nope", now=1.0)  # nothing to wake, no error
    _same(await store.list_runs(), [], "list_runs of an empty store")


@_check
async def run_record_round_trips_every_field(store: Store) -> None:
    """Every `RunRecord` field is stored and read back as it was (bytes, floats, flags)."""
    run = RunRecord(
        id="child-1",
        workflow="app.child",
        status=RunStatus.BLOCKED,
        args=bytes(range(256)),
        created_at=1_700_000_000.25,
        updated_at=1_700_000_001.5,
        parent_id="parent-1",
        result=b"\x00result",
        error=b"\x00error",
        error_text="diverged at step 3",
        lease_owner="someone",
        lease_host="elsewhere",
        lease_pid=4_000_000,
        lease_token=41,
        lease_expires_at=1_700_000_030.0,
        cancel_requested=True,
        cancelled_seq=3,
        rollback_requested=True,
        wake_at=1_700_000_060.75,
        pause_requested=True,
        code_version="v2",
        recoveries=2,
        trace_context='{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}',
    )
    await store.create_run(run)
    _same(await store.get_run("child-1"), run, "the run read back")


@_check
async def trace_context_round_trips(store: Store) -> None:
    """A created run's ``trace_context`` (a JSON carrier, or ``None``) is read back as written,
    by `get_run`, `find_runs` and `claim`."""
    carrier = (
        '{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", '
        '"tracestate": "vendor=opaque,other=\\u00e9"}'
    )
    traced = _run("traced", trace_context=carrier)
    untraced = _run("untraced", created_at=101.0)
    _same(await store.create_run(traced), (traced, True), "create_run of a traced run")
    await store.create_run(untraced)
    _same((await _get(store, "traced")).trace_context, carrier, "trace_context read back")
    _same((await _get(store, "untraced")).trace_context, None, "no trace_context read back")
    found = await store.find_runs(RunQuery(limit=10))
    _same([r.trace_context for r in found], [None, carrier], "trace_context by find_runs")
    claimed = await store.claim(A, now=200.0, duration=30.0, limit=10, workflows=[WORKFLOW])
    by_id = {run.id: run.trace_context for run, _ in claimed}
    _same(by_id, {"traced": carrier, "untraced": None}, "trace_context of claimed runs")


@_check
async def acquire_sets_the_lease_and_makes_the_run_running(store: Store) -> None:
    """`acquire_lease`: token + 1, holder and expiry set, ``running``, error_text cleared."""
    await store.create_run(_run(status=RunStatus.BLOCKED, error_text="diverged"))
    lease = await store.acquire_lease("run-1", A, now=150.0, duration=30.0)
    _same(lease, Lease("run-1", A, 1, 180.0), "the lease")
    run = await _get(store, "run-1")
    _same(run.status, RunStatus.RUNNING, "status after acquire")
    _same(run.error_text, None, "error_text after acquire")
    _same((run.lease_owner, run.lease_host, run.lease_pid), ("owner-a", "host-a", 101), "holder")
    _same((run.lease_token, run.lease_expires_at, run.updated_at), (1, 180.0, 150.0), "lease")
    _same(run.recoveries, 0, "recoveries after acquiring a free run")


@_check
async def acquire_is_refused_while_the_lease_is_held(store: Store) -> None:
    """Nobody (not even the holder) acquires a held, unexpired lease; the run is unchanged."""
    await _leased(store, now=100.0, duration=30.0)
    before = await store.get_run("run-1")
    _same(await store.acquire_lease("run-1", B, now=129.9, duration=30.0), None, "another owner")
    _same(await store.acquire_lease("run-1", A, now=110.0, duration=30.0), None, "the holder")
    _same(await store.get_run("run-1"), before, "the run after refused acquires")


@_check
async def acquire_is_allowed_once_the_lease_expired(store: Store) -> None:
    """At ``lease_expires_at`` the lease is free; taking it counts a recovery."""
    await _leased(store, now=100.0, duration=30.0)
    lease = await store.acquire_lease("run-1", B, now=130.0, duration=30.0)
    _same(lease, Lease("run-1", B, 2, 160.0), "the lease taken at expiry")
    run = await _get(store, "run-1")
    _same((run.lease_owner, run.recoveries), ("owner-b", 1), "holder and recoveries")


@_check
async def takeover_token_allows_acquire_before_expiry(store: Store) -> None:
    """The current token as ``takeover_token`` takes a held lease; another token does not."""
    held = await _leased(store, now=100.0, duration=30.0)
    wrong = await store.acquire_lease(
        "run-1", B, now=101.0, duration=30.0, takeover_token=held.token + 7
    )
    _same(wrong, None, "acquire with a wrong takeover_token")
    lease = await store.acquire_lease(
        "run-1", B, now=101.0, duration=30.0, takeover_token=held.token
    )
    _same(lease, Lease("run-1", B, held.token + 1, 131.0), "acquire with the current token")
    _same((await _get(store, "run-1")).recoveries, 1, "recoveries after a takeover")


@_check
async def every_acquire_increments_the_token(store: Store) -> None:
    """Tokens go 1, 2, 3... across acquire / release; a released lease is no recovery."""
    await store.create_run(_run())
    tokens = []
    for i in range(5):
        lease = await store.acquire_lease("run-1", A, now=100.0 + i, duration=30.0)
        assert lease is not None, f"acquire {i + 1} after a release returned None"
        tokens.append(lease.token)
        await store.release_lease(lease)
    _same(tokens, [1, 2, 3, 4, 5], "the tokens")
    _same((await _get(store, "run-1")).recoveries, 0, "recoveries")


@_check
async def only_unfinished_runs_can_be_leased(store: Store) -> None:
    """Every unfinished status can be acquired (and becomes ``running``); no finished one."""
    for status in RunStatus:
        run_id = f"run-{status.value}"
        await store.create_run(_run(run_id, status=status))
        lease = await store.acquire_lease(run_id, A, now=100.0, duration=30.0)
        assert (lease is None) is status.finished, (
            f"acquire_lease of a {status.value} run returned {lease!r}"
        )
        expected = status if status.finished else RunStatus.RUNNING
        _same((await _get(store, run_id)).status, expected, f"status of the {status.value} run")


@_check
async def renew_extends_the_lease(store: Store) -> None:
    """`renew_lease` moves the expiry (not ``updated_at``); the renewed lease holds."""
    lease = await _leased(store, now=100.0, duration=30.0)
    renewed = await store.renew_lease(lease, now=125.0, duration=30.0)
    _same(renewed, Lease("run-1", A, lease.token, 155.0), "the renewed lease")
    run = await _get(store, "run-1")
    _same((run.lease_expires_at, run.updated_at), (155.0, 100.0), "expiry and updated_at")
    _same(await store.acquire_lease("run-1", B, now=140.0, duration=30.0), None, "acquire")


@_check
async def release_clears_the_holder_and_keeps_the_token(store: Store) -> None:
    """`release_lease` clears owner, host, pid and expiry, keeps token and status."""
    lease = await _leased(store)
    await store.release_lease(lease)
    run = await _get(store, "run-1")
    holder = (run.lease_owner, run.lease_host, run.lease_pid, run.lease_expires_at)
    _same(holder, (None,) * 4, "the holder after release")
    _same((run.lease_token, run.status), (lease.token, RunStatus.RUNNING), "token and status")
    again = await store.acquire_lease("run-1", B, now=101.0, duration=30.0)
    assert again is not None, "acquire_lease after a release returned None"
    _same(again.token, lease.token + 1, "the next token")


@_check
async def list_runs_oldest_first_by_status_and_limit(store: Store) -> None:
    """`list_runs` orders by ``created_at`` (then id), filters by status, honours ``limit``."""
    await store.create_run(_run("c", created_at=3.0))
    await store.create_run(_run("a", created_at=1.0, status=RunStatus.COMPLETED))
    await store.create_run(_run("d", created_at=4.0, status=RunStatus.COMPLETED))
    await store.create_run(_run("b", created_at=2.0))
    await store.create_run(_run("b2", created_at=2.0))
    _same([r.id for r in await store.list_runs()], ["a", "b", "b2", "c", "d"], "all runs")
    _same([r.id for r in await store.list_runs(limit=2)], ["a", "b"], "limit=2")
    pending = await store.list_runs(status=RunStatus.PENDING)
    _same([r.id for r in pending], ["b", "b2", "c"], "the pending runs")
    done = await store.list_runs(status=RunStatus.COMPLETED, limit=1)
    _same([r.id for r in done], ["a"], "the oldest completed run")
    _same(await store.list_runs(status=RunStatus.WAITING), [], "no waiting run")
    _same(await store.list_runs(limit=0), [], "limit=0")


@_check
async def find_runs_newest_first_filtered_and_paged(store: Store) -> None:
    """`find_runs` orders newest first (``created_at``, then id), applies every filter of its
    `RunQuery` (statuses, workflows, literal id prefix, parent, created bounds, the
    ``older_than`` cursor) and honours ``limit``."""
    await store.create_run(_run("a", created_at=1.0, status=RunStatus.COMPLETED))
    await store.create_run(_run("b", created_at=2.0))
    await store.create_run(_run("b2", created_at=2.0))
    await store.create_run(_run("b2/1", created_at=3.0, parent_id="b2"))
    await store.create_run(_run("c", created_at=4.0, workflow="app.other"))

    async def ids(**query: Any) -> list[str]:
        return [r.id for r in await store.find_runs(RunQuery(**query))]

    _same(await ids(), ["c", "b2/1", "b2", "b", "a"], "all runs, newest first")
    _same(await ids(limit=2), ["c", "b2/1"], "limit=2")
    _same(await ids(limit=0), [], "limit=0")
    _same(await ids(statuses=frozenset({RunStatus.COMPLETED})), ["a"], "completed runs")
    _same(await ids(workflows=frozenset({"app.other"})), ["c"], "runs of app.other")
    _same(await ids(workflows=frozenset()), [], "no workflow")
    _same(await ids(id_prefix="b2"), ["b2/1", "b2"], "ids starting with b2")
    _same(await ids(id_prefix="b_"), [], "a prefix is literal, not a pattern")
    _same(await ids(parent_id="b2"), ["b2/1"], "children of b2")
    _same(await ids(created_after=1.0, created_before=4.0), ["b2/1", "b2", "b"], "bounds")
    _same(await ids(older_than=(2.0, "b2")), ["b", "a"], "older than (2.0, 'b2')")


@_check
async def concurrent_acquires_grant_one_lease(store: Store) -> None:
    """Of many concurrent `acquire_lease` calls on one run, exactly one gets the lease."""
    await store.create_run(_run())
    owners = [LeaseOwner(f"task-{i}", "host", i) for i in range(8)]
    results: list[Lease | None] = []

    async def attempt(owner: LeaseOwner) -> None:
        results.append(await store.acquire_lease("run-1", owner, now=100.0, duration=60.0))

    async with anyio.create_task_group() as tg:
        for owner in owners:
            tg.start_soon(attempt, owner)
    granted = [r for r in results if r is not None]
    _same(len(granted), 1, "leases granted")
    run = await _get(store, "run-1")
    _same((run.lease_owner, run.lease_token), (granted[0].owner.owner, 1), "holder and token")


@_check
async def a_closed_store_refuses_calls(store: Store) -> None:
    """After `close` (idempotent), calls raise StoreError saying the store is closed."""
    await store.create_run(_run())
    await store.close()
    await store.close()
    with _Raises(StoreError, match="closed"):
        await store.get_run("run-1")
    with _Raises(StoreError, match="closed"):
        await store.create_run(_run("run-2"))


@_check
async def claim_takes_runnable_runs_oldest_due_first(store: Store) -> None:
    """`claim` takes pending runs, parked runs whose wake time came and runs with an expired
    lease, of the given workflows, in due order, at most ``limit``; it returns the runs as
    they were before with their new leases."""
    now = 1_000.0
    await store.create_run(_run("pending-old", created_at=10.0))
    await store.create_run(_run("pending-new", created_at=20.0))
    sleeping = RunStatus.SLEEPING
    await store.create_run(_run("parked-due", status=sleeping, created_at=5.0, wake_at=15.0))
    await store.create_run(_run("parked-later", status=sleeping, created_at=5.0, wake_at=1_010.0))
    await store.create_run(_run("waiting-forever", status=RunStatus.WAITING, created_at=1.0))
    await store.create_run(_run("blocked", status=RunStatus.BLOCKED, created_at=1.0))
    await store.create_run(_run("paused", status=RunStatus.PAUSED, created_at=1.0))
    await store.create_run(_run("done", status=RunStatus.COMPLETED, created_at=1.0))
    await store.create_run(_run("other", created_at=1.0, workflow="app.other"))
    await _leased(store, "expired", now=30.0, duration=30.0, owner=B)
    await _leased(store, "held", now=990.0, duration=30.0, owner=B)
    before = {run.id: run for run in await store.list_runs()}

    _same(await store.claim(A, now=now, duration=60.0, limit=0, workflows=[WORKFLOW]), [], "0")
    _same(await store.claim(A, now=now, duration=60.0, limit=5, workflows=[]), [], "no names")
    first = await store.claim(A, now=now, duration=60.0, limit=2, workflows=[WORKFLOW])
    _same([run.id for run, _ in first], ["pending-old", "parked-due"], "the first claim")
    for run, lease in first:
        _same(run, before[run.id], f"{run.id} as claimed (the record before the claim)")
        _same(lease, Lease(run.id, A, 1, now + 60.0), f"the lease on {run.id}")
    rest = await store.claim(A, now=now, duration=60.0, limit=10, workflows=[WORKFLOW])
    _same([run.id for run, _ in rest], ["pending-new", "expired"], "the second claim")
    _same(await store.claim(A, now=now, duration=60.0, limit=10, workflows=[WORKFLOW]), [], "3rd")
    expired = await _get(store, "expired")
    _same(
        (expired.status, expired.lease_owner, expired.lease_token, expired.recoveries),
        (RunStatus.RUNNING, "owner-a", 2, 1),
        "a run claimed from a dead executor",
    )
    parked_run = await _get(store, "parked-due")
    _same((parked_run.status, parked_run.wake_at), (RunStatus.RUNNING, None), "claimed parked")
    other = await store.claim(B, now=now, duration=60.0, limit=10, workflows=["app.other"])
    _same([run.id for run, _ in other], ["other"], "a claim of the other workflow")
    later = await store.claim(A, now=1_010.0, duration=60.0, limit=10, workflows=[WORKFLOW])
    _same([run.id for run, _ in later], ["parked-later"], "a claim when the timer is due")


@_check
async def claim_leaves_a_paused_run_until_it_is_resumed(store: Store) -> None:
    """A ``paused`` run is not claimed or listed by `leased_on`, even when a lease on it
    lapsed; `resume` makes it runnable."""
    lease = await _leased(store, now=100.0, duration=30.0)
    await store.commit(lease, (), RunUpdate(RunStatus.PAUSED), now=101.0)  # lease kept
    _same(await store.claim(B, now=200.0, duration=30.0, limit=5, workflows=[WORKFLOW]), [], "")
    _same(await store.leased_on("host-a", workflows=[WORKFLOW]), [], "leased_on")
    resumed = await store.resume("run-1", now=201.0)
    _same(resumed is not None and resumed.status, RunStatus.PENDING, "status after resume")
    claimed = await store.claim(B, now=202.0, duration=30.0, limit=5, workflows=[WORKFLOW])
    _same([run.id for run, _ in claimed], ["run-1"], "the claim after resume")


@_check
async def concurrent_claims_never_share_a_run(store: Store) -> None:
    """Claimers running at the same time never get the same run."""
    for i in range(10):
        await store.create_run(_run(f"run-{i}", created_at=float(i)))
    claimed: list[str] = []

    async def claimer(i: int) -> None:
        owner = LeaseOwner(f"claimer-{i}", "host", i)
        for run, lease in await store.claim(
            owner, now=100.0, duration=60.0, limit=3, workflows=[WORKFLOW]
        ):
            claimed.append(run.id)
            _same(lease.token, 1, f"the token of {run.id}")

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(claimer, i)
    assert len(claimed) == len(set(claimed)), f"runs claimed twice: {sorted(claimed)}"
    assert claimed, "no claimer got a run"


@_check
async def leased_on_lists_the_runs_a_host_executes(store: Store) -> None:
    """`leased_on`: unfinished runs of the workflows leased on the host (expired or not),
    except blocked and paused ones."""
    await _leased(store, "running", now=100.0)
    await _leased(store, "expired", now=10.0, duration=1.0)
    done = await _leased(store, "done")
    await store.commit(done, (), RunUpdate(RunStatus.COMPLETED), now=101.0)
    blocked = await _leased(store, "blocked")
    await store.commit(blocked, (), RunUpdate(RunStatus.BLOCKED, error_text="x"), now=101.0)
    await _leased(store, "elsewhere", owner=B)
    await _leased(store, "other", workflow="app.other")
    released = await _leased(store, "released")
    await store.release_lease(released)
    found = await store.leased_on("host-a", workflows=[WORKFLOW])
    _same(sorted(run.id for run in found), ["expired", "running"], "runs leased on host-a")
    _same(await store.leased_on("host-c", workflows=[WORKFLOW]), [], "runs leased on host-c")


@_check
async def a_delayed_start_is_claimed_from_its_wake_at(store: Store) -> None:
    """A ``pending`` run with a ``wake_at`` (a delayed start) is not claimed before that time
    and is claimed from it, ordered by it among the others; a cancel makes it due at once;
    `resume` after a pause makes it runnable at once."""
    await store.create_run(_run("later", created_at=100.0, wake_at=500.0))
    await store.create_run(_run("now", created_at=300.0))
    claimed = await store.claim(A, now=200.0, duration=1e6, limit=10, workflows=[WORKFLOW])
    _same([run.id for run, _ in claimed], ["now"], "runs claimed before the delayed start")
    claimed = await store.claim(B, now=500.0, duration=30.0, limit=10, workflows=[WORKFLOW])
    _same([run.id for run, _ in claimed], ["later"], "runs claimed at the delayed start")
    _same((await _get(store, "later")).wake_at, None, "wake_at of the claimed delayed run")

    await store.create_run(_run("cancelled", created_at=100.0, wake_at=900.0))
    await store.request_cancel("cancelled", now=210.0)
    _same((await _get(store, "cancelled")).wake_at, 210.0, "wake_at of a cancelled delayed run")
    await store.create_run(_run("waiting", status=RunStatus.WAITING, created_at=100.0))
    await store.request_cancel("waiting", now=215.0)
    _same((await _get(store, "waiting")).wake_at, 215.0, "wake_at of a cancelled signal wait")
    await store.create_run(_run("pending", created_at=100.0))
    await store.request_cancel("pending", now=216.0)
    _same((await _get(store, "pending")).wake_at, None, "wake_at of a cancelled pending run")
    await store.create_run(_run("paused", created_at=100.0, wake_at=900.0))
    await store.request_pause("paused", now=220.0)
    await store.resume("paused", now=230.0)
    _same((await _get(store, "paused")).wake_at, None, "wake_at of a resumed delayed run")
    claimed = await store.claim(A, now=240.0, duration=30.0, limit=10, workflows=[WORKFLOW])
    _same(
        sorted(run.id for run, _ in claimed),
        ["cancelled", "paused", "pending", "waiting"],
        "runs claimed now",
    )
