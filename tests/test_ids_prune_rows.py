"""Issue 12, items 6, 7, 9 and 10: a child's id cannot be taken by an unrelated run, prune keeps
what unfinished runs refer to, unknown rows block instead of spinning, and the same id with other
arguments is a conflict."""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import sqlalchemy as sa
from support import eventually

import durable
from durable import RunStatus
from durable.backends import MemoryStore, SQLStore
from durable.store import RunRecord, Store
from durable.testing import WorkflowEnvironment

calls: Counter[str] = Counter()
"""How often each activity body ran, by tag (the side effects the tests count)."""


@pytest.fixture(autouse=True)
def _fresh_counts() -> Iterator[None]:
    calls.clear()
    yield
    calls.clear()


async def _within(check: Callable[[], Awaitable[bool]], within: float) -> bool:
    """Poll ``check`` for at most ``within`` seconds (it may never become true); whether it did."""
    with anyio.move_on_after(within):
        for _ in range(10_000_000):
            if await check():
                return True
            await anyio.sleep(0.01)
    return False


async def _status(store: Store, run_id: str) -> RunStatus | None:
    run = await store.get_run(run_id)
    return None if run is None else run.status


# -- item 6: a child's id cannot be taken ---------------------------------------------------------


@durable.activity
async def child_work(tag: str) -> str:
    calls[tag] += 1
    return f"child did {tag}"


@durable.workflow
async def kid(tag: str) -> str:
    return await child_work(tag)


@durable.workflow
async def stranger(tag: str) -> str:
    return f"stranger {tag}"


@durable.workflow
async def parent_of_kid(tag: str) -> str:
    return await kid(tag)  # the first step: child run "<parent id>/1"


@durable.workflow
async def parent_catching(tag: str) -> str:
    try:
        return await kid(tag)
    except durable.WorkflowIdConflict as exc:
        return f"caught {exc.run_id}"


@durable.workflow
async def parent_naming_child(tag: str, child_id: str) -> str:
    return await durable.execute(kid, tag, id=child_id)


async def _take(store: Store, run_id: str, taken_by: str) -> None:
    """Record a user's run under ``run_id``: started only, or run to completion under the
    child's workflow or another one."""
    if taken_by == "started":
        await durable.start(kid, "user", id=run_id, store=store)
    elif taken_by == "completed":
        assert await durable.execute(kid, "user", id=run_id, store=store) == "child did user"
    else:
        assert await durable.execute(stranger, "user", id=run_id, store=store) == "stranger user"


@pytest.mark.parametrize("taken_by", ["started", "completed", "other_workflow"])
async def test_a_users_run_with_a_child_id_never_stands_in_for_the_child(
    store: Store, taken_by: str
) -> None:
    """A user's run "o-1/1" is refused as o-1's child: o-1 fails with WorkflowIdConflict."""
    await _take(store, "o-1/1", taken_by)
    user_run = await store.get_run("o-1/1")
    user_steps = await store.load_steps("o-1/1")
    user_calls = dict(calls)
    with anyio.fail_after(10), pytest.raises(durable.WorkflowIdConflict) as info:
        await durable.execute(parent_of_kid, "parent", id="o-1", store=store)
    assert info.value.run_id == "o-1/1" and "o-1/1" in str(info.value)
    parent = await store.get_run("o-1")
    assert parent is not None and parent.status == RunStatus.FAILED
    assert "WorkflowIdConflict" in (parent.error_text or "")
    with pytest.raises(durable.WorkflowIdConflict):  # the recorded outcome is that error
        await durable.get_handle("o-1", store).result(timeout=5)
    assert await store.get_run("o-1/1") == user_run  # the user's run is untouched
    assert await store.load_steps("o-1/1") == user_steps
    assert calls["parent"] == 0 and dict(calls) == user_calls


