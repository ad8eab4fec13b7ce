"""The command line: ``durable worker MODULE [MODULE ...] --store URL``.

Also ``python -m durable worker ...``. It imports the modules (which registers the workflows
they define) and runs a `Worker` until SIGTERM or SIGINT, then shuts it down gracefully.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

import anyio
import anyio.abc

from durable._worker import Worker

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="durable", description="durable execution tools")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser(
        "worker", help="execute the runnable runs of the workflows in the given modules"
    )
    worker.add_argument("modules", nargs="+", help="modules to import (e.g. myapp.workflows)")
    worker.add_argument(
        "--store", default=None, help="store URL (default: $DURABLE_URL or sqlite:///durable.db)"
    )
    worker.add_argument("--concurrency", type=int, default=100, help="runs executed at once")
    worker.add_argument("--lease", type=float, default=30.0, help="lease duration in seconds")
    worker.add_argument("--grace", type=float, default=10.0, help="shutdown grace in seconds")
    worker.add_argument(
        "--park-after", type=float, default=5.0, help="park runs whose wait is longer (seconds)"
    )
    return parser


async def _serve(worker: Worker) -> None:
    async with anyio.create_task_group() as tg:

        async def on_signals(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                task_status.started()
                async for _ in signals:
                    logging.getLogger("durable.worker").info("durable worker: stopping")
                    worker.stop()
                    return

        await tg.start(on_signals)
        # Only now does SIGTERM mean "stop gracefully"; supervisors (and tests) may wait for it.
        logging.getLogger("durable.worker").info("durable worker: ready (pid %d)", os.getpid())
        await worker.run()
        tg.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sys.path.insert(0, os.getcwd())
    for module in args.modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            print(f"durable worker: cannot import {module!r}: {exc}", file=sys.stderr)
            return 2
    worker = Worker(
        args.store,
        concurrency=args.concurrency,
        lease=args.lease,
        grace=args.grace,
        park_after=args.park_after,
    )
    anyio.run(_serve, worker)
    return 0
