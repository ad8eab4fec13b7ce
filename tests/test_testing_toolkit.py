"""`durable.testing`: the virtual-clock environment, fault injection, history rendering and
replay checks. (Versioning is in test_versioning.py, the pytest plugin in
test_pytest_plugin.py.)"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

import durable
from durable.backends import SQLStore
from durable.testing import WorkflowEnvironment, format_history, replay

START = datetime(2030, 1, 1, tzinfo=UTC)
log: list[tuple[str, ...]] = []


@pytest.fixture(autouse=True)
def _clear_log() -> None:
    log.clear()


@durable.activity(name="toolkit.notify")
async def notify(expense_id: str) -> str:
    log.append(("notify", expense_id, durable.info().idempotency_key))
    return f"notified {expense_id}"


@durable.workflow(name="toolkit.expense")
async def expense(expense_id: str) -> dict[str, object]:
    await notify(expense_id)
    await durable.sleep(timedelta(days=3))
    try:
        decision = await durable.wait_signal("decision", timeout=timedelta(days=1))
    except durable.SignalTimeout:
        decision = "expired"
    return {"decision": decision, "at": durable.now()}


async def test_three_days_of_sleep_and_a_day_of_waiting_take_no_wall_time() -> None:
    started = time.perf_counter()
    async with WorkflowEnvironment(start=START) as env:
        result = await env.execute(expense, "e-1", id="e-1")
        assert result == {"decision": "expired", "at": START + timedelta(days=4)}
        assert env.now() == START + timedelta(days=4)
        history = await env.history("e-1")
    elapsed = time.perf_counter() - started
    assert [(s.kind, s.name, s.status) for s in history] == [
        (durable.StepKind.ACTIVITY, "toolkit.notify", durable.StepStatus.COMPLETED),
        (durable.StepKind.TIMER, "sleep", durable.StepStatus.COMPLETED),
        (durable.StepKind.SIGNAL, "decision", durable.StepStatus.FAILED),
        (durable.StepKind.NOW, "now", durable.StepStatus.COMPLETED),
    ]
    assert history[2].started_at == START + timedelta(days=3)  # virtual, timezone-aware
    assert history[2].started_at.tzinfo is not None
    print(f"four virtual days took {elapsed * 1000:.0f} ms of wall time")  # shown with -s


async def test_a_signal_sent_right_after_start_is_never_raced_by_a_skip() -> None:
    async with WorkflowEnvironment(start=START) as env:
        handle = await env.start(expense, "e-2", id="e-2")
        await env.signal("e-2", "decision", "approve")  # before three days have passed
        assert await handle.result() == {
            "decision": "approve",
            "at": START + timedelta(days=3),
        }


async def test_manual_advance_without_auto_skip() -> None:
    async with WorkflowEnvironment(auto_skip=False, start=START) as env:
        handle = await env.start(expense, "e-3", id="e-3")
        await env.advance(timedelta(days=2, hours=23))
        assert await handle.status() == durable.RunStatus.SLEEPING
        await env.advance(timedelta(hours=1))
        assert await handle.status() == durable.RunStatus.WAITING
        await env.signal("e-3", "decision", "reject")
        await env.advance(timedelta(0))  # lets the woken run finish; no time passes
        assert await handle.status() == durable.RunStatus.COMPLETED
        assert (await handle.result())["decision"] == "reject"
        await env.advance_to(START + timedelta(days=10))
        assert env.now() == START + timedelta(days=10)
        with pytest.raises(ValueError, match="back in time"):
            await env.advance_to(START)
        with pytest.raises(ValueError, match="back in time"):
            await env.advance(-1)


async def test_a_timeout_fires_on_the_virtual_clock_when_advanced_past_it() -> None:
    async with WorkflowEnvironment(auto_skip=False, start=START) as env:
        handle = await env.start(expense, "e-4", id="e-4")
        await env.advance(timedelta(days=4) - timedelta(seconds=1))
        assert await handle.status() == durable.RunStatus.WAITING
        await env.advance(timedelta(seconds=1))
        assert (await handle.result())["decision"] == "expired"


def test_the_environment_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        WorkflowEnvironment(start=datetime(2030, 1, 1))
    env = WorkflowEnvironment()
    with pytest.raises(TypeError, match="@activity"):
        env.fail(expense, attempts=[1])
    with pytest.raises(ValueError, match="attempt numbers"):
        env.fail(notify, attempts=[0])
    with pytest.raises(ValueError, match="'before' or 'after'"):
        env.crash(notify, when="during")  # type: ignore[arg-type]


# -- fault injection -----------------------------------------------------------------------


async def refund(order: str, *, result: str) -> None:
    log.append(("refund", order, result))


@durable.activity(
    name="toolkit.charge",
    compensate=refund,
    retry=durable.RetryPolicy(max_attempts=3, initial_interval=60),
)
async def charge(order: str) -> str:
    log.append(("charge", order, durable.info().idempotency_key))
    return f"ch-{order}"


@durable.activity(name="toolkit.reserve")
async def reserve(order: str) -> str:
    log.append(("reserve", order, durable.info().idempotency_key))
    return f"res-{order}"


@durable.activity(name="toolkit.ship", final=True)
async def ship(order: str) -> str:
    log.append(("ship", order, durable.info().idempotency_key))
    return f"shipped {order}"


@durable.workflow(name="toolkit.order")
async def order(order_id: str) -> str:
    await charge(order_id)
    await reserve(order_id)
    await durable.sleep(timedelta(hours=1))
    return await ship(order_id)


async def test_fail_drives_retries_with_backoff_on_the_virtual_clock() -> None:
    async with WorkflowEnvironment(start=START) as env:
        env.fail(charge, attempts=[1, 2], exc=ConnectionError)
        assert await env.execute(order, "o-1", id="o-1") == "shipped o-1"
        history = await env.history("o-1")
    assert (history[0].name, history[0].attempts) == ("toolkit.charge", 3)
    assert [entry[0] for entry in log] == ["charge", "reserve", "ship"]  # ran once, attempt 3
    # two backoff delays (60 s, then longer) passed on the virtual clock
    assert history[1].started_at - history[0].started_at >= timedelta(seconds=120)


async def test_fail_drives_compensation() -> None:
    async with WorkflowEnvironment(start=START) as env:
        env.fail(reserve, attempts=[1], exc=ValueError("out of stock"))
        with pytest.raises(ValueError, match="out of stock"):
            await env.execute(order, "o-2", id="o-2")
        history = await env.history("o-2")
        status = await env.get_handle("o-2").status()
    assert status == durable.RunStatus.FAILED
    assert ("refund", "o-2", "ch-o-2") in log
    assert [s.kind for s in history][-1] == durable.StepKind.COMPENSATION


async def test_a_crash_before_an_activity_resumes_after_the_lease_expires() -> None:
    async with WorkflowEnvironment(start=START) as env:
        env.crash(reserve, when="before")
        assert await env.execute(order, "o-3", id="o-3") == "shipped o-3"
        history = await env.history("o-3")
    assert [entry[0] for entry in log] == ["charge", "reserve", "ship"]  # nothing twice
    # the run was taken over only when the abandoned lease (30 s) expired; the step keeps
    # the start of its first (crashed) attempt, and counts both
    assert history[1].finished_at - history[0].finished_at >= timedelta(seconds=30)
    assert history[1].started_at == history[0].finished_at and history[1].attempts == 2


async def test_a_crash_after_an_activity_runs_it_again_with_the_same_key() -> None:
    async with WorkflowEnvironment(start=START) as env:
        env.crash(reserve, when="after")
        assert await env.execute(order, "o-4", id="o-4") == "shipped o-4"
    reserves = [entry for entry in log if entry[0] == "reserve"]
    assert len(reserves) == 2  # its result was never recorded: at-least-once
    assert reserves[0][2] == reserves[1][2] == "o-4/2"


async def test_a_crash_after_a_final_activity_makes_its_outcome_unknown() -> None:
    async with WorkflowEnvironment(start=START) as env:
        env.crash(ship, when="after")
        with pytest.raises(durable.OutcomeUnknown):
            await env.execute(order, "o-5", id="o-5")
        history = await env.history("o-5")
    assert [entry[0] for entry in log].count("ship") == 1  # never run a second time
    assert ("refund", "o-5", "ch-o-5") in log  # the failure compensated the charge
    assert history[3].status == durable.StepStatus.FAILED


async def test_mock_replaces_an_activity_without_touching_the_workflow() -> None:
    async with WorkflowEnvironment(start=START) as env:
        env.mock(ship, lambda order_id: f"pretend-shipped {order_id}")
        assert await env.execute(order, "o-6", id="o-6") == "pretend-shipped o-6"

        async def async_fake(order_id: str) -> str:
            return "async fake"

        env.mock(reserve, async_fake)
        await env.execute(order, "o-7", id="o-7")
        history = await env.history("o-7")
    assert history[1].result == "async fake"
    assert [entry[0] for entry in log] == ["charge", "reserve", "charge"]


# -- history and replay --------------------------------------------------------------------


async def test_format_history_renders_every_step_readably() -> None:
    async with WorkflowEnvironment(start=START) as env:
        env.fail(charge, attempts=[1], exc=ConnectionError)
        await env.execute(order, "o-8", id="o-8")
        text = format_history(await env.history("o-8"))
    lines = text.splitlines()
    assert len(lines) == 4
    assert "toolkit.charge" in lines[0] and "2 attempts" in lines[0] and "'ch-o-8'" in lines[0]
    assert "timer" in lines[2] and "2030-01-01" in lines[2]
    assert format_history([]) == "(no steps recorded)"


def _order_flow(*, reordered: bool) -> object:
    """Workflow "toolkit.replayed" as one deploy has it, or the next (two activities
    swapped). Both come from this one function, so the second replaces the first by name, as
    a deploy does; each is used through the object returned, never looked up by name."""

    @durable.workflow(name="toolkit.replayed")
    async def flow(order_id: str) -> str:
        if reordered:
            await reserve(order_id)
            await charge(order_id)
        else:
            await charge(order_id)
            await reserve(order_id)
        await durable.sleep(timedelta(hours=1))
        return await ship(order_id)

    return flow


@pytest.mark.parametrize("source", ["memory", "sqlite"])
async def test_replay_passes_for_the_same_code_and_fails_after_a_reorder(
    source: str, tmp_path: Path
) -> None:
    before = _order_flow(reordered=False)
    store = SQLStore(f"sqlite:///{tmp_path / 'h.db'}") if source == "sqlite" else None
    async with WorkflowEnvironment(start=START, store=store, workflows=[before]) as env:
        await env.execute(before, "o-9", id="o-9")
        exported = await env.get_handle("o-9").export_history()
    if store is not None:
        await store.close()
    log.clear()

    await replay(before, exported)
    assert log == []  # nothing was executed

    after = _order_flow(reordered=True)
    with pytest.raises(durable.NonDeterminismError) as error:
        await replay(after, exported)
    message = str(error.value)
    assert "step 1" in message and "toolkit.charge" in message and "toolkit.reserve" in message
    assert "durable.patched" in message
    assert log == []


async def test_replay_of_a_history_exported_mid_run_stops_where_it_ends() -> None:
    async with WorkflowEnvironment(auto_skip=False, start=START, workflows=[order]) as env:
        await env.start(order, "o-10", id="o-10")
        await env.advance(timedelta(minutes=1))  # parked in the one-hour sleep
        exported = await env.get_handle("o-10").export_history()
    log.clear()
    await replay(order, exported)
    assert log == []


async def test_replay_refuses_what_is_not_a_history_of_that_workflow() -> None:
    with pytest.raises(ValueError, match="not an exported durable history"):
        await replay(order, '{"format": "something else"}')
    async with WorkflowEnvironment(start=START) as env:
        await env.execute(expense, "e-9", id="e-9")
        exported = await env.get_handle("e-9").export_history()
    with pytest.raises(ValueError, match=r"toolkit\.expense"):
        await replay(order, exported)


async def test_an_environment_entered_and_left_at_once_stops_its_worker() -> None:
    """The worker's stop() comes before its task first ran: it must still end."""
    with anyio.fail_after(30):
        async with WorkflowEnvironment(workflows=[_quick_flow]):
            pass


@durable.workflow(name="toolkit.quick")
async def _quick_flow() -> int:
    return 1
