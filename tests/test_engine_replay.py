"""Memoised replay: recorded steps never execute again; divergence blocks the run."""

from __future__ import annotations

import asyncio
import collections
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anyio
import pytest

import durable
from durable import RetryPolicy, RunStatus, StepKind, StepStatus
from durable.store import Store

calls: collections.Counter[str] = collections.Counter()


class Boom(BaseException):
    """Simulates the process dying: not an Exception, so nothing records it."""


@pytest.fixture(autouse=True)
def _reset_counters() -> None:
    calls.clear()


@durable.activity
async def add(a: int, b: int) -> int:
    calls["add"] += 1
    return a + b


@durable.activity
def mul(a: int, b: int) -> int:
    calls["mul"] += 1
    calls[f"mul-thread-{threading.current_thread() is threading.main_thread()}"] += 1
    return a * b


@durable.workflow
async def arithmetic(x: int) -> int:
    y = await add(x, 1)
    z = await mul(y, 10)
    return await add(z, 5)


async def test_completed_run_executes_nothing_again(store: Store) -> None:
    assert await durable.execute(arithmetic, 1, id="a", store=store) == 25
    assert calls["add"] == 2 and calls["mul"] == 1
    assert calls["mul-thread-False"] == 1  # the plain def ran in a worker thread
    assert await durable.execute(arithmetic, 1, id="a", store=store) == 25
    assert calls["add"] == 2 and calls["mul"] == 1
    assert await durable.get_handle("a", store).status() == RunStatus.COMPLETED
    history = await durable.get_handle("a", store).history()
    assert [(s.seq, s.kind, s.name, s.result) for s in history] == [
        (1, StepKind.ACTIVITY, f"{__name__}.add", 2),
        (2, StepKind.ACTIVITY, f"{__name__}.mul", 20),
        (3, StepKind.ACTIVITY, f"{__name__}.add", 25),
    ]
    assert all(s.status == StepStatus.COMPLETED and s.attempts == 1 for s in history)
    assert all(s.started_at <= s.finished_at and s.finished_at.tzinfo is UTC for s in history)


crash_at: dict[str, int] = {}


@durable.activity
async def step(n: int) -> int:
    calls[f"step{n}"] += 1
    if crash_at.get("n") == n:
        crash_at.clear()
        raise Boom
    return n * n


@durable.workflow
async def three_steps() -> list[int]:
    return [await step(1), await step(2), await step(3)]


async def test_resume_after_crash_skips_recorded_steps(store: Store) -> None:
    crash_at["n"] = 2
    with pytest.raises(Boom):
        await durable.execute(three_steps, id="c", store=store)
    # Interrupted before its outcome: back to pending, lease released, ready to resume.
    assert await durable.get_handle("c", store).status() == RunStatus.PENDING
    assert await durable.execute(three_steps, id="c", store=store) == [1, 4, 9]
    assert (calls["step1"], calls["step2"], calls["step3"]) == (1, 2, 1)


class PaymentDeclined(Exception):
    pass


@durable.activity
async def charge(amount: int) -> str:
    calls["charge"] += 1
    raise PaymentDeclined(f"declined {amount}")


@durable.workflow
async def tolerant() -> str:
    try:
        await charge(5)
    except PaymentDeclined as exc:
        note = await add(1, 1)
        return f"caught {exc} then {note}"
    return "unreachable"


async def test_caught_activity_failure_is_recorded_as_a_failed_step(store: Store) -> None:
    first = await durable.execute(tolerant, id="t", store=store)
    assert first == "caught declined 5 then 2"
    (failed, ok) = await durable.get_handle("t", store).history()
    assert failed.status == StepStatus.FAILED and isinstance(failed.error, PaymentDeclined)
    assert str(failed.error) == "declined 5" and ok.result == 2


@durable.workflow
async def tolerant_then_crash() -> str:
    try:
        await charge(7)
    except PaymentDeclined as exc:
        message = str(exc)
    await step(2)
    return message


async def test_recorded_failure_is_reraised_on_replay(store: Store) -> None:
    crash_at["n"] = 2
    with pytest.raises(Boom):
        await durable.execute(tolerant_then_crash, id="r", store=store)
    assert await durable.execute(tolerant_then_crash, id="r", store=store) == "declined 7"
    assert calls["charge"] == 1 and calls["step2"] == 2


flaky_failures: dict[str, int] = {}


