"""The operator's commands: ``durable runs <verb>`` and ``durable ui``.

``durable runs`` lists, shows and acts on the runs of one store (``--store URL``, default
``$DURABLE_URL`` or ``sqlite:///durable.db``): ``list``, ``show``, ``cancel``, ``pause``,
``resume``, ``retry``, ``fork``, ``delete``, ``signal`` and ``export``. Every verb prints a
table or a sentence, or JSON with ``--json`` (docs/cli.md gives the shapes). Exit status: 0 on
success; 1 when the run is missing, the action is refused, or the store cannot be used; 2 for
bad arguments.

``durable ui`` serves the web view (`durable.ui`, the ``durable-sdk[ui]`` extra), imported only
when the command runs, so the rest of the command line works without the extra.

Reading a run goes through `durable._inspect` (the web view shows the same decoded text), and
acting on one through `WorkflowHandle`, so the command line refuses what the API refuses, with
the same messages.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from durable._client import WorkflowHandle, get_handle
from durable._codec import JSONCodec
from durable._errors import DurableError, WorkflowNotFound
from durable._inspect import RunView, StepView, info_json, inspect_run, run_json
from durable._runs import MAX_LIMIT, RunInfo, list_runs
from durable._signals import send_signal
from durable._stores import DEFAULT_URL, close_stores, open_store
from durable._types import RunStatus
from durable.backends._redact import redact, secrets_in
from durable.store import Store

__all__ = ["add_commands", "runs_command", "ui_command"]

LIST_LIMIT = 20
"""Runs ``durable runs list`` shows unless ``--limit`` says otherwise."""

UI_HOST = "127.0.0.1"
UI_PORT = 8765

_STORE_HELP = "store URL (default: $DURABLE_URL, else sqlite:///durable.db)"
_STATUSES = ", ".join(s.value for s in RunStatus)


class Refused(Exception):
    """An action the command line refuses before asking the store (exit 1)."""


# -- arguments ---------------------------------------------------------------------------------


def add_commands(commands: Any) -> None:
    """Add ``runs`` (with its verbs) and ``ui`` to the ``durable`` subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", default=None, metavar="URL", help=_STORE_HELP)
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    runs = commands.add_parser(
        "runs",
        help="list, show and act on the runs of a store",
        description="List, show and act on the runs of a store. Exit status: 0 on success, 1 "
        "when the run is missing, the action is refused or the store cannot be used, 2 for "
        "bad arguments.",
    )
    verbs = runs.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help: str, with_id: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = verbs.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + ".", parents=[common]
        )
        if with_id:
            parser.add_argument("id", help="the run id")
        return parser

    listing = verb("list", "runs newest first, filtered", with_id=False)
    listing.add_argument(
        "--status",
        nargs="+",
        action="extend",
        type=_status,
        metavar="STATUS",
        help=f"only runs in one of these statuses (repeatable; one of {_STATUSES}) (default: any)",
    )
    listing.add_argument(
        "--workflow",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="only runs of these workflows, by registered name (repeatable) (default: any)",
    )
    listing.add_argument(
        "--prefix", metavar="P", help="only runs whose id starts with P (default: any)"
    )
    listing.add_argument("--parent", metavar="ID", help="only the children of run ID")
    listing.add_argument(
        "--limit",
        type=_limit,
        default=LIST_LIMIT,
        metavar="N",
        help=f"show at most N runs, 1 to {MAX_LIMIT} (default: %(default)s)",
    )
    listing.add_argument(
        "--cursor", metavar="C", help="continue a listing where the previous one stopped"
    )
    verb("show", "a run's status, times, arguments, outcome and step timeline")
    verb("cancel", "cancel a run (its compensations run)")
    verb("pause", "pause a run at its next step boundary")
    verb("resume", "let a paused run continue")
    retry = verb(
        "retry", "run a failed, cancelled, timed-out or blocked run again from its failed step"
    )
    retry.add_argument(
        "--after-compensation",
        action="store_true",
        help="also retry a run whose compensations already ran: its whole body runs again "
        "(default: refused)",
    )
    fork = verb("fork", "start a new run of the same workflow from one of this run's steps")
    fork.add_argument(
        "--from-step",
        type=_step,
        required=True,
        metavar="N",
        help="the step the new run starts from: steps 1..N-1 are copied",
    )
    fork.add_argument(
        "--id", dest="new_id", metavar="NEW", help="the new run's id (default: derived)"
    )
    verb("delete", "delete a finished run and its steps")
    signal = verb("signal", "send a signal to a run")
    signal.add_argument("name", help="the signal name")
    signal.add_argument(
        "--payload",
        type=_payload,
        default=None,
        metavar="JSON",
        help="the payload, as JSON (default: null)",
    )
    export = verb("export", "print a run's history JSON (what durable.testing.replay takes)")
    export.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="write it to FILE (default: stdout)"
    )

    ui = commands.add_parser(
        "ui",
        help="serve the web view of a store's runs (the durable-sdk[ui] extra)",
        description="Serve the web view of a store's runs. Needs the durable-sdk[ui] extra.",
    )
    ui.add_argument("--store", default=None, metavar="URL", help=_STORE_HELP)
    ui.add_argument(
        "--host",
        default=UI_HOST,
        help="the address to listen on; anyone who reaches it can cancel runs, so keep it "
        "local or put it behind your own auth (default: %(default)s)",
    )
    ui.add_argument(
        "--port", type=_port, default=UI_PORT, help="the port to listen on (default: %(default)s)"
    )


