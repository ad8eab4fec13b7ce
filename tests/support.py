"""What several test files share: waiting for a state, a crash, the processes tests start, a
store whose commits lag or fail, and the test Postgres. Test files import from here
(``from support import eventually``); ``conftest.py`` holds only fixtures and hooks."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import anyio
import pytest

import durable
from durable.backends import MemoryStore
from durable.store import Interruption, Lease, RunUpdate, StepRecord, StepStatus

PROGRAMS = Path(__file__).parent / "programs"
"""The programs the process tests start (their working directory: ``-m durable worker APP``
imports APP from here)."""


# -- waiting for a state -----------------------------------------------------------------------


async def eventually(
    what: str, check: Callable[[], Awaitable[bool]], within: float = 60.0, every: float = 0.005
) -> None:
    """Poll ``check`` (every ``every`` seconds: more for a check that costs, such as a query
    over many rows) until it is true. ``within`` only bounds a hang (it fails the test with
    ``what``): it is never a speed requirement, so a test must not rely on it to prove one."""
    with anyio.move_on_after(within):
        for _ in range(10_000_000):  # a state in another task or process: polled
            if await check():
                return
            await anyio.sleep(every)
    raise AssertionError(f"{what} did not happen within {within} s")


def eventually_sync(
    what: str, check: Callable[[], bool], within: float = 60.0, every: float = 0.005
) -> None:
    """`eventually` for a test that is not async (one that drives processes)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {within} s")
        time.sleep(every)


# -- a crash -----------------------------------------------------------------------------------


class Crash(BaseException):
    """Like a killed process: nothing records it; the run is executed again from its history."""


# -- a store whose commits lag or fail ------------------------------------------------------------


class FaultyStore(MemoryStore):
    """A MemoryStore whose commits lag or fail, as a remote database's can.

    Args:
        lag: the seconds a commit takes before it is applied, given its steps (and outcomes)
            and its run update; the default, 1 ms, yields to the event loop as a networked
            store does (0: the commit does not wait at all).

    Set ``fail_next`` to make that many of the next commits of step outcomes (not of
    ``started`` steps) raise `durable.StoreError`, writing nothing, as a locked or
    unreachable database does.
    """

    def __init__(
        self, lag: Callable[[Sequence[StepRecord], RunUpdate | None], float] | None = None
    ) -> None:
        super().__init__()
        self.lag = lag if lag is not None else (lambda steps, update: 0.001)
        self.fail_next = 0

    async def commit(
        self,
        lease: Lease,
        steps: Sequence[StepRecord] = (),
        update: RunUpdate | None = None,
        *,
        now: float,
        outcomes: Sequence[StepRecord] = (),
        check_requests: bool = False,
        relaxed: bool = False,
    ) -> Interruption | None:
        delay = self.lag([*steps, *outcomes], update)
        if delay:
            await anyio.sleep(delay)
        if self.fail_next and any(s.status != StepStatus.STARTED for s in [*steps, *outcomes]):
            self.fail_next -= 1
            raise durable.StoreError("the database is locked (injected)")
        return await super().commit(
            lease,
            steps,
            update,
            now=now,
            outcomes=outcomes,
            check_requests=check_requests,
            relaxed=relaxed,
        )


# -- processes ---------------------------------------------------------------------------------


def python(
    *args: str, cwd: Path, timeout: float = 120, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` (this interpreter) in ``cwd`` to its end; its output as text."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def durable_cli(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the command line, ``python -m durable ARGS``, in ``cwd`` to its end."""
    return python("-m", "durable", *args, cwd=cwd, timeout=timeout)


def read_log(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


class Processes:
    """The processes a test starts; `close` kills and reaps whichever still run."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def spawn(
        self, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``python ARGS`` in `PROGRAMS`, its output (stdout and stderr) into ``log``."""
        out = log.open("wb")
        self._logs.append(out)
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=PROGRAMS,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def spawn_worker(
        self,
        app: str,
        url: str,
        log: Path,
        *options: str,
        env: Mapping[str, str] | None = None,
        ready: str = "durable worker: ready",
        within: float = 60.0,
    ) -> subprocess.Popen[bytes]:
        """Start ``durable worker APP --store URL OPTIONS`` and return once ``ready`` is in
        its log (SIGTERM, `stop`, then stops it cleanly)."""
        proc = self.spawn(["-m", "durable", "worker", app, "--store", url, *options], log, env)
        wait_for_log(proc, log, ready, within)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a frozen one dies as well
                proc.kill()
            proc.wait()
        for out in self._logs:
            out.close()


def wait_for_log(proc: subprocess.Popen[bytes], log: Path, text: str, within: float = 60.0) -> None:
    """Return once ``text`` is in ``log``; fail if the process exits first."""

    def written() -> bool:
        assert proc.poll() is None, f"the process exited ({proc.returncode}):\n{read_log(log)}"
        return text in read_log(log)

    eventually_sync(f"{text!r} in the log {log.name}", written, within)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM the process (a worker lets its runs finish, up to --grace), reap it (killed
    after ``timeout``) and return its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# -- the test Postgres -------------------------------------------------------------------------

POSTGRES_URL = os.environ.get(
    "DURABLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def postgres_problem() -> str | None:
    """Why the test Postgres cannot be used, or ``None`` when it answers."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"no Postgres answers at {POSTGRES_URL} ({exc})".strip()
    return None


def require_postgres() -> str:
    """The test Postgres URL; fails the test in CI when it is missing, else skips it."""
    problem = postgres_problem()
    if problem is None:
        return POSTGRES_URL
    if os.environ.get("CI"):
        pytest.fail(f"Postgres tests must run in CI: {problem}")
    pytest.skip(
        f"{problem}; start Postgres (or set DURABLE_TEST_POSTGRES_URL) to run the Postgres tests"
    )


@contextlib.contextmanager
def postgres_schema(prefix: str = "durable_test") -> Iterator[str]:
    """A Postgres URL whose tables live in a new schema of their own (its ``search_path``), so
    test sessions (a developer's and CI's) can share one server; the schema is dropped after."""
    import sqlalchemy as sa

    base = require_postgres()
    schema = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(
        base.replace("postgresql://", "postgresql+psycopg://"), pool_pre_ping=True
    )
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


TRUNCATE_ALL = (
    "TRUNCATE durable_steps, durable_runs, durable_signals, durable_queues, durable_schedules, "
    "durable_events, durable_streams"
)
"""Empties every durable table of a Postgres test database between tests."""


def empty_postgres(url: str) -> None:
    """Remove every run from the Postgres schema of ``url`` (`TRUNCATE_ALL`), so a test starts
    from nothing."""
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text(TRUNCATE_ALL))
    engine.dispose()
