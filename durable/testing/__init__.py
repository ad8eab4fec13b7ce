"""Testing workflows: an in-process environment with a virtual clock and fault injection,
readable histories, and replay checks for safe deploys.

* `WorkflowEnvironment` runs workflows against a store and a virtual clock: a three-day sleep
  takes no wall time; ``fail`` / ``crash`` / ``mock`` inject faults into activities.
* `format_history` renders a run's steps for assertion messages.
* `replay` checks that today's code replays a history exported from production.
* The pytest plugin (installed with the package) provides the ``durable_env`` fixture and the
  ``@pytest.mark.durable(store="sqlite")`` marker.
"""

from durable.testing._environment import WorkflowEnvironment
from durable.testing._format import format_history
from durable.testing._replay import replay
from durable.testing._virtual_clock import VirtualClock

__all__ = ["VirtualClock", "WorkflowEnvironment", "format_history", "replay"]
