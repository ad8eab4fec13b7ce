"""Store rules that need no database: shared by `MemoryStore` and `SQLStore`.

Nothing here imports SQLAlchemy, so the in-memory store stays light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from durable.store import RunRecord, RunStatus, StepRecord, StoreError

__all__ = ["check_step_batch", "prunable"]


def check_step_batch(run_id: str, steps: Sequence[StepRecord]) -> None:
    """Refuse a batch that names another run or repeats a step number, before any write.

    Raises:
        StoreError: a step belongs to another run, or two steps share a ``seq``.
    """
    seen: set[int] = set()
    for step in steps:
        if step.run_id != run_id:
            raise StoreError(
                f"cannot commit step {step.seq} of run {step.run_id!r} under the lease of run "
                f"{run_id!r}; nothing was written"
            )
        if step.seq in seen:
            raise StoreError(
                f"cannot commit steps to run {run_id!r}: step {step.seq} appears twice in one "
                "batch; nothing was written"
            )
        seen.add(step.seq)


def prunable(runs: Mapping[str, RunRecord], before: float) -> list[str]:
    """Ids of the finished runs last updated before ``before`` that no unfinished run refers
    to: none of their ancestors (parent, the parent's parent...) is unfinished. Oldest first.

    The SQL store spells the same rule as a recursive query (``Statements.prune_ids``).
    """
    keep: set[str] = set()  # the unfinished runs and everything below them
    children: dict[str, list[str]] = {}
    for run in runs.values():
        if run.parent_id is not None:
            children.setdefault(run.parent_id, []).append(run.id)
    todo = [run.id for run in runs.values() if not RunStatus(run.status).finished]
    while todo:
        run_id = todo.pop()
        if run_id in keep:
            continue
        keep.add(run_id)
        todo.extend(children.get(run_id, ()))
    old = [
        run
        for run in runs.values()
        if run.id not in keep and RunStatus(run.status).finished and run.updated_at < before
    ]
    old.sort(key=lambda run: (run.updated_at, run.id))
    return [run.id for run in old]
