"""durable.contrib.pydantic_ai: an agent's model requests and tool calls are activities.

Every model here is Pydantic AI's offline `FunctionModel` or `TestModel`; nothing reaches a
network. Pydantic AI runs on asyncio only, so these tests do too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic_ai import Agent, DeferredToolRequests
from pydantic_ai.exceptions import CallDeferred, ModelRetry, UserError
from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.models.test import TestModel
from support import PROGRAMS, Processes, eventually, python

import durable
from durable import RunStatus
from durable.backends import SQLStore
from durable.contrib._pydantic_ai_steps import AgentSteps, DurableModel
from durable.contrib.pydantic_ai import DurableAgent, RanAsWorkflowCode, ToolRaised
from durable.store import Store
from durable.testing import WorkflowEnvironment

sys.path.insert(0, str(PROGRAMS))
import agent_app


@pytest.fixture
def anyio_backend() -> str:
    """Pydantic AI runs on asyncio only."""
    return "asyncio"


# -- a support agent whose model and tools count their calls -----------------------------------

calls: Counter[str] = Counter()
AGENTS: dict[str, DurableAgent[Any, Any]] = {}


@pytest.fixture(autouse=True)
def _clear() -> None:
    calls.clear()
    AGENTS.clear()


def _retried(part: Any) -> bool:
    """A retry prompt: its own part type, or (in newer Pydantic AI) a retried tool return."""
    return isinstance(part, RetryPromptPart) or getattr(part, "outcome", None) == "retried"


def _returned(messages: list[ModelMessage]) -> dict[str, Any]:
    return {
        part.tool_name: part.content
        for message in messages
        for part in message.parts
        if isinstance(part, ToolReturnPart) and not _retried(part)
    }


def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Look the order up, then refund it, then answer with what the tools returned."""
    calls["model"] += 1
    returned = _returned(messages)
    if "lookup" not in returned:
        return ModelResponse(parts=[ToolCallPart("lookup", {"order_id": "o-1"})])
    if "refund" not in returned:
        return ModelResponse(parts=[ToolCallPart("refund", {"order_id": "o-1"})])
    return ModelResponse(parts=[TextPart(f"{returned['lookup']}; {returned['refund']}")])


def support_agent(*, refund_waits: bool = False, model: Any = None) -> Agent[None, str]:
    """An agent with the tools ``lookup`` and ``refund`` (which, with ``refund_waits``, waits
    for the signal ``approve`` and then calls the activity ``issue_refund``)."""
    agent = Agent(model or FunctionModel(respond), name="support")

    @agent.tool_plain
    async def lookup(order_id: str) -> str:
        calls["lookup"] += 1
        return f"{order_id} shipped"

    @agent.tool_plain
    async def refund(order_id: str) -> str:
        if not refund_waits:
            calls["refund"] += 1
            return f"{order_id} refunded"
        if not await durable.wait_signal("approve", timeout=3600):
            return "refund declined"
        return await issue_refund(order_id)

    return agent


@durable.activity(name="test.issue_refund")
async def issue_refund(order_id: str) -> str:
    calls["issue_refund"] += 1
    return f"{order_id} refunded"


@durable.workflow(name="pai.ask")
async def ask(key: str, prompt: str) -> str:
    result = await AGENTS[key].run(prompt)
    return str(result.output)


@durable.workflow(name="pai.ask_json", codec=durable.JSONCodec())
async def ask_json(key: str, prompt: str) -> str:
    result = await AGENTS[key].run(prompt)
    return str(result.output)


async def _names(store: Store, run_id: str) -> list[str]:
    return [step.name for step in await durable.get_handle(run_id, store).history()]


# -- what becomes an activity --------------------------------------------------------------------


