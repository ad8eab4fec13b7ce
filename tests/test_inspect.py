"""`durable._inspect`: one run's decoded view and its JSON shape (what `durable runs show` and
the web view print)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import durable
from durable._inspect import info_json, inspect_run, run_json
from durable.store import Store


@durable.activity
async def greet(name: str) -> str:
    return f"hello {name}"


@durable.activity
async def explode(name: str) -> str:
    raise ValueError(f"no {name}")


@durable.workflow
async def child_greeting(name: str) -> str:
    return await greet(name)


@durable.workflow
async def greeting(name: str, *, loud: bool = False) -> str:
    text = await greet(name)
    other = await child_greeting(name)
    return (text + other).upper() if loud else text + other


@durable.workflow
async def breaking(name: str) -> str:
    await greet(name)
    try:
        await explode(name)
    except ValueError:
        pass
    return await explode(name + "!")


async def test_a_completed_run_with_a_child(store: Store) -> None:
    await durable.execute(greeting, "ada", loud=True, id="g", store=store)
    view = await inspect_run(store, "g")
    assert view is not None
    data = json.loads(json.dumps(run_json(view)))  # plain JSON all the way down
    assert data["id"] == "g" and data["status"] == "completed"
    assert data["args"] == "('ada', loud=True)"
    assert data["result"] == repr("HELLO ADAHELLO ADA")
    assert data["created_at"].endswith("+00:00") and data["attempts"] == 1
    steps = data["steps"]
    assert [(s["seq"], s["kind"], s["status"], s["attempts"]) for s in steps] == [
        (1, "activity", "completed", 1), (2, "child", "completed", 1),
    ]  # fmt: skip
    assert steps[0]["result"] == "'hello ada'" and steps[0]["finished_at"] is not None
    assert steps[1]["child_id"] == "g/2" and steps[0]["child_id"] is None
    assert [c["id"] for c in data["children"]] == ["g/2"]
    assert set(info_json(view.info)) <= set(data)


async def test_a_failed_run_shows_errors_with_tracebacks(store: Store) -> None:
    with pytest.raises(ValueError, match="no bob!"):
        await durable.execute(breaking, "bob", id="b", store=store)
    view = await inspect_run(store, "b")
    assert view is not None and view.result is None
    assert view.info.error is not None and "ValueError: no bob!" in view.info.error
    assert "Traceback" in view.info.error
    failed = [s for s in view.steps if s.error is not None]
    assert [s.seq for s in failed] == [2, 3]
    assert failed[0].error is not None and "ValueError: no bob" in failed[0].error


async def test_undecodable_payloads_are_shown_not_raised(store: Store) -> None:
    await durable.execute(greeting, "eve", id="e", store=store)
    run = await store.get_run("e")
    assert run is not None
    broken = replace(run, id="e2", args=b"\x00garbage", result=b"\x00garbage")
    await store.create_run(broken)
    view = await inspect_run(store, "e2")
    assert view is not None
    assert view.args.startswith("<not decoded: ") and "e2" in view.args


async def test_a_missing_run(store: Store) -> None:
    assert await inspect_run(store, "nope") is None
