"""`prune`: delete finished runs older than a cut-off, in small batches."""

from __future__ import annotations

import math
from datetime import timedelta

from durable._clock import Clock, SystemClock
from durable._stores import resolve_store
from durable.store import Store

__all__ = ["prune"]


async def prune(
    *,
    older_than: timedelta,
    store: Store | str | None = None,
    batch_size: int = 1000,
    clock: Clock | None = None,
) -> int:
    """Delete finished runs (completed, failed, cancelled, compensated, compensation_failed)
    whose last change is older than ``older_than``, with their steps and signals.

    Runs that are not finished are never touched, however old. The work is done in transactions
    of at most ``batch_size`` runs, so no lock is held for long and workers keep going meanwhile.

    Args:
        older_than: how long a finished run is kept after it finished (or last changed).
        store: a store, a URL, or ``None`` for ``DURABLE_URL`` / ``sqlite:///durable.db``.
        batch_size: runs deleted per transaction.
        clock: where "now" comes from (tests).

    Returns:
        How many runs were deleted.

    Raises:
        ValueError: ``older_than`` is negative or ``batch_size`` is not a positive int.

    Example:
        >>> await durable.prune(older_than=timedelta(days=30))  # doctest: +SKIP
        1204
    """
    if not isinstance(older_than, timedelta) or older_than < timedelta(0):
        raise ValueError(f"prune(older_than=...) must be a timedelta >= 0, not {older_than!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"prune(batch_size=...) must be an int >= 1, not {batch_size!r}")
    now = (clock or SystemClock()).time()
    before = now - older_than.total_seconds()
    resolved = resolve_store(store)
    total = 0
    while True:
        deleted = await resolved.prune(before=before, limit=batch_size)
        total += deleted
        if deleted < batch_size:
            return total


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``45m``, ``90s`` or ``2w`` as a timedelta.

    Raises:
        ValueError: the text is not a number followed by one of those units.
    """
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    number, unit = text.strip()[:-1], text.strip()[-1:]
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if unit not in units or not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{text!r} is not an age: write a number and a unit, e.g. 30d, 12h, 45m, 90s or 2w"
        )
    return timedelta(**{units[unit]: value})
