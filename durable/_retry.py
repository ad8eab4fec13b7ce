"""`RetryPolicy`: how often and how patiently a failing activity is attempted again."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["NO_RETRY", "RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failing activity is retried.

    The delay before attempt ``n + 1`` (after attempt ``n`` failed) is
    ``min(initial_interval * backoff ** (n - 1), max_interval)`` seconds.

    Args:
        max_attempts: attempts in total, the first included (1 means no retry).
        initial_interval: seconds to wait before the second attempt.
        backoff: factor by which the wait grows after each attempt (>= 1).
        max_interval: the longest wait between two attempts, in seconds.
        non_retryable: exception types that fail the activity at once, without retrying.

    Raises:
        ValueError: a field is out of range.
        TypeError: ``non_retryable`` holds something that is not an exception type.

    An activity declared without ``retry=`` makes exactly one attempt.
    """

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 60.0
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(
                f"RetryPolicy.max_attempts must be an int >= 1, not {self.max_attempts!r}"
            )
        for field in ("initial_interval", "max_interval"):
            value = getattr(self, field)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"RetryPolicy.{field} must be a finite number >= 0, not {value!r}")
        if (
            not isinstance(self.backoff, int | float)
            or not math.isfinite(self.backoff)
            or (self.backoff < 1)
        ):
            raise ValueError(
                f"RetryPolicy.backoff must be a finite number >= 1, not {self.backoff!r}"
            )
        if self.max_interval < self.initial_interval:
            raise ValueError(
                f"RetryPolicy.max_interval ({self.max_interval}) must be >= initial_interval "
                f"({self.initial_interval})"
            )
        for exc_type in self.non_retryable:
            if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
                raise TypeError(
                    f"RetryPolicy.non_retryable must hold exception types, not {exc_type!r}"
                )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (from 1)."""
        exponent = max(attempt - 1, 0)
        try:
            delay = self.initial_interval * self.backoff**exponent
        except OverflowError:
            return self.max_interval
        return min(delay, self.max_interval)

    def retries(self, exc: BaseException, attempt: int) -> bool:
        """Whether attempt ``attempt`` failing with ``exc`` is followed by another attempt."""
        return attempt < self.max_attempts and not isinstance(exc, self.non_retryable)


NO_RETRY = RetryPolicy(max_attempts=1, initial_interval=0.0, max_interval=0.0)
