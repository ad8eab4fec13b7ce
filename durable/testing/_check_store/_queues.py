"""Store checks of queues (`durable.store.QueueSettings`): their stored limits, and which of a
queue's runs `claim`, `acquire_lease` and `next_due` let execute."""

from __future__ import annotations

from durable.store import LeaseOwner, QueueSettings, RunStatus, RunUpdate, Store

from ._support import WORKFLOW, A, B, _check, _get, _run, _same


async def _queued(
    store: Store,
    count: int,
    queue: str = "q",
    *,
    prefix: str = "r",
    key: str | None = None,
    priority: int = 0,
    created_at: float = 100.0,
) -> list[str]:
    ids = [f"{prefix}{i}" for i in range(count)]
    for i, run_id in enumerate(ids):
        run = _run(
            run_id,
            created_at=created_at + i / 100,
            queue=queue,
            queue_key=key,
            priority=priority,
        )
        await store.create_run(run)
    return ids


@_check
async def put_queue_replaces_and_create_run_lists_an_unknown_queue(store: Store) -> None:
    """`put_queue` writes a queue's limits (the latest call wins); `create_run` of a run on
    a queue with no limits stored lists that queue without limits."""
    await store.put_queue(QueueSettings("q", concurrency=2, updated_at=1.0))
    await store.put_queue(
        QueueSettings("q", concurrency=5, rate_count=3, rate_period=2.0, updated_at=2.0)
    )
    await store.create_run(_run("r1", queue="other"))
    queues = await store.list_queues()
    _same(
        queues,
        [
            QueueSettings("other", updated_at=100.0),
            QueueSettings("q", concurrency=5, rate_count=3, rate_period=2.0, updated_at=2.0),
        ],
        "the queues listed",
    )


@_check
async def claim_keeps_a_queue_within_its_concurrency(store: Store) -> None:
    """A queue with ``concurrency=2`` has at most 2 runs leased across claimers; a run that
    parks or ends frees its slot; a run nobody executes is not counted."""
    await store.put_queue(QueueSettings("q", concurrency=2))
    ids = await _queued(store, 5)
    first = await store.claim(A, now=200.0, duration=30.0, limit=10, workflows=[WORKFLOW])
    _same([run.id for run, _ in first], ids[:2], "the first claim (oldest first)")
    second = await store.claim(B, now=200.0, duration=30.0, limit=10, workflows=[WORKFLOW])
    _same(second, [], "a second claimer while the queue is full")
    _, lease = first[0]
    await store.commit(lease, (), RunUpdate(RunStatus.SLEEPING, release=True, wake_at=1e9), now=201)
    third = await store.claim(B, now=202.0, duration=30.0, limit=10, workflows=[WORKFLOW])
    _same([run.id for run, _ in third], [ids[2]], "the claim after one run parked")
    acquired = await store.acquire_lease(ids[3], A, now=203.0, duration=30.0)
    _same(acquired, None, "acquire_lease of a queued run while its queue is full")


@_check
async def claim_keeps_each_key_within_per_key_concurrency(store: Store) -> None:
    """With ``per_key_concurrency=1`` a claim takes one run per key, passing over a key
    that is full to the next key's runs; runs without a key are not limited per key."""
    await store.put_queue(QueueSettings("q", per_key_concurrency=1))
    a = await _queued(store, 3, prefix="a", key="tenant-a", created_at=100.0)
    b = await _queued(store, 2, prefix="b", key="tenant-b", created_at=101.0)
    free = await _queued(store, 2, prefix="n", created_at=102.0)
    claimed = await store.claim(A, now=200.0, duration=30.0, limit=10, workflows=[WORKFLOW])
    _same(
        sorted(run.id for run, _ in claimed),
        sorted([a[0], b[0], *free]),
        "one run per key, and every run without a key",
    )
    _same(
        await store.claim(B, now=200.0, duration=30.0, limit=10, workflows=[WORKFLOW]),
        [],
        "a second claim while every key is full",
    )


@_check
async def claim_orders_a_queue_by_priority_then_due_time(store: Store) -> None:
    """Within a queue, smaller priorities are claimed first, then the oldest due."""
    await store.put_queue(QueueSettings("q", concurrency=1))
    await store.create_run(_run("late-urgent", created_at=105.0, queue="q", priority=-1))
    await store.create_run(_run("early-normal", created_at=100.0, queue="q"))
    await store.create_run(_run("mid-normal", created_at=102.0, queue="q"))
    order = []
    for now in (200.0, 300.0, 400.0):
        claimed = await store.claim(A, now=now, duration=30.0, limit=5, workflows=[WORKFLOW])
        _same(len(claimed), 1, f"runs claimed at {now}")
        run, lease = claimed[0]
        order.append(run.id)
        await store.commit(lease, (), RunUpdate(RunStatus.COMPLETED, release=True), now=now + 1)
    _same(order, ["late-urgent", "early-normal", "mid-normal"], "the claim order")


