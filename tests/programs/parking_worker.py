"""A worker process for tests/test_parking_scale.py: ``python parking_worker.py <store url>``.

It runs `durable.Worker` (parking a run after 0.2 s, 200 runs at once) on a clock that is the
real one plus an offset: SIGUSR1 moves it a day forward. So the test, not the machine's speed,
decides when the parked runs become due: after it has seen every run parked and measured the
worker's memory. It writes "ready" to stderr once SIGTERM means "stop gracefully".
"""

from __future__ import annotations

import signal
import sys
import time

import anyio
import anyio.abc

import durable

JUMP = 86_400.0
"""How far SIGUSR1 moves this process's clock forward (seconds)."""


class JumpingClock:
    """`time.time()` plus an offset that only grows; sleeps are real."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


CLOCK = JumpingClock()


@durable.activity(name="parking.stamp")
async def stamp() -> float:
    """When the run went on after its sleep, on the worker's clock."""
    return CLOCK.time()


@durable.workflow(name="parking.sleep_until")
async def sleep_until(due: float) -> float:
    """Sleeps until ``due`` (epoch seconds on the worker's clock), then records when it woke."""
    await durable.sleep(max(due - durable.now().timestamp(), 0.0))
    return await stamp()


async def main(url: str) -> None:
    config = durable.ExecutorConfig(clock=CLOCK)
    worker = durable.Worker(url, [sleep_until], concurrency=200, park_after=0.2, config=config)
    async with anyio.create_task_group() as tg:

        async def on_signals(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with anyio.open_signal_receiver(
                signal.SIGTERM, signal.SIGINT, signal.SIGUSR1
            ) as signals:
                task_status.started()
                async for signum in signals:
                    if signum == signal.SIGUSR1:
                        CLOCK.offset += JUMP
                        continue
                    worker.stop()
                    return

        await tg.start(on_signals)
        print("ready", file=sys.stderr, flush=True)
        await worker.run()
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
