"""`format_history`: a run's steps as readable text, for assertion messages."""

from __future__ import annotations

from collections.abc import Iterable

from durable._types import Step, StepStatus

__all__ = ["format_history"]


def format_history(steps: Iterable[Step]) -> str:
    """Render steps (from `WorkflowHandle.history` or `WorkflowEnvironment.history`) as one
    line each: number, time (UTC), kind, name, status, attempts, and the result or error.

    Example:
        >>> print(format_history(await env.history("order-1")))  # doctest: +SKIP
          1  2030-01-01 00:00:00  activity      shop.charge      completed  1 attempt   -> 'ch_1'
          2  2030-01-01 00:00:00  timer         sleep            completed  1 attempt   -> ...
    """
    lines = []
    for step in steps:
        when = step.started_at.strftime("%Y-%m-%d %H:%M:%S")
        attempts = f"{step.attempts} attempt{'s' if step.attempts != 1 else ''}"
        if step.status == StepStatus.FAILED:
            outcome = f"!! {type(step.error).__name__}: {step.error}"
        elif step.status == StepStatus.STARTED:
            outcome = "(no outcome recorded)"
        else:
            outcome = f"-> {step.result!r}"
        if len(outcome) > 80:
            outcome = outcome[:77] + "..."
        lines.append(
            f"{step.seq:>3}  {when}  {step.kind!s:<12}  {step.name:<28}  {step.status!s:<9}  "
            f"{attempts:<10}  {outcome}"
        )
    return "\n".join(lines) if lines else "(no steps recorded)"
