"""`check_store`: the store contract (`durable.store.Store`) as a battery of named checks, so
that any backend, durable's own or a third party's, can prove that it keeps the contract.

Each check is an ``async def`` taking a fresh, empty store; it uses only the protocol, plain
``assert`` statements with messages and the small `_Raises` helper, and needs no pytest (a
plain ``pip install durable-sdk`` has none). `check_store` runs them all and reports every
failure at once; `run_store_check` runs one by name (a test suite parametrizes over
`STORE_CHECKS` to report each separately).

Timestamps are small made-up numbers except where a check waits for real (``wait_for_work``,
``watch``): those use the wall clock, as a worker does.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType

import anyio

from durable.store import (
    Interruption,
    Lease,
    LeaseLost,
    LeaseOwner,
    RunRecord,
    RunStatus,
    RunUpdate,
    StepKind,
    StepRecord,
    StepStatus,
    Store,
    StoreError,
)

__all__ = [
    "CHECK_TIMEOUT",
    "STORE_CHECKS",
    "StoreCheckFailed",
    "StoreFactory",
    "check_store",
    "run_store_check",
]

StoreFactory = Callable[[], Store | Awaitable[Store]]
"""Makes a new, empty store: a zero-argument callable returning it (or an awaitable of it)."""

CHECK_TIMEOUT = 60.0
"""Seconds one check may take before it fails (a store that hangs fails, it does not hang)."""


class StoreCheckFailed(AssertionError):
    """Some checks of `check_store` failed.

    Attributes:
        failures: each failed check's name and why it failed (the exception's type, message
            and the line of the check that raised it).
        checks: the names of every check run.
    """

    def __init__(self, failures: dict[str, str], checks: list[str]) -> None:
        self.failures = failures
        self.checks = checks
        lines = "\n".join(f"- {name}: {reason}" for name, reason in failures.items())
        super().__init__(
            f"{len(failures)} of {len(checks)} store checks failed (run one again with "
            f"durable.testing.run_store_check(name, make_store) for its traceback):\n{lines}"
        )


async def check_store(
    make_store: StoreFactory, *, checks: Iterable[str] | None = None
) -> list[str]:
    """Check that a store keeps the `durable.store.Store` contract.

    Every check gets a new store from ``make_store`` and closes it when done (``close`` must
    be idempotent: one check closes its store itself). All checks run, then the failures are
    reported together.

    Args:
        make_store: a zero-argument callable returning a new, empty store, or an awaitable of
            one (e.g. an ``async def``).
        checks: the names of the checks to run (see `STORE_CHECKS`); default: all of them.

    Returns:
        The names of the checks run, all of which passed.

    Raises:
        StoreCheckFailed: (an `AssertionError`) naming every check that failed and why.
        ValueError: a name in ``checks`` is not a check.

    Example:
        >>> async def test_my_store_keeps_the_contract() -> None:  # doctest: +SKIP
        ...     await durable.testing.check_store(lambda: MyStore("my://test"))
    """
    names = list(STORE_CHECKS if checks is None else checks)
    for name in names:
        _lookup(name)
    failures: dict[str, str] = {}
    for name in names:
        try:
            await run_store_check(name, make_store)
        except Exception as exc:
            failures[name] = _reason(exc)
    if failures:
        raise StoreCheckFailed(failures, names)
    return names


async def run_store_check(name: str, make_store: StoreFactory) -> None:
    """Run the check ``name`` (one of `STORE_CHECKS`) on a new store from ``make_store``,
    then close the store. The check's own exception propagates, with its traceback.

    Raises:
        AssertionError: the store broke the contract (or the check took longer than
            `CHECK_TIMEOUT`).
        ValueError: there is no check ``name``.
    """
    check = _lookup(name)
    made = make_store()
    store = await made if inspect.isawaitable(made) else made
    try:
        with anyio.move_on_after(CHECK_TIMEOUT) as scope:
            await check(store)
        if scope.cancelled_caught:
            raise AssertionError(f"store check {name!r} did not finish within {CHECK_TIMEOUT} s")
    finally:
        await store.close()


def _lookup(name: str) -> Callable[[Store], Awaitable[None]]:
    try:
        return _CHECKS[name]
    except KeyError:
        raise ValueError(
            f"there is no store check {name!r}; the checks are durable.testing.STORE_CHECKS"
        ) from None


def _reason(exc: BaseException) -> str:
    """One line: what was raised, and at which line of this module's checks."""
    text = " ".join(str(exc).split()) or "(no message)"
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == __file__]
    where = f" (durable/testing/_check_store.py line {lines[-1]})" if lines else ""
    return f"{type(exc).__name__}: {text}{where}"


