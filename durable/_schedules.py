"""Cron schedules: `schedule` stores one in the store, every `Worker` that knows its workflow
fires it, and each tick becomes exactly one run, ``"<name>@<tick in UTC, ISO 8601>"``.

Exactly once comes from the store, not from timing: a worker fires a tick with
`Store.fire_schedule`, one transaction that records the tick's runs only if the schedule
still expects that tick (compare-and-set on its ``next_tick``) and moves it on. However many
workers wake for the same tick, one of them records it and the others find it done.

Ticks a worker finds in the past (no worker ran, the schedule was paused, a worker is late)
are handled by the schedule's ``catch_up``:

* ``"latest"`` (default): one run for the most recent of them.
* ``"all"``: one run for each, oldest first.
* ``"none"``: runs none of those that came while no worker ran (a worker treats ticks up to
  `STARTUP_SLACK_SECONDS` before its own start as on time: another worker may have been about
  to fire them) nor those that came while the schedule was paused; a worker that is merely late
  runs the most recent one, as ``"latest"`` does.

Cron expressions are read by croniter in the schedule's time zone: five fields (minute hour
day-of-month month day-of-week), six with a leading seconds field, or ``@hourly`` /
``@daily`` / ``@weekly`` / ``@monthly`` / ``@yearly``. Across a daylight-saving change a wall
time that does not exist fires at the first one after it, and one that occurs twice fires at
each of its two instants.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio

from durable._client import WorkflowHandle
from durable._clock import Clock
from durable._codec import Payloads
from durable._config import current_config
from durable._decorators import definition_of, with_instance
from durable._errors import NotAWorkflowError, ScheduleNotFound
from durable._names import MAX_NAME_LENGTH, check_name
from durable._queues import Queue
from durable._registry import WorkflowDefinition, lookup_workflow
from durable._stores import open_store
from durable._trust import trust_of
from durable._types import RunStatus
from durable.store import RunRecord, ScheduleRecord, Store

__all__ = [
    "CATCH_UP",
    "Cron",
    "ScheduleInfo",
    "Scheduler",
    "delete_schedule",
    "list_schedules",
    "pause_schedule",
    "resume_schedule",
    "schedule",
    "tick_id",
    "trigger_id",
    "trigger_schedule",
]

log = logging.getLogger("durable.worker")

CATCH_UP = ("latest", "all", "none")
"""The values of ``catch_up``."""

STARTUP_SLACK_SECONDS = 10.0
"""With ``catch_up="none"``, a worker still runs a tick that came up to this long before it
started: a worker that was running then may have been about to fire it."""

FALLBACK_SECONDS = 30.0
"""The longest a worker's scheduler waits without reading the schedules again, in case a
change did not wake it (stores wake it for every change they can tell)."""

FIRE_BATCH = 100
"""At most this many ticks are recorded in one transaction (``catch_up="all"`` after a long
downtime records them in several)."""

_ROUNDS = 50
"""Transactions one schedule gets per pass before the others get their turn."""

_RETRY_SECONDS = 1.0
"""A pass that failed (the store unreachable) is tried again this much later."""

MAX_SCHEDULE_NAME = MAX_NAME_LENGTH - 64
"""The longest schedule name: its run ids add ``@`` and a tick (or ``@trigger-`` and a time)."""

_ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight"})
_ALIASES |= {"@hourly"}


# -- what a schedule is ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A cron schedule as stored (`durable.list_schedules`).

    Attributes:
        name: the schedule's name; its runs are ``"<name>@<tick>"``.
        workflow: the registered name of the workflow it starts.
        cron: the cron expression.
        timezone: the time zone the expression is read in.
        catch_up: ``"latest"``, ``"all"`` or ``"none"``.
        queue: the queue its runs are started on, or ``None``.
        paused: whether it is paused (no tick fires).
        next_run: the next tick it fires (UTC), or ``None`` while paused (or when the
            expression never fires again). A time in the past is due now: a worker that
            knows the workflow fires it.
        last_run: the tick it fired last (UTC), or ``None``.
        created_at: when it was first stored.
        updated_at: when it last changed (updated, paused, resumed or fired).
    """

    name: str
    workflow: str
    cron: str
    timezone: str
    catch_up: str
    queue: str | None
    paused: bool
    next_run: datetime | None
    last_run: datetime | None
    created_at: datetime
    updated_at: datetime


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _info(record: ScheduleRecord) -> ScheduleInfo:
    return ScheduleInfo(
        name=record.name,
        workflow=record.workflow,
        cron=record.cron,
        timezone=record.timezone,
        catch_up=record.catch_up,
        queue=record.queue,
        paused=record.paused,
        next_run=None if record.paused or record.next_tick is None else _utc(record.next_tick),
        last_run=None if record.last_tick is None else _utc(record.last_tick),
        created_at=_utc(record.created_at),
        updated_at=_utc(record.updated_at),
    )


