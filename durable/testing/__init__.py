"""Testing workflows: an in-process environment with a virtual clock and fault injection,
readable histories, and replay checks for safe deploys.

* `WorkflowEnvironment` runs workflows against a store and a virtual clock: a three-day sleep
  takes no wall time; ``fail`` / ``crash`` / ``mock`` inject faults into activities.
* `format_history` renders a run's steps for assertion messages.
* `replay` checks that today's code replays a history exported from production.
* `check_store` proves that a store (a third-party backend too) keeps the store contract:
  ``await check_store(make_store)`` runs the named checks of `STORE_CHECKS`, each on a new
  store; `run_store_check` runs one by name.
* The pytest plugin (installed with the package) provides the ``durable_env`` fixture and the
  ``@pytest.mark.durable(store="sqlite")`` marker.
"""

from durable.testing._check_store import (
    STORE_CHECKS,
    StoreCheckFailed,
    check_store,
    run_store_check,
)
from durable.testing._environment import WorkflowEnvironment
from durable.testing._format import format_history
from durable.testing._replay import replay
from durable.testing._virtual_clock import VirtualClock

__all__ = [
    "STORE_CHECKS",
    "StoreCheckFailed",
    "VirtualClock",
    "WorkflowEnvironment",
    "check_store",
    "format_history",
    "replay",
    "run_store_check",
]
