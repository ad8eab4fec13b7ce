"""Control requests and sends that must never be lost or doubled (issue 12, items 1-3).

1. Once ``cancel()`` / ``pause()`` returned, no step that had not started yet starts: in
   process on every store, and under a worker in another process.
2. A timed-out attempt is a failure (`durable.ActivityTimeout`) even when the activity
   swallows the cancellation and returns.
3. ``durable.signal`` from workflow code is a recorded step, sent once however often the sender
   replays; ``idempotency_key`` makes a second send to the same run a no-op.

The races are gated, not timed: the first activity waits for the test to let it return, and
the test does so only after its ``cancel()`` / ``pause()`` returned. One test instead sweeps
the moment of the request across the end of the activity and checks only what must hold
whatever the interleaving. Assertions are on side effects and statuses; every wait is bounded
and fails loudly.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import PROGRAMS, Crash, Processes, eventually, read_log, stop

import durable
from durable import RetryPolicy, RunStatus, StepKind, StepStatus
from durable.backends import SQLStore
from durable.store import RunRecord, Store

sys.path.insert(0, str(PROGRAMS))
import race_app

LOOPS = 20
"""Tries per race: the old 0.2 s polling lost the request in nearly every one."""

# -- in-process workflows ----------------------------------------------------------------------

effects: dict[str, list[str]] = defaultdict(list)
"""Side effects by run id, in the order they happened."""

stopped: set[str] = set()
"""Runs whose cancel / pause request has returned (and that were not resumed since): a step
that starts for one of them is tagged, so a lost request shows in the side effects."""


@dataclass
class Gate:
    reached: anyio.Event = field(default_factory=anyio.Event)
    go: anyio.Event = field(default_factory=anyio.Event)
    linger: float = 0.0  # `quick_first`: seconds between announcing the end and returning


gates: dict[str, Gate] = {}


@pytest.fixture(autouse=True)
def _clear() -> None:
    effects.clear()
    stopped.clear()
    gates.clear()
    tries.clear()
    crashes.clear()


def _effect(run_id: str, tag: str) -> None:
    effects[run_id].append(f"{tag} (after the request returned)" if run_id in stopped else tag)


def _undo_first(run_id: str) -> None:
    effects[run_id].append("undo first")


@durable.activity(compensate=_undo_first)
async def first(run_id: str) -> str:
    _effect(run_id, "first")
    gate = gates[run_id]
    gate.reached.set()
    with anyio.fail_after(30):
        await gate.go.wait()  # the test lets it return once its request returned
    return "one"


@durable.activity(compensate=_undo_first)
async def quick_first(run_id: str) -> str:
    _effect(run_id, "first")
    gate = gates[run_id]
    gate.reached.set()  # the test requests as this activity finishes
    await anyio.sleep(gate.linger)
    return "one"


@durable.activity
async def second(run_id: str) -> str:
    _effect(run_id, "second")
    return "two"


@durable.activity
async def third(run_id: str) -> str:
    _effect(run_id, "third")
    return "three"


@durable.activity
async def cleanup(run_id: str) -> str:
    _effect(run_id, "cleanup")
    return "clean"


@durable.workflow(name="races.three_steps")
async def three_steps(run_id: str) -> list[str]:
    return [await first(run_id), await second(run_id), await third(run_id)]


@durable.workflow(name="races.three_quick_steps")
async def three_quick_steps(run_id: str) -> list[str]:
    return [await quick_first(run_id), await second(run_id), await third(run_id)]


@durable.workflow(name="races.cleans_up")
async def cleans_up(run_id: str) -> str:
    try:
        await first(run_id)
        await second(run_id)
        await third(run_id)
    except durable.Cancelled:
        await cleanup(run_id)
        return "cleaned up"
    return "not cancelled"


async def _execute_into(
    outcome: list[object],
    store: Store,
    run_id: str,
    workflow: Callable[[str], Coroutine[Any, Any, Any]],
) -> None:
    """Execute the run; its result, or the exception it raised, goes to ``outcome``."""
    try:
        outcome.append(await durable.execute(workflow, run_id, id=run_id, store=store))
    except Exception as exc:
        outcome.append(exc)


async def _until(
    store: Store, run_id: str, done: Callable[[RunRecord], bool], seconds: float = 30
) -> RunRecord:
    seen: list[RunRecord] = []

    async def there() -> bool:
        run = await store.get_run(run_id)
        if run is not None and done(run):
            seen.append(run)
        return bool(seen)

    await eventually(f"the state awaited of run {run_id!r}", there, within=seconds)
    return seen[0]


def _paused_or_finished(run: RunRecord) -> bool:
    return run.status == RunStatus.PAUSED or run.status.finished


# -- 1. cancel and pause are never lost (in process) -------------------------------------------


async def test_a_cancel_that_returned_stops_the_next_activity(store: Store) -> None:
    """Cancel returned mid-activity: the next activity never starts; compensated, cancelled."""
    for i in range(LOOPS):
        run_id = f"cancel-{i}"
        gate = gates[run_id] = Gate()
        outcome: list[object] = []
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_execute_into, outcome, store, run_id, three_steps)
                await gate.reached.wait()
                await durable.get_handle(run_id, store).cancel()
                stopped.add(run_id)
                gate.go.set()
        assert effects[run_id] == ["first", "undo first"], f"try {i}: {outcome}"
        assert len(outcome) == 1 and isinstance(outcome[0], durable.Cancelled), f"try {i}"
        assert await durable.get_handle(run_id, store).status() == RunStatus.CANCELLED


async def test_a_cancel_sent_as_an_activity_finishes_stops_every_later_step(store: Store) -> None:
    """cancel() as an activity ends: no step starts once it returned; a stopped run is cancelled."""
    for i in range(LOOPS):
        run_id = f"cancel-quick-{i}"
        # The request lands before, during or after the end of the activity and its commit.
        gate = gates[run_id] = Gate(linger=i * 0.0005)
        outcome: list[object] = []
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_execute_into, outcome, store, run_id, three_quick_steps)
                await gate.reached.wait()
                await durable.get_handle(run_id, store).cancel()
                stopped.add(run_id)
        done = effects[run_id]
        assert not [e for e in done if "after" in e], f"try {i}: {done}"
        status = await durable.get_handle(run_id, store).status()
        if "third" not in done:  # the cancel stopped a step: the run is cancelled
            assert status == RunStatus.CANCELLED, f"try {i}: {done} {outcome}"
        if status == RunStatus.CANCELLED:
            assert done.count("undo first") == 1 and isinstance(outcome[0], durable.Cancelled)
        else:  # every step had started before cancel() returned
            assert (status, outcome) == (RunStatus.COMPLETED, [["one", "two", "three"]])


async def test_a_workflow_that_catches_cancelled_may_still_run_cleanup(store: Store) -> None:
    """A workflow that catches the delivered durable.Cancelled can still run a cleanup activity."""
    for i in range(LOOPS):
        run_id = f"cleanup-{i}"
        gate = gates[run_id] = Gate()
        outcome: list[object] = []
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_execute_into, outcome, store, run_id, cleans_up)
                await gate.reached.wait()
                await durable.get_handle(run_id, store).cancel()
                stopped.add(run_id)
                gate.go.set()
        assert effects[run_id] == ["first", "cleanup (after the request returned)"], f"try {i}"
        assert outcome == ["cleaned up"], f"try {i}"


async def test_a_pause_that_returned_stops_the_run_before_the_next_activity(store: Store) -> None:
    """Pause returned mid-activity: paused before the next activity; resume runs each once."""
    ids = [f"pause-{i}" for i in range(LOOPS)]
    outcomes: dict[str, list[object]] = {run_id: [] for run_id in ids}
    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for i, run_id in enumerate(ids):  # one after another; the paused calls stay waiting
                gate = gates[run_id] = Gate()
                tg.start_soon(_execute_into, outcomes[run_id], store, run_id, three_steps)
                await gate.reached.wait()
                await durable.get_handle(run_id, store).pause()
                stopped.add(run_id)
                gate.go.set()
                run = await _until(store, run_id, _paused_or_finished)
                assert (run.status, effects[run_id]) == (RunStatus.PAUSED, ["first"]), f"try {i}"
                assert run.lease_owner is None
            for run_id in ids:
                stopped.discard(run_id)
                await durable.get_handle(run_id, store).resume()
    for run_id in ids:
        assert outcomes[run_id] == [["one", "two", "three"]], run_id
        assert effects[run_id] == ["first", "second", "third"], run_id
        assert await durable.get_handle(run_id, store).status() == RunStatus.COMPLETED


# -- 1. cancel and pause are never lost (a worker in another process) -------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def worker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'races.db'}"
    return str(request.getfixturevalue("postgres_url"))


@contextlib.contextmanager
def _worker(processes: Processes, url: str, race_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `durable worker race_app` process, ready to claim; stopped with SIGTERM after."""
    log = race_dir / "worker.log"
    env = {**os.environ, "RACE_DIR": str(race_dir)}
    proc = processes.spawn_worker("race_app", url, log, env=env)
    try:
        yield proc
    finally:
        stop(proc)
    assert proc.returncode == 0, read_log(log)


