"""Trip booking as a saga: flight, hotel, car, then payment. The card is declined, so the
bookings are undone, newest first, each undo recorded as a step.

Run it with ``python examples/trip_booking.py``. It prints each booking and each undo, then
the run's history. Run it with ``--crash`` to see the process killed in the middle of the
undos, and run the same command again (without ``--crash``) to see the compensation finish
without repeating the undos already done.
"""

from __future__ import annotations

import os
import signal
import sys

import anyio

import durable
from durable import RetryPolicy, activity, workflow

CRASH = "--crash" in sys.argv


async def cancel_flight(trip_id: str, flight: str, *, result: str) -> None:
    print(f"    undo: cancel flight {flight} (booking {result})")


def cancel_hotel(trip_id: str, city: str, nights: int) -> None:
    print(f"    undo: cancel {nights} nights in {city}")
    if CRASH:
        print("    *** the process is killed in the middle of the undos ***", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


async def return_car(trip_id: str, city: str) -> None:
    print(f"    undo: return the car in {city}")


@activity(compensate=cancel_flight)
async def book_flight(trip_id: str, flight: str) -> str:
    print(f"    book flight {flight}")
    return f"PNR-{flight}"


@activity(compensate=cancel_hotel, compensate_retry=RetryPolicy(max_attempts=5))
def book_hotel(trip_id: str, city: str, nights: int) -> str:
    print(f"    book {nights} nights in {city}")
    return f"HOTEL-{city}"


@activity(compensate=return_car)
async def rent_car(trip_id: str, city: str) -> str:
    print(f"    rent a car in {city}")
    return f"CAR-{city}"


class PaymentDeclined(Exception):
    pass


@activity(final=True)  # money moved cannot be un-moved by an undo: a crash mid-charge is flagged
async def charge(trip_id: str, cents: int) -> str:
    print(f"    charge {cents / 100:.2f} EUR")
    raise PaymentDeclined(f"card declined for {cents / 100:.2f} EUR")


@workflow
async def book_trip(trip_id: str) -> str:
    await book_flight(trip_id, "LH1838")
    await book_hotel(trip_id, "Rome", nights=3)
    await rent_car(trip_id, "Rome")
    return await charge(trip_id, 129_900)


async def show_history(trip_id: str) -> None:
    for step in await durable.get_handle(trip_id).history():
        outcome = step.error if step.error is not None else step.result
        print(f"    {step.seq}. {step.kind:<12} {step.name:<32} {step.status:<9} {outcome!r}")


def main() -> None:
    trip_id = "trip-2026-rome"
    print(f"Booking {trip_id}:")
    try:
        durable.run(book_trip, trip_id, id=trip_id)
    except PaymentDeclined as exc:
        print(f"\nThe run failed ({exc}); every booking was undone. History:")
        anyio.run(show_history, trip_id)


if __name__ == "__main__":
    main()
