"""Quickstart: an order workflow that survives a hard crash.

Run it with ``make demo`` (or ``python examples/quickstart.py``). It shows three things:

1. A child process starts the order workflow and is killed with SIGKILL while it charges the card,
   as if the machine lost power.
2. The same ``durable.run(...)`` line runs again: stock is not reserved twice, the charge that was
   in flight runs again with the same idempotency key, and the order ships.
3. Running it once more executes nothing: the recorded result comes back at once.

The runs are recorded in ``durable.db`` (SQLite) in the current directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import durable
from durable import RetryPolicy, activity, workflow


@activity
async def reserve_stock(order_id: str, sku: str) -> str:
    print(f"    reserve_stock({sku}) runs")
    return f"reservation-{sku}"


@activity(retry=RetryPolicy(max_attempts=3, initial_interval=0.2))
async def charge_card(order_id: str, cents: int) -> str:
    key = durable.info().idempotency_key  # send this to the payment provider to de-duplicate
    print(f"    charge_card({cents}) runs with idempotency key {key}")
    if os.environ.get("QUICKSTART_CRASH") == "1":
        print("    *** the process is killed in the middle of the charge ***", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return f"payment-{cents}"


@activity
def ship(order_id: str, reservation: str) -> str:  # a plain def runs in a worker thread
    print(f"    ship({reservation}) runs")
    return f"tracking-{order_id}"


@workflow
async def place_order(order_id: str, sku: str, cents: int) -> dict[str, str]:
    reservation = await reserve_stock(order_id, sku)
    payment = await charge_card(order_id, cents)
    tracking = await ship(order_id, reservation)
    return {"payment": payment, "tracking": tracking}


def main() -> None:
    if len(sys.argv) > 1:  # the child process of step 1
        durable.run(place_order, sys.argv[1], "sku-42", 1999, id=sys.argv[1])
        return
    order_id = f"order-{int(time.time())}"

    print(f"1. A process runs place_order under id={order_id!r} and dies mid-way:")
    child = subprocess.run(
        [sys.executable, __file__, order_id], env={**os.environ, "QUICKSTART_CRASH": "1"}
    )
    print(f"   (the process exited with {child.returncode}: killed by SIGKILL)\n")

    print("2. The same line runs again. reserve_stock is recorded, so it does not run again;")
    print("   charge_card had no recorded result, so it runs again with the same key:")
    result = durable.run(place_order, order_id, "sku-42", 1999, id=order_id)
    print(f"   result: {result}\n")

    print("3. Once more: the run is finished, so nothing executes:")
    print(f"   result: {durable.run(place_order, order_id, 'sku-42', 1999, id=order_id)}")


if __name__ == "__main__":
    main()