async def test_a_parent_can_catch_the_conflict_of_a_taken_child_id(store: Store) -> None:
    """The conflict is raised into the workflow: a parent that catches it completes."""
    await _take(store, "o-1/1", "started")
    with anyio.fail_after(10):
        assert await durable.execute(parent_catching, "parent", id="o-1", store=store) == (
            "caught o-1/1"
        )
    assert await _status(store, "o-1") == RunStatus.COMPLETED
    assert await _status(store, "o-1/1") == RunStatus.PENDING  # nobody executed it
    assert calls["parent"] == 0 and calls["user"] == 0


@pytest.mark.parametrize("taken_by", ["top_level", "another_parent"])
async def test_an_explicit_child_id_that_is_not_this_runs_child_conflicts(
    store: Store, taken_by: str
) -> None:
    """execute(child, id="x") in a workflow refuses an "x" that is not this run's child."""
    if taken_by == "top_level":
        assert await durable.execute(kid, "user", id="x", store=store) == "child did user"
    else:
        result = await durable.execute(parent_naming_child, "user", "x", id="a", store=store)
        assert result == "child did user"
    taken = await store.get_run("x")
    with anyio.fail_after(10), pytest.raises(durable.WorkflowIdConflict) as info:
        await durable.execute(parent_naming_child, "parent", "x", id="b", store=store)
    assert info.value.run_id == "x"
    assert await _status(store, "b") == RunStatus.FAILED
    assert await store.get_run("x") == taken
    assert calls["parent"] == 0 and calls["user"] == 1


@pytest.mark.parametrize("explicit", [False, True], ids=["default_id", "explicit_id"])
async def test_a_parent_resumed_after_a_crash_finds_its_own_child(
    store: Store, explicit: bool
) -> None:
    """A parent taken over after its executor crashed in its child resumes that same child."""
    async with WorkflowEnvironment(
        store=store, workflows=[parent_of_kid, parent_naming_child, kid]
    ) as env:
        env.crash(child_work, when="before")  # abandons the child and its parent
        with anyio.fail_after(20):
            if explicit:
                result = await env.execute(parent_naming_child, "parent", "o-2-kid", id="o-2")
            else:
                result = await env.execute(parent_of_kid, "parent", id="o-2")
    assert result == "child did parent"
    child = await store.get_run("o-2-kid" if explicit else "o-2/1")
    assert child is not None and child.status == RunStatus.COMPLETED
    assert child.parent_id == "o-2"
    assert calls["parent"] == 1


# -- item 7: prune never breaks an unfinished run ------------------------------------------------


@durable.activity
async def tally(tag: str) -> str:
    calls[tag] += 1
    return tag


@durable.workflow
async def grandchild_wf() -> str:
    await durable.wait_signal("go")
    return await tally("grandchild")


@durable.workflow
async def child_wf() -> str:
    await tally("child")
    return await grandchild_wf()  # run "<child id>/2"


@durable.workflow
async def top_wf() -> str:
    return await child_wf()  # run "<top id>/1"


@durable.workflow
async def lone_wf() -> str:
    return await tally("lone")


async def test_prune_keeps_the_finished_descendants_of_a_paused_run(store: Store) -> None:
    """Prune keeps a paused run's finished child and grandchild; resumed, nothing re-runs."""
    await durable.execute(lone_wf, id="lone", store=store)  # unrelated and finished
    await durable.execute(parent_of_kid, "done", id="done", store=store)  # a finished tree
    handle = await durable.start(top_wf, id="t", store=store)
    worker = durable.Worker(store, [top_wf, child_wf, grandchild_wf], park_after=0.1)
    kept: dict[str, bool] = {}
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)

        async def top_parked() -> bool:
            run = await store.get_run("t")
            return run is not None and run.status == RunStatus.WAITING and run.lease_owner is None

        await eventually("the top run parking behind its child and grandchild", top_parked)
        await handle.pause()  # parked: paused at once, with its child step not recorded
        assert await handle.status() == RunStatus.PAUSED
        await durable.signal("t/1/2", "go", store=store)

        async def child_done() -> bool:
            return await _status(store, "t/1") == RunStatus.COMPLETED

        await eventually("the child finishing", child_done)
        assert await handle.status() == RunStatus.PAUSED
        await durable.prune(older_than=timedelta(0), store=store)
        for run_id in ("t", "t/1", "t/1/2", "lone", "done", "done/1"):
            kept[run_id] = await store.get_run(run_id) is not None
        await handle.resume()

        async def top_done_or_repeated() -> bool:
            status = await handle.status()
            return status.finished or calls["child"] > 1

        await eventually("the resumed top run finishing", top_done_or_repeated)
        worker.stop()
    expected_kept = {"t": True, "t/1": True, "t/1/2": True, "lone": False, "done": False}
    expected_kept["done/1"] = False
    expected_calls = {"lone": 1, "done": 1, "child": 1, "grandchild": 1}
    assert (kept, dict(calls)) == (expected_kept, expected_calls), f"{kept=} {dict(calls)=}"
    assert await handle.status() == RunStatus.COMPLETED
    assert await handle.result(timeout=5) == "grandchild"


