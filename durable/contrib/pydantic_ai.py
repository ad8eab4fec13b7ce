"""Pydantic AI agents whose model requests and tool calls are durable steps.

::

    agent = Agent("openai:gpt-4o", name="support", tools=[lookup_order, refund])
    support = DurableAgent(agent, workflow_tools=["refund"])

    @durable.workflow
    async def conversation(question: str) -> str:
        return (await support.run(question)).output

Inside a workflow, ``await support.run(...)`` runs the wrapped agent so that

- every model request is an activity named ``"support.model_request"``: the response is
  recorded (as the plain data Pydantic AI stores conversations in, so any codec records it)
  and a replay gets it back without calling the model;
- every tool call is an activity named ``"support.tool.<tool name>"``: its return value, or the
  ``ModelRetry`` / ``CallDeferred`` / ``ApprovalRequired`` it raised, is recorded (those steer
  the agent, so they are never retried as failures; the history shows them as `ToolRaised`);
- the text the model produces is written to the run's stream ``"output"``
  (`durable.stream_write` from the model-request activity) as it arrives: deltas when the
  model streams, the whole text at once when it does not (a `FunctionModel` without a
  ``stream_function``). A reader in any process follows it with ``async for text in
  handle.stream("output")``; the writes of a failed attempt are withdrawn (a live reader gets a
  `durable.StreamRetry` marker), so the stream of a finished run holds the text of the recorded
  responses once each. A replayed request writes nothing again. ``output_stream=`` names
  another stream, or ``None`` for none;
- ``activity_retry=`` (a `durable.RetryPolicy`) retries both kinds of activity.

A crash or a redeploy therefore resumes the conversation where it stopped: the replayed run
goes through the agent again, but every recorded request and tool call returns its record.
Everything else the agent does (building the prompt, validating arguments and output, counting
usage) is workflow code that runs again on each replay; given the recorded responses it is
deterministic.

**Where tools run.** An activity may not wait for a signal or sleep: those are steps of the
workflow, and an activity's body is not workflow code. A tool that asks a human for approval
needs to. Tools run as activities by default; the tools named in ``workflow_tools=`` run as
workflow code instead (as in Pydantic AI's Temporal integration). Such a tool (an ``async def``
function tool) may call `durable.wait_signal`, `durable.sleep` and activities, which are its
steps; like all workflow code it runs again on each replay, so its side effects belong in the
activities it calls. A tool that is not named but calls a workflow-only function while running
as its activity (``durable.wait_signal``...) is caught there: the activity records
`RanAsWorkflowCode` and the call runs again as workflow code, on this run and on every replay
(so what the tool did before that call happens twice on the first run: name such a tool to
skip the activity). A plain ``def`` tool cannot become workflow code and fails with a
`durable.NotInWorkflowError` naming it.

Tool calls that one model response asks for run one after another in a durable run (Pydantic AI
runs them concurrently otherwise): steps are numbered as they start, and concurrent tools would
start theirs in whatever order they reached them.

Not supported in a durable run (they work outside one, where `DurableAgent.run` is the agent's
own ``run``): streamed model requests in workflow code (``event_stream_handler``,
``run_stream``, ``iter``), and I/O the agent does outside model requests and tool calls
(listing an MCP server's tools, history processors that call out), which is not recorded. The
agent's name must be stable: it names the activities a history is matched against. Pydantic AI
runs on asyncio only, so a workflow that runs an agent does too. See ``docs/agents.md``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from typing import Any, Generic

try:
    from pydantic_ai import models
    from pydantic_ai.agent import AbstractAgent, AgentRunResult
    from pydantic_ai.exceptions import UserError
    from pydantic_ai.output import OutputDataT
    from pydantic_ai.tools import AgentDepsT
    from pydantic_ai.toolsets import AbstractToolset, FunctionToolset
except ImportError as exc:  # pragma: no cover - exercised by a test in a clean interpreter
    raise ImportError(
        "durable.contrib.pydantic_ai needs Pydantic AI, which is not installed: "
        "pip install 'durable-sdk[pydantic-ai]'"
    ) from exc

import durable
from durable import _context
from durable.contrib._pydantic_ai_steps import (
    AgentSteps,
    DurableModel,
    DurableToolset,
    RanAsWorkflowCode,
    ToolRaised,
)

__all__ = ["DurableAgent", "RanAsWorkflowCode", "ToolRaised"]

# Histories name the class where it is public (pickle and the JSON codec record a class by its
# module), so moving the private module never breaks a recorded run.
ToolRaised.__module__ = __name__
RanAsWorkflowCode.__module__ = __name__


class DurableAgent(Generic[AgentDepsT, OutputDataT]):
    """A Pydantic AI agent whose runs inside a workflow are durable (see the module docstring).

    Args:
        agent: the agent to run (an ``Agent``, or any Pydantic AI agent with toolsets).
        name: the prefix of the activity names; defaults to the agent's ``name``. It must stay
            the same across deploys: a run's history is matched against these names.
        activity_retry: how failed model requests and tool calls are retried (``None``: one
            attempt each, like an ``@activity`` without ``retry=``). Pydantic AI's ``UserError``
            and tool control flow (``ModelRetry``...) are never retried.
        workflow_tools: names of the agent's ``async def`` function tools that run as workflow
            code instead of as activities: a tool that waits for a human with
            `durable.wait_signal` must be one of them.
        output_stream: the run's stream that the model's text is written to as it arrives
            (``None``: no stream; a model that streams is still asked to). The stream is not
            closed when a run of the agent ends: the workflow may run it again, and readers
            stop when the run finishes (or when the workflow calls `durable.stream_close`).

    Raises:
        TypeError: ``agent`` is not a Pydantic AI agent, ``activity_retry`` is not a
            `durable.RetryPolicy`, or a workflow tool is a plain ``def``.
        ValueError: neither ``name`` nor the agent's name is given, a workflow tool is not one
            of the agent's function tools, or ``output_stream`` is an empty string.
    """

    def __init__(
        self,
        agent: AbstractAgent[AgentDepsT, OutputDataT],
        *,
        name: str | None = None,
        activity_retry: durable.RetryPolicy | None = None,
        workflow_tools: Iterable[str] = (),
        output_stream: str | None = "output",
    ) -> None:
        if not isinstance(agent, AbstractAgent):
            raise TypeError(f"DurableAgent(agent) needs a pydantic_ai Agent, not {agent!r}")
        name = agent.name if name is None else name
        if not isinstance(name, str) or not name.strip():
            raise ValueError(
                "DurableAgent needs a stable name for its activities: give the agent one "
                "(Agent(..., name='support')) or pass DurableAgent(agent, name='support')"
                + ("" if name is None else f", not {name!r}")
            )
        if activity_retry is not None and not isinstance(activity_retry, durable.RetryPolicy):
            raise TypeError(
                f"DurableAgent(activity_retry=...) must be a durable.RetryPolicy, "
                f"not {activity_retry!r}"
            )
        if isinstance(workflow_tools, str):
            raise TypeError(
                f"DurableAgent(workflow_tools=...) takes tool names, not one string: "
                f"workflow_tools=[{workflow_tools!r}]"
            )
        if output_stream is not None and (not isinstance(output_stream, str) or not output_stream):
            raise ValueError(
                "DurableAgent(output_stream=...) must name a stream (or be None), "
                f"not {output_stream!r}"
            )
        in_workflow = frozenset(workflow_tools)
        _check_workflow_tools(name, agent.toolsets, in_workflow)
        self._agent = agent
        self._steps = AgentSteps(name, activity_retry, in_workflow, output_stream)

    @property
    def agent(self) -> AbstractAgent[AgentDepsT, OutputDataT]:
        """The wrapped agent."""
        return self._agent

    @property
    def name(self) -> str:
        """The prefix of the activity names: ``f"{name}.model_request"``,
        ``f"{name}.tool.{tool}"``."""
        return self._steps.name

    @property
    def output_stream(self) -> str | None:
        """The run's stream the model's text is written to (``None``: none)."""
        return self._steps.output

    @property
    def workflow_tools(self) -> frozenset[str]:
        """The tools that run as workflow code rather than as activities."""
        return self._steps.workflow_tools

    async def run(self, user_prompt: Any = None, **kwargs: Any) -> AgentRunResult[Any]:
        """Run the agent; durably when called from workflow code.

        Takes what the agent's own ``run`` takes (``deps=``, ``message_history=``,
        ``model=``, ``toolsets=``, ``usage_limits=``...) and returns its result. In workflow
        code, its model requests and tool calls are activities (see the module docstring);
        anywhere else (plain code, an activity) this is the agent's own ``run``.

        Raises:
            pydantic_ai.exceptions.UserError: in workflow code, with an
                ``event_stream_handler`` (streamed requests are not supported there), or on
                an event loop other than asyncio.
        """
        result: AgentRunResult[Any]
        if not _context.in_workflow():
            result = await self._agent.run(user_prompt, **kwargs)
            return result
        if kwargs.get("event_stream_handler") is not None:
            raise UserError(
                f"DurableAgent {self.name!r}: run(event_stream_handler=...) is not supported in "
                "workflow code (it streams model requests there)"
            )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise UserError(
                f"DurableAgent {self.name!r} runs in workflow code on another event loop than "
                "asyncio (trio?), but Pydantic AI runs on asyncio only: run this workflow "
                "on asyncio"
            ) from None
        model = _chosen_model(self._agent, kwargs.pop("model", None))
        toolsets: Sequence[AbstractToolset[AgentDepsT]] = [
            *self._agent.toolsets,
            *(kwargs.pop("toolsets", None) or ()),
        ]
        overrides: dict[str, Any] = {
            "toolsets": [DurableToolset(toolset, self._steps) for toolset in toolsets],
            "tools": [],
        }
        if model is not None:  # else the agent's own run says that a model is missing
            overrides["model"] = DurableModel(models.infer_model(model), self._steps)
        with self._agent.override(**overrides):
            result = await self._agent.run(user_prompt, **kwargs)
        return result


def _chosen_model(agent: AbstractAgent[Any, Any], given: Any) -> Any:
    """The model the agent's own run would use: the one of an enclosing ``agent.override(
    model=...)`` (which wins, as in Pydantic AI, and is how tests swap in an offline model),
    else ``run(model=...)``, else the agent's."""
    override = getattr(agent, "_override_model", None)  # an Agent's; absent on other agents
    chosen = override.get() if isinstance(override, ContextVar) else None
    if chosen is not None:
        return chosen.value
    return agent.model if given is None else given


def _check_workflow_tools(
    name: str, toolsets: Sequence[AbstractToolset[Any]], workflow_tools: frozenset[str]
) -> None:
    """Each workflow tool is an ``async def`` function tool of the agent."""
    functions: dict[str, Any] = {}

    def collect(found: AbstractToolset[Any]) -> None:
        if isinstance(found, FunctionToolset):
            functions.update({n: tool.function for n, tool in found.tools.items()})

    for toolset in toolsets:
        toolset.apply(collect)
    for tool in sorted(workflow_tools):
        if tool not in functions:
            raise ValueError(
                f"DurableAgent {name!r}: workflow_tools names {tool!r}, which is not one of the "
                f"agent's function tools ({', '.join(sorted(functions)) or 'none'}); register "
                "the tools before wrapping the agent"
            )
        if not inspect.iscoroutinefunction(functions[tool]):
            raise TypeError(
                f"DurableAgent {name!r}: the workflow tool {tool!r} must be an 'async def' "
                "function (it runs as workflow code, which a plain def would run in a thread)"
            )
