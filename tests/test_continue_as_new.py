"""Continue-as-new: a run ends its generation and starts again under the same id with new
arguments and an empty history; results, signals, child runs and keys follow the generations,
and a SIGKILL at any moment loses no generation and repeats no completed step."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from support import PROGRAMS, Crash, Processes, durable_cli, eventually, wait_for_log

import durable
from durable import NotInWorkflowError, RunStatus, StepKind, StepStatus
from durable._cli_runs import _view_text
from durable._inspect import inspect_run, run_json
from durable.backends import MemoryStore, SQLStore
from durable.store import RunQuery, Store
from durable.testing import WorkflowEnvironment, replay
from durable.ui._pages import _head

sys.path.insert(0, str(PROGRAMS))
import continue_loop

log: list[str] = []
crash_at: set[str] = set()


@pytest.fixture(autouse=True)
def _clear() -> None:
    log.clear()
    crash_at.clear()


@durable.activity(name="can.add")
async def add(total: int, n: int) -> int:
    info = durable.info()
    tag = f"add {total}+{n}"
    if tag in crash_at:
        crash_at.discard(tag)
        raise Crash  # as if the process died here: nothing records it
    log.append(f"{tag} key={info.idempotency_key} generation={info.generation}")
    return total + n


@durable.workflow(name="can.counter")
async def counter(total: int, generations: int) -> tuple[int, int]:
    """Adds 1 per generation (two activities: +0 then +1) and continues until the last."""
    total = await add(total, 0)
    total = await add(total, 1)
    generation = durable.info().generation
    log.append(f"workflow generation={generation}")
    if generation < generations:
        durable.continue_as_new(total, generations)
    return total, generation


async def test_a_counter_continues_five_times_and_returns_the_last_result(store: Store) -> None:
    result = await durable.execute(counter, 0, 6, id="c1", store=store)
    assert result == (6, 6)
    assert [line for line in log if line.startswith("workflow")] == [
        f"workflow generation={g}" for g in range(1, 7)
    ]
    keys = [line.split()[2] for line in log if line.startswith("add") and "+1" in line]
    assert keys == ["key=c1/2"] + [f"key=c1/g{g}/2" for g in range(2, 7)]
    handle = durable.get_handle("c1", store)
    assert await handle.result() == (6, 6)
    info = await handle.describe()
    assert (info.status, info.generation) == (RunStatus.COMPLETED, 6)
    # Only the last generation's steps remain: earlier generations' are deleted.
    steps = await store.load_steps("c1")
    assert [(s.seq, s.name) for s in steps] == [(1, "can.add"), (2, "can.add")]
    assert [s.result for s in await handle.history()] == [5, 6]
    # The same call again (with the first generation's arguments) returns the result.
    executed = len(log)
    assert await durable.execute(counter, 0, 6, id="c1", store=store) == (6, 6)
    assert len(log) == executed


async def test_a_crash_in_a_later_generation_resumes_it_without_repeating_work(
    store: Store,
) -> None:
    crash_at.add("add 2+1")  # generation 3's second activity
    with pytest.raises(Crash):
        await durable.execute(counter, 0, 4, id="c2", store=store)
    run = await store.get_run("c2")
    assert run is not None and run.generation == 3
    # Resumed with the arguments it was started with, although it holds generation 3's now.
    assert await durable.execute(counter, 0, 4, id="c2", store=store) == (4, 4)
    adds = Counter(line.split(" key=")[0] for line in log if line.startswith("add"))
    assert adds == {f"add {t}+{n}": 1 for t in range(4) for n in (0, 1)}


@durable.workflow(name="can.inbox")
async def inbox(received: list[str]) -> list[str]:
    """Takes one signal per generation in the first two, two in the third."""
    generation = durable.info().generation
    for _ in range(1 if generation < 3 else 2):
        received = [*received, await durable.wait_signal("item")]
    if generation < 3:
        durable.continue_as_new(received)
    return received


async def test_buffered_signals_carry_over_and_consumed_ones_are_gone(store: Store) -> None:
    handle = await durable.start(inbox, [], id="in1", store=store)
    for item in ("a", "b", "c"):
        await handle.signal("item", item)
    results: list[list[str]] = []

    async def execute() -> None:
        results.append(await durable.execute(inbox, [], id="in1", store=store))

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)

        async def waiting_in_generation_3() -> bool:
            run = await store.get_run("in1")
            if run is None or run.generation != 3:
                return False
            return len(await store.load_steps("in1")) == 2

        await eventually("generation 3 waiting for its second item", waiting_in_generation_3)
        steps = await store.load_steps("in1")  # only generation 3's: one signal received
        assert [(s.seq, s.kind, s.status) for s in steps] == [
            (1, StepKind.SIGNAL, StepStatus.COMPLETED),
            (2, StepKind.SIGNAL, StepStatus.STARTED),
        ]
        await handle.signal("item", "d")
    assert results == [["a", "b", "c", "d"]]


@durable.workflow(name="can.stubborn")
async def stubborn(cancels: int) -> int:
    """Waits for "go"; a cancel makes it start again (counting the cancels it took)."""
    try:
        await durable.wait_signal("go")
    except durable.Cancelled:
        durable.continue_as_new(cancels + 1)
    return cancels


async def test_a_cancel_handled_by_a_generation_does_not_reach_the_next(store: Store) -> None:
    handle = await durable.start(stubborn, 0, id="st1", store=store)
    results: list[int] = []

    async def execute() -> None:
        results.append(await durable.execute(stubborn, 0, id="st1", store=store))

    async def waiting_in(generation: int) -> bool:
        run = await store.get_run("st1")
        steps = await store.load_steps("st1")
        return run is not None and run.generation == generation and len(steps) == 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        await eventually("generation 1 waiting", lambda: waiting_in(1))
        await handle.cancel()
        await eventually("generation 2 waiting", lambda: waiting_in(2))
        run = await store.get_run("st1")
        assert run is not None and not run.cancel_requested  # spent by generation 1
        await handle.signal("go")
    assert results == [1]


_stores: list[Store] = []


@durable.activity(name="can.cancel_myself")
async def cancel_myself() -> None:
    await durable.get_handle(durable.info().run_id, _stores[0]).cancel()


@durable.workflow(name="can.self_cancelling")
async def self_cancelling() -> int:
    """Generation 1 asks for its own cancellation and continues before any step can take it."""
    generation = durable.info().generation
    if generation == 1:
        await cancel_myself()
        durable.continue_as_new()
    await tick(f"generation {generation}")
    return generation


async def test_a_cancel_not_delivered_yet_reaches_the_next_generation(store: Store) -> None:
    _stores[:] = [store]
    with pytest.raises(durable.Cancelled):
        await durable.execute(self_cancelling, id="sc1", store=store)
    run = await store.get_run("sc1")
    assert run is not None and (run.status, run.generation) == (RunStatus.CANCELLED, 2)
    assert log == []  # generation 2's first step took the cancellation


@durable.activity(name="can.tick")
async def tick(label: str) -> str:
    log.append(f"tick {label} {durable.info().run_id}")
    return label


@durable.workflow(name="can.child")
async def child(label: str) -> str:
    return await tick(label)


@durable.workflow(name="can.parent")
async def parent(results: list[str]) -> list[str]:
    """Calls the same child with the same arguments (default id) in each of 3 generations."""
    results = [*results, await child("same")]
    if durable.info().generation < 3:
        durable.continue_as_new(results)
    return results


async def test_child_ids_do_not_collide_across_generations(store: Store) -> None:
    assert await durable.execute(parent, [], id="p1", store=store) == ["same"] * 3
    # Had generation 2 used generation 1's child id "p1/1", it would have got that child's
    # recorded result without running anything.
    assert log == ["tick same p1/1", "tick same p1/g2/1", "tick same p1/g3/1"]
    children = await store.find_runs(RunQuery(parent_id="p1"))
    assert sorted(c.id for c in children) == ["p1/1", "p1/g2/1", "p1/g3/1"]
    view = await inspect_run(store, "p1")
    assert view is not None and [s.child_id for s in view.steps] == ["p1/g3/1"]


@durable.workflow(name="can.pings")
async def pings(count: int) -> int:
    for _ in range(count):
        await durable.wait_signal("ping")
    return count


@durable.workflow(name="can.sender")
async def sender(target: str) -> int:
    """Sends one ping (default idempotency key) to ``target`` in each of 3 generations."""
    await durable.signal(target, "ping", durable.info().generation)
    generation = durable.info().generation
    if generation < 3:
        durable.continue_as_new(target)
    return generation


async def test_signal_sends_do_not_collide_across_generations(store: Store) -> None:
    await durable.start(pings, 3, id="target", store=store)
    assert await durable.execute(sender, "target", id="s1", store=store) == 3
    # Had generation 2 sent with generation 1's key "s1/1", the store would have dropped it as
    # a retry, and the target would wait for ever for its third ping.
    with anyio.fail_after(30):
        assert await durable.execute(pings, 3, id="target", store=store) == 3


undone: list[str] = []


async def _unbook(name: str) -> None:
    undone.append(name)


@durable.activity(name="can.book", compensate=_unbook)
async def book(name: str) -> str:
    return name


class Refused(Exception):
    pass


@durable.workflow(name="can.trip")
async def trip(leg: str) -> None:
    await book(leg)
    if leg == "first":
        durable.continue_as_new("second")
    raise Refused(leg)


async def test_a_generation_that_continued_drops_its_undos() -> None:
    undone.clear()
    with pytest.raises(Refused):
        await durable.execute(trip, "first", id="t1", store=MemoryStore())
    assert undone == ["second"]  # generation 1 completed: its booking is not undone


@durable.workflow(name="can.daily")
async def daily(day: int, days: int) -> int:
    """A day per iteration (a durable sleep), continuing as new every third day."""
    while day < days:
        await durable.sleep(timedelta(days=1))
        await tick(f"day {day}")
        day += 1
        if day % 3 == 0 and day < days:
            durable.continue_as_new(day, days)
    return durable.info().generation


async def test_continue_as_new_on_the_virtual_clock_with_a_crash() -> None:
    async with WorkflowEnvironment() as env:
        began = env.now()
        env.crash(tick, when="after")  # the first tick's effect happens, its record does not
        assert await env.execute(daily, 0, 9, id="d1") == 3
        assert env.now() - began >= timedelta(days=9)
        days = [line.split()[2] for line in log]
        assert days == ["0", "0"] + [str(d) for d in range(1, 9)]  # the crashed one again
        info = await env.get_handle("d1").describe()
        assert info.generation == 3


@durable.activity(name="can.slow")
async def slow() -> None:
    await anyio.sleep(0.05)


@durable.workflow(name="can.hasty")
async def hasty() -> str:
    refused = ""
    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        await anyio.sleep(0.01)  # the activity has started (it takes 0.05 s)
        try:
            durable.continue_as_new()
        except NotInWorkflowError as exc:
            refused = str(exc)
    return refused


@durable.workflow(name="can.misfit")
async def misfit(n: int) -> None:
    durable.continue_as_new(n, "one too many")


@durable.workflow(name="can.in_activity")
async def in_activity() -> None:
    await _continue_inside()


@durable.activity(name="can.continue_inside", retry=durable.RetryPolicy(max_attempts=1))
async def _continue_inside() -> None:
    durable.continue_as_new()


async def test_continue_as_new_is_refused_where_it_cannot_end_a_generation() -> None:
    store = MemoryStore()
    with pytest.raises(NotInWorkflowError, match="outside any run"):
        durable.continue_as_new(1)
    with pytest.raises(NotInWorkflowError, match="inside an activity"):
        await durable.execute(in_activity, id="r1", store=store)
    refused = await durable.execute(hasty, id="r2", store=store)
    assert "other steps of run 'r2' are under way" in refused
    with pytest.raises(TypeError, match=r"do not fit workflow 'can\.misfit'"):
        await durable.execute(misfit, 1, id="r3", store=store)
    for run_id, status in (
        ("r1", RunStatus.FAILED),
        ("r2", RunStatus.COMPLETED),
        ("r3", RunStatus.FAILED),
    ):
        run = await store.get_run(run_id)
        assert run is not None and (run.status, run.generation) == (status, 1)


async def test_describe_and_runs_show_name_the_generation() -> None:
    store = MemoryStore()
    await durable.execute(counter, 0, 2, id="v1", store=store)
    view = await inspect_run(store, "v1")
    assert view is not None and view.info.generation == 2
    assert run_json(view)["generation"] == 2
    assert "generation  2 (continued as new" in _view_text(view)
    assert "<dt>Generation</dt><dd>2</dd>" in _head("/", view)
    await durable.execute(counter, 0, 1, id="v2", store=store)
    view = await inspect_run(store, "v2")
    assert view is not None and "generation" not in _view_text(view)
    assert "Generation" not in _head("/", view)


@durable.workflow(name="can.finale")
async def finale(generations: int) -> int:
    """One activity per generation, and one more in the last."""
    generation = durable.info().generation
    await add(generation, 0)
    if generation < generations:
        durable.continue_as_new(generations)
    return await add(generation, 100)


async def test_an_exported_history_replays_in_its_generation() -> None:
    store = MemoryStore()
    assert await durable.execute(finale, 3, id="h1", store=store) == 103
    history = json.loads(await durable.get_handle("h1", store).export_history())
    assert history["run"]["generation"] == 3
    await replay(finale, history)  # generation 3 makes its second call
    # Replayed as generation 1, the code continues where the history goes on: diverged.
    history["run"]["generation"] = 1
    with pytest.raises(durable.NonDeterminismError, match="continue_as_new"):
        await replay(finale, history)


# -- SIGKILL ---------------------------------------------------------------------------------

TOTAL, EVERY = 60, 10  # iterations, and a new generation every EVERY of them


def _start_loop(url: str, run_id: str) -> None:
    async def start() -> None:
        async with SQLStore(url) as store:
            await durable.start(continue_loop.loop, 0, TOTAL, EVERY, 0.01, id=run_id, store=store)

    anyio.run(start)


def _run_record(url: str, run_id: str) -> tuple[str, int]:
    async def read() -> tuple[str, int]:
        async with SQLStore(url) as store:
            run = await store.get_run(run_id)
            assert run is not None
            return str(run.status), run.generation

    return anyio.run(read)


def _kill_and_restart_until_done(
    processes: Processes, url: str, side: Path, tmp_path: Path, seed: int, kills: int = 4
) -> int:
    """Run the loop in a worker process, SIGKILLed ``kills`` times at random moments (each
    after some progress) and started again; return how many kills landed."""
    rng = random.Random(seed)
    env = {**os.environ, "SIDE_DB": str(side)}

    def worker() -> subprocess.Popen[bytes]:
        log_file = tmp_path / f"worker-{uuid.uuid4().hex[:8]}.log"
        options = ("--lease", "5", "--grace", "1")
        args = ["-m", "durable", "worker", "continue_loop", "--store", url, *options]
        proc = processes.spawn(args, log_file, env)
        wait_for_log(proc, log_file, "durable worker: ready")
        return proc

    landed = 0
    for _ in range(kills):
        proc = worker()
        seen = len(continue_loop.side_rows(str(side)))
        deadline = time.monotonic() + 60
        while True:  # some progress first (unless the loop is through)
            rows = continue_loop.side_rows(str(side))
            if len(rows) >= seen + 3 or len({row[1] for row in rows}) == TOTAL:
                break
            assert time.monotonic() < deadline, "the worker made no progress"
            assert proc.poll() is None, "the worker exited"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.1))  # the moment of the kill: random on purpose
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if _run_record(url, "loop")[0] != "completed":
            landed += 1
    proc = worker()
    deadline = time.monotonic() + 120
    while _run_record(url, "loop")[0] != "completed":
        assert time.monotonic() < deadline, "the loop did not complete after the last restart"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    return landed


def _check_executions(side: Path, kills: int) -> None:
    """Every iteration ran in its generation with its key; an execution ran twice only if
    it was in flight at a kill (at most one per kill)."""
    rows = continue_loop.side_rows(str(side))
    by_iteration: dict[int, list[tuple[int, str]]] = {}
    for generation, iteration, key, _ in rows:
        by_iteration.setdefault(iteration, []).append((generation, key))
    assert sorted(by_iteration) == list(range(TOTAL)), "an iteration (or generation) was lost"
    for iteration, runs in by_iteration.items():
        generation = iteration // EVERY + 1
        seq = iteration % EVERY + 1
        key = f"loop/{seq}" if generation == 1 else f"loop/g{generation}/{seq}"
        assert set(runs) == {(generation, key)}, f"iteration {iteration}: {runs}"
    repeated = sum(len(runs) - 1 for runs in by_iteration.values())
    assert repeated <= kills, f"{repeated} repeated executions for {kills} kills"


@pytest.mark.timeout(300)
def test_a_continue_as_new_loop_survives_sigkills_on_sqlite(
    processes: Processes, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'loop.db'}"
    side = tmp_path / "side.db"
    _start_loop(url, "loop")
    landed = _kill_and_restart_until_done(processes, url, side, tmp_path, seed=16)
    assert landed >= 1, "no kill landed before the loop completed"
    assert _run_record(url, "loop") == ("completed", TOTAL // EVERY)
    _check_executions(side, landed)


@pytest.mark.timeout(300)
def test_a_continue_as_new_loop_survives_sigkills_on_postgres(
    processes: Processes, tmp_path: Path, fresh_postgres_url: str
) -> None:
    init = durable_cli(PROGRAMS, "db", "init", fresh_postgres_url, timeout=120)
    assert init.returncode == 0, init.stderr
    side = tmp_path / "side.db"
    _start_loop(fresh_postgres_url, "loop")
    landed = _kill_and_restart_until_done(processes, fresh_postgres_url, side, tmp_path, seed=5)
    assert landed >= 1, "no kill landed before the loop completed"
    assert _run_record(fresh_postgres_url, "loop") == ("completed", TOTAL // EVERY)
    _check_executions(side, landed)


# -- the benchmark ---------------------------------------------------------------------------


def test_the_benchmark_runs_and_prints_its_table(tmp_path: Path) -> None:
    """benchmarks/continue_as_new.py at a tiny size (no timing is asserted)."""
    out = tmp_path / "figures.json"
    script = Path(__file__).parent.parent / "benchmarks" / "continue_as_new.py"
    sizes = ["--iterations", "30", "--every", "10", "--repeat", "1"]
    proc = subprocess.run(
        [sys.executable, str(script), *sizes, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| continue as new every 10 | 3 |" in proc.stdout
    results = json.loads(out.read_text())["results"]
    assert results["continuing"]["max_rows"]["max"] <= 11  # 10 iterations and the stop
    assert results["plain"]["max_rows"]["max"] == 31
    assert results["continuing"]["final_rows"]["max"] <= 11
