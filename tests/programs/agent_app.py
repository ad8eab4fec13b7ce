"""A support agent run by worker processes in tests/test_pydantic_ai.py, which SIGKILLs one.

The model is a deterministic `FunctionModel`: it looks the order up, asks for a refund, then
answers with both tool results. ``refund`` is a workflow tool: it waits for the signal
``approve`` (which the test sends when it chooses), then calls the ``issue_refund`` activity.
Each model call and each tool body appends ``<run id> <what>`` to the file named by $SIDE_FILE,
so the test counts what ran.
"""

from __future__ import annotations

import os

from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

import durable
from durable.contrib.pydantic_ai import DurableAgent


def _record(what: str) -> None:
    with open(os.environ["SIDE_FILE"], "a") as f:
        f.write(f"{durable.info().run_id} {what}\n")


def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Look the order up, then refund it, then answer with what the tools returned."""
    _record("model")
    returned = {
        part.tool_name: part.content
        for message in messages
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    }
    if "lookup" not in returned:
        return ModelResponse(parts=[ToolCallPart("lookup", {"order_id": "o-7"})])
    if "refund" not in returned:
        return ModelResponse(parts=[ToolCallPart("refund", {"order_id": "o-7"})])
    return ModelResponse(parts=[TextPart(f"{returned['lookup']}; {returned['refund']}")])


agent = Agent(FunctionModel(respond), name="support")


@agent.tool_plain
async def lookup(order_id: str) -> str:
    """The order's status."""
    _record("tool lookup")
    return f"{order_id} arrived broken"


@durable.activity(name="agent_app.issue_refund")
async def issue_refund(order_id: str) -> str:
    _record("tool issue_refund")
    return f"refund {order_id}-r issued"


@agent.tool_plain
async def refund(order_id: str) -> str:
    """Refund the order once a human approves."""
    if not await durable.wait_signal("approve", timeout=3600):
        return "refund declined"
    return await issue_refund(order_id)


support = DurableAgent(agent, workflow_tools=["refund"])


@durable.workflow(name="agent_app.conversation")
async def conversation(question: str) -> str:
    result = await support.run(question)
    return str(result.output)
