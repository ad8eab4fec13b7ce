"""The steps of a `DurableAgent` run: model requests and tool calls as activities.

`AgentSteps` owns the activities of one `DurableAgent` (named after it) and what crosses them;
`respond` is the model request itself, which writes the model's text to the run's stream.
A model response crosses as the plain data Pydantic AI's ``ModelMessagesTypeAdapter`` makes of
it (dicts, lists, strings, aware datetimes), the form Pydantic AI keeps stable for stored
conversations: every codec records it (the JSON codec too), and a history written under one
Pydantic AI version replays under the next. A tool's control-flow exception (``ModelRetry``,
``CallDeferred``...) crosses as a `ToolRaised` value, so durable neither retries it as a
failure nor has to encode the exception. `DurableModel` and `DurableToolset` are the wrappers
the agent runs with inside a workflow; they hand each request and call to `AgentSteps` (outside
workflow code they are the plain model and toolset).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic_ai import exceptions
from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelResponse,
    ModelResponseStreamEvent,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
)
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.function import FunctionModel
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import AgentDepsT, RunContext
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset, ToolsetTool, WrapperToolset

import durable
from durable import _context

__all__ = ["AgentSteps", "DurableModel", "DurableToolset", "ToolRaised"]

# What a tool raises to steer the agent rather than to fail: the model sees it (a retry prompt, a
# failure message) or the run ends with deferred calls. Newer Pydantic AI versions add ToolFailed.
_CONTROL: tuple[type[Exception], ...] = tuple(
    cls
    for cls in (
        exceptions.ModelRetry,
        getattr(exceptions, "ToolFailed", None),
        exceptions.CallDeferred,
        exceptions.ApprovalRequired,
    )
    if isinstance(cls, type)
)


@dataclass(frozen=True)
class ToolRaised:
    """A tool's control-flow exception, recorded as the tool call's result.

    Attributes:
        kind: the exception's class name in `pydantic_ai.exceptions`.
        message: the message of a ``ModelRetry`` / ``ToolFailed``.
        metadata: the metadata of a ``CallDeferred`` / ``ApprovalRequired``.
        call_kind: the ``kind`` of a ``CallDeferred`` (Pydantic AI versions that have it).
    """

    kind: str
    message: str | None = None
    metadata: dict[str, Any] | None = None
    call_kind: str | None = None

    @classmethod
    def of(cls, exc: Exception) -> ToolRaised:
        """The record of ``exc`` (one of the control-flow exceptions)."""
        return cls(
            kind=next(c.__name__ for c in _CONTROL if isinstance(exc, c)),  # a subclass: its base
            message=getattr(exc, "message", None),
            metadata=getattr(exc, "metadata", None),
            call_kind=getattr(exc, "kind", None),
        )

    def exception(self) -> Exception:
        """The exception again, as the tool raised it."""
        cls: Any = getattr(exceptions, self.kind)
        if self.message is not None:
            return cls(self.message)  # type: ignore[no-any-return]
        args = () if self.metadata is None else (self.metadata,)
        if self.call_kind is not None:
            return cls(*args, kind=self.call_kind)  # type: ignore[no-any-return]
        return cls(*args)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class RanAsWorkflowCode:
    """Recorded as a tool call's result when the tool, run as its activity, called a function
    only workflow code may call (`durable.wait_signal`, `durable.sleep`...): the call then runs
    as workflow code, on the first run and on every replay alike.

    Attributes:
        call: the `durable` function the tool called (``"wait_signal"``), when known.
    """

    call: str | None = None


def _with_non_retryable(
    policy: durable.RetryPolicy | None, *extra: type[BaseException]
) -> durable.RetryPolicy | None:
    """``policy`` that also gives up at once on ``extra`` (mistakes a retry cannot fix)."""
    if policy is None:
        return None
    return dataclasses.replace(policy, non_retryable=(*policy.non_retryable, *extra))


def _streams(model: Model) -> bool:
    """Whether ``model`` answers streamed requests (a `FunctionModel` only with a stream
    function; any other model whose class implements ``request_stream``)."""
    while isinstance(model, WrapperModel):
        model = model.wrapped
    if isinstance(model, FunctionModel):
        return model.stream_function is not None
    return type(model).request_stream is not Model.request_stream


def _text(event: ModelResponseStreamEvent) -> str:
    """The text an event of a streamed response adds ("" for anything but text)."""
    if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
        return event.part.content
    if isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
        return event.delta.content_delta
    return ""


async def respond(
    model: Model,
    messages: list[ModelMessage],
    settings: ModelSettings | None,
    parameters: ModelRequestParameters,
    output: str | None,
) -> ModelResponse:
    """Activity code: ``model``'s response, its text written to the run's stream ``output``
    (unless ``None``) as it arrives when the model streams, all at once when it does not."""
    if not _streams(model):
        response = await model.request(messages, settings, parameters)
        for part in response.parts:
            if output is not None and isinstance(part, TextPart) and part.content:
                await durable.stream_write(output, part.content)
        return response
    async with model.request_stream(messages, settings, parameters) as streamed:
        async for event in streamed:
            text = _text(event)
            if output is not None and text:
                await durable.stream_write(output, text)
    return streamed.get()


class AgentSteps:
    """The activities of one `DurableAgent`, and the workflow side of calling them.

    Args:
        name: the agent's name, the prefix of every activity name.
        retry: the retry policy of the model-request and tool activities (``None``: one
            attempt each).
        workflow_tools: the tools that run as workflow code, not as activities.
        output: the run's stream that model requests write the model's text to (``None``:
            none).
    """

    def __init__(
        self,
        name: str,
        retry: durable.RetryPolicy | None,
        workflow_tools: frozenset[str],
        output: str | None,
    ) -> None:
        self.name = name
        self.workflow_tools = workflow_tools
        self.output = output
        self._tool_retry = _with_non_retryable(
            retry, exceptions.UserError, durable.NotInWorkflowError
        )
        self._tools: dict[str, Callable[..., Coroutine[Any, Any, Any]]] = {}

        async def model_request(
            model: Model,
            messages: list[ModelMessage],
            settings: ModelSettings | None,
            parameters: ModelRequestParameters,
        ) -> list[Any]:
            response = await respond(model, messages, settings, parameters, output)
            return ModelMessagesTypeAdapter.dump_python([response])  # type: ignore[no-any-return]

        self._model_request = durable.activity(
            name=f"{name}.model_request",
            retry=_with_non_retryable(retry, exceptions.UserError, durable.StreamClosed),
        )(model_request)

    async def request(
        self,
        model: Model,
        messages: list[ModelMessage],
        settings: ModelSettings | None,
        parameters: ModelRequestParameters,
    ) -> ModelResponse:
        """Workflow code: the model's response to ``messages``, requested once per run step."""
        recorded = await self._model_request(model, messages, settings, parameters)
        (response,) = ModelMessagesTypeAdapter.validate_python(recorded)
        if not isinstance(response, ModelResponse):
            raise TypeError(
                f"the step {self.name}.model_request recorded a {type(response).__name__}, "
                "not a ModelResponse; the history was not written by this integration"
            )
        return response

    async def call_tool(
        self,
        toolset: AbstractToolset[Any],
        name: str,
        args: dict[str, Any],
        ctx: RunContext[Any],
        tool: ToolsetTool[Any],
    ) -> Any:
        """Workflow code: call the tool ``name`` as its activity, or directly if it is one
        of the workflow tools."""
        if name in self.workflow_tools:
            return await toolset.call_tool(name, args, ctx, tool)
        outcome = await self._tool_activity(name)(toolset, args, ctx, tool)
        if isinstance(outcome, ToolRaised):
            raise outcome.exception()
        if isinstance(outcome, RanAsWorkflowCode):
            # The tool waits (or sleeps...): it runs as workflow code after all, as the
            # recorded outcome says, so a replay makes the same steps.
            return await toolset.call_tool(name, args, ctx, tool)
        return outcome

    @staticmethod
    def _runs_in_workflow(toolset: AbstractToolset[Any], name: str) -> bool:
        """Whether the tool ``name`` can run as workflow code: an ``async def`` function tool
        (a plain ``def`` one runs in a thread, which is no workflow code)."""
        found: list[Any] = []

        def collect(candidate: AbstractToolset[Any]) -> None:
            if isinstance(candidate, FunctionToolset) and name in candidate.tools:
                found.append(candidate.tools[name].function)

        toolset.apply(collect)
        return bool(found) and inspect.iscoroutinefunction(found[0])

    def _tool_activity(self, name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        found = self._tools.get(name)
        if found is not None:
            return found
        step = f"{self.name}.tool.{name}"

        async def call(
            toolset: AbstractToolset[Any],
            args: dict[str, Any],
            ctx: RunContext[Any],
            tool: ToolsetTool[Any],
        ) -> Any:
            try:
                return await toolset.call_tool(name, args, ctx, tool)
            except _CONTROL as exc:
                return ToolRaised.of(exc)
            except durable.NotInWorkflowError as exc:
                if not exc.in_activity:  # not about where the tool runs
                    raise
                if self._runs_in_workflow(toolset, name):
                    return RanAsWorkflowCode(exc.call)
                called = f"durable.{exc.call}()" if exc.call else "a workflow-only call"
                raise durable.NotInWorkflowError(
                    f"the tool {name!r} of the DurableAgent {self.name!r} called {called}, "
                    f"but it runs as the activity {step!r} (run {durable.info().run_id!r}) and "
                    "an activity's body is not workflow code; a tool that waits for a signal "
                    "or sleeps must run as workflow code: "
                    f"DurableAgent(..., workflow_tools=[{name!r}])",
                    call=exc.call,
                    in_activity=True,
                ) from exc

        activity = durable.activity(name=step, retry=self._tool_retry)(call)
        self._tools[name] = activity
        return activity


class DurableModel(WrapperModel):
    """The agent's model, whose requests are `AgentSteps` activities in workflow code."""

    def __init__(self, wrapped: Model, steps: AgentSteps) -> None:
        super().__init__(wrapped)
        self._steps = steps

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        if not _context.in_workflow():
            return await self.wrapped.request(messages, model_settings, model_request_parameters)
        return await self._steps.request(
            self.wrapped, messages, model_settings, model_request_parameters
        )

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncIterator[StreamedResponse]:
        if _context.in_workflow():
            raise exceptions.UserError(
                f"DurableAgent {self._steps.name!r}: a streamed model request in workflow code "
                "(an event_stream_handler, run_stream or iter) is not supported; use "
                "DurableAgent.run, whose model requests write the model's text to the run's "
                "stream instead"
            )
        async with self.wrapped.request_stream(
            messages, model_settings, model_request_parameters, run_context
        ) as streamed:
            yield streamed


@dataclass
class DurableToolset(WrapperToolset[AgentDepsT]):
    """One of the agent's toolsets, whose tool calls are `AgentSteps` activities.

    Its tools are marked ``sequential``: in a durable run the calls of one model response run
    one after another, so that their steps are numbered in the order the model made them
    (concurrent calls would number them in the order they happened to start).
    """

    steps: AgentSteps

    async def get_tools(self, ctx: RunContext[AgentDepsT]) -> dict[str, ToolsetTool[AgentDepsT]]:
        tools = await super().get_tools(ctx)
        return {
            name: dataclasses.replace(
                tool, tool_def=dataclasses.replace(tool.tool_def, sequential=True)
            )
            for name, tool in tools.items()
        }

    async def call_tool(
        self,
        name: str,
        tool_args: dict[str, Any],
        ctx: RunContext[AgentDepsT],
        tool: ToolsetTool[AgentDepsT],
    ) -> Any:
        if not _context.in_workflow():
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)
        return await self.steps.call_tool(self.wrapped, name, tool_args, ctx, tool)
