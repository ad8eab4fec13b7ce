"""The command line (also ``python -m durable ...``).

* ``durable worker MODULE [MODULE ...] --store URL`` imports the modules (which registers the
  workflows they define) and runs a `Worker` until SIGTERM or SIGINT, then shuts it down
  gracefully. ``--wait-for-db SECONDS`` waits that long for a Postgres server that does not
  accept connections yet (a worker started before its database).
* ``durable db init [URL]`` creates (or upgrades) the store's tables ahead of time; a no-op when
  they are current.
* ``durable db prune [URL] --older-than 30d`` deletes old finished runs.
* ``durable runs <verb>`` lists, shows and acts on runs, and ``durable ui`` serves the web
  view: see `durable._cli_runs`.
* ``durable schedules <verb>`` lists, pauses, resumes, deletes and triggers cron schedules: see
  `durable._cli_schedules`.

Passwords in store URLs never reach the output: every message goes through
`durable.backends._redact.redact`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import os
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta

import anyio
import anyio.abc

from durable import _retention as retention
from durable._cli_runs import add_commands, runs_command, ui_command
from durable._cli_schedules import add_schedule_commands, schedules_command
from durable._errors import StoreError
from durable._logging import FORMATS, LEVELS, configure_logging
from durable._registry import registered_workflows
from durable._retention import parse_age
from durable._stores import DEFAULT_URL, resolve_store
from durable._worker import Worker
from durable.backends import SQLStore
from durable.backends._redact import redact, secrets_in
from durable.backends._schema import SCHEMA_VERSION

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="durable", description="durable execution tools")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error, not one line"
    )
    parser.add_argument("--version", action="version", version=f"durable {_version()}")
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
    worker.add_argument(
        "--queue",
        action="append",
        dest="queues",
        metavar="NAME",
        help="execute only the runs of this durable.Queue (repeat for several; default: "
        "every run, queued or not)",
    )
    worker.add_argument(
        "--wait-for-db",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for a Postgres server that does not accept connections yet "
        "(default: fail at once)",
    )
    worker.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=LEVELS,
        help="the least severe log records written to stderr (default: %(default)s)",
    )
    worker.add_argument(
        "--log-format",
        default="text",
        choices=FORMATS,
        help="text lines, or one JSON object per line (default: %(default)s)",
    )
    db = commands.add_parser("db", help="manage a store's database")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    init = db_commands.add_parser(
        "init", help="create or upgrade durable's tables (a no-op when they are current)"
    )
    prune = db_commands.add_parser("prune", help="delete finished runs older than an age")
    for sub in (init, prune):
        sub.add_argument(
            "url",
            nargs="?",
            default=None,
            help="store URL (default: $DURABLE_URL or sqlite:///durable.db)",
        )
    prune.add_argument(
        "--older-than", required=True, type=_age, help="age such as 30d, 12h, 45m, 90s or 2w"
    )
    prune.add_argument("--batch-size", type=int, default=1000, help="runs per transaction")
    add_commands(commands)
    add_schedule_commands(commands)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("durable-sdk")
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown: durable-sdk is not installed)"


def _age(text: str) -> timedelta:
    try:
        return parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _db(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("DURABLE_URL") or DEFAULT_URL
    if url.startswith("memory:"):
        print(f"durable db: {redact(url)!r} is an in-memory store; there is nothing to manage")
        return 2
    try:
        store = SQLStore(url)
    except StoreError as exc:
        if args.debug:
            raise
        print(f"durable db: {redact(str(exc), secrets_in(url))}", file=sys.stderr)
        return 2

    async def prune_and_close() -> int:
        async with store:
            return await retention.prune(
                older_than=args.older_than, store=store, batch_size=args.batch_size
            )

    if args.db_command == "init":
        anyio.run(store.close)
        print(
            f"durable db: {redact(store.url)} is at schema version {SCHEMA_VERSION} "
            f"({store.schema_change})"
        )
        return 0
    deleted = anyio.run(prune_and_close)
    print(f"durable db: deleted {deleted} finished runs older than {args.older_than}")
    return 0


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
    if args.command == "db":
        return _db(args)
    if args.command == "runs":
        return runs_command(args)
    if args.command == "ui":
        return ui_command(args)
    if args.command == "schedules":
        return schedules_command(args)
    configure_logging(args.log_level, args.log_format)
    sys.path.insert(0, os.getcwd())
    for module in args.modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            print(f"durable worker: cannot import {module!r}: {exc}", file=sys.stderr)
            return 2
    # Everything that can be wrong before the worker starts is said in one line (exit 2):
    # its arguments, a module without workflows, a store that cannot be opened.
    try:
        if not registered_workflows():
            modules = ", ".join(args.modules)
            raise ValueError(
                f"the modules {modules} define no @durable.workflow: import the ones that do "
                "(e.g. myapp.workflows)"
            )
        store = args.store or os.environ.get("DURABLE_URL") or DEFAULT_URL
        if args.wait_for_db < 0:
            raise ValueError(f"--wait-for-db must be >= 0 seconds, not {args.wait_for_db:g}")
        worker = Worker(
            SQLStore(store, wait_for_server=args.wait_for_db)
            if args.wait_for_db and not store.startswith("memory:")
            else resolve_store(store),
            concurrency=args.concurrency,
            lease=args.lease,
            grace=args.grace,
            park_after=args.park_after,
            queues=args.queues,
        )
    except (ValueError, StoreError, ImportError) as exc:
        if args.debug:
            raise
        secrets = secrets_in(args.store or os.environ.get("DURABLE_URL") or "")
        print(f"durable worker: {redact(str(exc), secrets)}", file=sys.stderr)
        return 2
    anyio.run(_serve, worker)
    return 0
