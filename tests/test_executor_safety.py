"""What an executor does when things go wrong around it: cancellation, lost leases, a failing
store, orphaned tasks, concurrency in the buffered helper steps, and code that changed."""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest
from support import Crash, FaultyStore, eventually

import durable
from durable import RunStatus, StepKind, StepStatus
from durable.store import LeaseOwner, Store

ran: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


crash_on: set[str] = set()


@durable.activity
async def note(what: str) -> str:
    if what in crash_on:
        crash_on.discard(what)
        raise Crash
    ran.append(what)
    return what


@durable.activity
async def hang() -> None:
    ran.append("hang")
    await anyio.sleep(3600)


mode: dict[str, str] = {}


@durable.workflow
async def hangs() -> str:
    await note("before")
    if mode["m"] == "hang":
        await hang()
    else:
        await note("instead")
    return "done"


async def test_a_cancelled_execution_leaves_a_pending_resumable_run(store: Store) -> None:
    mode["m"] = "hang"

    async def hanging() -> bool:
        return "hang" in ran

    async def execute() -> None:
        await durable.execute(hangs, id="cx", store=store)

    async with anyio.create_task_group() as tg:  # cancelled once step 2 runs (not after 0.2 s)
        tg.start_soon(execute)
        await eventually("the hanging step", hanging)
        tg.cancel_scope.cancel()
    run = await store.get_run("cx")
    assert run is not None and run.status == RunStatus.PENDING and run.lease_owner is None
    mode["m"] = "fixed"  # step 2 never recorded, so a fixed deploy continues from there
    assert await durable.execute(hangs, id="cx", store=store) == "done"
    assert ran == ["before", "hang", "instead"]


@durable.workflow
async def leaves_a_task_behind() -> str:
    await asyncio.gather(durable.sleep(0.2), fail_fast())
    return "unreachable"


@durable.activity
async def fail_fast() -> None:
    raise ValueError("fails at once")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_task_left_behind_cannot_write_to_a_finished_run(store: Store) -> None:
    with pytest.raises(ValueError, match="fails at once"):
        await durable.execute(leaves_a_task_behind, id="orphan", store=store)
    assert await durable.get_handle("orphan", store).status() == RunStatus.FAILED
    await anyio.sleep(0.4)  # the orphaned sleep wakes up and tries to record its end
    assert await durable.get_handle("orphan", store).status() == RunStatus.FAILED
    with pytest.raises(ValueError, match="fails at once"):
        await durable.get_handle("orphan", store).result(timeout=1)


@durable.workflow
async def tolerant_of_everything() -> list[str]:
    out = []
    for item in ("a", "b"):
        try:
            out.append(await note(item))
        except Exception as exc:  # a workflow must not be able to swallow store failures
            out.append(f"swallowed {type(exc).__name__}")
    return out


async def test_a_store_error_stops_the_executor_and_the_run_stays_resumable() -> None:
    store = FaultyStore()
    store.fail_next = 1
    with pytest.raises(durable.StoreError, match="locked"):
        await durable.execute(tolerant_of_everything, id="fl", store=store)
    assert await durable.get_handle("fl", store).status() == RunStatus.PENDING
    assert await durable.execute(tolerant_of_everything, id="fl", store=store) == ["a", "b"]
    assert ran == ["a", "a", "b"]  # "a" ran again (at-least-once): its result was not recorded


@durable.workflow
async def helpers_in_branches() -> list[str]:
    async def branch(tag: str) -> str:
        marker = str(durable.uuid4())
        return await note(f"{tag}:{marker[:4]}")

    return await durable.gather(branch("x"), branch("y"), branch("z"))


async def test_buffered_helper_steps_are_committed_once_under_concurrency() -> None:
    store = FaultyStore()
    result = await durable.execute(helpers_in_branches, id="hb", store=store)
    history = await durable.get_handle("hb", store).history()
    kinds = [s.kind for s in history]
    assert kinds.count(StepKind.UUID4) == 3 and kinds.count(StepKind.ACTIVITY) == 3
    assert sorted(s.seq for s in history) == list(range(1, 7))
    assert await durable.execute(helpers_in_branches, id="hb", store=store) == result