def _status(text: str) -> RunStatus:
    try:
        return RunStatus(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"unknown status {text!r}; one of {_STATUSES}") from None


def _limit(text: str) -> int:
    value = _int(text)
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_LIMIT}, not {value}")
    return value


def _step(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"steps are numbered from 1, not {value}")
    return value


def _port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _payload(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not JSON ({exc}); quote strings as JSON, e.g. '\"yes\"' or '{{\"ok\": true}}'"
        ) from None


# -- running a verb ----------------------------------------------------------------------------


def _url(given: str | None) -> str:
    return given or os.environ.get("DURABLE_URL") or DEFAULT_URL


def _check_exists(url: str) -> None:
    """Refuse a SQLite URL whose file does not exist (reading it would create an empty
    database where a mistyped path, or the wrong directory, was meant), and an in-memory
    store (another process's is out of reach)."""
    if url.startswith("memory:"):
        raise Refused(
            f"{url!r} is an in-memory store: it lives inside one process, and this command "
            "cannot see it; pass the URL of a database (--store or DURABLE_URL)"
        )
    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # the store says what is wrong with it
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    if not Path(parsed.database).exists():
        raise Refused(
            f"there is no database at {parsed.database} ({url}); pass --store URL or set "
            "DURABLE_URL (a worker creates the database when it first starts)"
        )


def runs_command(args: argparse.Namespace) -> int:
    """Run ``durable runs <verb>``; returns the exit status."""
    url = _url(args.store)
    verb: Callable[[Store, argparse.Namespace], Awaitable[Any]] = _VERBS[args.verb]

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

    return _guarded(f"durable runs {args.verb}", url, args, body)


def _guarded(prefix: str, url: str, args: argparse.Namespace, body: Callable[[], Any]) -> int:
    """Run ``body``; a refusal, a missing run or a store error is one line and exit 1, a bad
    argument exit 2 (``--debug``: the traceback instead)."""
    secrets = secrets_in(url)
    try:
        status: int = body()
        return status
    except WorkflowNotFound as exc:
        if args.debug:
            raise
        message = (
            f"no run {exc.run_id!r} in {url}; check the id and --store "
            "(durable runs list shows the runs)"
        )
        code = 1
    except (Refused, DurableError) as exc:
        if args.debug:
            raise
        message, code = str(exc), 1
    except ValueError as exc:
        if args.debug:
            raise
        message, code = str(exc), 2
    except OSError as exc:  # a file --output cannot write, a socket ui cannot bind
        if args.debug:
            raise
        message, code = str(exc), 1
    print(f"{prefix}: {redact(message, secrets)}", file=sys.stderr)
    return code


# -- the verbs ---------------------------------------------------------------------------------