def _count(race_dir: Path, run_id: str, tag: str) -> int:
    path = race_dir / f"{run_id}.{tag}"
    return len(path.read_text().splitlines()) if path.exists() else 0


async def _start_runs(url: str, ids: list[str]) -> None:
    async with SQLStore(url) as store:
        for run_id in ids:
            await durable.start(race_app.three_steps, run_id, id=run_id, store=store)


async def _when_first_runs(race_dir: Path, run_id: str) -> None:
    marker = anyio.Path(race_dir / f"{run_id}.first")
    await eventually(f"the first activity of {run_id!r}", marker.exists)


def test_cancel_is_never_lost_under_a_worker_process(
    processes: Processes, worker_url: str, tmp_path: Path
) -> None:
    """Worker process: cancel returned mid-activity stops the next one; compensated, cancelled."""
    ids = [f"wc-{uuid.uuid4().hex[:8]}-{i}" for i in range(LOOPS)]
    anyio.run(_start_runs, worker_url, ids)
    statuses: dict[str, RunStatus] = {}

    async def cancel_one(store: Store, run_id: str) -> None:
        await _when_first_runs(tmp_path, run_id)
        await durable.get_handle(run_id, store).cancel()
        (tmp_path / f"{run_id}.go").touch()
        statuses[run_id] = (await _until(store, run_id, lambda r: r.status.finished, 60)).status

    async def cancel_all() -> None:
        async with SQLStore(worker_url) as store:
            with anyio.fail_after(90):
                async with anyio.create_task_group() as tg:
                    for run_id in ids:
                        tg.start_soon(cancel_one, store, run_id)

    with _worker(processes, worker_url, tmp_path):
        anyio.run(cancel_all)
    seen = {
        run_id: (
            statuses[run_id],
            *(_count(tmp_path, run_id, tag) for tag in ("first", "second", "third", "undo-first")),
        )
        for run_id in ids
    }
    assert seen == {run_id: (RunStatus.CANCELLED, 1, 0, 0, 1) for run_id in ids}