class _Raises:
    """``with _Raises(LeaseLost): ...``: the block must raise ``kind`` (with a message matching
    the regular expression ``match``, if given); ``.value`` is the exception."""

    def __init__(self, kind: type[BaseException], match: str | None = None) -> None:
        self.kind = kind
        self.match = match
        self.value: BaseException | None = None

    def __enter__(self) -> _Raises:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None:
            raise AssertionError(f"expected {self.kind.__name__} to be raised; nothing was")
        if not isinstance(exc, self.kind):
            return False  # propagates, with its own traceback
        if self.match is not None and not re.search(self.match, str(exc)):
            raise AssertionError(
                f"expected {self.kind.__name__} matching {self.match!r}, got: {exc}"
            ) from exc
        self.value = exc
        return True


# -- records used by the checks ------------------------------------------------------------------

A = LeaseOwner("owner-a", "host-a", 101)
B = LeaseOwner("owner-b", "host-b", 202)
WORKFLOW = "app.book_trip"


def _run(
    run_id: str = "run-1",
    *,
    status: RunStatus = RunStatus.PENDING,
    created_at: float = 100.0,
    workflow: str = WORKFLOW,
    **fields: object,
) -> RunRecord:
    run = RunRecord(run_id, workflow, status, b"\x80args", created_at, created_at)
    return dataclasses.replace(run, **fields)  # type: ignore[arg-type]


def _step(
    run_id: str,
    seq: int,
    *,
    name: str = "app.charge",
    result: bytes | None = b"ok",
    status: StepStatus = StepStatus.COMPLETED,
    kind: StepKind = StepKind.ACTIVITY,
) -> StepRecord:
    return StepRecord(
        run_id=run_id,
        seq=seq,
        kind=kind,
        name=name,
        status=status,
        attempts=1,
        started_at=100.0 + seq,
        finished_at=100.5 + seq,
        result=result,
        location=f"app.py:{10 + seq}",
    )


async def _leased(
    store: Store,
    run_id: str = "run-1",
    *,
    now: float = 100.0,
    duration: float = 30.0,
    owner: LeaseOwner = A,
    workflow: str = WORKFLOW,
) -> Lease:
    await store.create_run(_run(run_id, created_at=now, workflow=workflow))
    lease = await store.acquire_lease(run_id, owner, now=now, duration=duration)
    assert lease is not None, f"acquire_lease of the new pending run {run_id!r} returned None"
    return lease


async def _get(store: Store, run_id: str) -> RunRecord:
    run = await store.get_run(run_id)
    assert run is not None, f"get_run({run_id!r}) returned None for a run that exists"
    return run


def _same(got: object, expected: object, what: str) -> None:
    assert got == expected, f"{what}: expected {expected!r}, got {got!r}"


# -- the checks ----------------------------------------------------------------------------------

_CHECKS: dict[str, Callable[[Store], Awaitable[None]]] = {}


def _check(fn: Callable[[Store], Awaitable[None]]) -> Callable[[Store], Awaitable[None]]:
    _CHECKS[fn.__name__] = fn
    return fn


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
    )
    await store.create_run(run)
    _same(await store.get_run("child-1"), run, "the run read back")


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
    """A signal makes a ``waiting`` run nobody executes due now; a sleeping run keeps its
    timer, a waiting run with an executor its wake time."""
    await store.create_run(_run("waiting", status=RunStatus.WAITING))
    run = await store.send_signal("waiting", "go", b"1", now=150.0)
    _same(run and run.wake_at, 150.0, "wake_at of a signalled waiting run")
    await store.create_run(_run("sleeping", status=RunStatus.SLEEPING, wake_at=5_000.0))
    run = await store.send_signal("sleeping", "go", b"1", now=151.0)
    _same(run and run.wake_at, 5_000.0, "wake_at of a signalled sleeping run")
    lease = await _leased(store, "leased", now=140.0)
    await store.commit(lease, (), RunUpdate(RunStatus.WAITING, wake_at=5_000.0), now=141.0)
    run = await store.send_signal("leased", "go", b"1", now=152.0)
    _same(run and run.wake_at, 5_000.0, "wake_at of a signalled leased waiting run")
    claimed = await store.claim(A, now=150.0, duration=30.0, limit=5, workflows=[WORKFLOW])
    _same([run.id for run, _ in claimed], ["waiting"], "the claim after the signal")


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


STORE_CHECKS: tuple[str, ...] = tuple(_CHECKS)
"""The names of the checks `check_store` runs, in order (each is documented by its
function's docstring in this module)."""
