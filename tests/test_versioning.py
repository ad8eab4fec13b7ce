"""Safe deploys: `durable.patched` / `durable.deprecate_patch`, and the code version every run
records. Each "deploy" is a new definition of workflow "versioning.flow" (made by one
factory, so it replaces the previous one by name, as a deploy does)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest

import durable
from durable.backends import MemoryStore
from durable.testing import WorkflowEnvironment, replay

START = datetime(2030, 1, 1, tzinfo=UTC)
ran: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


@durable.activity(name="versioning.a")
async def a() -> str:
    ran.append("a")
    return "a"


@durable.activity(name="versioning.b")
async def b() -> str:
    ran.append("b")
    return "b"


@durable.activity(name="versioning.c")
async def c() -> str:
    ran.append("c")
    return "c"


Code = Literal["v1", "v2-patched", "v2-unpatched", "v3-deprecated"]


def deploy(code: Code) -> Callable[..., Any]:
    """The workflow as version ``code`` of the application has it."""

    @durable.workflow(name="versioning.flow", version=code)
    async def flow() -> list[str]:
        out = [await a()]
        if code == "v2-patched":
            if durable.patched("add-c"):
                out.append(await c())
        elif code == "v2-unpatched":
            out.append(await c())
        elif code == "v3-deprecated":
            durable.deprecate_patch("add-c")
            out.append(await c())
        await durable.sleep(timedelta(days=1))
        out.append(await b())
        return out

    return flow


async def _park_a_run_under_v1(store: MemoryStore) -> None:
    old = deploy("v1")
    async with WorkflowEnvironment(store=store, auto_skip=False, start=START) as env:
        await env.start(old, id="old")
        await env.advance(timedelta(hours=1))
        assert await env.get_handle("old").status() == durable.RunStatus.SLEEPING
    run = await store.get_run("old")
    assert run is not None and run.code_version == "v1"


async def test_a_parked_old_run_keeps_the_old_path_and_a_new_run_takes_the_new_one() -> None:
    store = MemoryStore()
    await _park_a_run_under_v1(store)
    new = deploy("v2-patched")
    async with WorkflowEnvironment(store=store, start=START + timedelta(hours=1)) as env:
        assert await env.get_handle("old").result() == ["a", "b"]
        assert await env.execute(new, id="new") == ["a", "c", "b"]
        kinds = [(s.kind, s.name) for s in await env.history("new")]
        old_history = await env.get_handle("old").export_history()
        new_history = await env.get_handle("new").export_history()
    assert kinds[1] == (durable.StepKind.PATCH, "add-c")
    assert durable.StepKind.PATCH not in [s.kind for s in (await _steps(store, "old"))]
    # both histories replay under the patched code, without running anything
    ran.clear()
    await replay(new, old_history)
    await replay(new, new_history)
    assert ran == []


async def _steps(store: MemoryStore, run_id: str) -> list[Any]:
    return await store.load_steps(run_id)


async def test_the_same_change_without_patched_blocks_the_old_run_and_says_what_to_do() -> None:
    store = MemoryStore()
    await _park_a_run_under_v1(store)
    ran.clear()
    deploy("v2-unpatched")
    async with WorkflowEnvironment(store=store, start=START + timedelta(hours=1)) as env:
        await env.advance(timedelta(days=1))
        status = await env.get_handle("old").status()
    run = await store.get_run("old")
    assert status == durable.RunStatus.BLOCKED and run is not None
    message = run.error_text or ""
    assert "diverged from its history at step 2" in message
    assert "code version 'v1'" in message and "'v2-unpatched'" in message
    assert "durable.patched" in message
    assert ran == []  # the diverging call was refused before it ran


async def test_deprecate_patch_replays_runs_with_the_marker_and_records_none() -> None:
    store = MemoryStore()
    patched = deploy("v2-patched")
    async with WorkflowEnvironment(store=store, start=START) as env:
        await env.execute(patched, id="with-marker")
        with_marker = await env.get_handle("with-marker").export_history()
    deprecated = deploy("v3-deprecated")
    await replay(deprecated, with_marker)
    async with WorkflowEnvironment(store=store, start=START + timedelta(days=2)) as env:
        assert await env.execute(deprecated, id="fresh") == ["a", "c", "b"]
        kinds = [s.kind for s in await env.history("fresh")]
    assert durable.StepKind.PATCH not in kinds


def test_every_workflow_has_a_code_version_by_default() -> None:
    from durable._decorators import definition_of

    defn = definition_of(deploy("v1"))
    assert defn is not None and getattr(defn, "version", None) == "v1"

    @durable.workflow(name="versioning.default")
    async def default() -> None:
        return None

    version = getattr(definition_of(default), "version", None)
    assert isinstance(version, str) and len(version) == 12  # a hash of the source


def test_patched_needs_a_change_id_and_a_workflow() -> None:
    with pytest.raises(ValueError, match="change id"):
        durable.patched("")
    with pytest.raises(durable.NotInWorkflowError):
        durable.patched("x")