def test_pause_is_never_lost_under_a_worker_process(
    processes: Processes, worker_url: str, tmp_path: Path
) -> None:
    """Worker process: pause returned mid-activity pauses before the next; resume runs each once."""
    ids = [f"wp-{uuid.uuid4().hex[:8]}-{i}" for i in range(LOOPS)]
    anyio.run(_start_runs, worker_url, ids)
    at_pause: dict[str, tuple[RunStatus, int]] = {}
    results: dict[str, object] = {}

    async def pause_one(store: Store, run_id: str) -> None:
        handle = durable.get_handle(run_id, store)
        await _when_first_runs(tmp_path, run_id)
        await handle.pause()
        (tmp_path / f"{run_id}.go").touch()
        run = await _until(store, run_id, _paused_or_finished, 60)
        at_pause[run_id] = (run.status, _count(tmp_path, run_id, "second"))
        await handle.resume()
        await _until(store, run_id, lambda r: r.status.finished, 60)
        results[run_id] = await handle.result()

    async def pause_all() -> None:
        async with SQLStore(worker_url) as store:
            with anyio.fail_after(90):
                async with anyio.create_task_group() as tg:
                    for run_id in ids:
                        tg.start_soon(pause_one, store, run_id)

    with _worker(processes, worker_url, tmp_path):
        anyio.run(pause_all)
    assert at_pause == {run_id: (RunStatus.PAUSED, 0) for run_id in ids}
    assert results == {run_id: ["one", "two", "three"] for run_id in ids}
    counts = {
        run_id: tuple(_count(tmp_path, run_id, tag) for tag in ("first", "second", "third"))
        for run_id in ids
    }
    assert counts == {run_id: (1, 1, 1) for run_id in ids}