@durable.workflow
async def two_sleeps() -> list[float]:
    await durable.gather(durable.sleep(0.02), durable.sleep(0.01))
    return []


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_sleeps_are_numbered_when_called_even_on_trio(store: Store) -> None:
    for i in range(10):
        await durable.execute(two_sleeps, id=f"sl{i}", store=store)
        first, second = await durable.get_handle(f"sl{i}", store).history()
        assert (first.seq, second.seq) == (1, 2)
        delay_1 = first.result - first.started_at.timestamp()  # type: ignore[operator]
        delay_2 = second.result - second.started_at.timestamp()  # type: ignore[operator]
        assert delay_1 == pytest.approx(0.02, abs=1e-3)
        assert delay_2 == pytest.approx(0.01, abs=1e-3)


class Bug(Exception):
    pass


@durable.workflow
async def buggy_deploy() -> str:
    await note("one")
    if mode["m"] == "buggy":
        raise Bug("a bug introduced by a deploy")
    await note("two")
    await note("three")
    return "ok"


async def test_raising_while_replaying_history_blocks_instead_of_failing(store: Store) -> None:
    mode["m"] = "good"
    crash_on.add("three")
    with pytest.raises(Crash):
        await durable.execute(buggy_deploy, id="bd", store=store)
    mode["m"] = "buggy"
    with pytest.raises(durable.NonDeterminismError) as info:
        await durable.execute(buggy_deploy, id="bd", store=store)
    assert "step 2" in str(info.value) and "raise Bug" in str(info.value)
    assert await durable.get_handle("bd", store).status() == RunStatus.BLOCKED
    mode["m"] = "good"
    assert await durable.execute(buggy_deploy, id="bd", store=store) == "ok"
    assert ran == ["one", "two", "three"]


@durable.activity
async def slow_note(what: str) -> str:
    await anyio.sleep(0.6)
    ran.append(what)
    return what


@durable.workflow
async def slow_flow() -> str:
    await note("first")
    return await slow_note("second")


async def test_an_executor_whose_lease_is_taken_over_stops_and_writes_nothing(
    store: Store,
) -> None:

    async def inside_slow_note() -> bool:
        return await store.get_run("ll") is not None and len(await store.load_steps("ll")) == 2

    async def thief() -> None:
        await eventually("slow_note's start", inside_slow_note)  # the executor is inside it
        run = await store.get_run("ll")
        assert run is not None
        lease = await store.acquire_lease(
            "ll",
            LeaseOwner("thief", "elsewhere", 1),
            now=time.time(),
            duration=60,
            takeover_token=run.lease_token,
        )
        assert lease is not None

    async with anyio.create_task_group() as tg:
        tg.start_soon(thief)
        with durable.executor_config(lease_seconds=1.0):  # renewed every 0.33 s
            with pytest.raises(durable.LeaseLost, match="'ll'"):
                await durable.execute(slow_flow, id="ll", store=store)
    await anyio.sleep(0.7)
    history = await durable.get_handle("ll", store).history()
    # nothing written after the takeover: the second step stays as it started
    assert [(s.status, s.result) for s in history] == [
        (StepStatus.COMPLETED, "first"),
        (StepStatus.STARTED, None),
    ]
    run = await store.get_run("ll")
    assert run is not None and run.lease_owner == "thief"
    assert durable.ExecutorConfig().lease_seconds == 30.0  # the block changed nothing else


class Shop:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    @durable.workflow
    async def checkout(self, amount: int) -> int:
        return int(await note(str(amount * self.factor)))


async def test_a_workflow_method_runs_with_its_instance(store: Store) -> None:
    assert await durable.execute(Shop(3).checkout, 5, id="wm", store=store) == 15
    assert await durable.execute(Shop(3).checkout, 5, id="wm", store=store) == 15
    assert ran == ["15"]


@durable.activity(timeout=0.01)
async def too_slow() -> None:
    await anyio.sleep(1)


@durable.workflow
async def times_out() -> None:
    await note("x")
    await too_slow()


async def test_activity_timeout_names_run_step_and_fix(store: Store) -> None:
    with pytest.raises(durable.ActivityTimeout) as info:
        await durable.execute(times_out, id="to", store=store)
    message = str(info.value)
    assert "'to'" in message and "step 2" in message and "timeout=" in message
    assert (info.value.run_id, info.value.seq) == ("to", 2)