def _record(run_id: str, status: RunStatus, parent: str | None, at: float) -> RunRecord:
    return RunRecord(
        id=run_id,
        workflow="tests.constructed",
        status=status,
        args=b"",
        created_at=at,
        updated_at=at,
        parent_id=parent,
    )


async def test_store_prune_keeps_runs_with_an_unfinished_ancestor_at_any_depth(
    store: Store,
) -> None:
    """Store.prune(limit=1) deletes every finished tree, never a run below an unfinished one."""
    old = time.time() - 3600
    older = old - 60  # the runs to keep are the oldest: they must not starve a batch
    records = [
        _record("gp", RunStatus.PAUSED, None, old),
        _record("gp/1", RunStatus.COMPLETED, "gp", older),
        _record("gp/1/1", RunStatus.COMPLETED, "gp/1", older),
        _record("gp/1/1/1", RunStatus.FAILED, "gp/1/1", older),
        _record("w", RunStatus.WAITING, None, old),
        _record("w/1", RunStatus.RUNNING, "w", old),
        _record("w/1/1", RunStatus.CANCELLED, "w/1", older),
        _record("b", RunStatus.BLOCKED, None, old),
        _record("b/2", RunStatus.COMPENSATED, "b", older),
        _record("done", RunStatus.COMPLETED, None, old),
        _record("done/1", RunStatus.COMPLETED, "done", old),
        _record("done/1/1", RunStatus.COMPENSATION_FAILED, "done/1", old),
        _record("alone", RunStatus.FAILED, None, old),
    ]
    for record in records:
        _, created = await store.create_run(record)
        assert created
    deleted = 0
    for _ in range(50):
        batch = await store.prune(before=time.time(), limit=1)
        deleted += batch
        if batch < 1:
            break
    remaining = {r.id for r in records if await store.get_run(r.id) is not None}
    assert remaining == {"gp", "gp/1", "gp/1/1", "gp/1/1/1", "w", "w/1", "w/1/1", "b", "b/2"}
    assert deleted == 4


# -- item 9: unknown rows block, they don't spin ------------------------------------------------


@durable.activity
async def step(tag: str) -> str:
    calls[tag] += 1
    return tag


@durable.workflow
async def three_steps(name: str) -> list[str]:
    return [await step(f"{name}-1"), await step(f"{name}-2"), await step(f"{name}-3")]


class _Raw:
    """Raw SQL on the store's database (another connection), run in a worker thread so that
    a waiting statement never blocks the event loop the store's own calls need."""

    def __init__(self, store: Store) -> None:
        assert isinstance(store, SQLStore)
        self._engine = sa.create_engine(store.url.replace("postgresql://", "postgresql+psycopg://"))

    def _run(self, statement: str, params: dict[str, Any]) -> list[Any]:
        with self._engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result) if result.returns_rows else []

    async def __call__(self, statement: str, **params: Any) -> list[Any]:
        return await anyio.to_thread.run_sync(self._run, statement, params)

    async def row(self, run_id: str) -> tuple[str, str | None, int]:
        """The run's raw ``(status, error_text, lease_token)``."""
        (found,) = await self(
            "SELECT status, error_text, lease_token FROM durable_runs WHERE id = :rid", rid=run_id
        )
        return str(found[0]), found[1], int(found[2])

    def close(self) -> None:
        self._engine.dispose()