def tick_id(name: str, tick: float) -> str:
    """The id of the run schedule ``name`` starts for ``tick``:
    ``"nightly@2026-12-04T00:00:00+00:00"``."""
    return f"{name}@{_utc(tick).isoformat()}"


def trigger_id(name: str, now: float) -> str:
    """The id of a run started by `trigger_schedule` at ``now``:
    ``"nightly@trigger-2026-12-04T10:11:12.345678+00:00-1f2e3d4c"`` (never a tick's id; the
    random suffix keeps two triggers at one instant two runs)."""
    stamp = _utc(now).isoformat(timespec="microseconds")
    return f"{name}@trigger-{stamp}-{uuid.uuid4().hex[:8]}"


def _croniter() -> Any:
    """croniter, imported on first use (it takes tens of milliseconds; most programs that
    import durable never read a cron expression)."""
    import croniter

    return croniter


class Cron:
    """A cron expression in a time zone, checked once, that finds its ticks.

    Args:
        expression: five fields, six with a leading seconds field, or an ``@`` alias.
        timezone: an IANA time zone name (``"UTC"``, ``"Europe/Paris"``).
        what: the call, for messages.

    Raises:
        ValueError: the expression or the time zone is not valid.
    """

    def __init__(self, expression: str, timezone: str, what: str = "the schedule") -> None:
        if not isinstance(expression, str) or not expression.strip():
            raise ValueError(
                f"{what}: cron= needs a cron expression such as '0 0 * * *' (daily at "
                f"midnight), not {expression!r}"
            )
        expression = " ".join(expression.split())
        fields = expression.split(" ")
        alias = len(fields) == 1 and expression.lower() in _ALIASES
        if alias:
            expression = expression.lower()
        if not alias and (
            len(fields) not in (5, 6)
            or not _croniter().croniter.is_valid(expression, second_at_beginning=True)
        ):
            raise ValueError(
                f"{what}: {expression!r} is not a valid cron expression; use five fields "
                "(minute hour day-of-month month day-of-week, e.g. '30 2 * * 1-5'), six with a "
                "leading seconds field (e.g. '*/10 * * * * *'), or one of @hourly, @daily, "
                "@weekly, @monthly, @yearly"
            )
        if not isinstance(timezone, str) or not timezone:
            raise ValueError(
                f"{what}: timezone= needs an IANA time zone name such as 'UTC' or "
                f"'Europe/Paris', not {timezone!r}"
            )
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{what}: unknown time zone {timezone!r}; use an IANA name such as 'UTC', "
                "'Europe/Paris' or 'America/New_York'"
            ) from None
        self.expression = expression
        self.timezone = timezone
        self._zone = zone

    def _iter(self, seconds: float) -> Any:
        start = datetime.fromtimestamp(seconds, self._zone)
        return _croniter().croniter(self.expression, start, second_at_beginning=True)

    def after(self, seconds: float) -> float | None:
        """The first tick strictly after ``seconds`` (epoch), or ``None`` when there is none."""
        try:
            return float(self._iter(seconds).get_next(float))
        except _croniter().CroniterBadDateError:
            return None

    def latest(self, seconds: float) -> float | None:
        """The last tick at or before ``seconds`` (epoch), or ``None`` when there is none."""
        try:
            before = float(self._iter(seconds).get_prev(float))
        except _croniter().CroniterBadDateError:
            return None
        following = self.after(before)
        return following if following is not None and following <= seconds else before


def plan(
    record: ScheduleRecord, cron: Cron, now: float, started: float
) -> tuple[list[float], float | None]:
    """The ticks to fire now for a schedule whose ``next_tick`` is due (``<= now``), by its
    ``catch_up``, and the tick it expects next. ``started``: when the firing worker's
    scheduler started (``"none"`` skips the ticks before it)."""
    first = record.next_tick
    assert first is not None
    if record.catch_up == "all":
        ticks: list[float] = []
        tick: float | None = first
        while tick is not None and tick <= now and len(ticks) < FIRE_BATCH:
            ticks.append(tick)
            tick = cron.after(tick)
        return ticks, tick
    latest = max(cron.latest(now) or first, first)
    following = cron.after(latest)
    if record.catch_up == "none" and latest < started - STARTUP_SLACK_SECONDS:
        return [], following
    return [latest], following


