"""Workflows that freeze or kill their own process, for tests/test_stale_and_crash_loops.py.

They run in worker processes (``python -m durable worker crash_app ...``) and, one
``durable.run`` per process, through `main`:

    python -c "import crash_app; crash_app.main()" WORKFLOW RUN_ID STORE_URL

`main` prints ``returned <result>`` (exit 0) or ``raised <error type>: <message>`` (exit 3).
Every activity, and the workflow code at its marked points, appends
``<run id> <tag> <idempotency key> <attempt> <pid>`` to the file named by $SIDE_FILE.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import anyio

import durable


def _record(tag: str) -> None:
    info = durable.info()
    line = f"{info.run_id} {tag} {info.idempotency_key} {info.attempt} {os.getpid()}\n"
    with open(os.environ["SIDE_FILE"], "a") as f:
        f.write(line)


def _tags(run_id: str, tag: str) -> int:
    """How often ``tag`` was recorded for ``run_id`` so far (in any process)."""
    with open(os.environ["SIDE_FILE"]) as f:
        return sum(1 for line in f if line.split()[:2] == [run_id, tag])


def _kill_myself() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@durable.activity(name="crashloop.step")
async def step(i: int) -> int:
    _record(f"s{i}")
    return i


# -- item 4: a stale executor (SIGSTOPped past its lease, then SIGCONTinued) ------------------


async def _freeze_point() -> None:
    """Workflow code between step 1 and step 2, in the worker started with $FREEZE_AT=N only:
    the N-th run that gets here stops the whole process (SIGSTOP, at a point where no store
    transaction is open); every run then waits until the test creates $GATE_FILE."""
    if "FREEZE_AT" not in os.environ:
        return  # the worker that takes the runs over goes straight on
    _record("gate")
    if _at_gate() >= int(os.environ["FREEZE_AT"]):
        os.kill(os.getpid(), signal.SIGSTOP)
    while True:
        if _gate_open():
            return
        await anyio.sleep(0.02)


def _at_gate() -> int:
    with open(os.environ["SIDE_FILE"]) as f:
        return sum(1 for line in f if line.split()[1] == "gate")


def _gate_open() -> bool:
    return os.path.exists(os.environ["GATE_FILE"])


@durable.workflow(name="crashloop.stale")
async def stale() -> int:
    total = await step(1)
    await _freeze_point()
    total += await step(2)
    total += await step(3)
    return total


# -- item 11: a worker restarted after a SIGKILL takes over its dead predecessor's runs -------


@durable.activity(name="crashloop.slow_once")
async def slow_once() -> str:
    """Long the first time (the test kills the worker meanwhile), quick when run again."""
    first = _tags(durable.info().run_id, "slow-start") == 0
    _record("slow-start")
    if first:
        await anyio.sleep(600)
    _record("slow-done")
    return "slow"


@durable.workflow(name="crashloop.in_flight")
async def in_flight() -> str:
    await step(1)
    value = await slow_once()
    await step(3)
    return value


# -- item 8: crash loops end ------------------------------------------------------------------


@durable.activity(
    name="crashloop.kills_self",
    retry=durable.RetryPolicy(max_attempts=3, initial_interval=0),
)
async def kills_self() -> str:
    _record("kill")  # the line carries durable.info().attempt
    _kill_myself()
    return "unreachable"


@durable.workflow(name="crashloop.retry_kills")
async def retry_kills() -> str:
    return await kills_self()


# `max_recoveries=` is passed through a dict so that this module still imports (and the other
# workflows still run) on a version of durable without it; there the crash loop never ends.
_RECOVERIES: dict[str, Any] = {"max_recoveries": 2}
try:
    durable.workflow(name="crashloop.probe", **_RECOVERIES)
except TypeError:
    _RECOVERIES = {}


@durable.workflow(name="crashloop.body_kills", **_RECOVERIES)
async def body_kills() -> str:
    await step(1)
    _record("body")  # workflow code, not an activity
    _kill_myself()
    return "unreachable"


@durable.activity(name="crashloop.crashes_once")  # no retry=: at-least-once
async def crashes_once() -> str:
    crashed_before = _tags(durable.info().run_id, "crash-once") > 0
    _record("crash-once")
    if not crashed_before:
        _kill_myself()
    return "survived"


@durable.workflow(name="crashloop.crash_once")
async def crash_once() -> str:
    await step(1)
    value = await crashes_once()
    await step(3)
    return value


WORKFLOWS: dict[str, Callable[[], Coroutine[Any, Any, object]]] = {
    "stale": stale,
    "in_flight": in_flight,
    "retry_kills": retry_kills,
    "body_kills": body_kills,
    "crash_once": crash_once,
}


def main(argv: Sequence[str] | None = None) -> None:
    """Run one workflow with `durable.run` in this process (see the module docstring)."""
    name, run_id, url = argv if argv is not None else sys.argv[1:4]
    try:
        result = durable.run(WORKFLOWS[name], id=run_id, store=url)
    except Exception as exc:
        print(f"raised {type(exc).__name__}: {exc}", flush=True)
        sys.exit(3)
    print(f"returned {result!r}", flush=True)