@pytest.fixture
def raw(store: Store) -> Iterator[_Raw]:
    handle = _Raw(store)
    yield handle
    handle.close()


async def _with_a_bogus_step(store: Store, raw: _Raw, run_id: str) -> None:
    """A runnable (pending) run whose recorded step 2 has the unknown kind 'bogus'."""
    await durable.execute(three_steps, "old", id=run_id, store=store)
    await raw("DELETE FROM durable_steps WHERE run_id = :rid AND seq = 3", rid=run_id)
    await raw("UPDATE durable_steps SET kind = 'bogus' WHERE run_id = :rid AND seq = 2", rid=run_id)
    await raw(
        "UPDATE durable_runs SET status = 'pending', result = NULL WHERE id = :rid", rid=run_id
    )
    calls.clear()


async def _with_a_bogus_status(store: Store, raw: _Raw, run_id: str) -> None:
    """A started run whose status is the unknown value 'bogus'."""
    await durable.start(three_steps, "new", id=run_id, store=store)
    await raw("UPDATE durable_runs SET status = 'bogus' WHERE id = :rid", rid=run_id)


def _warnings_about(caplog: pytest.LogCaptureFixture, run_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name in ("durable.worker", "durable.run")  # a worker's, or its executor's
        and r.levelno == logging.WARNING
        and run_id in r.getMessage()
    ]


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("unknown", ["step_kind", "run_status"])
async def test_a_worker_blocks_a_run_with_an_unknown_row_and_keeps_serving(
    store: Store, raw: _Raw, unknown: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An unknown step kind or run status blocks the run, logged once, claimed a few times."""
    run_id = "odd-kind" if unknown == "step_kind" else "odd-status"
    if unknown == "step_kind":
        await _with_a_bogus_step(store, raw, run_id)
    else:
        await _with_a_bogus_status(store, raw, run_id)
    _, _, token_before = await raw.row(run_id)
    caplog.set_level(logging.WARNING, logger="durable.worker")
    worker = durable.Worker(store, [three_steps])
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)

        async def blocked() -> bool:
            return (await raw.row(run_id))[0] == "blocked"

        await _within(blocked, 5.0)
        # The worker goes on serving other runs (and must not take the blocked one again).
        await durable.start(three_steps, "fine", id="fine", store=store)

        async def fine_done() -> bool:
            return await _status(store, "fine") == RunStatus.COMPLETED

        await eventually("the normal run completing", fine_done)
        worker.stop()
    status, error_text, token = await raw.row(run_id)
    assert status == "blocked"
    assert error_text is not None and run_id in error_text and "bogus" in error_text
    if unknown == "step_kind":
        assert re.search(r"\b2\b", error_text), error_text  # the step
    assert token - token_before <= 3  # claimed a few times at most, not in a loop
    assert len(_warnings_about(caplog, run_id)) == 1
    assert calls["fine-1"] == calls["fine-2"] == calls["fine-3"] == 1
    assert not any(tag.startswith(("old", "new")) for tag in calls)  # none of its steps ran


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("unknown", ["step_kind", "run_status"])
async def test_execute_on_a_run_with_an_unknown_row_raises_a_clear_error(
    store: Store, raw: _Raw, unknown: str
) -> None:
    """execute() on a run with an unknown step kind or status raises, naming run and value."""
    run_id = "odd-kind" if unknown == "step_kind" else "odd-status"
    if unknown == "step_kind":
        await _with_a_bogus_step(store, raw, run_id)
    else:
        await _with_a_bogus_status(store, raw, run_id)
    name = "old" if unknown == "step_kind" else "new"  # the arguments it was recorded with
    with anyio.fail_after(10), pytest.raises(durable.DurableError) as info:
        await durable.execute(three_steps, name, id=run_id, store=store)
    assert run_id in str(info.value) and "bogus" in str(info.value)
    if unknown == "step_kind":  # like a diverged history: the run is blocked, its row kept
        status, error_text, _ = await raw.row(run_id)
        assert status == "blocked"
        assert error_text is not None and run_id in error_text and "bogus" in error_text
    assert not calls  # none of its steps ran


# -- item 10: the same id with other arguments -----------------------------------------------------


@durable.activity
async def say(greeting: str, name: str) -> str:
    calls["greet"] += 1
    return f"{greeting}, {name}"


@durable.workflow
async def greet(name: str, greeting: str = "hello") -> str:
    return await say(greeting, name)


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


@durable.activity
async def describe(point: Point, pair: tuple[int, int], tags: dict[str, int]) -> str:
    calls["describe"] += 1
    return f"{point.x},{point.y} {pair} {sorted(tags.items())}"


@durable.workflow
async def shapes(point: Point, pair: tuple[int, int], tags: dict[str, int]) -> str:
    return await describe(point, pair, tags)


@durable.workflow(codec=durable.JSONCodec())
async def shapes_json(point: Point, pair: tuple[int, int], tags: dict[str, int]) -> str:
    return await describe(point, pair, tags)


def _says_arguments_differ(exc: durable.WorkflowIdConflict, run_id: str) -> None:
    text = str(exc)
    assert exc.run_id == run_id and run_id in text, text
    assert "argument" in text.lower(), text
    assert re.search(r"differ|other|not the same", text.lower()), text


def _sync_store(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    if store_kind == "memory":
        return MemoryStore()
    if store_kind == "sqlite":
        return SQLStore(f"sqlite:///{tmp_path / 'run.db'}")
    return SQLStore(request.getfixturevalue("postgres_url"))


def test_run_with_other_arguments_under_a_used_id_conflicts(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """durable.run(greet, "bob", id=x) after run(greet, "alice", id=x) raises the conflict."""
    store = _sync_store(store_kind, tmp_path, request)
    x, y = f"x-{uuid.uuid4().hex}", f"y-{uuid.uuid4().hex}"  # the Postgres schema is shared
    try:
        assert durable.run(greet, "alice", id=x, store=store) == "hello, alice"
        with pytest.raises(durable.WorkflowIdConflict) as info:
            durable.run(greet, "bob", id=x, store=store)
        _says_arguments_differ(info.value, x)
        assert durable.run(greet, "alice", id=x, store=store) == "hello, alice"
        assert calls["greet"] == 1  # the same arguments: the recorded result, nothing re-run
        assert durable.run(greet, "alice", greeting="hi", id=y, store=store) == "hi, alice"
        with pytest.raises(durable.WorkflowIdConflict) as info:
            durable.run(greet, "alice", greeting="yo", id=y, store=store)
        _says_arguments_differ(info.value, y)
        assert durable.run(greet, "alice", greeting="hi", id=y, store=store) == "hi, alice"
        assert calls["greet"] == 2
    finally:
        anyio.run(store.close)


async def test_execute_with_other_arguments_under_a_used_id_conflicts(store: Store) -> None:
    """execute() with other positional or keyword arguments than recorded raises the conflict."""
    assert await durable.execute(greet, "alice", id="x", store=store) == "hello, alice"
    with pytest.raises(durable.WorkflowIdConflict) as info:
        await durable.execute(greet, "bob", id="x", store=store)
    _says_arguments_differ(info.value, "x")
    with pytest.raises(durable.WorkflowIdConflict) as info:
        await durable.execute(greet, "alice", greeting="yo", id="x", store=store)
    _says_arguments_differ(info.value, "x")
    assert await durable.execute(greet, "alice", id="x", store=store) == "hello, alice"
    assert calls["greet"] == 1
    # A run recorded but not executed yet: its arguments are checked too, and it stays pending.
    await durable.start(greet, "carol", id="p", store=store)
    with pytest.raises(durable.WorkflowIdConflict) as info:
        await durable.execute(greet, "dave", id="p", store=store)
    _says_arguments_differ(info.value, "p")
    assert await _status(store, "p") == RunStatus.PENDING
    assert calls["greet"] == 1


async def test_start_with_other_arguments_under_a_used_id_conflicts(store: Store) -> None:
    """start() then start() with other arguments raises the conflict; the same ones do not."""
    handle = await durable.start(greet, "alice", greeting="hi", id="s", store=store)
    with pytest.raises(durable.WorkflowIdConflict) as info:
        await durable.start(greet, "bob", greeting="hi", id="s", store=store)
    _says_arguments_differ(info.value, "s")
    with pytest.raises(durable.WorkflowIdConflict) as info:
        await durable.start(greet, "alice", greeting="yo", id="s", store=store)
    _says_arguments_differ(info.value, "s")
    again = await durable.start(greet, "alice", greeting="hi", id="s", store=store)
    assert again.id == handle.id == "s"
    assert await durable.execute(greet, "alice", greeting="hi", id="s", store=store) == "hi, alice"
    with pytest.raises(durable.WorkflowIdConflict):  # a finished run is checked too
        await durable.start(greet, "bob", greeting="hi", id="s", store=store)
    assert calls["greet"] == 1


@pytest.mark.parametrize("workflow", [shapes, shapes_json], ids=["pickle", "json"])
async def test_arguments_equal_after_decoding_are_the_same_arguments(
    store: Store, workflow: Callable[..., Any]
) -> None:
    """Equal dataclasses, tuples and dicts (keys in another order) are the same arguments."""
    first = await durable.execute(
        workflow, Point(1, 2), (3, 4), {"a": 1, "b": 2}, id="eq", store=store
    )
    assert first == "1,2 (3, 4) [('a', 1), ('b', 2)]"
    again = await durable.execute(
        workflow, Point(1, 2), (3, 4), {"b": 2, "a": 1}, id="eq", store=store
    )
    assert again == first
    assert await durable.start(
        workflow, Point(1, 2), (3, 4), {"b": 2, "a": 1}, id="eq", store=store
    )
    assert calls["describe"] == 1
    with pytest.raises(durable.WorkflowIdConflict) as info:
        await durable.execute(workflow, Point(1, 3), (3, 4), {"a": 1, "b": 2}, id="eq", store=store)
    _says_arguments_differ(info.value, "eq")
    assert calls["describe"] == 1


@durable.workflow
async def parent_of_odd(name: str) -> list[str]:
    return await three_steps(name)


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
async def test_a_parent_whose_child_has_an_unknown_row_is_blocked_too(
    store: Store, raw: _Raw, caplog: pytest.LogCaptureFixture
) -> None:
    """The parent of such a child is blocked as well, instead of being claimed again and again."""
    await durable.execute(parent_of_odd, "kid", id="par", store=store)
    await raw("DELETE FROM durable_steps WHERE run_id = 'par' AND seq = 1")
    await raw("UPDATE durable_runs SET status = 'pending', result = NULL WHERE id = 'par'")
    await raw("UPDATE durable_steps SET kind = 'bogus' WHERE run_id = 'par/1' AND seq = 2")
    await raw("UPDATE durable_runs SET status = 'pending', result = NULL WHERE id = 'par/1'")
    _, _, token_before = await raw.row("par")
    caplog.set_level(logging.WARNING, logger="durable.worker")
    worker = durable.Worker(store, [parent_of_odd, three_steps])
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)

        async def blocked() -> bool:
            return (await raw.row("par"))[0] == "blocked"

        await _within(blocked, 5.0)
        worker.stop()
    status, error_text, token = await raw.row("par")
    assert status == "blocked" and error_text is not None and "bogus" in error_text
    assert token - token_before <= 3  # not claimed in a loop