# -- the public functions ----------------------------------------------------------------------


def _check_name(name: object, call: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f"durable.{call}() needs the schedule's name, a non-empty string (e.g. 'nightly'), "
            f"not {name!r}"
        )
    if "@" in name:
        raise ValueError(
            f"durable.{call}({name!r}): a schedule name may not contain '@' (it separates the "
            "name from the tick in the ids of the schedule's runs)"
        )
    if len(name) > MAX_SCHEDULE_NAME:
        raise ValueError(
            f"durable.{call}({name[:40]!r}...): a schedule name may be at most "
            f"{MAX_SCHEDULE_NAME} characters (its runs' ids add the tick)"
        )
    return check_name(name, f"durable.{call}(...): the schedule name")


def _workflow(workflow: object, name: str) -> WorkflowDefinition:
    defn = definition_of(workflow)
    if isinstance(defn, WorkflowDefinition):
        return defn
    what = f"the @activity {defn.name!r}" if defn is not None else repr(workflow)
    raise NotAWorkflowError(
        f"durable.schedule({name!r}, ...) needs a function decorated with @durable.workflow, "
        f"but got {what}"
    )


async def schedule(
    name: str,
    workflow: Any,
    *,
    cron: str,
    timezone: str = "UTC",
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    catch_up: str = "latest",
    queue: Queue | str | None = None,
    store: Store | str | None = None,
) -> ScheduleInfo:
    """Create the schedule ``name``, or update it: every worker that knows ``workflow`` then
    starts ``workflow(*args, **kwargs)`` at each tick of ``cron``, exactly once per tick
    however many workers run, as run ``"<name>@<tick>"`` (the tick in UTC, ISO 8601, e.g.
    ``"nightly@2026-12-04T00:00:00+00:00"``).

    Calling it again with the same name updates the schedule (a program may declare its
    schedules at every start). The update keeps whether it is paused, and keeps its next tick
    unless ``cron`` or ``timezone`` changed (then the next tick is computed from now), so ticks
    missed while no worker ran are still caught up.

    Args:
        name: the schedule's name: no ``@``, at most `MAX_SCHEDULE_NAME` characters.
        workflow: the ``@durable.workflow`` function each tick starts.
        cron: five fields (minute hour day-of-month month day-of-week), six with a leading
            seconds field, or ``@hourly`` / ``@daily`` / ``@weekly`` / ``@monthly`` /
            ``@yearly``.
        timezone: the IANA time zone ``cron`` is read in (``"Europe/Paris"``: ``0 9 * * *``
            fires at 09:00 Paris time, summer and winter).
        args, kwargs: the arguments of every run (encoded now, with the workflow's codec).
        catch_up: what a worker does with ticks that passed while no worker fired them (or
            while the schedule was paused): ``"latest"`` runs only the most recent,
            ``"all"`` runs each, ``"none"`` skips them.
        queue: start the runs on this queue (a `durable.Queue`, whose limits are written to
            the store too, or a queue name), or ``None``.
        store: a store, a URL, or ``None`` for ``DURABLE_URL`` / ``sqlite:///durable.db``.

    Returns:
        The schedule as stored.

    Raises:
        ValueError: a bad name, cron expression, time zone, ``catch_up`` or queue name, or an
            expression that never fires.
        NotAWorkflowError: ``workflow`` is not a ``@durable.workflow``.
        SerializationError: the arguments cannot be encoded.
    """
    name = _check_name(name, "schedule")
    call = f"durable.schedule({name!r}, ...)"
    defn = _workflow(workflow, name)
    if catch_up not in CATCH_UP:
        raise ValueError(f"{call}: catch_up= must be 'latest', 'all' or 'none', not {catch_up!r}")
    declared: Queue | None = None
    if isinstance(queue, Queue):  # a Queue object: its name, its limits written below
        declared, queue = queue, queue.name
    if queue is not None:
        if not isinstance(queue, str) or not queue:
            raise ValueError(f"{call}: queue= takes a durable.Queue or a queue name, not {queue!r}")
        check_name(queue, f"{call}: the queue name")
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise TypeError(f"{call}: args= takes a tuple or list of arguments, not {args!r}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError(f"{call}: kwargs= takes a dict of keyword arguments, not {kwargs!r}")
    compiled = Cron(cron, timezone, call)
    clock = current_config().clock
    now = clock.time()
    next_tick = compiled.after(now)
    if next_tick is None:
        raise ValueError(f"{call}: the cron expression {cron!r} never fires")
    resolved = await open_store(store)
    if declared is not None:
        await declared.declare(resolved)
    payloads = Payloads(defn.codec, trust_of(resolved))
    encoded = payloads.dumps(
        (with_instance(workflow, tuple(args)), dict(kwargs or {})),
        what=f"arguments of schedule {name!r}",
    )
    record = ScheduleRecord(
        name=name,
        workflow=defn.name,
        cron=compiled.expression,
        timezone=timezone,
        args=encoded,
        catch_up=catch_up,
        queue=queue,
        paused=False,
        next_tick=next_tick,
        last_tick=None,
        created_at=now,
        updated_at=now,
    )
    return _info(await resolved.put_schedule(record, now=now))


async def list_schedules(store: Store | str | None = None) -> list[ScheduleInfo]:
    """Every schedule of the store, ordered by name.

    Args:
        store: a store, a URL, or ``None`` for ``DURABLE_URL`` / ``sqlite:///durable.db``.
    """
    resolved = await open_store(store)
    return [_info(record) for record in await resolved.list_schedules()]


async def _get(resolved: Store, name: str) -> ScheduleRecord:
    record = await resolved.get_schedule(name)
    if record is None:
        raise ScheduleNotFound(name)
    return record


async def pause_schedule(name: str, store: Store | str | None = None) -> ScheduleInfo:
    """Pause the schedule: no tick fires until `resume_schedule`. Runs it started already
    are not touched.

    Returns:
        The schedule as it is now.

    Raises:
        ScheduleNotFound: there is no schedule ``name``.
    """
    name = _check_name(name, "pause_schedule")
    resolved = await open_store(store)
    record = await resolved.set_schedule_paused(name, True, now=current_config().clock.time())
    if record is None:
        raise ScheduleNotFound(name)
    return _info(record)


async def resume_schedule(name: str, store: Store | str | None = None) -> ScheduleInfo:
    """Let a paused schedule fire again. The ticks that passed while it was paused count as
    missed, and its ``catch_up`` decides: ``"latest"`` runs the most recent of them at once,
    ``"all"`` runs each, ``"none"`` runs none (its next run is its next tick from now).
    Resuming a schedule that is not paused changes nothing.

    Returns:
        The schedule as it is now.

    Raises:
        ScheduleNotFound: there is no schedule ``name``.
    """
    name = _check_name(name, "resume_schedule")
    resolved = await open_store(store)
    record = await _get(resolved, name)
    now = current_config().clock.time()
    next_tick = None
    if record.paused and record.catch_up == "none":
        next_tick = Cron(record.cron, record.timezone, f"schedule {name!r}").after(now)
    resumed = await resolved.set_schedule_paused(name, False, now=now, next_tick=next_tick)
    if resumed is None:
        raise ScheduleNotFound(name)
    return _info(resumed)


async def delete_schedule(name: str, store: Store | str | None = None) -> None:
    """Delete the schedule: no tick of it fires any more. Runs it started are kept.

    Raises:
        ScheduleNotFound: there is no schedule ``name``.
    """
    name = _check_name(name, "delete_schedule")
    resolved = await open_store(store)
    if not await resolved.delete_schedule(name):
        raise ScheduleNotFound(name)


async def trigger_schedule(name: str, store: Store | str | None = None) -> WorkflowHandle:
    """Start one run of the schedule now, outside its ticks (paused or not), with its
    arguments and queue, as run ``"<name>@trigger-<now in UTC, ISO 8601 with microseconds>"``
    (e.g. ``"nightly@trigger-2026-12-04T10:11:12.345678+00:00"``), which a tick's id never
    is. The schedule's ticks are not changed. A worker that knows the workflow executes it.

    Returns:
        The run's handle.

    Raises:
        ScheduleNotFound: there is no schedule ``name``.
    """
    name = _check_name(name, "trigger_schedule")
    resolved = await open_store(store)
    record = await _get(resolved, name)
    now = current_config().clock.time()
    defn = lookup_workflow(record.workflow)
    run = _run(record, trigger_id(name, now), now, None if defn is None else defn.version)
    stored, _ = await resolved.create_run(run)
    return WorkflowHandle(stored.id, resolved)


def _run(record: ScheduleRecord, run_id: str, now: float, version: str | None) -> RunRecord:
    return RunRecord(
        id=run_id,
        workflow=record.workflow,
        status=RunStatus.PENDING,
        args=record.args,
        created_at=now,
        updated_at=now,
        code_version=version,
        queue=record.queue,
    )


# -- firing, in a worker -----------------------------------------------------------------------


class Scheduler:
    """A worker's scheduler task: fires the due ticks of the schedules whose workflow the
    worker knows, then sleeps until the next tick on the worker's clock (woken sooner when a
    schedule is created, changed or resumed).

    Args:
        workflows: the workflows the worker executes, by name.
        clock: the worker's clock (a test's virtual clock moves its ticks).
    """

    def __init__(self, workflows: Mapping[str, WorkflowDefinition], clock: Clock) -> None:
        self._workflows = workflows
        self._clock = clock
        self._started = clock.time()
        self._scope = anyio.CancelScope()
        self._crons: dict[tuple[str, str], Cron] = {}
        self._unreadable: set[str] = set()

    def stop(self) -> None:
        """Stop firing (a pass under way ends at its next await)."""
        self._scope.cancel()

    async def run(self, store: Store) -> None:
        """Fire due ticks until `stop`. A store without schedules (one written before them)
        is left alone."""
        if not callable(getattr(store, "list_schedules", None)):
            log.debug("durable worker: %r keeps no schedules; none fire here", store)
            return
        self._started = self._clock.time()
        with self._scope:
            while True:
                try:
                    soonest = await self.fire_due(store)
                except Exception:
                    log.exception("durable worker: firing schedules failed; retrying")
                    soonest = self._clock.time() + _RETRY_SECONDS
                await self._wait(store, soonest)

    async def _wait(self, store: Store, soonest: float | None) -> None:
        """Until the next tick (on the worker's clock) or a schedule change; with no tick to
        wait for, only the change (or `FALLBACK_SECONDS` of real time: a test's virtual clock
        is not asked to jump for a poll)."""
        delay = FALLBACK_SECONDS if soonest is None else soonest - self._clock.time()
        if delay <= 0:
            await anyio.sleep(0.001)  # a schedule another pass must finish: no busy loop
            return
        async with anyio.create_task_group() as tg:

            async def tick() -> None:
                if soonest is None:
                    await anyio.sleep_forever()
                await self._clock.sleep(delay)
                tg.cancel_scope.cancel()

            async def written() -> None:
                try:
                    await store.wait_for_schedules(within=min(delay, FALLBACK_SECONDS))
                except Exception:
                    log.exception("durable worker: waiting for schedule changes failed")
                    await anyio.sleep(min(delay, _RETRY_SECONDS))
                tg.cancel_scope.cancel()

            tg.start_soon(tick)
            tg.start_soon(written)

    async def fire_due(self, store: Store) -> float | None:
        """Fire every due tick of the schedules of known workflows.

        Returns:
            The soonest next tick among them, or ``None`` when none is expected.
        """
        now = self._clock.time()
        soonest: float | None = None
        for record in await store.list_schedules():
            current: ScheduleRecord | None = record
            if record.workflow in self._workflows and not record.paused:
                current = await self._fire(store, record, now)
            if current is None or current.paused or current.next_tick is None:
                continue
            if current.workflow in self._workflows:
                tick = current.next_tick
                soonest = tick if soonest is None else min(soonest, tick)
        return soonest

    async def _fire(
        self, store: Store, record: ScheduleRecord, now: float
    ) -> ScheduleRecord | None:
        current: ScheduleRecord | None = record
        for _ in range(_ROUNDS):
            if current is None or current.paused or current.next_tick is None:
                return current
            if current.next_tick > now:
                return current
            defn = self._workflows.get(current.workflow)
            cron = self._cron(current)
            if defn is None or cron is None:
                return None
            ticks, next_tick = plan(current, cron, now, self._started)
            runs = [_run(current, tick_id(current.name, t), now, defn.version) for t in ticks]
            current = await store.fire_schedule(
                current.name,
                expected_tick=current.next_tick,
                next_tick=next_tick,
                last_tick=ticks[-1] if ticks else None,
                runs=runs,
                now=now,
            )
            if ticks and current is not None and current.updated_at == now:  # ours
                log.info(
                    "durable worker: schedule %r fired %s",
                    current.name,
                    ", ".join(run.id for run in runs[:3]) + (" ..." if len(runs) > 3 else ""),
                )
        return current

    def _cron(self, record: ScheduleRecord) -> Cron | None:
        key = (record.cron, record.timezone)
        cron = self._crons.get(key)
        if cron is None:
            try:
                cron = self._crons[key] = Cron(record.cron, record.timezone)
            except ValueError as exc:
                if record.name not in self._unreadable:
                    self._unreadable.add(record.name)
                    log.warning("durable worker: schedule %r cannot fire: %s", record.name, exc)
                return None
        return cron