async def _list(store: Store, args: argparse.Namespace) -> Any:
    page = await list_runs(
        status=args.status,
        workflow=args.workflow,
        id_prefix=args.prefix,
        parent=args.parent,
        limit=args.limit,
        cursor=args.cursor,
        store=store,
    )
    if page.next_cursor is not None:  # on stderr: stdout stays one table or one JSON array
        print(f"more runs: add --cursor {page.next_cursor} (or a larger --limit)", file=sys.stderr)
    if args.json:
        return [info_json(info) for info in page.runs]
    if not page.runs:
        return "no runs"
    return _runs_table(page.runs)


def _runs_table(runs: Sequence[RunInfo]) -> str:
    header = ("ID", "WORKFLOW", "STATUS", "CREATED (UTC)", "UPDATED (UTC)")
    rows = [
        (info.id, info.workflow, str(info.status), _when(info.created_at), _when(info.updated_at))
        for info in runs
    ]
    return _table(header, rows)


async def _show(store: Store, args: argparse.Namespace) -> Any:
    view = await inspect_run(store, args.id)
    if view is None:
        raise WorkflowNotFound(args.id)
    return run_json(view) if args.json else _view_text(view)


def _view_text(view: RunView) -> str:
    info = view.info
    fields = [
        ("run", info.id),
        ("workflow", info.workflow),
        ("status", str(info.status)),
        ("created", f"{_when(info.created_at)} UTC"),
        ("updated", f"{_when(info.updated_at)} UTC"),
    ]
    if info.wake_at is not None:
        fields.append(("wakes", f"{_when(info.wake_at)} UTC"))
    if info.deadline is not None:
        fields.append(("deadline", f"{_when(info.deadline)} UTC"))
    if info.queue is not None:
        key = "" if info.queue_key is None else f", key {info.queue_key}"
        fields.append(("queue", f"{info.queue}{key}, priority {info.priority}"))
    if info.parent_id is not None:
        fields.append(("parent", info.parent_id))
    fields.append(("attempts", f"{info.attempts} (recoveries: {info.recoveries})"))
    if info.code_version is not None:
        fields.append(("code", info.code_version))
    if info.generation > 1:
        earlier = "earlier generations' steps are deleted"
        fields.append(("generation", f"{info.generation} (continued as new; {earlier})"))
    fields.append(("arguments", view.args))
    if view.result is not None:
        fields.append(("result", view.result))
    width = max(len(name) for name, _ in fields)
    lines = [f"{name.ljust(width)}  {_indent(value, width + 2)}" for name, value in fields]
    if info.error is not None:
        lines += ["", "error:", _indent(info.error, 2, first=True)]
    lines += ["", "steps:"]
    if view.steps:
        lines.append(_indent(_steps_table(view.steps), 2, first=True))
    else:
        lines.append("  (none recorded)")
    for step in view.steps:
        if step.error is not None and step.error != info.error:
            lines += ["", f"step {step.seq} ({step.name}) failed:", _indent(step.error, 2, True)]
    if view.children:
        lines += ["", "children:", _indent(_runs_table(view.children), 2, first=True)]
    return "\n".join(lines)


def _steps_table(steps: Sequence[StepView]) -> str:
    header = ("SEQ", "KIND", "NAME", "STATUS", "ATTEMPTS", "STARTED (UTC)", "DURATION")
    rows = [
        (
            str(step.seq),
            str(step.kind),
            step.name if step.child_id is None else f"{step.name} -> {step.child_id}",
            str(step.status),
            str(step.attempts),
            _when(step.started_at),
            _duration(step.duration),
        )
        for step in steps
    ]
    return _table(header, rows)


async def _act(
    store: Store,
    args: argparse.Namespace,
    action: Callable[[WorkflowHandle], Awaitable[None]],
    done: str,
    refuse_finished: str | None = None,
    *,
    requested: str | None = None,
    done_when: RunStatus | None = None,
) -> Any:
    """Act on run ``args.id`` through its handle and report its status after: ``done``, or
    ``requested`` while it has not reached ``done_when`` (an executor acts on it later)."""
    handle = get_handle(args.id, store=store)
    before = await handle.status()
    if refuse_finished is not None and before.finished:
        raise Refused(f"run {args.id!r} is {before} already; there is nothing to {refuse_finished}")
    await action(handle)
    status = await handle.status()
    if args.json:
        return {"id": args.id, "status": str(status)}
    if requested is not None and status != done_when:
        done = requested
    return f"run {args.id!r}: {done} (status: {status})"