@durable.activity(retry=RetryPolicy(max_attempts=4, initial_interval=0.001, max_interval=0.01))
async def flaky() -> int:
    calls["flaky"] += 1
    attempt = durable.info().attempt
    if flaky_failures["left"] > 0:
        flaky_failures["left"] -= 1
        raise ConnectionError(f"attempt {attempt} failed")
    return attempt


@durable.workflow
async def uses_flaky() -> int:
    return await flaky()


async def test_retries_count_attempts(store: Store) -> None:
    flaky_failures["left"] = 2
    assert await durable.execute(uses_flaky, id="f", store=store) == 3
    (only,) = await durable.get_handle("f", store).history()
    assert only.attempts == 3 and only.status == StepStatus.COMPLETED


async def test_retries_run_out_and_the_last_error_is_recorded(store: Store) -> None:
    flaky_failures["left"] = 10
    with pytest.raises(ConnectionError, match="attempt 4 failed"):
        await durable.execute(uses_flaky, id="f2", store=store)
    (only,) = await durable.get_handle("f2", store).history()
    assert only.attempts == 4 and only.status == StepStatus.FAILED
    assert await durable.get_handle("f2", store).status() == RunStatus.FAILED
    with pytest.raises(ConnectionError, match="attempt 4 failed"):
        await durable.execute(uses_flaky, id="f2", store=store)
    assert calls["flaky"] == 4


@durable.activity(
    retry=RetryPolicy(max_attempts=5, initial_interval=0.001, non_retryable=(KeyError,))
)
async def not_retried() -> None:
    calls["not_retried"] += 1
    raise KeyError("missing")


@durable.workflow
async def uses_not_retried() -> None:
    await not_retried()


async def test_non_retryable_errors_fail_at_once(store: Store) -> None:
    with pytest.raises(KeyError):
        await durable.execute(uses_not_retried, id="n", store=store)
    assert calls["not_retried"] == 1


@durable.activity(timeout=0.05, retry=RetryPolicy(max_attempts=2, initial_interval=0.001))
async def slow() -> None:
    calls["slow"] += 1
    await anyio.sleep(3600)


@durable.workflow
async def uses_slow() -> str:
    try:
        await slow()
    except durable.ActivityTimeout as exc:
        return f"timed out: {exc.activity}"
    return "finished"


async def test_timeout_cancels_attempts_and_counts_as_failure(store: Store) -> None:
    with anyio.fail_after(60):  # without the timeouts: two hours
        result = await durable.execute(uses_slow, id="s", store=store)
    assert result == f"timed out: {__name__}.slow"
    assert calls["slow"] == 2
    (only,) = await durable.get_handle("s", store).history()
    assert only.attempts == 2 and isinstance(only.error, durable.ActivityTimeout)
    assert isinstance(only.error, TimeoutError)


@durable.activity
async def unpicklable_result() -> Any:
    calls["unpicklable"] += 1
    return threading.Lock()


@durable.workflow
async def returns_lock() -> str:
    try:
        await unpicklable_result()
    except durable.SerializationError as exc:
        return str(exc)
    return "no error"


async def test_unpicklable_result_fails_the_activity_without_retry(store: Store) -> None:
    message = await durable.execute(returns_lock, id="u", store=store)
    assert "unpicklable_result" in message and "lock" in message.lower()
    assert calls["unpicklable"] == 1
    (only,) = await durable.get_handle("u", store).history()
    assert isinstance(only.error, durable.SerializationError)


class HoldsLock(Exception):
    def __init__(self) -> None:
        super().__init__("cannot pickle me")
        self.lock = threading.Lock()


@durable.activity
async def raises_unpicklable() -> None:
    calls["raises_unpicklable"] += 1
    raise HoldsLock


@durable.workflow
async def sees_activity_error() -> tuple[str, str]:
    try:
        await raises_unpicklable()
    except durable.ActivityError as exc:
        seen = (exc.type_name, exc.message)
    await step(2)
    return seen


async def test_unpicklable_exception_becomes_the_same_activity_error_on_replay(
    store: Store,
) -> None:
    crash_at["n"] = 2
    with pytest.raises(Boom):
        await durable.execute(sees_activity_error, id="e", store=store)
    result = await durable.execute(sees_activity_error, id="e", store=store)
    assert result == (f"{__name__}.HoldsLock", "cannot pickle me")
    assert calls["raises_unpicklable"] == 1


@durable.activity
async def greet(name: str) -> str:
    calls["greet"] += 1
    return f"hi {name}"


version: dict[str, str] = {}


@durable.workflow(name="evolving2")
async def evolving2() -> str:
    await add(1, 2)
    if version["v"] == "new":
        await greet("x")
    else:
        await step(2)
    await step(3)
    return "done"


