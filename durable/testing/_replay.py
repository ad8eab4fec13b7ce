"""`replay`: check that today's workflow code replays a recorded history."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from durable._config import ExecutorConfig
from durable._decorators import definition_of
from durable._engine import ReplayEnd
from durable._executor import Executor
from durable._history import load_history
from durable._registry import WorkflowDefinition
from durable.backends import MemoryStore
from durable.store import LeaseOwner

from ._virtual_clock import VirtualClock

__all__ = ["replay"]


async def replay(
    workflow: Callable[..., Any],
    history: str | Mapping[str, Any],
    *,
    secret_keys: str | bytes | Iterable[str | bytes] | None = None,
) -> None:
    """Re-run ``workflow`` against a recorded history without executing any activity.

    Every step the history has is replayed from its recorded outcome; the replay stops at the
    first step the history does not have (a run exported while in flight) or when the workflow
    ends. Keep histories of production runs (``await handle.export_history()``) next to your
    tests and replay them before deploying a change to the workflow.

    Args:
        workflow: the ``@workflow`` function as the code has it today.
        history: the JSON text `WorkflowHandle.export_history` returned, or its parsed form.
        secret_keys: the keys that verify the history's payloads when the store that recorded
            it signs them (default: ``DURABLE_SECRET_KEY``; README "Security").

    Raises:
        NonDeterminismError: today's code makes other calls (or another order) than the
            history recorded; the message names the step, both calls and the code versions.
        PayloadDecodeError: a recorded payload cannot be decoded by today's code.
        ValueError: ``history`` is not an exported history, or is one of another workflow.
    """
    defn = definition_of(workflow)
    if not isinstance(defn, WorkflowDefinition):
        raise TypeError(f"replay() takes a @workflow function, not {workflow!r}")
    run, steps = load_history(history)
    if run.workflow != defn.name:
        raise ValueError(
            f"the history is of workflow {run.workflow!r}, not {defn.name!r}: replay it with "
            "the workflow that recorded it"
        )
    last = max((s.finished_at for s in steps), default=run.created_at)
    clock = VirtualClock(max(last, time.time()))
    async with MemoryStore(secret_keys=secret_keys) as store:
        await store.create_run(run)
        owner = LeaseOwner("replay", "replay", 0)
        lease = await store.acquire_lease(run.id, owner, now=clock.time(), duration=3600)
        assert lease is not None
        if steps:
            await store.commit(lease, steps, now=clock.time())
        started = await store.get_run(run.id)
        assert started is not None
        try:
            config = ExecutorConfig(clock=clock, lease_seconds=3600, park_after=0)
            executor = Executor(store, config, wait_parked=False)
            await executor.drive(defn, started, lease, replay_only=True)
        except ReplayEnd:
            return
        except BaseExceptionGroup as group:
            if (
                group.subgroup(ReplayEnd) is not None
                and group.subgroup(lambda e: not isinstance(e, ReplayEnd | BaseExceptionGroup))
                is None
            ):
                return
            raise
        except Exception as exc:
            if _diverged(exc):
                raise
            return  # the workflow's own failure, as recorded


def _diverged(exc: Exception) -> bool:
    from durable._errors import NonDeterminismError, PayloadDecodeError

    return isinstance(exc, NonDeterminismError | PayloadDecodeError)