# -- 2. a timed-out attempt is a failure even if it swallows the cancellation ------------------

tries: dict[str, int] = defaultdict(int)

QUICK_RETRY = RetryPolicy(max_attempts=3, initial_interval=0.01, max_interval=0.01)


@durable.activity(timeout=0.2, retry=QUICK_RETRY)
async def swallows_timeouts(run_id: str) -> str:
    tries[run_id] += 1
    try:
        await anyio.sleep(30)
    except anyio.get_cancelled_exc_class():
        return "swallowed the timeout"  # and returns as if it had finished
    return "slept"


@durable.activity(timeout=0.2, retry=QUICK_RETRY)
async def swallows_first_timeout(run_id: str) -> str:
    tries[run_id] += 1
    if tries[run_id] > 1:
        return f"attempt {tries[run_id]}"
    try:
        await anyio.sleep(30)
    except BaseException:
        return "swallowed the timeout"
    return "slept"


@durable.workflow(name="races.sees_timeout")
async def sees_timeout(run_id: str) -> str:
    try:
        return await swallows_timeouts(run_id)
    except durable.ActivityTimeout:
        return "ActivityTimeout"


@durable.workflow(name="races.retries_timeout")
async def retries_timeout(run_id: str) -> str:
    return await swallows_first_timeout(run_id)


async def test_a_swallowed_timeout_fails_the_attempt_and_is_retried(store: Store) -> None:
    """A swallowed timeout fails as ActivityTimeout, is retried per policy, reaches the workflow."""
    with anyio.fail_after(20):
        result = await durable.execute(sees_timeout, "t1", id="t1", store=store)
    assert (result, tries["t1"]) == ("ActivityTimeout", 3)
    [step] = await durable.get_handle("t1", store).history()
    assert (step.kind, step.status, step.attempts) == (StepKind.ACTIVITY, StepStatus.FAILED, 3)
    assert isinstance(step.error, durable.ActivityTimeout) and step.result is None


async def test_a_retry_after_a_swallowed_timeout_records_the_retry_result(store: Store) -> None:
    """A first attempt that swallows its timeout fails; the second attempt's result is recorded."""
    with anyio.fail_after(20):
        result = await durable.execute(retries_timeout, "t2", id="t2", store=store)
    assert (result, tries["t2"]) == ("attempt 2", 2)
    [step] = await durable.get_handle("t2", store).history()
    assert (step.status, step.attempts, step.result) == (StepStatus.COMPLETED, 2, "attempt 2")


# -- 3. a signal sent from workflow code is sent once -----------------------------------------


crashes: dict[str, int] = {}
"""How many more times `maybe_crash` crashes, by run id."""


@durable.activity
async def maybe_crash(run_id: str) -> None:
    if crashes.get(run_id, 0) > 0:
        crashes[run_id] -= 1
        raise Crash


@durable.workflow(name="races.collects")
async def collects(n: int) -> list[object]:
    return [await durable.wait_signal("greet") for _ in range(n)]


@durable.workflow(name="races.greets")
async def greets(run_id: str, receiver: str) -> str:
    await durable.signal(receiver, "greet", "hello")
    await maybe_crash(run_id)
    await durable.signal(receiver, "greet", "bye")
    return "sent"


@durable.workflow(name="races.greets_with_a_key")
async def greets_with_a_key(run_id: str, receiver: str) -> str:
    await durable.signal(receiver, "greet", "hello", idempotency_key="greeting")
    await durable.signal(receiver, "greet", "hello again", idempotency_key="greeting")
    await maybe_crash(run_id)
    await durable.signal(receiver, "greet", "bye", idempotency_key="farewell")
    return "sent"


@pytest.fixture
def _no_default_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """A send that wrongly went to the default store would reach an empty one, not a file."""
    monkeypatch.setenv("DURABLE_URL", "memory://races-not-the-runs-store")


