"""`durable.list_runs`, `RunPage`, `RunInfo` and `handle.describe()` on every store."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

import durable
from durable import RunStatus
from durable.store import RunRecord, Store


@durable.workflow
async def fails_on_purpose(x: int) -> int:
    raise KeyError(f"missing {x}")


def _record(run_id: str, at: float, **fields: object) -> RunRecord:
    base = {"workflow": "app.flow", "status": RunStatus.PENDING, "args": b"x"}
    base.update(fields)
    return RunRecord(id=run_id, created_at=at, updated_at=at, **base)  # type: ignore[arg-type]


async def _seed(store: Store) -> float:
    t0 = 1_700_000_000.0
    for i in range(7):
        status = RunStatus.COMPLETED if i % 2 else RunStatus.PENDING
        workflow = "app.flow" if i < 5 else "app.other"
        await store.create_run(_record(f"order-{i}", t0 + i, status=status, workflow=workflow))
    await store.create_run(_record("order-3/1", t0 + 3.5, parent_id="order-3"))
    await store.create_run(_record("same-a", t0 + 10))
    await store.create_run(_record("same-b", t0 + 10))  # a tie on created_at: ordered by id
    return t0


async def test_newest_first_with_pages_that_join_up(store: Store) -> None:
    await _seed(store)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await durable.list_runs(limit=3, cursor=cursor, store=store)
        seen += [r.id for r in page.runs]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [
        "same-b", "same-a", "order-6", "order-5", "order-4", "order-3/1",
        "order-3", "order-2", "order-1", "order-0",
    ]  # fmt: skip
    assert pages == 4 and len(set(seen)) == len(seen)


async def test_filters(store: Store) -> None:
    t0 = await _seed(store)

    async def ids(**filters: object) -> list[str]:
        page = await durable.list_runs(store=store, **filters)  # type: ignore[arg-type]
        return [r.id for r in page.runs]

    assert await ids(status="completed") == ["order-5", "order-3", "order-1"]
    assert await ids(status=[RunStatus.COMPLETED, "pending"], workflow="app.other") == [
        "order-6",
        "order-5",
    ]
    assert await ids(id_prefix="order-3") == ["order-3/1", "order-3"]
    assert await ids(id_prefix="order_") == []  # matched literally, not as a pattern
    assert await ids(parent="order-3") == ["order-3/1"]
    after = datetime.fromtimestamp(t0 + 4, UTC)
    before = datetime.fromtimestamp(t0 + 6, UTC)
    assert await ids(created_after=after, created_before=before) == ["order-5"]
    assert await ids(workflow=[]) == []


async def test_run_info_and_describe(store: Store) -> None:
    with pytest.raises(KeyError):
        await durable.execute(fails_on_purpose, 7, id="bad", store=store)
    info = await durable.get_handle("bad", store).describe()
    assert (info.id, info.status, info.parent_id) == ("bad", RunStatus.FAILED, None)
    assert info.workflow.endswith("fails_on_purpose")
    assert info.created_at.tzinfo is not None and info.updated_at >= info.created_at
    assert info.error is not None and "KeyError" in info.error and "missing 7" in info.error
    assert "raise KeyError" in info.error  # the traceback of the first raise
    assert abs(info.created_at.timestamp() - time.time()) < 3600
    page = await durable.list_runs(store=store)
    assert page.runs == [info] and page.next_cursor is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"status": "bogus"}, "unknown status 'bogus'"),
        ({"cursor": "not-a-cursor"}, "not a cursor"),
        ({"created_after": datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
async def test_bad_arguments_are_refused(
    store: Store, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await durable.list_runs(store=store, **kwargs)  # type: ignore[arg-type]


async def test_describe_of_a_missing_run(store: Store) -> None:
    with pytest.raises(durable.WorkflowNotFound):
        await durable.get_handle("nobody", store).describe()
