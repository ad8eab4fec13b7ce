"""A support agent that survives crashes, waits for a human, and streams its answer.

The agent (Pydantic AI, wrapped in `DurableAgent`) has two tools: ``lookup_order`` (an
activity) and ``refund``, which asks a human and waits for the ``approval`` signal (at most
``AGENT_APPROVAL_TIMEOUT`` seconds, default an hour) before it pays anything. Every model
request and tool call is recorded, so killing the worker at any moment and starting it again
resumes the conversation without asking the model again or looking the order up twice.

    pip install 'durable-sdk[pydantic-ai]'

    # terminal 1: the worker that executes conversations (kill it whenever you like)
    python examples/agent.py worker

    # terminal 2: ask; the answer streams in as the model writes it
    python examples/agent.py ask chat-1 "Order o-7 arrived broken, I want my money back"

    # terminal 3: another reader of the same conversation, and the human who approves
    python examples/agent.py watch chat-1
    python examples/agent.py approve chat-1      # or: deny chat-1

Every command uses the same store: ``DURABLE_URL`` or ``sqlite:///durable.db`` in the current
directory (on Postgres the worker, the asker and the watchers can be on different machines).

The model here is scripted (a Pydantic AI ``FunctionModel`` that streams), so the example runs
offline; put ``Agent("openai:gpt-4o", ...)`` (or any Pydantic AI model) in its place for a real
one. ``AGENT_EXAMPLE_LOG``, when set, names a file each model request and tool body appends a
line to (the example's test counts them across a killed worker).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import AsyncIterator

import anyio

import durable

try:
    from pydantic_ai import Agent
    from pydantic_ai.messages import (
        ModelMessage,
        ModelResponse,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
    )
    from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel

    from durable.contrib.pydantic_ai import DurableAgent
except ImportError:
    sys.exit("this example needs Pydantic AI: pip install 'durable-sdk[pydantic-ai]'")

STORE = os.environ.get("DURABLE_URL", "sqlite:///durable.db")


def _log(what: str) -> None:
    path = os.environ.get("AGENT_EXAMPLE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{what}\n")


# -- the scripted model: look the order up, ask for the refund, then answer ------------------


def _returned(messages: list[ModelMessage]) -> dict[str, str]:
    return {
        part.tool_name: str(part.content)
        for message in messages
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    }


def _next_move(messages: list[ModelMessage]) -> tuple[str, str]:
    """``("tool", name)`` or ``("text", answer)``: what the support model does next."""
    returned = _returned(messages)
    if "lookup_order" not in returned:
        return "tool", "lookup_order"
    if "refund" not in returned:
        return "tool", "refund"
    return "text", (
        f"I looked into your order: {returned['lookup_order']}. {returned['refund']}. "
        "Thank you for your patience, and sorry for the trouble!"
    )


def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """The model, not streamed (what `DurableAgent` uses when nothing reads a stream)."""
    _log("model")
    kind, what = _next_move(messages)
    if kind == "tool":
        return ModelResponse(parts=[ToolCallPart(what, {"order_id": "o-7"})])
    return ModelResponse(parts=[TextPart(what)])


async def stream_answer(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | dict[int, DeltaToolCall]]:
    """The model, streamed: its answer arrives a few words at a time."""
    _log("model")
    kind, what = _next_move(messages)
    if kind == "tool":
        yield {0: DeltaToolCall(name=what, json_args=json.dumps({"order_id": "o-7"}))}
        return
    words = what.split(" ")
    for i in range(0, len(words), 3):
        await anyio.sleep(0.05)  # a real model takes its time too
        yield " ".join(words[i : i + 3]) + " "


agent = Agent(
    FunctionModel(answer, stream_function=stream_answer),
    name="support",
    instructions="You help customers with their orders.",
)


# -- the tools ----------------------------------------------------------------------------


@agent.tool_plain
async def lookup_order(order_id: str) -> str:
    """The order's status (an activity: recorded, never looked up twice)."""
    _log("tool lookup_order")
    return f"{order_id} was delivered on Monday, and the customer reports it broken"


@durable.activity(name="examples.agent.pay_refund")
async def pay_refund(order_id: str) -> str:
    _log("tool pay_refund")
    return f"refund {order_id}-R1 of 49.90 EUR issued"


@agent.tool_plain
async def refund(order_id: str) -> str:
    """Refund the order, once a human approves (workflow code: it waits for a signal)."""
    waiting = f"waiting for a human to approve the refund of {order_id}"
    await durable.set_event("status", waiting)
    await durable.stream_write("output", f"[{waiting}]\n")
    # The deadline is recorded when the wait starts: a resumed run does not restart it.
    timeout = float(os.environ.get("AGENT_APPROVAL_TIMEOUT", "3600"))
    try:
        approved = await durable.wait_signal("approval", timeout=timeout)
    except durable.SignalTimeout:
        return "No one approved the refund in time; a colleague will call you back"
    decided = "refund approved" if approved else "refund denied"
    await durable.set_event("status", decided)
    await durable.stream_write("output", f"[{decided}]\n")
    if not approved:
        return "The refund was not approved; a colleague will call you back"
    return await pay_refund(order_id)


support = DurableAgent(agent, workflow_tools=["refund"])


@durable.workflow(name="examples.support_conversation")
async def support_conversation(question: str) -> str:
    await durable.set_event("status", "thinking")
    result = await support.run(question)
    await durable.set_event("status", "answered")
    await durable.stream_close("output")
    return str(result.output)


# -- the commands -------------------------------------------------------------------------


async def show(run_id: str) -> None:
    """Print the conversation's current status, then everything it streams until it ends."""
    handle = durable.get_handle(run_id, store=STORE)
    try:
        print(f"  [status: {await handle.get_event('status', timeout=10)}]", flush=True)
    except durable.EventTimeout:
        pass
    async for item in handle.stream("output"):
        if isinstance(item, durable.StreamRetry):
            print(f"\n  [a model request failed; {item.count} pieces withdrawn]", flush=True)
        else:
            print(item, end="", flush=True)
    print(f"\n{run_id}: {await handle.result()}")


async def ask(run_id: str, question: str) -> None:
    await durable.start(support_conversation, question, id=run_id, store=STORE)
    await show(run_id)


async def decide(run_id: str, approved: bool) -> None:
    handle = durable.get_handle(run_id, store=STORE)
    await handle.signal("approval", approved)
    print(f"{run_id}: {'approved' if approved else 'denied'}")


async def work() -> None:
    print(f"worker: executing conversations in {STORE} (Ctrl-C to stop)", flush=True)
    await durable.Worker(store=STORE, workflows=[support_conversation]).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="execute conversations (kill it and start it again at will)")
    ask_cmd = sub.add_parser("ask", help="start a conversation and stream its answer")
    ask_cmd.add_argument("run_id")
    ask_cmd.add_argument("question")
    for name in ("watch", "approve", "deny"):
        sub.add_parser(name).add_argument("run_id")
    args = parser.parse_args()
    if args.command == "worker":
        anyio.run(work)
    elif args.command == "ask":
        anyio.run(ask, args.run_id, args.question)
    elif args.command == "watch":
        anyio.run(show, args.run_id)
    else:
        anyio.run(decide, args.run_id, args.command == "approve")


if __name__ == "__main__":
    main()
