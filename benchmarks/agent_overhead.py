"""What durability adds to a Pydantic AI agent run: µs per model request, with and without.

Usage: python benchmarks/agent_overhead.py [--requests 20] [--runs 20] [--repeat 5]

One agent, measured four ways in this process, each run from scratch (a fresh store):

* ``plain``: ``await agent.run(...)`` without durable: Pydantic AI's own cost;
* ``memory`` / ``sqlite``: ``await DurableAgent(agent).run(...)`` inside a workflow, on
  `MemoryStore` and on `SQLStore` (default durability: WAL, survives a process crash), every
  model request and tool call an activity;
* ``replay-sqlite``: the same run resumed after a crash in its last request, every earlier
  request and tool call replayed from its record.

The model is an offline `FunctionModel` that answers at once: request ``i`` calls one of three
tools, the last one answers with text, so a run makes ``--requests`` model requests and one
tool call fewer. Reported per model request (the run's time divided by its requests): each
sample is the median of ``--runs`` runs, the four scenarios interleaved run by run; the table
shows the median of ``--repeat`` samples (min..max). "overhead" is the extra time per durable
step, ``(durable - plain) / steps`` (a model request or a tool call is one step each), and
"ratio" is durable / plain.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import anyio
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

import durable
from durable.backends import MemoryStore, SQLStore
from durable.contrib.pydantic_ai import DurableAgent
from durable.store import Store

TOOLS = ("lookup_order", "check_stock", "quote_refund")
SCENARIOS = ("plain", "memory", "sqlite", "replay-sqlite")
PROMPT = "where is my order?"
REQUESTS = [20]  # set from --requests before anything runs
CRASH: list[bool] = []


class Crash(BaseException):
    """Stops a run without recording anything, like a killed process."""


def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Request i (from 1) calls tool i mod 3, the last request answers."""
    asked = sum(isinstance(m, ModelResponse) for m in messages) + 1
    if asked >= REQUESTS[0]:
        if CRASH:
            CRASH.clear()
            raise Crash
        return ModelResponse(parts=[TextPart(f"done after {asked} requests")])
    tool = TOOLS[asked % len(TOOLS)]
    return ModelResponse(parts=[ToolCallPart(tool, {"order_id": f"o-{asked}"})])


agent = Agent(FunctionModel(respond), name="bench_agent")


@agent.tool_plain
async def lookup_order(order_id: str) -> str:
    return f"{order_id}: shipped"


@agent.tool_plain
async def check_stock(order_id: str) -> str:
    return f"{order_id}: 3 in stock"


@agent.tool_plain
async def quote_refund(order_id: str) -> str:
    return f"{order_id}: 12.50 EUR"


durable_agent = DurableAgent(agent)


@durable.workflow(name="bench.agent")
async def conversation(prompt: str) -> str:
    return str((await durable_agent.run(prompt)).output)


async def _crashed(store: Store, run_id: str) -> None:
    """Record every step of a run but its last model request, then stop as a crash would."""
    CRASH.append(True)
    try:
        await durable.execute(conversation, PROMPT, id=run_id, store=store)
    except Crash:
        pass


async def one_sample(requests: int, runs: int, workdir: Path, r: int) -> dict[str, float]:
    """µs per model request of each scenario: the median of ``runs`` runs, the scenarios
    interleaved run by run so that the machine's drift falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in SCENARIOS}
    async with (
        MemoryStore() as memory,
        SQLStore(f"sqlite:///{workdir / f's-{r}.db'}") as sqlite,
        SQLStore(f"sqlite:///{workdir / f'r-{r}.db'}") as replay,
    ):
        stores: dict[str, Store] = {"memory": memory, "sqlite": sqlite, "replay-sqlite": replay}
        for i in range(runs):
            for name in SCENARIOS:
                if name == "replay-sqlite":
                    await _crashed(replay, f"replay-sqlite-{i}")
                start = time.perf_counter()
                if name == "plain":
                    await agent.run(PROMPT)
                else:
                    store = stores[name]
                    await durable.execute(conversation, PROMPT, id=f"{name}-{i}", store=store)
                times[name].append((time.perf_counter() - start) / requests * 1e6)
    return {name: statistics.median(values) for name, values in times.items()}


async def measure(requests: int, runs: int, repeat: int, workdir: Path) -> dict[str, list[float]]:
    """µs per model request of each scenario, ``repeat`` samples each."""
    REQUESTS[0] = requests
    await one_sample(requests, 2, workdir, -1)  # imports, schemas, first connections: not counted
    samples: dict[str, list[float]] = {name: [] for name in SCENARIOS}
    for r in range(repeat):
        for name, value in (await one_sample(requests, runs, workdir, r)).items():
            samples[name].append(value)
    return samples


def render(samples: dict[str, list[float]], requests: int, runs: int, repeat: int) -> str:
    """The table: µs per model request, overhead per durable step, ratio to plain."""
    steps = 2 * requests - 1  # requests and tool calls
    base = statistics.median(samples["plain"])
    lines = [
        f"agent run: {requests} model requests and {requests - 1} tool calls; median of {repeat} "
        f"samples (min..max), each the median of {runs} runs",
        f"{'scenario':<16}{'µs/request':>12}{'min..max':>20}{'overhead µs/step':>18}{'ratio':>8}",
    ]
    for name, values in samples.items():
        median = statistics.median(values)
        span = f"{min(values):.0f}..{max(values):.0f}"
        if name == "plain":
            overhead = ratio = ""
        else:
            overhead = f"{(median - base) * requests / steps:.0f}"
            ratio = f"{median / base:.2f}x"
        lines.append(f"{name:<16}{median:>12.0f}{span:>20}{overhead:>18}{ratio:>8}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20, help="model requests per run")
    parser.add_argument("--runs", type=int, default=20, help="agent runs per sample")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.requests < 1 or args.runs < 1 or args.repeat < 1:
        parser.error("--requests, --runs and --repeat must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        samples = anyio.run(measure, args.requests, args.runs, args.repeat, Path(tmp))
    print(render(samples, args.requests, args.runs, args.repeat))


if __name__ == "__main__":
    main()