async def _cancel(store: Store, args: argparse.Namespace) -> Any:
    return await _act(
        store,
        args,
        WorkflowHandle.cancel,
        "cancelled",
        "cancel",
        requested="cancellation requested: it stops at its next step and its compensations "
        "run (a run nobody executes now, when a worker takes it up)",
        done_when=RunStatus.CANCELLED,
    )


async def _pause(store: Store, args: argparse.Namespace) -> Any:
    return await _act(
        store,
        args,
        WorkflowHandle.pause,
        "paused; 'durable runs resume' lets it go on",
        "pause",
        requested="pause requested: it stops at its next step boundary",
        done_when=RunStatus.PAUSED,
    )


async def _resume(store: Store, args: argparse.Namespace) -> Any:
    return await _act(store, args, WorkflowHandle.resume, "resumed; a worker takes it up", "resume")


async def _retry(store: Store, args: argparse.Namespace) -> Any:
    async def retry(handle: WorkflowHandle) -> None:
        await handle.retry(after_compensation=args.after_compensation)

    return await _act(store, args, retry, "pending again; a worker runs it from its failed step")


async def _fork(store: Store, args: argparse.Namespace) -> Any:
    handle = get_handle(args.id, store=store)
    forked = await handle.fork(args.from_step, id=args.new_id)
    if args.json:
        return {"id": forked.id, "forked_from": args.id, "from_step": args.from_step}
    print(
        f"forked run {args.id!r} from step {args.from_step} as run {forked.id!r}; a worker runs it",
        file=sys.stderr,
    )
    return forked.id


async def _delete(store: Store, args: argparse.Namespace) -> Any:
    await get_handle(args.id, store=store).delete()
    return {"id": args.id, "deleted": True} if args.json else f"run {args.id!r}: deleted"


async def _signal(store: Store, args: argparse.Namespace) -> Any:
    get_handle(args.id, store=store)  # checks the id as every verb does
    # JSON-encoded: a workflow on the JSON codec reads it, and so does one on pickle (the
    # workflow's own codec is unknown here: its module is not imported by the command line).
    await send_signal(store, args.id, args.name, args.payload, now=time.time(), codec=JSONCodec())
    if args.json:
        return {"id": args.id, "signal": args.name}
    return f"run {args.id!r}: signal {args.name!r} sent"


async def _export(store: Store, args: argparse.Namespace) -> Any:
    history = await get_handle(args.id, store=store).export_history()
    if args.output is None:
        return history
    args.output.write_text(history + "\n")
    if args.json:
        return {"id": args.id, "output": str(args.output)}
    return f"run {args.id!r}: history written to {args.output}"


_VERBS: dict[str, Callable[[Store, argparse.Namespace], Awaitable[Any]]] = {
    "list": _list,
    "show": _show,
    "cancel": _cancel,
    "pause": _pause,
    "resume": _resume,
    "retry": _retry,
    "fork": _fork,
    "delete": _delete,
    "signal": _signal,
    "export": _export,
}


# -- durable ui --------------------------------------------------------------------------------

_UI_EXTRA = "the web view needs the ui extra: pip install 'durable-sdk[ui]'"


def ui_command(args: argparse.Namespace) -> int:
    """Run ``durable ui``: serve the web view until interrupted; returns the exit status."""
    url = _url(args.store)

    def serve() -> int:
        _check_exists(url)
        try:
            # Imported here: the extra is optional, and nothing else needs it.
            ui = importlib.import_module("durable.ui")
        except ModuleNotFoundError as exc:
            if exc.name != "durable.ui":
                raise Refused(f"{exc}; {_UI_EXTRA}") from exc
            raise Refused(_UI_EXTRA) from exc
        try:
            ui.serve(args.store, args.host, args.port)
        except ImportError as exc:
            message = str(exc) if "durable-sdk[ui]" in str(exc) else f"{exc}; {_UI_EXTRA}"
            raise Refused(message) from exc
        return 0

    return _guarded("durable ui", url, args, serve)


# -- text --------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _when(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return "<1 ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _indent(text: str, by: int, first: bool = False) -> str:
    pad = " " * by
    lines = text.splitlines() or [""]
    head = pad + lines[0] if first else lines[0]
    return "\n".join([head, *(pad + line for line in lines[1:])])