@_check
async def claim_keeps_a_queue_within_its_rate_limit(store: Store) -> None:
    """``rate_count=2`` per 10 s: at most 2 runs start within any 10 s, ended or not; a run
    that parked and wakes is not a new start; `next_due` says when the window frees one."""
    await store.put_queue(QueueSettings("q", rate_count=2, rate_period=10.0))
    ids = await _queued(store, 4)
    claimed = await store.claim(A, now=200.0, duration=30.0, limit=10, workflows=[WORKFLOW])
    _same([run.id for run, _ in claimed], ids[:2], "the starts allowed at 200")
    for _, lease in claimed:
        update = RunUpdate(RunStatus.SLEEPING, release=True, wake_at=205.0)
        await store.commit(lease, (), update, now=201.0)
    woken = await store.claim(A, now=205.0, duration=30.0, limit=10, workflows=[WORKFLOW])
    _same(sorted(run.id for run, _ in woken), ids[:2], "the parked runs woken at 205")
    for _, lease in woken:
        await store.commit(lease, (), RunUpdate(RunStatus.COMPLETED, release=True), now=206.0)
    _same(
        await store.next_due(workflows=[WORKFLOW], now=206.0),
        210.0,
        "next_due while the rate window is full",
    )
    _same(
        await store.claim(B, now=209.0, duration=30.0, limit=10, workflows=[WORKFLOW]),
        [],
        "a claim before the window frees a start",
    )
    later = await store.claim(B, now=210.5, duration=30.0, limit=10, workflows=[WORKFLOW])
    _same([run.id for run, _ in later], ids[2:], "the starts allowed at 210.5")
    _same((await _get(store, ids[2])).started_at, 210.5, "started_at of a started run")


@_check
async def a_takeover_is_never_refused_by_a_full_queue(store: Store) -> None:
    """A queued run whose executor's lease lapsed is claimed again although its queue is
    full: it is one of the runs counted."""
    await store.put_queue(QueueSettings("q", concurrency=1))
    await _queued(store, 2)
    claimed = await store.claim(A, now=200.0, duration=10.0, limit=10, workflows=[WORKFLOW])
    _same([run.id for run, _ in claimed], ["r0"], "the first claim")
    again = await store.claim(B, now=300.0, duration=10.0, limit=10, workflows=[WORKFLOW])
    _same([run.id for run, _ in again], ["r0"], "the claim after r0's lease lapsed")


@_check
async def claim_with_queues_takes_only_their_runs(store: Store) -> None:
    """``claim(queues=[...])`` takes only runs of those queues; ``queues=None`` takes runs
    of every queue and of none; `next_due` agrees."""
    await store.create_run(_run("plain"))
    await _queued(store, 1, "mail", prefix="m")
    await _queued(store, 1, "sms", prefix="s")
    only = await store.claim(
        A, now=200.0, duration=30.0, limit=10, workflows=[WORKFLOW], queues=["sms"]
    )
    _same([run.id for run, _ in only], ["s0"], "a claim of queue sms")
    _same(
        await store.next_due(workflows=[WORKFLOW], now=200.0, queues=["sms"]),
        230.0,
        "next_due of queue sms once its run is leased (its lease's expiry)",
    )
    rest = await store.claim(B, now=200.0, duration=30.0, limit=10, workflows=[WORKFLOW])
    _same(sorted(run.id for run, _ in rest), ["m0", "plain"], "a claim of everything else")


@_check
async def next_due_skips_a_full_queue(store: Store) -> None:
    """`next_due` counts a queued run nobody holds only while its queue has room: a full
    queue is freed by a release (a write), not by time."""
    await store.put_queue(QueueSettings("q", concurrency=1))
    await _queued(store, 2)
    owner = LeaseOwner("owner-c", "host-c", 303)
    claimed = await store.claim(owner, now=200.0, duration=30.0, limit=10, workflows=[WORKFLOW])
    _same(len(claimed), 1, "runs claimed")
    _same(
        await store.next_due(workflows=[WORKFLOW], now=201.0),
        230.0,
        "next_due: only the leased run's expiry",
    )
    _, lease = claimed[0]
    await store.commit(lease, (), RunUpdate(RunStatus.COMPLETED, release=True), now=202.0)
    _same(
        await store.next_due(workflows=[WORKFLOW], now=202.0),
        100.01,
        "next_due once the queue has room (the waiting run's creation)",
    )
