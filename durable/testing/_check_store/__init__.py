"""`check_store`: the store contract (`durable.store.Store`) as a battery of named checks, so
that any backend, durable's own or a third party's, can prove that it keeps the contract.

The checks live in this package's modules by area: `._runs` (runs and leases), `._commits`
(commits and steps), `._requests` (requests and signals), `._waiting` (waiting and pruning),
`._operate` (forks, retries and deletions), `._queues` (queue limits), `._continue`
(continue-as-new), `._schedules` (cron schedules), `._publications` (events and streams);
`._support` holds their registry, records and helpers.

Each check is an ``async def`` taking a fresh, empty store; it uses only the protocol, plain
``assert`` statements with messages and the small `_Raises` helper, and needs no pytest (a
plain ``pip install durable-sdk`` has none). `check_store` runs them all and reports every
failure at once; `run_store_check` runs one by name (a test suite parametrizes over
`STORE_CHECKS` to report each separately).

Timestamps are small made-up numbers except where a check waits for real (``wait_for_work``,
``watch``): those use the wall clock, as a worker does.
"""

from __future__ import annotations

import inspect
import os
import traceback
from collections.abc import Awaitable, Callable, Iterable

import anyio

from durable.store import Store

from . import (
    _commits,
    _continue,
    _operate,
    _publications,
    _queues,
    _requests,
    _runs,
    _schedules,
    _waiting,
)
from ._support import _CHECKS

__all__ = [
    "CHECK_TIMEOUT",
    "STORE_CHECKS",
    "StoreCheckFailed",
    "StoreFactory",
    "check_store",
    "run_store_check",
]

StoreFactory = Callable[[], Store | Awaitable[Store]]
"""Makes a new, empty store: a zero-argument callable returning it (or an awaitable of it)."""

CHECK_TIMEOUT = 60.0
"""Seconds one check may take before it fails (a store that hangs fails, it does not hang)."""


class StoreCheckFailed(AssertionError):
    """Some checks of `check_store` failed.

    Attributes:
        failures: each failed check's name and why it failed (the exception's type, message
            and the line of the check that raised it).
        checks: the names of every check run.
    """

    def __init__(self, failures: dict[str, str], checks: list[str]) -> None:
        self.failures = failures
        self.checks = checks
        lines = "\n".join(f"- {name}: {reason}" for name, reason in failures.items())
        super().__init__(
            f"{len(failures)} of {len(checks)} store checks failed (run one again with "
            f"durable.testing.run_store_check(name, make_store) for its traceback):\n{lines}"
        )


async def check_store(
    make_store: StoreFactory, *, checks: Iterable[str] | None = None
) -> list[str]:
    """Check that a store keeps the `durable.store.Store` contract.

    Every check gets a new store from ``make_store`` and closes it when done (``close`` must
    be idempotent: one check closes its store itself). All checks run, then the failures are
    reported together.

    Args:
        make_store: a zero-argument callable returning a new, empty store, or an awaitable of
            one (e.g. an ``async def``).
        checks: the names of the checks to run (see `STORE_CHECKS`); default: all of them.

    Returns:
        The names of the checks run, all of which passed.

    Raises:
        StoreCheckFailed: (an `AssertionError`) naming every check that failed and why.
        ValueError: a name in ``checks`` is not a check.

    Example:
        >>> async def test_my_store_keeps_the_contract() -> None:  # doctest: +SKIP
        ...     await durable.testing.check_store(lambda: MyStore("my://test"))
    """
    names = list(STORE_CHECKS if checks is None else checks)
    for name in names:
        _lookup(name)
    failures: dict[str, str] = {}
    for name in names:
        try:
            await run_store_check(name, make_store)
        except Exception as exc:
            failures[name] = _reason(exc)
    if failures:
        raise StoreCheckFailed(failures, names)
    return names


async def run_store_check(name: str, make_store: StoreFactory) -> None:
    """Run the check ``name`` (one of `STORE_CHECKS`) on a new store from ``make_store``,
    then close the store. The check's own exception propagates, with its traceback.

    Raises:
        AssertionError: the store broke the contract (or the check took longer than
            `CHECK_TIMEOUT`).
        ValueError: there is no check ``name``.
    """
    check = _lookup(name)
    made = make_store()
    store = await made if inspect.isawaitable(made) else made
    try:
        with anyio.move_on_after(CHECK_TIMEOUT) as scope:
            await check(store)
        if scope.cancelled_caught:
            raise AssertionError(f"store check {name!r} did not finish within {CHECK_TIMEOUT} s")
    finally:
        await store.close()


def _lookup(name: str) -> Callable[[Store], Awaitable[None]]:
    try:
        return _CHECKS[name]
    except KeyError:
        raise ValueError(
            f"there is no store check {name!r}; the checks are durable.testing.STORE_CHECKS"
        ) from None


def _reason(exc: BaseException) -> str:
    """One line: what was raised, and at which line of the checks (this package's modules)."""
    text = " ".join(str(exc).split()) or "(no message)"
    here = os.path.dirname(__file__)
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if os.path.dirname(f.filename) == here
    ]
    where = ""
    if frames:
        name = os.path.basename(frames[-1].filename)
        where = f" (durable/testing/_check_store/{name} line {frames[-1].lineno})"
    return f"{type(exc).__name__}: {text}{where}"


STORE_CHECKS: tuple[str, ...] = tuple(
    name
    for area in (
        _runs,
        _commits,
        _requests,
        _waiting,
        _operate,
        _queues,
        _continue,
        _schedules,
        _publications,
    )
    for name, check in _CHECKS.items()
    if check.__module__ == area.__name__
)
"""The names of the checks `check_store` runs, in order (each is documented by its
function's docstring in this package's modules: runs and leases, commits and steps, requests
and signals, waiting and pruning, forks, retries and deletions, continue-as-new, schedules,
events and streams)."""