@pytest.mark.usefixtures("_no_default_store")
async def test_a_signal_sent_by_a_replayed_workflow_is_sent_once(store: Store) -> None:
    """A workflow's durable.signal is a signal_send step: replays after crashes never resend it."""
    await durable.start(collects, 2, id="receiver", store=store)
    crashes["sender"] = 2
    for _ in range(2):
        with pytest.raises(Crash):
            await durable.execute(greets, "sender", "receiver", id="sender", store=store)
    assert await durable.execute(greets, "sender", "receiver", id="sender", store=store) == "sent"
    with anyio.fail_after(10):  # both signals are buffered: the waits return at once
        received = await durable.execute(collects, 2, id="receiver", store=store)
    assert received == ["hello", "bye"]  # not ['hello', 'hello']
    history = await durable.get_handle("sender", store).history()
    assert [(s.kind, s.status) for s in history] == [
        (StepKind.SIGNAL_SEND, StepStatus.COMPLETED),
        (StepKind.ACTIVITY, StepStatus.COMPLETED),
        (StepKind.SIGNAL_SEND, StepStatus.COMPLETED),
    ]
    assert StepKind.SIGNAL_SEND.value == "signal_send"


@pytest.mark.usefixtures("_no_default_store")
async def test_a_workflow_may_send_with_an_idempotency_key(store: Store) -> None:
    """From workflow code, a second send with the same idempotency_key to a run buffers nothing."""
    await durable.start(collects, 2, id="receiver", store=store)
    crashes["sender"] = 1
    with pytest.raises(Crash):
        await durable.execute(greets_with_a_key, "sender", "receiver", id="sender", store=store)
    assert (
        await durable.execute(greets_with_a_key, "sender", "receiver", id="sender", store=store)
        == "sent"
    )
    with anyio.fail_after(10):
        assert await durable.execute(collects, 2, id="receiver", store=store) == ["hello", "bye"]


async def test_a_second_send_with_the_same_idempotency_key_is_a_no_op(store: Store) -> None:
    """Outside a run, two sends with one idempotency_key buffer one signal; keys are per run."""
    handle = await durable.start(collects, 2, id="r1", store=store)
    await durable.start(collects, 1, id="r2", store=store)
    await durable.signal("r1", "greet", "a", idempotency_key="k", store=store)
    await durable.signal("r1", "greet", "a again", idempotency_key="k", store=store)
    await handle.signal("greet", "a by the handle", idempotency_key="k")
    await durable.signal("r2", "greet", "same key, other run", idempotency_key="k", store=store)
    await handle.signal("greet", "b", idempotency_key="k2")
    with anyio.fail_after(10):
        assert await durable.execute(collects, 2, id="r1", store=store) == ["a", "b"]
        assert await durable.execute(collects, 1, id="r2", store=store) == ["same key, other run"]


async def test_a_key_already_consumed_is_still_a_no_op(store: Store) -> None:
    """A send repeating the key of a signal the run already consumed buffers nothing."""
    await durable.signal(
        (await durable.start(collects, 2, id="r3", store=store)).id,
        "greet",
        "a",
        idempotency_key="k",
        store=store,
    )
    outcome: list[object] = []
    handle = durable.get_handle("r3", store)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_execute_collects, outcome, store, "r3")
            await eventually(  # until "a" is consumed and the second wait recorded
                "two steps", lambda: _has_steps(handle, 2)
            )
            history = await handle.history()
            assert (history[0].status, history[0].result) == (StepStatus.COMPLETED, "a")
            await durable.signal("r3", "greet", "a again", idempotency_key="k", store=store)
            await durable.signal("r3", "greet", "b", idempotency_key="k2", store=store)
    assert outcome == [["a", "b"]]


async def _has_steps(handle: durable.WorkflowHandle, count: int) -> bool:
    return len(await handle.history()) >= count


async def _execute_collects(outcome: list[object], store: Store, run_id: str) -> None:
    outcome.append(await durable.execute(collects, 2, id=run_id, store=store))


async def test_signal_outside_a_run_behaves_as_before(store: Store) -> None:
    """Outside a run: WorkflowNotFound, WorkflowFinished and unkeyed sends behave as before."""
    with pytest.raises(durable.WorkflowNotFound):
        await durable.signal("nobody", "greet", "x", store=store)
    await durable.start(collects, 3, id="r4", store=store)
    with pytest.raises(ValueError, match="signal name"):
        await durable.signal("r4", "", "x", store=store)
    for payload in ("x", "x", "y"):  # no key: every send is a signal
        await durable.signal("r4", "greet", payload, store=store)
    with anyio.fail_after(10):
        assert await durable.execute(collects, 3, id="r4", store=store) == ["x", "x", "y"]
    with pytest.raises(durable.WorkflowFinished):
        await durable.signal("r4", "greet", "late", store=store)
