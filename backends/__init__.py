"""Stores for `durable`: where runs and their recorded steps live.

* `MemoryStore`: in the process only; for unit tests and throw-away runs.
* `SQLStore`: SQLite (``sqlite:///path/to/file.db``, zero setup, shared by the processes of one
  machine) or Postgres (``postgresql://...``, shared by workers on many machines).

Both implement `durable.store.Store` with the same semantics.
"""

from ._memory import MemoryStore
from ._sql import SQLStore

__all__ = ["MemoryStore", "SQLStore"]