async def test_model_requests_and_tool_calls_are_activities_named_after_the_agent(
    store: Store,
) -> None:
    AGENTS["a"] = DurableAgent(support_agent())
    output = await durable.execute(ask, "a", "my order broke", id="r1", store=store)
    assert output == "o-1 shipped; o-1 refunded"
    assert await _names(store, "r1") == [
        "support.model_request",
        "support.tool.lookup",
        "support.model_request",
        "support.tool.refund",
        "support.model_request",
    ]
    steps = await store.load_steps("r1")
    assert all(step.kind == durable.StepKind.ACTIVITY for step in steps)
    assert calls == {"model": 3, "lookup": 1, "refund": 1}
    # the same output as the agent run without durable
    plain = await support_agent().run("my order broke")
    assert plain.output == output


async def test_the_name_defaults_to_the_agents_and_may_be_given(store: Store) -> None:
    AGENTS["a"] = DurableAgent(support_agent(), name="helpdesk")
    await durable.execute(ask, "a", "hi", id="r1", store=store)
    assert set(await _names(store, "r1")) == {
        "helpdesk.model_request",
        "helpdesk.tool.lookup",
        "helpdesk.tool.refund",
    }
    assert AGENTS["a"].name == "helpdesk"


async def test_a_finished_run_again_calls_neither_model_nor_tools(store: Store) -> None:
    AGENTS["a"] = DurableAgent(support_agent())
    first = await durable.execute(ask, "a", "hi", id="r1", store=store)
    counted = dict(calls)
    assert await durable.execute(ask, "a", "hi", id="r1", store=store) == first
    assert calls == counted


async def test_a_test_model_calls_every_tool_each_as_its_activity(store: Store) -> None:
    AGENTS["t"] = DurableAgent(support_agent(model=TestModel()))
    output = await durable.execute(ask, "t", "hi", id="r1", store=store)
    names = await _names(store, "r1")
    assert names[0] == names[-1] == "support.model_request"
    assert sorted(names[1:-1]) == ["support.tool.lookup", "support.tool.refund"]
    assert calls == {"lookup": 1, "refund": 1}
    assert output == (await support_agent(model=TestModel()).run("hi")).output