async def test_changed_code_raises_nondeterminism_and_blocks(store: Store) -> None:
    version["v"] = "old"
    crash_at["n"] = 3
    with pytest.raises(Boom):
        await durable.execute(evolving2, id="nd2", store=store)
    version["v"] = "new"
    with pytest.raises(durable.NonDeterminismError) as info:
        await durable.execute(evolving2, id="nd2", store=store)
    err = info.value
    message = str(err)
    assert "'nd2'" in message and "step 2" in message
    assert f"activity '{__name__}.step'" in message and f"activity '{__name__}.greet'" in message
    assert message.count("test_engine_replay.py:") == 2  # both call sites are named
    assert err.seq == 2 and calls["greet"] == 0
    handle = durable.get_handle("nd2", store)
    assert await handle.status() == RunStatus.BLOCKED
    # nothing recorded was lost: two steps, and the attempt the crash cut off
    assert [s.status for s in await handle.history()] == ["completed", "completed", "started"]
    # Running it again with the same incompatible code blocks again, without executing anything.
    with pytest.raises(durable.NonDeterminismError):
        await durable.execute(evolving2, id="nd2", store=store)
    assert calls["greet"] == 0
    version["v"] = "old"
    assert await durable.execute(evolving2, id="nd2", store=store) == "done"
    assert await handle.status() == RunStatus.COMPLETED
    assert (calls["add"], calls["step2"], calls["step3"]) == (1, 1, 2)


@durable.workflow
async def swallows_divergence() -> str:
    await add(1, 2)
    try:
        await (greet("x") if version["v"] == "new" else step(2))
    except Exception:
        return "swallowed"
    await step(3)
    return "done"


async def test_workflow_cannot_swallow_nondeterminism(store: Store) -> None:
    version["v"] = "old"
    crash_at["n"] = 3
    with pytest.raises(Boom):
        await durable.execute(swallows_divergence, id="sw", store=store)
    version["v"] = "new"
    with pytest.raises(durable.NonDeterminismError):
        await durable.execute(swallows_divergence, id="sw", store=store)
    assert await durable.get_handle("sw", store).status() == RunStatus.BLOCKED


@durable.workflow
async def fan_out(n: int) -> list[int]:
    return list(await asyncio.gather(*(add(i, i) for i in range(n))))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_gather_records_steps_in_call_order(store: Store) -> None:
    assert await durable.execute(fan_out, 5, id="g", store=store) == [0, 2, 4, 6, 8]
    history = await durable.get_handle("g", store).history()
    assert [s.result for s in history] == [0, 2, 4, 6, 8]
    assert [s.seq for s in history] == [1, 2, 3, 4, 5]


@durable.activity
async def jittery(i: int) -> int:
    calls["jittery"] += 1
    await anyio.sleep(0.001 * ((i * 7) % 5))
    if crash_at.get("n") == i:
        crash_at.clear()
        raise Boom
    return i


@durable.workflow
async def gathered(n: int) -> list[int]:
    values = await durable.gather(*(jittery(i) for i in range(n)))
    return [*values, await add(100, 1)]


async def test_durable_gather_replays_deterministically_after_a_crash(store: Store) -> None:
    crash_at["n"] = 3
    with pytest.raises(Boom):
        await durable.execute(gathered, 6, id="dg", store=store)
    steps = await durable.get_handle("dg", store).history()
    recorded = {s.seq: s.result for s in steps if s.status == StepStatus.COMPLETED}
    assert 4 not in recorded  # step 4 (jittery(3)) crashed, so it has no outcome
    assert all(recorded[seq] == seq - 1 for seq in recorded)
    before = calls["jittery"]
    assert await durable.execute(gathered, 6, id="dg", store=store) == [0, 1, 2, 3, 4, 5, 101]
    history = await durable.get_handle("dg", store).history()
    assert [(s.seq, s.result) for s in history] == [(i + 1, i) for i in range(6)] + [(7, 101)]
    assert calls["jittery"] - before == 6 - len(recorded)  # only unrecorded steps ran again
    assert calls["add"] == 1


@durable.workflow
async def task_group_fan_out(n: int) -> int:
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(jittery, i)  # the activity itself: numbered when start_soon calls it
    return await add(100, 1)


