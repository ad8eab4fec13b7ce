"""`NOT_APPLIED`: what a ``verify`` callback answers when the transaction it checks did not
commit (see `._postgres.PostgresRunner.run`). Its own module, so the SQL store can name it
without importing the Postgres driver."""

from __future__ import annotations

from typing import Final

__all__ = ["NOT_APPLIED"]


class _NotApplied:
    def __repr__(self) -> str:
        return "NOT_APPLIED"


NOT_APPLIED: Final = _NotApplied()
"""What a ``verify`` function returns when the transaction it checks did not commit."""