def unreachable(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    raise AssertionError("the agent's own model was called, not the test's override")


async def test_an_override_of_the_model_is_what_the_durable_run_uses(store: Store) -> None:
    agent = support_agent(model=FunctionModel(unreachable))
    AGENTS["o"] = DurableAgent(agent)
    with agent.override(model=FunctionModel(respond)):
        output = await durable.execute(ask, "o", "hi", id="r1", store=store)
        # a test environment's worker sees an override entered before the environment
        # auto_skip=False here and below: nothing waits for time, and on a loaded machine the
        # skip could jump the virtual clock past the lease of a run whose model request takes
        # real time (a takeover each time, until the run's max_recoveries ends it)
        async with WorkflowEnvironment(store=store, auto_skip=False) as env:
            assert await env.execute(ask, "o", "hi", id="r2") == output
    assert output == "o-1 shipped; o-1 refunded"
    assert calls == {"model": 6, "lookup": 2, "refund": 2}


async def test_outside_a_workflow_it_is_the_agents_own_run(store: Store) -> None:
    dagent = DurableAgent(support_agent())
    result = await dagent.run("hi")
    assert result.output == "o-1 shipped; o-1 refunded"
    assert calls == {"model": 3, "lookup": 1, "refund": 1}


@durable.activity(name="test.agent_in_an_activity")
async def agent_in_an_activity(key: str) -> str:
    return str((await AGENTS[key].run("hi")).output)


@durable.workflow(name="pai.via_activity")
async def via_activity(key: str) -> str:
    return await agent_in_an_activity(key)


async def test_inside_an_activity_it_is_the_agents_own_run(store: Store) -> None:
    AGENTS["a"] = DurableAgent(support_agent())
    assert await durable.execute(via_activity, "a", id="r1", store=store) == (
        "o-1 shipped; o-1 refunded"
    )
    assert await _names(store, "r1") == ["test.agent_in_an_activity"]


# -- replay: recorded requests and calls are not made again ------------------------------------


def respond_or_crash(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """`respond`, but the third request dies as a killed process would (nothing records it)."""
    if calls["model"] == 2 and not calls["crashed"]:
        calls["crashed"] += 1
        raise Crash
    return respond(messages, info)


class Crash(BaseException):
    """Like a killed process: nothing records it; the run is executed again from its history."""


async def test_a_crash_resumes_without_repeating_a_model_request_or_a_tool_call(
    store: Store,
) -> None:
    AGENTS["a"] = DurableAgent(support_agent(model=FunctionModel(respond_or_crash)))
    with pytest.raises(Crash):
        await durable.execute(ask, "a", "hi", id="r1", store=store)
    assert calls == {"model": 2, "lookup": 1, "refund": 1, "crashed": 1}
    assert await durable.execute(ask, "a", "hi", id="r1", store=store) == (
        "o-1 shipped; o-1 refunded"
    )
    assert calls == {"model": 3, "lookup": 1, "refund": 1, "crashed": 1}


async def test_a_tool_waits_for_a_human_while_the_run_is_parked(store: Store) -> None:
    """In the test environment every wait parks the run: the signal resumes it by replay."""
    AGENTS["w"] = DurableAgent(support_agent(refund_waits=True), workflow_tools=["refund"])
    async with WorkflowEnvironment(store=store, auto_skip=False) as env:
        handle = await env.start(ask, "w", "refund please", id="r1")
        await eventually("the refund tool's wait", lambda: _waiting(env.store, "r1"))
        assert calls == {"model": 2, "lookup": 1}
        await env.signal("r1", "approve", True)
        assert await handle.result() == "o-1 shipped; o-1 refunded"
    # replayed from the top after the signal: no request and no call made twice
    assert calls == {"model": 3, "lookup": 1, "issue_refund": 1}
    assert await _names(store, "r1") == [
        "support.model_request",
        "support.tool.lookup",
        "support.model_request",
        "approve",
        "test.issue_refund",
        "support.model_request",
    ]


async def _waiting(store: Store, run_id: str) -> bool:
    run = await store.get_run(run_id)
    return run is not None and run.status == RunStatus.WAITING


async def test_a_tool_waits_for_a_signal_in_memory(store: Store) -> None:
    AGENTS["w"] = DurableAgent(support_agent(refund_waits=True), workflow_tools=["refund"])
    outputs: list[str] = []

    async def converse() -> None:
        outputs.append(await durable.execute(ask, "w", "refund please", id="r1", store=store))

    async with anyio.create_task_group() as tg:
        tg.start_soon(converse)
        await eventually("the refund tool's wait", lambda: _waiting(store, "r1"))
        await durable.get_handle("r1", store).signal("approve", False)
    assert outputs == ["o-1 shipped; refund declined"]
    assert calls == {"model": 3, "lookup": 1}


async def test_a_tool_that_waits_without_being_named_runs_as_workflow_code(
    store: Store,
) -> None:
    """Not in workflow_tools: its activity records that it needs workflow code, and the call
    runs as workflow code, on the first run and on the replay after the signal."""
    AGENTS["w"] = DurableAgent(support_agent(refund_waits=True))
    async with WorkflowEnvironment(store=store, auto_skip=False) as env:
        handle = await env.start(ask, "w", "refund please", id="r1")
        await eventually("the refund tool's wait", lambda: _waiting(env.store, "r1"))
        await env.signal("r1", "approve", True)
        assert await handle.result() == "o-1 shipped; o-1 refunded"
    assert calls == {"model": 3, "lookup": 1, "issue_refund": 1}
    history = await durable.get_handle("r1", store).history()
    assert [step.name for step in history] == [
        "support.model_request",
        "support.tool.lookup",
        "support.model_request",
        "support.tool.refund",
        "approve",
        "test.issue_refund",
        "support.model_request",
    ]
    assert history[3].result == RanAsWorkflowCode("wait_signal")


async def test_a_plain_def_tool_that_waits_names_the_fix(store: Store) -> None:
    retry = durable.RetryPolicy(max_attempts=3, initial_interval=0, max_interval=0)
    agent = Agent(FunctionModel(respond), name="support")

    @agent.tool_plain
    async def lookup(order_id: str) -> str:
        return f"{order_id} shipped"

    @agent.tool_plain
    def refund(order_id: str) -> str:
        anyio.from_thread.run(durable.wait_signal, "approve")
        return "never"

    AGENTS["w"] = DurableAgent(agent, activity_retry=retry)
    with pytest.raises(durable.NotInWorkflowError) as caught:
        await durable.execute(ask, "w", "refund please", id="r1", store=store)
    message = str(caught.value)
    assert "called durable.wait_signal()" in message
    assert "'support.tool.refund'" in message and "'r1'" in message
    assert "workflow_tools=['refund']" in message
    assert caught.value.call == "wait_signal" and caught.value.in_activity
    history = await durable.get_handle("r1", store).history()
    assert history[-1].attempts == 1  # a retry cannot fix it


# -- tool control flow, retries, codecs ----------------------------------------------------------


def _retry_agent(failures: list[BaseException]) -> Agent[None, str]:
    """``lookup`` raises the given exceptions one by one, then answers."""

    def ask_twice(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls["model"] += 1
        retried = any(_retried(p) for m in messages for p in m.parts)
        returned = _returned(messages)
        if "lookup" in returned:
            return ModelResponse(parts=[TextPart(f"{returned['lookup']} (retried: {retried})")])
        return ModelResponse(parts=[ToolCallPart("lookup", {"order_id": "o-1"})])

    agent = Agent(FunctionModel(ask_twice), name="support")

    @agent.tool_plain
    async def lookup(order_id: str) -> str:
        calls["lookup"] += 1
        if failures:
            raise failures.pop(0)
        return f"{order_id} shipped"

    return agent


@pytest.mark.parametrize("workflow", [ask, ask_json], ids=["pickle", "json"])
async def test_model_retry_reaches_the_model_and_is_not_retried(
    store: Store, workflow: Any
) -> None:
    retry = durable.RetryPolicy(max_attempts=5, initial_interval=0, max_interval=0)
    agent = _retry_agent([ModelRetry("o-1 is not an order id, try o-2")])
    AGENTS["r"] = DurableAgent(agent, activity_retry=retry)
    output = await durable.execute(workflow, "r", "hi", id="r1", store=store)
    assert output == "o-1 shipped (retried: True)"
    history = await durable.get_handle("r1", store).history()
    assert [(s.name, s.attempts) for s in history] == [
        ("support.model_request", 1),
        ("support.tool.lookup", 1),
        ("support.model_request", 1),
        ("support.tool.lookup", 1),
        ("support.model_request", 1),
    ]
    assert history[1].result == ToolRaised("ModelRetry", "o-1 is not an order id, try o-2")
    counted = dict(calls)
    assert await durable.execute(workflow, "r", "hi", id="r1", store=store) == output
    assert calls == counted


@pytest.mark.parametrize("codec", [durable.PickleCodec(), durable.JSONCodec()])
def test_a_recorded_tool_raised_names_the_public_module(codec: durable.Codec) -> None:
    assert ToolRaised.__module__ == "durable.contrib.pydantic_ai"
    raised = ToolRaised("CallDeferred", metadata={"ticket": 7}, call_kind="external")
    assert codec.decode(codec.encode(raised)) == raised


async def test_activity_retry_retries_a_failing_tool(store: Store) -> None:
    retry = durable.RetryPolicy(max_attempts=3, initial_interval=0, max_interval=0)
    agent = _retry_agent([ConnectionError("down"), ConnectionError("still down")])
    AGENTS["r"] = DurableAgent(agent, activity_retry=retry)
    output = await durable.execute(ask, "r", "hi", id="r1", store=store)
    assert output == "o-1 shipped (retried: False)"
    history = await durable.get_handle("r1", store).history()
    assert [(s.name, s.attempts) for s in history] == [
        ("support.model_request", 1),
        ("support.tool.lookup", 3),
        ("support.model_request", 1),
    ]


async def test_without_a_retry_policy_a_failing_tool_fails_the_run(store: Store) -> None:
    AGENTS["r"] = DurableAgent(_retry_agent([ConnectionError("down")]))
    with pytest.raises(ConnectionError, match="down"):
        await durable.execute(ask, "r", "hi", id="r1", store=store)
    history = await durable.get_handle("r1", store).history()
    assert history[-1].status == durable.StepStatus.FAILED and history[-1].attempts == 1
    assert calls == {"model": 1, "lookup": 1}


async def test_a_failing_model_request_is_retried(store: Store) -> None:
    def flaky(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls["model"] += 1
        if calls["model"] == 1:
            raise ConnectionError("model unreachable")
        return ModelResponse(parts=[TextPart("hello")])

    retry = durable.RetryPolicy(max_attempts=2, initial_interval=0, max_interval=0)
    AGENTS["m"] = DurableAgent(Agent(FunctionModel(flaky), name="m"), activity_retry=retry)
    assert await durable.execute(ask, "m", "hi", id="r1", store=store) == "hello"
    history = await durable.get_handle("r1", store).history()
    assert [(s.name, s.attempts) for s in history] == [("m.model_request", 2)]


async def test_a_json_codec_workflow_records_responses_as_json(store: Store) -> None:
    AGENTS["a"] = DurableAgent(support_agent())
    output = await durable.execute(ask_json, "a", "hi", id="r1", store=store)
    assert output == "o-1 shipped; o-1 refunded"
    first = (await durable.get_handle("r1", store).history())[0]
    assert isinstance(first.result, list) and first.result[0]["kind"] == "response"
    counted = dict(calls)
    assert await durable.execute(ask_json, "a", "hi", id="r1", store=store) == output
    assert calls == counted


class NotAnOrder(ModelRetry):
    """A user's own ModelRetry: recorded as the ModelRetry it is."""


async def test_a_subclass_of_model_retry_is_recorded_as_model_retry(store: Store) -> None:
    AGENTS["r"] = DurableAgent(_retry_agent([NotAnOrder("try o-2")]))
    assert await durable.execute(ask, "r", "hi", id="r1", store=store) == (
        "o-1 shipped (retried: True)"
    )
    assert (await durable.get_handle("r1", store).history())[1].result == ToolRaised(
        "ModelRetry", "try o-2"
    )


@durable.workflow(name="pai.deferred")
async def deferred(key: str) -> list[str]:
    result = await AGENTS[key].run("hi", output_type=[str, DeferredToolRequests])
    assert isinstance(result.output, DeferredToolRequests)
    return [call.tool_name for call in result.output.calls]


async def test_a_deferred_tool_call_ends_the_run_with_the_request(store: Store) -> None:
    agent = _retry_agent([CallDeferred()])
    AGENTS["d"] = DurableAgent(agent, activity_retry=durable.RetryPolicy(max_attempts=3))
    assert await durable.execute(deferred, "d", id="r1", store=store) == ["lookup"]
    history = await durable.get_handle("r1", store).history()
    assert [(s.name, s.attempts) for s in history] == [
        ("support.model_request", 1),
        ("support.tool.lookup", 1),
    ]
    assert isinstance(history[1].result, ToolRaised) and history[1].result.kind == "CallDeferred"


@durable.workflow(name="pai.follow_up", codec=durable.JSONCodec())
async def follow_up(key: str, history: list[ModelMessage]) -> list[ModelMessage]:
    result = await AGENTS[key].run("and then?", message_history=history)
    return result.all_messages()


async def test_a_conversation_goes_on_with_its_history_as_an_argument(store: Store) -> None:
    """The message history survives the JSON codec as a workflow's argument and result."""

    def echo(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls["model"] += 1
        return ModelResponse(parts=[TextPart(f"answer {len(messages)}")])

    AGENTS["e"] = DurableAgent(Agent(FunctionModel(echo), name="echo"))
    first = await durable.execute(follow_up, "e", [], id="r1", store=store)
    second = await durable.execute(follow_up, "e", first, id="r2", store=store)
    texts = [p.content for m in second for p in m.parts if isinstance(p, TextPart)]
    assert texts == ["answer 1", "answer 3"]
    assert calls["model"] == 2


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_workflow_on_trio_is_told_that_pydantic_ai_needs_asyncio(store: Store) -> None:
    AGENTS["a"] = DurableAgent(support_agent())
    with pytest.raises(UserError, match="asyncio only"):
        await durable.execute(ask, "a", "hi", id="r1", store=store)
    assert calls == {}


# -- the model's text, streamed to the run's stream "output" --------------------------------------


async def stream_answer(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
    """A streaming model: look the order up, then answer in three deltas."""
    calls["model"] += 1
    returned = _returned(messages)
    if "lookup" not in returned:
        yield {0: DeltaToolCall(name="lookup", json_args='{"order_id": "o-1"}')}
        return
    for delta in (f"{returned['lookup']}, ", "refund ", "on its way"):
        yield delta


def streaming_agent() -> Agent[None, str]:
    agent = support_agent(model=FunctionModel(stream_function=stream_answer))
    return agent


async def _read(handle: durable.WorkflowHandle, key: str = "output") -> list[Any]:
    return [item async for item in handle.stream(key)]


async def test_a_streaming_models_text_reaches_the_output_stream_as_it_comes(
    store: Store,
) -> None:
    AGENTS["s"] = DurableAgent(streaming_agent())
    handle = await durable.start(ask, "s", "where is my refund", id="r1", store=store)
    live: list[Any] = []

    async def follow() -> None:
        live.extend(await _read(handle))

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        output = await durable.execute(ask, "s", "where is my refund", id="r1", store=store)
    assert output == "o-1 shipped, refund on its way"
    assert live == ["o-1 shipped, ", "refund ", "on its way"]
    assert await _read(handle) == live  # read again from the start, after the run
    assert await _names(store, "r1") == [
        "support.model_request",
        "support.tool.lookup",
        "support.model_request",
    ]


async def test_a_model_that_does_not_stream_writes_its_text_at_once(store: Store) -> None:
    AGENTS["a"] = DurableAgent(support_agent())
    output = await durable.execute(ask, "a", "hi", id="r1", store=store)
    assert await _read(durable.get_handle("r1", store)) == [output]


async def test_the_text_goes_to_the_stream_named_or_to_none(store: Store) -> None:
    AGENTS["named"] = DurableAgent(streaming_agent(), output_stream="tokens")
    AGENTS["none"] = DurableAgent(streaming_agent(), output_stream=None)
    await durable.execute(ask, "named", "hi", id="r1", store=store)
    await durable.execute(ask, "none", "hi", id="r2", store=store)
    assert await _read(durable.get_handle("r1", store), "tokens") == [
        "o-1 shipped, ",
        "refund ",
        "on its way",
    ]
    assert await _read(durable.get_handle("r1", store)) == []
    assert await _read(durable.get_handle("r2", store)) == []
    assert AGENTS["none"].output_stream is None


async def test_a_failed_attempts_text_is_withdrawn_and_the_retry_streams_it_once(
    store: Store,
) -> None:
    two_received = anyio.Event()

    async def cut_off(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        calls["model"] += 1
        yield "Your "
        yield "refund "
        if calls["model"] == 1:
            await two_received.wait()  # the live reader has both: withdrawing them shows
            raise ConnectionError("connection reset mid-stream")
        yield "is on its way"

    retry = durable.RetryPolicy(max_attempts=2, initial_interval=0, max_interval=0)
    agent = Agent(FunctionModel(stream_function=cut_off), name="s")
    AGENTS["s"] = DurableAgent(agent, activity_retry=retry)
    handle = await durable.start(ask, "s", "hi", id="r1", store=store)
    live: list[Any] = []

    async def follow() -> None:
        async for item in handle.stream("output"):
            live.append(item)
            if len(live) == 2:
                two_received.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        output = await durable.execute(ask, "s", "hi", id="r1", store=store)
    assert output == "Your refund is on its way"
    assert live[:2] == ["Your ", "refund "]
    assert isinstance(live[2], durable.StreamRetry) and live[2].count == 2
    assert live[3:] == ["Your ", "refund ", "is on its way"]
    assert await _read(handle) == ["Your ", "refund ", "is on its way"]
    assert [(s.name, s.attempts) for s in await handle.history()] == [("s.model_request", 2)]


def chatty(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """`respond`, saying what it does before each tool call."""
    response = respond(messages, info)
    if isinstance(response.parts[0], ToolCallPart):
        say = f"calling {response.parts[0].tool_name}. "
        return ModelResponse(parts=[TextPart(say), *response.parts])
    return response


async def test_a_replayed_request_writes_nothing_again(store: Store) -> None:
    """The run parks in the refund tool and is replayed from the top: the recorded requests
    (whose text is in the stream) are not written again."""
    agent = support_agent(refund_waits=True, model=FunctionModel(chatty))
    AGENTS["w"] = DurableAgent(agent, workflow_tools=["refund"])
    async with WorkflowEnvironment(store=store, auto_skip=False) as env:
        handle = await env.start(ask, "w", "refund please", id="r1")
        await eventually("the refund tool's wait", lambda: _waiting(env.store, "r1"))
        await env.signal("r1", "approve", True)
        output = await handle.result()
    assert await _read(durable.get_handle("r1", store)) == [
        "calling lookup. ",
        "calling refund. ",
        output,
    ]
    assert calls["model"] == 3


# -- what is refused -------------------------------------------------------------------------------


def test_an_agent_without_a_name_needs_one() -> None:
    agent = Agent(FunctionModel(respond))
    with pytest.raises(ValueError, match=r"stable name.*Agent\(\.\.\., name='support'\)"):
        DurableAgent(agent)
    assert DurableAgent(agent, name="given").name == "given"
    with pytest.raises(ValueError, match="not ' '"):
        DurableAgent(agent, name=" ")


def test_workflow_tools_must_be_async_function_tools_of_the_agent() -> None:
    agent = support_agent()

    @agent.tool_plain
    def blocking(order_id: str) -> str:
        return order_id

    with pytest.raises(ValueError, match=r"'refnud'.*\(blocking, lookup, refund\)"):
        DurableAgent(agent, workflow_tools=["refnud"])
    with pytest.raises(TypeError, match="'blocking' must be an 'async def'"):
        DurableAgent(agent, workflow_tools=["blocking"])
    with pytest.raises(TypeError, match=r"workflow_tools=\['refund'\]"):
        DurableAgent(agent, workflow_tools="refund")
    assert DurableAgent(agent, workflow_tools=["refund"]).workflow_tools == {"refund"}


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="needs a pydantic_ai Agent"):
        DurableAgent("support")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"must be a durable\.RetryPolicy"):
        DurableAgent(support_agent(), activity_retry=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must name a stream"):
        DurableAgent(support_agent(), output_stream="")


async def test_an_event_stream_handler_is_refused_in_workflow_code(store: Store) -> None:
    async def handler(ctx: Any, events: Any) -> None:
        async for _ in events:
            pass

    @durable.workflow(name="pai.with_handler")
    async def with_handler() -> str:
        result = await DurableAgent(support_agent()).run("hi", event_stream_handler=handler)
        return str(result.output)

    with pytest.raises(UserError, match="event_stream_handler"):
        await durable.execute(with_handler, id="r1", store=store)
    # a handler set on the agent (or by a capability) reaches the model's request_stream
    with pytest.raises(UserError, match="streamed model request in workflow code"):
        await durable.execute(streams_in_workflow, id="r2", store=store)
    assert calls == {}


@durable.workflow(name="pai.streams_in_workflow")
async def streams_in_workflow() -> None:
    steps = AgentSteps("support", None, frozenset(), "output")
    model = DurableModel(FunctionModel(respond), steps)
    async with model.request_stream([], None, ModelRequestParameters()):
        pass


# -- the optional dependency ---------------------------------------------------------------------


def test_import_durable_never_imports_pydantic_ai(tmp_path: Path) -> None:
    done = python(
        "-c",
        "import sys, durable, durable.contrib; assert 'pydantic_ai' not in sys.modules",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr


def test_without_pydantic_ai_the_import_names_the_extra(tmp_path: Path) -> None:
    done = python(
        "-c",
        "import sys; sys.modules['pydantic_ai'] = None; import durable.contrib.pydantic_ai",
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "ImportError" in done.stderr
    assert "pip install 'durable-sdk[pydantic-ai]'" in done.stderr


# -- a worker killed during an agent run -----------------------------------------------------------


def _side_counts(side: Path, run_id: str) -> Counter[str]:
    lines = [line.split(" ", 1) for line in side.read_text().splitlines()]
    return Counter(what for rid, what in lines if rid == run_id)


def test_sigkill_of_a_worker_during_an_agent_run_then_a_new_worker_resumes(
    processes: Processes, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'agent.db'}"
    side = tmp_path / "side.txt"
    side.touch()
    env = {**os.environ, "SIDE_FILE": str(side)}

    def worker(log: str) -> subprocess.Popen[bytes]:
        return processes.spawn_worker("agent_app", url, tmp_path / log, env=env)

    async def start() -> None:
        async with SQLStore(url) as store:
            await durable.start(
                agent_app.conversation, "my order came broken", id="killed", store=store
            )
            await eventually("the refund tool's wait", lambda: _waiting(store, "killed"))

    first = worker("first.log")
    anyio.run(start)
    assert _side_counts(side, "killed") == {"model": 2, "tool lookup": 1}
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL

    async def approve_and_wait(run_id: str) -> tuple[str, list[str]]:
        async with SQLStore(url) as store:
            handle = durable.get_handle(run_id, store)
            await handle.signal("approve", True)
            output = await handle.result(timeout=60)
            return output, [step.name for step in await handle.history()]

    worker("second.log")
    output, names = anyio.run(approve_and_wait, "killed")
    assert names == [
        "support.model_request",
        "support.tool.lookup",
        "support.model_request",
        "approve",
        "agent_app.issue_refund",
        "support.model_request",
    ]
    # one model call per recorded request, every tool once
    assert _side_counts(side, "killed") == {"model": 3, "tool lookup": 1, "tool issue_refund": 1}

    async def uninterrupted() -> None:
        async with SQLStore(url) as store:
            await durable.start(
                agent_app.conversation, "my order came broken", id="clean", store=store
            )

    anyio.run(uninterrupted)
    clean, _ = anyio.run(approve_and_wait, "clean")
    assert output == clean == "o-7 arrived broken; refund o-7-r issued"
    assert _side_counts(side, "clean") == _side_counts(side, "killed")

    async def texts(run_id: str) -> list[Any]:
        async with SQLStore(url) as store:
            return await _read(durable.get_handle(run_id, store))

    assert anyio.run(texts, "killed") == anyio.run(texts, "clean") == [output]