async def test_task_group_steps_are_numbered_in_the_order_written(store: Store) -> None:
    crash_at["n"] = 2
    with pytest.raises(BaseExceptionGroup) as info:
        await durable.execute(task_group_fan_out, 5, id="tg", store=store)
    assert info.group_contains(Boom)
    assert await durable.execute(task_group_fan_out, 5, id="tg", store=store) == 101
    history = await durable.get_handle("tg", store).history()
    assert [(s.seq, s.result) for s in history] == [(i + 1, i) for i in range(5)] + [(6, 101)]


@durable.workflow
async def branch(i: int) -> int:
    first = await jittery(i)
    return first + await add(first, 1000)


@durable.workflow
async def branches(n: int) -> list[int]:
    return await durable.gather(*(branch(i) for i in range(n)))


async def test_multi_step_branches_as_child_workflows_replay_deterministically(
    store: Store,
) -> None:
    crash_at["n"] = 2
    with pytest.raises(Boom):
        await durable.execute(branches, 4, id="br", store=store)
    assert await durable.execute(branches, 4, id="br", store=store) == [
        2 * i + 1000 for i in range(4)
    ]
    history = await durable.get_handle("br", store).history()
    assert [(s.kind, s.result) for s in history] == [
        (StepKind.CHILD, 2 * i + 1000) for i in range(4)
    ]
    child = await durable.get_handle("br/3", store).history()
    assert [s.result for s in child] == [2, 1002]


@durable.workflow
async def helpers() -> tuple[datetime, str, float, int]:
    when = durable.now()
    ident = durable.uuid4()
    luck = durable.random()
    await step(2)
    return when, str(ident), luck, durable.info().step


async def test_now_uuid4_random_are_recorded(store: Store) -> None:
    crash_at["n"] = 2
    with pytest.raises(Boom):
        await durable.execute(helpers, id="h", store=store)
    history = await durable.get_handle("h", store).history()
    kinds = [(s.kind, s.status) for s in history]  # the helpers, and the attempt that crashed
    assert kinds == [
        (StepKind.NOW, StepStatus.COMPLETED),
        (StepKind.UUID4, StepStatus.COMPLETED),
        (StepKind.RANDOM, StepStatus.COMPLETED),
        (StepKind.ACTIVITY, StepStatus.STARTED),
    ]
    when, ident, luck, last = await durable.execute(helpers, id="h", store=store)
    assert (when, ident, luck) == (history[0].result, str(history[1].result), history[2].result)
    assert when.tzinfo is not None and 0 <= luck < 1 and last == 4


seen_info: list[durable.Info] = []


@durable.activity(retry=RetryPolicy(max_attempts=3, initial_interval=0.001))
async def records_info() -> str:
    info = durable.info()
    seen_info.append(info)
    if info.attempt == 1:
        raise ConnectionError("first attempt fails")
    if crash_at.pop("info", None):
        raise Boom
    return info.idempotency_key or ""


@durable.workflow
async def uses_info() -> str:
    await add(0, 0)
    return await records_info()


async def test_idempotency_key_is_stable_across_attempts_and_crashes(store: Store) -> None:
    seen_info.clear()
    crash_at["info"] = 1
    with pytest.raises(Boom):
        await durable.execute(uses_info, id="k", store=store)
    key = await durable.execute(uses_info, id="k", store=store)
    assert key == "k/2"
    # Attempts are counted when they start, so the count goes on after the crash.
    assert [(i.step, i.attempt, i.idempotency_key) for i in seen_info] == [
        (2, 1, "k/2"),
        (2, 2, "k/2"),
        (2, 3, "k/2"),
    ]
    (_, step) = await durable.get_handle("k", store).history()
    assert step.attempts == 3
    assert {i.run_id for i in seen_info} == {"k"}
    assert {i.workflow for i in seen_info} == {f"{__name__}.uses_info"}


@durable.activity
def sync_info() -> str:
    return durable.info().idempotency_key or ""


@durable.workflow
async def uses_sync_info() -> str:
    return await sync_info()


async def test_info_inside_a_thread_activity(store: Store) -> None:
    assert await durable.execute(uses_sync_info, id="ti", store=store) == "ti/1"


@durable.workflow
async def child_flow(n: int) -> int:
    return await add(n, n)


class ChildFailed(Exception):
    pass


@durable.workflow
async def failing_child() -> None:
    raise ChildFailed("child says no")


@durable.workflow
async def parent_flow() -> tuple[int, str]:
    doubled = await child_flow(21)
    try:
        await failing_child()
    except ChildFailed as exc:
        message = str(exc)
    await step(3)
    return doubled, message


