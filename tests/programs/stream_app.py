"""Workflows that publish events and streams, run by worker processes for tests/test_streams.py
(``python -m durable worker stream_app --store URL``), and a reader of a run's stream:

    python stream_app.py read STORE_URL RUN_ID KEY

prints each item of the stream as it comes (one line each), then the run's events as JSON.
"""

from __future__ import annotations

import json
import sys

import anyio

import durable


@durable.activity(name="streams_app.tokens")
async def tokens(words: list[str]) -> int:
    for word in words:
        await durable.stream_write("out", word)
    return len(words)


@durable.workflow(name="streams_app.chat")
async def chat(prompt: str) -> str:
    """Streams the prompt and its words, then waits for one more value to stream."""
    await durable.set_event("status", "thinking")
    await durable.stream_write("out", f"> {prompt}")
    n = await tokens(prompt.split())
    await durable.set_event("status", "waiting")
    more = await durable.wait_signal("more")
    await durable.stream_write("out", more)
    await durable.set_event("words", n)
    await durable.set_event("status", "done")
    await durable.stream_close("out")
    return f"{n} words"


@durable.activity(name="streams_app.slow_tokens")
async def slow_tokens() -> str:
    """Writes two values, then (in its first attempt only) waits until the test kills the
    worker. Any later attempt writes three values and returns."""
    attempt = durable.info().attempt
    await durable.stream_write("out", f"attempt{attempt}-a")
    await durable.stream_write("out", f"attempt{attempt}-b")
    if attempt == 1:
        await anyio.sleep_forever()
    await durable.stream_write("out", f"attempt{attempt}-c")
    return f"attempt {attempt}"


@durable.workflow(name="streams_app.killed")
async def killed() -> str:
    await durable.stream_write("out", "begin")
    value = await slow_tokens()
    await durable.stream_write("out", "end")
    return value


async def read(url: str, run_id: str, key: str) -> None:
    handle = durable.WorkflowHandle(run_id, store=url)
    async for item in handle.stream(key):
        print(item, flush=True)
    print(json.dumps(await handle.events()), flush=True)
    await durable.close_stores()


if __name__ == "__main__" and sys.argv[1:2] == ["read"]:
    anyio.run(read, *sys.argv[2:5])
