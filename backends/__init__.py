"""Stores for `durable`: where runs and their recorded steps live.

* `MemoryStore`: in the process only; for unit tests and throw-away runs.
* `SQLStore`: SQLite (``sqlite:///path/to/file.db``, zero setup, shared by the processes of one
  machine) or Postgres (``postgresql://...``, shared by workers on many machines).

Both implement `durable.store.Store` with the same semantics. `SQLStore` (and SQLAlchemy with
it) is imported on first use, so code that only uses `MemoryStore` does not load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._memory import MemoryStore

if TYPE_CHECKING:
    from ._sql import SQLStore

__all__ = ["MemoryStore", "SQLStore"]


def __getattr__(name: str) -> Any:
    if name == "SQLStore":
        from ._sql import SQLStore

        return SQLStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