async def test_child_workflows_are_one_step_of_the_parent(store: Store) -> None:
    crash_at["n"] = 3
    with pytest.raises(Boom):
        await durable.execute(parent_flow, id="p", store=store)
    assert await durable.execute(parent_flow, id="p", store=store) == (42, "child says no")
    assert calls["add"] == 1 and calls["step3"] == 2
    history = await durable.get_handle("p", store).history()
    assert [(s.kind, s.status) for s in history] == [
        (StepKind.CHILD, StepStatus.COMPLETED),
        (StepKind.CHILD, StepStatus.FAILED),
        (StepKind.ACTIVITY, StepStatus.COMPLETED),
    ]
    assert await durable.get_handle("p/1", store).status() == RunStatus.COMPLETED
    assert await durable.get_handle("p/2", store).status() == RunStatus.FAILED
    assert await durable.get_handle("p/1", store).result() == 42


@durable.workflow
async def names_its_child(order: str) -> int:
    return await durable.execute(child_flow, 21, id=f"{order}-child")


async def test_a_child_run_can_be_given_its_id(store: Store) -> None:
    assert await durable.execute(names_its_child, "o7", id="nc", store=store) == 42
    assert await durable.get_handle("o7-child", store).result() == 42
    (only,) = await durable.get_handle("nc", store).history()
    assert only.kind == StepKind.CHILD and only.result == 42
    assert await durable.execute(names_its_child, "o7", id="nc", store=store) == 42
    assert calls["add"] == 1


@durable.workflow
async def naps() -> str:
    await durable.sleep(0.05)
    await step(2)
    return "rested"


async def test_sleep_records_its_due_time_and_resume_does_not_restart_it(store: Store) -> None:
    crash_at["n"] = 2
    with pytest.raises(Boom):
        await durable.execute(naps, id="z", store=store)
    timer, crashed = await durable.get_handle("z", store).history()
    assert crashed.status == StepStatus.STARTED  # the attempt that crashed is on record
    assert timer.kind == StepKind.TIMER and isinstance(timer.result, float)
    assert timer.result >= timer.started_at.timestamp() + 0.05 - 1e-6
    assert await durable.execute(naps, id="z", store=store) == "rested"
    assert datetime.now(UTC).timestamp() >= timer.result


@durable.workflow
async def child_a() -> int:
    return await step(2)


@durable.workflow
async def child_b() -> int:
    return await add(1, 1)


@durable.workflow
async def picks_a_child() -> int:
    return await (child_b() if version["v"] == "new" else child_a())


async def test_a_changed_child_workflow_blocks_the_parent(store: Store) -> None:
    version["v"] = "old"
    crash_at["n"] = 2
    with pytest.raises(Boom):  # dies inside child_a: the child run exists, the step does not
        await durable.execute(picks_a_child, id="pc", store=store)
    version["v"] = "new"
    with pytest.raises(durable.NonDeterminismError, match="'pc'"):
        await durable.execute(picks_a_child, id="pc", store=store)
    assert await durable.get_handle("pc", store).status() == RunStatus.BLOCKED
    assert calls["add"] == 0
    version["v"] = "old"
    assert await durable.execute(picks_a_child, id="pc", store=store) == 4


@dataclass(frozen=True)
class Quote:
    sku: str
    price: Decimal
    valid_until: datetime


class QuoteRejected(Exception):
    pass


@durable.activity
async def quote(sku: str) -> Quote:
    calls["quote"] += 1
    return Quote(sku, Decimal("19.99"), datetime(2030, 1, 1, tzinfo=UTC))


@durable.activity
async def reject(q: Quote) -> None:
    raise QuoteRejected(f"too expensive: {q.price}")


@durable.workflow(codec=durable.JSONCodec())
async def json_flow(sku: str) -> dict[str, Any]:
    q = await quote(sku)
    try:
        await reject(q)
    except QuoteRejected as exc:
        reason = str(exc)
    await step(3)
    return {"quote": q, "reason": reason}


async def test_the_json_codec_round_trips_a_whole_run(store: Store) -> None:
    crash_at["n"] = 3
    with pytest.raises(Boom):
        await durable.execute(json_flow, "sku-1", id="js", store=store)
    result = await durable.execute(json_flow, "sku-1", id="js", store=store)
    assert result == {
        "quote": Quote("sku-1", Decimal("19.99"), datetime(2030, 1, 1, tzinfo=UTC)),
        "reason": "too expensive: 19.99",
    }
    assert calls["quote"] == 1
    history = await durable.get_handle("js", store).history()
    assert isinstance(history[1].error, QuoteRejected)
    assert await durable.get_handle("js", store).result() == result
