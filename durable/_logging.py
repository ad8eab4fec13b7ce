"""Logs: the ``durable`` logger tree, the lines a worker writes about each run, and the command
line's log configuration.

Loggers: ``durable.worker`` (the worker itself: ready, claiming, stopping, runs of unknown
workflows), ``durable.run`` (each run's lifecycle, written by the executors of a `Worker`),
``durable.store`` (the stores: reconnects, schema upgrades). The library only writes to them;
it never configures logging. The command line does, with `configure_logging`.

Every lifecycle line names the run and its workflow in its text, and carries them as the
record attributes ``run_id`` and ``workflow`` (and ``event``: ``claimed``, ``woken``,
``resumed``, ``parked``, ``paused``, ``completed``, ``failed``, ``cancelled``, ``blocked``,
``lease_lost``, ``stopped``), so a structured formatter emits them as fields.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from durable._errors import (
    Cancelled,
    LeaseLost,
    NonDeterminismError,
    PayloadDecodeError,
    StoreError,
)
from durable._types import RunStatus
from durable.store import RunRecord, RunUpdate, UnreadableRecord

__all__ = [
    "FORMATS",
    "LEVELS",
    "JSONFormatter",
    "RunLog",
    "configure_logging",
    "iso_utc",
]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""The ``--log-level`` names."""

FORMATS = ("text", "json")
"""The ``--log-format`` names."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"

run_log = logging.getLogger("durable.run")

_FIELDS = ("run_id", "workflow", "event", "status", "wake_at")
"""Record attributes a JSON line carries as fields when a log call set them (``extra=``)."""


def iso_utc(seconds: float) -> str:
    """``seconds`` since the epoch as ISO 8601 UTC with milliseconds, e.g.
    ``2026-12-03T14:37:51.123Z``."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601 UTC), ``level``, ``logger``, ``message``,
    the run's fields when the line is about a run (``run_id``, ``workflow``, ``event``...),
    and ``exc_info`` (the formatted traceback) when the line carries one."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: str, fmt: str) -> None:
    """Send the process's log records at ``level`` and above to stderr, as ``fmt`` (``text``
    or ``json``). For the command line only: a library must leave logging to the application.

    Raises:
        ValueError: an unknown level or format.
    """
    name = level.upper()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; use one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
        handler.setFormatter(formatter)
    logging.basicConfig(level=getattr(logging, name), handlers=[handler], force=True)


class RunLog:
    """The lifecycle lines of the runs one executor drives (``durable.run``); each method
    is one event. Every line costs nothing when ``durable.run`` is not enabled for its level."""

    __slots__ = ()

    @staticmethod
    def _log(
        level: int,
        run: RunRecord,
        event: str,
        text: str,
        *args: Any,
        exc: BaseException | None = None,
        **fields: Any,
    ) -> None:
        if not run_log.isEnabledFor(level):
            return
        extra = {"run_id": run.id, "workflow": run.workflow, "event": event, **fields}
        run_log.log(
            level,
            "run %r (workflow %r) " + text,
            run.id,
            run.workflow,
            *args,
            exc_info=exc,
            extra=extra,
        )

    def claimed(self, run: RunRecord) -> None:
        """A worker claimed ``run`` (as it was before the claim)."""
        self._log(logging.INFO, run, "claimed", "claimed (%s)", run.status, status=run.status)

    def started(self, run: RunRecord, recorded_steps: int) -> None:
        """An executor starts driving ``run`` (its lease taken, ``recorded_steps`` loaded):
        ``woken`` when it was parked, ``resumed`` when it has history to replay."""
        if run.status in (RunStatus.SLEEPING, RunStatus.WAITING):
            self._log(
                logging.INFO,
                run,
                "woken",
                "woken (was %s); replaying %d recorded steps",
                run.status,
                recorded_steps,
            )
        elif recorded_steps:
            self._log(
                logging.INFO,
                run,
                "resumed",
                "resumed; replaying %d recorded steps",
                recorded_steps,
            )

    def parked(self, run: RunRecord, update: RunUpdate | None) -> None:
        """The run parked (or paused) and was released."""
        if update is None or update.status == RunStatus.PAUSED:
            self._log(logging.INFO, run, "paused", "paused until resumed", status="paused")
            return
        status = str(update.status)
        if update.wake_at is None:
            self._log(
                logging.INFO, run, "parked", "parked (%s) until a signal", status, status=status
            )
            return
        wake = iso_utc(update.wake_at)
        self._log(
            logging.INFO,
            run,
            "parked",
            "parked (%s) until %s",
            status,
            wake,
            status=status,
            wake_at=wake,
        )

    def continued(self, run: RunRecord) -> None:
        """The run continued as new: ``run`` is its next generation, about to start."""
        self._log(
            logging.INFO,
            run,
            "continued",
            "continued as new: generation %d starts",
            run.generation,
            generation=run.generation,
        )

    def completed(self, run: RunRecord) -> None:
        """The run's result is recorded."""
        self._log(logging.INFO, run, "completed", "completed", status="completed")

    def ended(self, run: RunRecord, exc: BaseException) -> None:
        """The executor stopped driving the run with ``exc``: the workflow's failure (recorded
        with the run), its cancellation, or a reason it stopped that leaves it resumable."""
        if isinstance(exc, Cancelled):
            self._log(logging.INFO, run, "cancelled", "cancelled", status="cancelled")
        elif isinstance(exc, LeaseLost):
            self._log(
                logging.WARNING,
                run,
                "lease_lost",
                "stopped: lease lost: %s; another executor has it now",
                exc,
            )
        elif isinstance(exc, NonDeterminismError | PayloadDecodeError | UnreadableRecord):
            self._log(logging.WARNING, run, "blocked", "blocked: %s", exc, status="blocked")
        elif isinstance(exc, StoreError):
            self._log(
                logging.WARNING,
                run,
                "stopped",
                "stopped: %s; it is resumed once the store answers again",
                exc,
            )
        elif isinstance(exc, Exception):
            self._log(
                logging.ERROR,
                run,
                "failed",
                "failed: %s: %s",
                type(exc).__qualname__,
                exc,
                exc=exc,
                status="failed",
            )
        else:  # cancelled by the event loop (the worker shuts down): back to pending
            self._log(logging.INFO, run, "stopped", "interrupted; it goes back to pending")
