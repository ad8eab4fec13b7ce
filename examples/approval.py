"""An expense that waits for a human decision, for days if it must, at no cost while it waits.

In one terminal, file an expense; the run waits for an ``approve`` or ``reject`` signal (or
gives up after ``--timeout`` seconds):

    python examples/approval.py request expense-42 250 --timeout 3600

In a second terminal, decide:

    python examples/approval.py approve expense-42
    python examples/approval.py reject expense-42

While it waits, the run is parked: no task or memory is held for it, and if the first terminal
is closed, ``python -m durable worker approval --store sqlite:///durable.db`` (run from
``examples/``) or the same ``request`` command finishes it after the decision arrives.
Both terminals must use the same store (the default ``sqlite:///durable.db`` in the current
directory, or ``DURABLE_URL``).
"""

from __future__ import annotations

import argparse
import sys

import anyio

import durable
from durable import activity, workflow


@activity
async def notify_approver(expense_id: str, cents: int) -> None:
    print(f"  [{expense_id}] asked the approver about {cents / 100:.2f} EUR")


@activity
async def pay_out(expense_id: str, cents: int) -> str:
    print(f"  [{expense_id}] paid out {cents / 100:.2f} EUR")
    return f"payment-{expense_id}"


@activity
async def tell_requester(expense_id: str, outcome: str) -> None:
    print(f"  [{expense_id}] told the requester: {outcome}")


@workflow(name="examples.expense_approval")
async def expense_approval(expense_id: str, cents: int, wait_seconds: float) -> str:
    await notify_approver(expense_id, cents)
    try:
        decision = await durable.wait_signal("decision", timeout=wait_seconds)
    except durable.SignalTimeout:
        await tell_requester(expense_id, "no decision in time; please ask again")
        return "expired"
    if decision == "approve":
        await pay_out(expense_id, cents)
        await tell_requester(expense_id, "approved and paid")
        return "paid"
    await tell_requester(expense_id, "rejected")
    return "rejected"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="expense approval with durable signals")
    commands = parser.add_subparsers(dest="command", required=True)
    request = commands.add_parser("request", help="file an expense and wait for the decision")
    request.add_argument("expense_id")
    request.add_argument("euros", type=float)
    request.add_argument("--timeout", type=float, default=86400.0, help="seconds to wait")
    for name in ("approve", "reject"):
        commands.add_parser(name, help=f"{name} an expense").add_argument("expense_id")
    args = parser.parse_args(argv)

    if args.command == "request":
        cents = round(args.euros * 100)
        print(f"expense {args.expense_id}: waiting for a decision (Ctrl-C is safe)")
        outcome = durable.run(
            expense_approval, args.expense_id, cents, args.timeout, id=args.expense_id
        )
        print(f"expense {args.expense_id}: {outcome}")
        return 0
    try:
        anyio.run(durable.signal, args.expense_id, "decision", args.command)
    except durable.WorkflowNotFound:
        print(f"no expense {args.expense_id!r}; file it first with 'request'", file=sys.stderr)
        return 1
    except durable.WorkflowFinished as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"expense {args.expense_id}: {args.command} sent")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
