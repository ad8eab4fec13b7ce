"""Sending a signal: the one place that encodes a payload for its receiver and buffers it.

Used by `durable.signal` / `WorkflowHandle.signal` outside a run and by the engine for a
``signal_send`` step inside one.
"""

from __future__ import annotations

from typing import Any

from durable._codec import DEFAULT_CODEC, Codec, Payloads
from durable._errors import WorkflowFinished, WorkflowNotFound
from durable._names import check_name, check_text
from durable._registry import lookup_workflow
from durable._trust import trust_of
from durable.store import Store

__all__ = ["send_signal"]


async def send_signal(
    store: Store,
    run_id: str,
    name: str,
    payload: Any,
    *,
    now: float,
    key: str | None = None,
    codec: Codec | None = None,
) -> None:
    """Buffer signal ``name`` with ``payload`` for run ``run_id``, encoded with ``codec``, by
    default the receiving workflow's codec (pickle when the workflow is not registered in this
    process). With ``key``, a send already made under that key is a no-op.

    A sender that does not know the receiver's codec (the command line) passes `JSONCodec`:
    workflows on the JSON codec read it, and so do those on pickle (they read every codec).

    Raises:
        ValueError: the name is empty.
        WorkflowNotFound: no such run.
        WorkflowFinished: the run has finished; nothing was recorded.
        SerializationError: the payload cannot be encoded.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"durable.signal() needs a non-empty signal name, not {name!r}")
    check_name(name, "durable.signal(): the signal name")
    if key is not None and (not isinstance(key, str) or not key):
        raise ValueError(
            f"durable.signal(..., idempotency_key=...) must be a non-empty string, not {key!r}"
        )
    if key is not None:
        check_text(key, "durable.signal(..., idempotency_key=...): the key")
    existing = await store.get_run(run_id)
    if existing is None:
        raise WorkflowNotFound(run_id)
    if codec is None:
        defn = lookup_workflow(existing.workflow)
        codec = defn.codec if defn is not None else DEFAULT_CODEC
    payloads = Payloads(codec, trust_of(store))
    encoded = payloads.dumps(payload, what=f"payload of signal {name!r} to run {run_id!r}")
    run = await store.send_signal(run_id, name, encoded, now=now, idempotency_key=key)
    if run is None:
        raise WorkflowNotFound(run_id)
    if run.status.finished:
        raise WorkflowFinished(run_id, str(run.status), name)
