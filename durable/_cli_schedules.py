"""``durable schedules <verb>``: list a store's cron schedules and act on them.

Verbs: ``list``, ``pause NAME``, ``resume NAME``, ``delete NAME`` and ``trigger NAME``, each
with ``--store URL`` (default ``$DURABLE_URL`` or ``sqlite:///durable.db``) and ``--json``.
Exit status as for ``durable runs``: 0 on success; 1 when the schedule is missing or the store
cannot be used; 2 for bad arguments. The verbs call the public functions
(`durable.pause_schedule`...), so the command line refuses what the API refuses.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import anyio

from durable._cli_runs import _check_exists, _guarded, _table, _url, _when
from durable._schedules import (
    ScheduleInfo,
    delete_schedule,
    list_schedules,
    pause_schedule,
    resume_schedule,
    trigger_schedule,
)
from durable._stores import close_stores, open_store
from durable.store import Store

__all__ = ["add_schedule_commands", "schedules_command"]

_STORE_HELP = "store URL (default: $DURABLE_URL, else sqlite:///durable.db)"


def add_schedule_commands(commands: Any) -> None:
    """Add ``schedules`` (with its verbs) to the ``durable`` subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", default=None, metavar="URL", help=_STORE_HELP)
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    schedules = commands.add_parser(
        "schedules",
        help="list a store's cron schedules, pause, resume, delete or trigger one",
        description="List a store's cron schedules and act on them. Exit status: 0 on "
        "success, 1 when the schedule is missing or the store cannot be used, 2 for bad "
        "arguments.",
    )
    verbs = schedules.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, help, with_name in (
        ("list", "every schedule, by name, with its next and last run", False),
        ("pause", "stop a schedule's ticks until it is resumed", True),
        ("resume", "let a paused schedule fire again (its catch_up decides on missed ticks)", True),
        ("delete", "delete a schedule (the runs it started are kept)", True),
        ("trigger", "start one run of a schedule now, outside its ticks", True),
    ):
        parser = verbs.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + ".", parents=[common]
        )
        if with_name:
            parser.add_argument("name", help="the schedule's name")


def schedules_command(args: argparse.Namespace) -> int:
    """Run ``durable schedules <verb>``; returns the exit status."""
    url = _url(args.store)
    verb = _VERBS[args.verb]

    async def main() -> Any:
        try:
            return await verb(await open_store(url), args)
        finally:
            await close_stores()

    def body() -> int:
        _check_exists(url)
        output = anyio.run(main)
        print(output if isinstance(output, str) else json.dumps(output, indent=2))
        return 0

    return _guarded(f"durable schedules {args.verb}", url, args, body)


def _json(info: ScheduleInfo) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "name": info.name,
        "workflow": info.workflow,
        "cron": info.cron,
        "timezone": info.timezone,
        "catch_up": info.catch_up,
        "queue": info.queue,
        "paused": info.paused,
        "next_run": when(info.next_run),
        "last_run": when(info.last_run),
        "created_at": when(info.created_at),
        "updated_at": when(info.updated_at),
    }


async def _list(store: Store, args: argparse.Namespace) -> Any:
    found = await list_schedules(store=store)
    if args.json:
        return [_json(info) for info in found]
    if not found:
        return "no schedules"
    header = ("NAME", "WORKFLOW", "CRON", "TIMEZONE", "CATCH-UP", "STATE", "NEXT (UTC)", "LAST")
    rows = [
        (
            info.name,
            info.workflow,
            info.cron,
            info.timezone,
            info.catch_up,
            "paused" if info.paused else "active",
            "-" if info.next_run is None else _when(info.next_run),
            "-" if info.last_run is None else _when(info.last_run),
        )
        for info in found
    ]
    return _table(header, rows)


async def _pause(store: Store, args: argparse.Namespace) -> Any:
    info = await pause_schedule(args.name, store=store)
    if args.json:
        return _json(info)
    return f"schedule {info.name!r}: paused; 'durable schedules resume {info.name}' lets it fire"


async def _resume(store: Store, args: argparse.Namespace) -> Any:
    info = await resume_schedule(args.name, store=store)
    if args.json:
        return _json(info)
    upcoming = "due now" if info.next_run is None else f"next run {_when(info.next_run)} UTC"
    return f"schedule {info.name!r}: active ({upcoming})"


async def _delete(store: Store, args: argparse.Namespace) -> Any:
    await delete_schedule(args.name, store=store)
    if args.json:
        return {"name": args.name, "deleted": True}
    return f"schedule {args.name!r}: deleted (the runs it started are kept)"


async def _trigger(store: Store, args: argparse.Namespace) -> Any:
    handle = await trigger_schedule(args.name, store=store)
    if args.json:
        return {"name": args.name, "id": handle.id}
    return f"schedule {args.name!r}: started run {handle.id!r}; a worker that knows it runs it"


_VERBS: dict[str, Callable[[Store, argparse.Namespace], Awaitable[Any]]] = {
    "list": _list,
    "pause": _pause,
    "resume": _resume,
    "delete": _delete,
    "trigger": _trigger,
}
