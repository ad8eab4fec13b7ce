"""Type-checked by `mypy --strict` in CI, never run: decorated functions keep their types.

Each ``# type: ignore[...]`` marks a call that must be rejected; strict mode reports an unused
ignore, so if a decorator stopped carrying the signature, this file would fail the check.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

import durable
from durable import RetryPolicy, activity, workflow


@activity(retry=RetryPolicy(max_attempts=3), timeout=5.0)
async def charge(order_id: str, cents: int) -> str:
    return f"{order_id}:{cents}"


@activity
async def lookup(order_id: str) -> int:
    return len(order_id)


async def unreserve(order_id: str, *, result: int) -> None:
    print(order_id, result)


@activity(compensate=unreserve, compensate_retry=RetryPolicy(max_attempts=2))
async def reserve(order_id: str) -> int:
    return 1


@activity(final=True, idempotent=True)
async def notify(order_id: str) -> None:
    print(order_id)


@workflow
async def checkout(order_id: str, cents: int) -> dict[str, str]:
    receipt: str = await charge(order_id, cents)
    size: int = await lookup(order_id)
    when: datetime = durable.now()
    ident: UUID = durable.uuid4()
    luck: float = durable.random()
    await durable.sleep(timedelta(seconds=1))
    await durable.sleep(0.5)
    both: list[int] = await durable.gather(lookup("a"), lookup("b"))
    info: durable.Info = durable.info()
    async with durable.saga():
        seats: int = await reserve(order_id)
        await notify(order_id)
    print(seats)
    await charge(order_id, "12")  # type: ignore[arg-type]
    await lookup(order_id, 1)  # type: ignore[call-arg]
    wrong: int = await charge(order_id, cents)  # type: ignore[assignment]
    return {
        "receipt": receipt,
        "size": str(size),
        "when": when.isoformat(),
        "id": str(ident),
        "luck": str(luck),
        "both": str(both),
        "run": info.run_id,
        "wrong": str(wrong),
    }


@workflow
async def poller(cursor: int) -> int:
    generation: int = durable.info().generation
    if generation < 3:
        durable.continue_as_new(cursor + 1)  # NoReturn: the code below is the last generation
    return cursor


async def caller() -> None:
    result: dict[str, str] = await durable.execute(checkout, "o-1", 100, id="o-1")
    handle: durable.WorkflowHandle = await durable.start(checkout, "o-1", 100, id="o-1")
    status: durable.RunStatus = await handle.status()
    steps: list[durable.Step] = await handle.history()
    await handle.cancel()
    await handle.rollback()
    print(result, status, steps)
    await checkout("o-1", "100")  # type: ignore[arg-type]
    not_a_str: str = durable.run(checkout, "o-1", 100, id="o-1")  # type: ignore[assignment]
    print(not_a_str)
