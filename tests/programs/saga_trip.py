"""A trip whose payment fails, so its bookings are undone; killed by tests/test_saga_crash.py.

Usage: python saga_trip.py <store url> <side-effect file> <run id> <hold>
With hold=1 the hotel's undo announces itself and then waits before doing anything, so the
test can SIGKILL the process between the car's undo (recorded) and the hotel's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import durable

SIDE = Path(sys.argv[2])
HOLD = sys.argv[4] == "1"


def _append(line: str) -> None:
    with SIDE.open("a") as f:
        f.write(line + "\n")


async def unbook_flight(flight: str) -> None:
    _append(f"undo flight {flight}")


def unbook_hotel(city: str) -> None:
    _append("hotel undo waiting")
    while HOLD:
        time.sleep(0.05)
    _append(f"undo hotel {city}")


async def unbook_car(city: str, *, result: str) -> None:
    _append(f"undo car {city} {result}")


@durable.activity(compensate=unbook_flight)
async def book_flight(flight: str) -> str:
    _append(f"flight {flight}")
    return flight


@durable.activity(compensate=unbook_hotel)
def book_hotel(city: str) -> str:
    _append(f"hotel {city}")
    return city


@durable.activity(compensate=unbook_car)
async def book_car(city: str) -> str:
    _append(f"car {city}")
    return f"car-{city}"


class PaymentDeclined(Exception):
    pass


@durable.activity
async def pay() -> None:
    raise PaymentDeclined("card declined")


@durable.workflow(name="saga.trip")
async def trip() -> None:
    await book_flight("LH1")
    await book_hotel("Rome")
    await book_car("Rome")
    await pay()


if __name__ == "__main__":
    try:
        durable.run(trip, id=sys.argv[3], store=sys.argv[1])
    except PaymentDeclined as exc:
        print(f"failed: {exc}", flush=True)
