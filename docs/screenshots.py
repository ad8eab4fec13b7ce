"""Make docs/ui-runs.png and docs/ui-run.png: the web view over a few realistic runs.

Usage: python docs/screenshots.py [OUTPUT_DIR]   (default: the docs/ folder)

Needs the ui and test extras (Starlette, uvicorn, Playwright) and Debian's chromium at
/usr/bin/chromium (Playwright drives it; it downloads no browser). The runs are made in a
temporary SQLite file by a worker in this process: orders that complete (each with a shipping
child run), a trip whose payment is declined so its bookings are undone, an order waiting for
an approval signal and one sleeping until tomorrow. Then the view is served on a free local
port and both pages are photographed.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import threading
from pathlib import Path

import anyio
import uvicorn
from playwright.sync_api import sync_playwright

import durable
import durable.ui

CHROMIUM = "/usr/bin/chromium"


class PaymentDeclined(Exception):
    """The card was declined."""


@durable.activity(name="shop.reserve_stock")
async def reserve_stock(order_id: str, items: list[str]) -> str:
    await anyio.sleep(0.25)
    return f"res-{order_id}"


@durable.activity(name="shop.charge_card")
async def charge_card(order_id: str, amount: float) -> str:
    await anyio.sleep(0.4)
    return f"ch_{order_id}"


@durable.activity(name="shop.pack")
async def pack(order_id: str) -> int:
    await anyio.sleep(0.2)
    return 1


@durable.activity(name="shop.hand_to_carrier")
async def hand_to_carrier(order_id: str) -> str:
    await anyio.sleep(0.3)
    return f"TRACK-{order_id[-4:]}"


@durable.workflow(name="shop.ship_order")
async def ship_order(order_id: str) -> str:
    await pack(order_id)
    return await hand_to_carrier(order_id)


@durable.workflow(name="shop.place_order")
async def place_order(order_id: str, items: list[str], amount: float) -> dict[str, str]:
    reservation = await reserve_stock(order_id, items)
    charge = await charge_card(order_id, amount)
    tracking = await ship_order(order_id)
    return {"reservation": reservation, "charge": charge, "tracking": tracking}


@durable.activity(name="shop.check_fraud")
async def check_fraud(order_id: str, amount: float) -> float:
    await anyio.sleep(0.3)
    return 0.82


@durable.workflow(name="shop.review_order")
async def review_order(order_id: str, amount: float) -> str:
    score = await check_fraud(order_id, amount)
    if score > 0.5:
        approved = await durable.wait_signal("approve", timeout=86_400)
        if not approved:
            return "rejected"
    return "accepted"


@durable.workflow(name="shop.follow_up")
async def follow_up(order_id: str) -> str:
    await durable.sleep(86_400)
    return "reminded"


async def unbook_flight(flight: str) -> None:
    await anyio.sleep(0.15)


async def unbook_hotel(city: str, nights: int) -> None:
    await anyio.sleep(0.15)


@durable.activity(name="trip.book_flight", compensate=unbook_flight)
async def book_flight(flight: str) -> str:
    await anyio.sleep(0.35)
    return f"{flight}/14C"


@durable.activity(name="trip.book_hotel", compensate=unbook_hotel)
async def book_hotel(city: str, nights: int) -> str:
    await anyio.sleep(0.3)
    return f"HTL-{city[:3].upper()}-{nights}"


@durable.activity(
    name="trip.charge_traveller",
    retry=durable.RetryPolicy(max_attempts=3, initial_interval=0.2, backoff=1.5),
)
async def charge_traveller(traveller: str, amount: float) -> str:
    await anyio.sleep(0.2)
    raise PaymentDeclined(f"card of {traveller} declined: insufficient funds for {amount:.2f} EUR")


@durable.workflow(name="trip.book_trip")
async def book_trip(traveller: str, flight: str, city: str, nights: int) -> str:
    await book_flight(flight)
    await book_hotel(city, nights)
    await durable.sleep(0.6)  # hold the bookings briefly before charging
    return await charge_traveller(traveller, 1240.0)


async def make_runs(url: str) -> None:
    starts = [
        (place_order, ("order-1001", ["espresso machine"], 249.0), "order-1001"),
        (place_order, ("order-1002", ["grinder", "filters"], 89.5), "order-1002"),
        (book_trip, ("Ada Lovelace", "LH123", "Lisbon", 3), "trip-ada-lisbon"),
        (place_order, ("order-1003", ["kettle"], 39.9), "order-1003"),
        (review_order, ("order-1004", 1890.0), "review-order-1004"),
        (follow_up, ("order-1001",), "follow-up-order-1001"),
    ]
    worker = durable.Worker(store=url, park_after=0.5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        for workflow, args, run_id in starts:
            await durable.start(workflow, *args, id=run_id, store=url)
            await anyio.sleep(0.3)
        wanted = {"completed", "failed", "waiting", "sleeping"}
        with anyio.fail_after(120):
            while True:
                page = await durable.list_runs(store=url)
                statuses = {str(run.status) for run in page.runs if run.parent_id is None}
                if len(page.runs) >= 9 and statuses <= wanted:
                    break
                await anyio.sleep(0.1)
        worker.stop()


def serve_in_thread(url: str) -> tuple[uvicorn.Server, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(durable.ui.create_app(url), log_level="warning")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    return server, f"http://127.0.0.1:{port}"


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/shop.db"
        anyio.run(make_runs, url)
        server, base = serve_in_thread(url)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1280, "height": 720})
                page.goto(base + "/")
                page.wait_for_selector("#runs tbody tr")
                page.screenshot(path=str(out / "ui-runs.png"), full_page=True)
                page.click("text=trip-ada-lisbon")
                page.wait_for_selector("#timeline")
                # The traceback (machine paths) folded to its exception line, as a reader
                # who has seen it would leave it.
                page.evaluate(
                    "document.querySelectorAll('details.traceback').forEach(d => d.open = false)"
                )
                page.screenshot(path=str(out / "ui-run.png"), full_page=True)
                browser.close()
        finally:
            server.should_exit = True
    print(f"wrote {out / 'ui-runs.png'} and {out / 'ui-run.png'}")


if __name__ == "__main__":
    main()
