"""Store checks of what a run publishes while it runs: its events and streams (`Store.publish`,
`Store.withdraw`, `Store.read_events`, `Store.read_stream`, `Store.wait_published`), and how
retrying, continuing, deleting and pruning a run treat them."""

from __future__ import annotations

import time

import anyio

from durable.store import (
    EntryKind,
    EventWrite,
    LeaseLost,
    RunStatus,
    RunUpdate,
    StepKind,
    StepStatus,
    Store,
    StoreError,
    StreamEntry,
    StreamWrite,
)

from ._support import A, B, _check, _get, _leased, _Raises, _same, _step


def _shape(entries: list[StreamEntry]) -> list[tuple[object, ...]]:
    """What a check compares of stream entries: ``(position, kind, value, generation, seq,
    attempt, withdrawn)``."""
    return [
        (e.position, e.kind, e.value, e.generation, e.seq, e.attempt, e.withdrawn) for e in entries
    ]


async def _stream(store: Store, key: str, run_id: str = "run-1") -> list[tuple[object, ...]]:
    return _shape(await store.read_stream(run_id, key, after=0, limit=1_000))


@_check
async def publish_sets_events_with_their_steps_and_is_fenced(store: Store) -> None:
    """`publish` of an `EventWrite` records its steps and sets the event (a later value
    replaces it) in one transaction; a stale lease, or a step already recorded, writes
    nothing: neither the steps nor the event nor a stream entry."""
    lease = await _leased(store, now=100.0, duration=30.0)
    first = _step("run-1", 1, kind=StepKind.EVENT, name="status")
    _same(
        await store.publish(lease, EventWrite("status", b"one"), steps=[first], now=101.0),
        0,
        "publish of an event returns",
    )
    _same(await store.read_events("run-1"), {"status": b"one"}, "the events after a publish")
    second = _step("run-1", 2, kind=StepKind.EVENT, name="status")
    third = _step("run-1", 3, kind=StepKind.EVENT, name="other")
    await store.publish(lease, EventWrite("status", b"two"), steps=[second], now=102.0)
    await store.publish(lease, EventWrite("other", b"x"), steps=[third], now=103.0)
    _same(
        await store.read_events("run-1"),
        {"status": b"two", "other": b"x"},
        "the events: each key's latest value",
    )
    _same(await store.load_steps("run-1"), [first, second, third], "the publishing steps")

    again = _step("run-1", 3, kind=StepKind.EVENT, name="status")
    with _Raises(StoreError):
        await store.publish(lease, EventWrite("status", b"dup"), steps=[again], now=104.0)
    with _Raises(StoreError):
        write = StreamWrite("out", (b"dup",), generation=1, seq=3)
        await store.publish(lease, write, steps=[again], now=104.0)
    _same(await store.read_events("run-1"), {"status": b"two", "other": b"x"}, "after a dup")
    _same(await _stream(store, "out"), [], "the stream after a publish with a duplicate step")

    taken = await store.acquire_lease("run-1", B, now=200.0, duration=30.0)  # A's expired
    assert taken is not None, "acquire_lease after expiry returned None"
    before = await _get(store, "run-1")
    fourth = _step("run-1", 4, kind=StepKind.EVENT, name="status")
    with _Raises(LeaseLost):
        await store.publish(lease, EventWrite("status", b"stale"), steps=[fourth], now=201.0)
    with _Raises(LeaseLost):
        write = StreamWrite("out", (b"stale",), generation=1, seq=4, attempt=1)
        await store.publish(lease, write, now=201.0)
    with _Raises(LeaseLost):
        await store.withdraw(lease, generation=1, seq=4, below=2, now=201.0)
    _same(await store.read_events("run-1"), {"status": b"two", "other": b"x"}, "after a stale")
    _same(await _stream(store, "out"), [], "the stream after a stale publish")
    _same(len(await store.load_steps("run-1")), 3, "the steps after a stale publish")
    _same(await _get(store, "run-1"), before, "the run after a stale publish")
    _same(await store.read_events("nope"), {}, "read_events of a missing run")


@_check
async def stream_positions_are_consecutive_per_key(store: Store) -> None:
    """`publish` of a `StreamWrite` appends its values (then a close entry, if asked) at the
    stream's next positions, from 1, each stream of the run numbered on its own; it returns
    the last position written, and the entries carry the write's origin."""
    lease = await _leased(store)
    step = _step("run-1", 1, kind=StepKind.STREAM, name="a")
    a12 = StreamWrite("a", (b"1", b"2"), generation=1, seq=1)
    _same(await store.publish(lease, a12, steps=[step], now=101.0), 2, "position of a's 2nd")
    bx = StreamWrite("b", (b"x",), generation=1, seq=2, attempt=1)
    _same(await store.publish(lease, bx, now=102.0), 1, "position of b's first")
    a3 = StreamWrite("a", (b"3",), generation=1, seq=2, attempt=1)
    _same(await store.publish(lease, a3, now=103.0), 3, "position of a's 3rd")
    close = _step("run-1", 3, kind=StepKind.STREAM_CLOSE, name="a", result=None)
    closing = StreamWrite("a", (), close=True, generation=1, seq=3)
    _same(await store.publish(lease, closing, steps=[close], now=104.0), 4, "the close's")
    value, closed = EntryKind.VALUE, EntryKind.CLOSE
    _same(
        await _stream(store, "a"),
        [
            (1, value, b"1", 1, 1, None, False),
            (2, value, b"2", 1, 1, None, False),
            (3, value, b"3", 1, 2, 1, False),
            (4, closed, None, 1, 3, None, False),
        ],
        "stream a: (position, kind, value, generation, seq, attempt, withdrawn)",
    )
    _same(await _stream(store, "b"), [(1, value, b"x", 1, 2, 1, False)], "stream b")
    entries = await store.read_stream("run-1", "a", after=0, limit=10)
    _same({(e.run_id, e.key) for e in entries}, {("run-1", "a")}, "run_id and key of the entries")
    _same(
        [e.written_at for e in entries], [101.0, 101.0, 103.0, 104.0], "written_at of the entries"
    )
    _same(await store.read_events("run-1"), {}, "events after stream writes")
    _same(await _stream(store, "c"), [], "a stream never written")
    _same(await _stream(store, "a", "nope"), [], "a stream of a missing run")


@_check
async def read_stream_pages_with_after_and_limit(store: Store) -> None:
    """`read_stream(after=, limit=)` returns the entries after position ``after``, in order,
    at most ``limit`` of them."""
    lease = await _leased(store)
    values = tuple(str(i).encode() for i in range(1, 6))
    await store.publish(lease, StreamWrite("s", values, generation=1, seq=1, attempt=1), now=101.0)

    async def positions(after: int, limit: int) -> list[int]:
        return [e.position for e in await store.read_stream("run-1", "s", after=after, limit=limit)]

    _same(await positions(0, 2), [1, 2], "after=0, limit=2")
    _same(await positions(2, 2), [3, 4], "after=2, limit=2")
    _same(await positions(4, 10), [5], "after=4, limit=10")
    _same(await positions(5, 10), [], "after the last entry")
    _same(await positions(0, 0), [], "limit=0")
    _same(await positions(0, 100), [1, 2, 3, 4, 5], "everything")


@_check
async def withdraw_marks_an_attempts_entries_and_appends_one_marker_per_stream(
    store: Store,
) -> None:
    """`withdraw(generation, seq, below)` marks withdrawn the entries that step ``seq``'s
    attempts below ``below`` (of that generation) wrote, in every stream, and appends one
    ``retry`` marker per stream and attempt, after them, with the origin of what it
    withdraws; other steps, later attempts, other generations and entries already withdrawn
    are left alone, so withdrawing again appends nothing."""
    lease = await _leased(store)
    writes = [
        StreamWrite("a", (b"wf",), generation=1, seq=2),  # a workflow step's write
        StreamWrite("a", (b"a1", b"a1'"), generation=1, seq=3, attempt=1),
        StreamWrite("b", (b"b1",), generation=1, seq=3, attempt=1),
        StreamWrite("a", (b"other",), generation=1, seq=4, attempt=1),  # another step
        StreamWrite("a", (b"gen2",), generation=2, seq=3, attempt=1),  # another generation
    ]
    for write in writes:
        await store.publish(lease, write, now=101.0)
    _same(await store.withdraw(lease, generation=1, seq=3, below=2, now=102.0), 3, "withdrawn")
    value, retry = EntryKind.VALUE, EntryKind.RETRY
    _same(
        await _stream(store, "a"),
        [
            (1, value, b"wf", 1, 2, None, False),
            (2, value, b"a1", 1, 3, 1, True),
            (3, value, b"a1'", 1, 3, 1, True),
            (4, value, b"other", 1, 4, 1, False),
            (5, value, b"gen2", 2, 3, 1, False),
            (6, retry, None, 1, 3, 1, False),
        ],
        "stream a after attempt 1 of step 3 was withdrawn",
    )
    _same(
        await _stream(store, "b"),
        [(1, value, b"b1", 1, 3, 1, True), (2, retry, None, 1, 3, 1, False)],
        "stream b after attempt 1 of step 3 was withdrawn",
    )
    _same(await store.withdraw(lease, generation=1, seq=3, below=2, now=103.0), 0, "again")
    _same(len(await _stream(store, "a")), 6, "entries of stream a after withdrawing again")

    # The next attempts write after the marker; withdrawing below 3 takes attempt 2 only.
    await store.publish(lease, StreamWrite("a", (b"a2",), generation=1, seq=3, attempt=2), now=104)
    await store.publish(lease, StreamWrite("a", (b"a3",), generation=1, seq=3, attempt=3), now=105)
    _same(await store.withdraw(lease, generation=1, seq=3, below=3, now=106.0), 1, "attempt 2")
    _same(
        (await _stream(store, "a"))[6:],
        [
            (7, value, b"a2", 1, 3, 2, True),
            (8, value, b"a3", 1, 3, 3, False),
            (9, retry, None, 1, 3, 2, False),
        ],
        "stream a after attempt 2 was withdrawn",
    )
    _same(await store.withdraw(lease, generation=1, seq=9, below=5, now=107.0), 0, "unwritten")
    _same(len(await _stream(store, "a")), 9, "entries after withdrawing a step that wrote none")


@_check
async def wait_published_wakes_on_publications_and_outcomes(store: Store) -> None:
    """`wait_published` returns by ``within`` when nothing is written (woken early is
    allowed), and wakes at once when the run publishes, withdraws or records its outcome."""
    now = time.time()
    lease = await _leased(store, now=now)
    with anyio.move_on_after(10) as scope:
        woken = await store.wait_published("run-1", within=0.05)
    assert not scope.cancelled_caught, "wait_published(within=0.05) did not return"
    assert isinstance(woken, bool), f"wait_published returned {woken!r}, not a bool"

    async def event() -> None:
        step = _step("run-1", 1, kind=StepKind.EVENT, name="status")
        await store.publish(lease, EventWrite("status", b"x"), steps=[step], now=now)

    async def stream() -> None:
        await store.publish(lease, StreamWrite("s", (b"v",), seq=2, attempt=1), now=now)

    async def withdraw() -> None:
        await store.withdraw(lease, generation=1, seq=2, below=2, now=now)

    async def outcome() -> None:
        update = RunUpdate(RunStatus.COMPLETED, result=b"r", release=True)
        await store.commit(lease, update=update, now=now)

    for what, write in (
        ("an event", event),
        ("a stream write", stream),
        ("a withdrawal", withdraw),
        ("the outcome", outcome),
    ):
        result: list[bool] = []

        async def waiter(result: list[bool] = result) -> None:
            result.append(await store.wait_published("run-1", within=10.0))

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            await write()
        took = time.monotonic() - started
        assert result == [True] and took < 5, f"{what} did not wake wait_published"


@_check
async def reset_run_withdraws_what_the_dropped_steps_wrote(store: Store) -> None:
    """`reset_run` withdraws the stream entries that the steps it drops wrote (in the run's
    generation; the workflow's own writes too), with one marker per stream, step and attempt,
    in the order they were written; the kept steps' entries and the events stay."""
    lease = await _leased(store)
    await store.publish(lease, StreamWrite("s", (b"kept",), seq=1), now=101.0)
    event = _step("run-1", 2, kind=StepKind.EVENT, name="status")
    await store.publish(lease, EventWrite("status", b"x"), steps=[event], now=101.0)
    await store.publish(lease, StreamWrite("s", (b"act",), seq=3, attempt=1), now=102.0)
    await store.publish(lease, StreamWrite("s", (b"wf",), seq=4), now=103.0)
    await store.publish(lease, StreamWrite("s", (b"try2",), seq=5, attempt=2), now=104.0)
    steps = [
        _step("run-1", 1, kind=StepKind.STREAM, name="s"),
        _step("run-1", 3),
        _step("run-1", 4, kind=StepKind.STREAM, name="s"),
        _step("run-1", 5, status=StepStatus.FAILED, result=None),
    ]
    update = RunUpdate(RunStatus.FAILED, error=b"e", error_text="boom", release=True)
    await store.commit(lease, steps, update, now=105.0)
    run = await _get(store, "run-1")
    reset = await store.reset_run(
        "run-1",
        token=run.lease_token,
        status=RunStatus.FAILED,
        drop=[4, 5],
        rollback=False,
        now=200.0,
    )
    assert reset is not None and reset.status == RunStatus.PENDING, f"reset_run gave {reset!r}"
    value, retry = EntryKind.VALUE, EntryKind.RETRY
    _same(
        await _stream(store, "s"),
        [
            (1, value, b"kept", 1, 1, None, False),
            (2, value, b"act", 1, 3, 1, False),
            (3, value, b"wf", 1, 4, None, True),
            (4, value, b"try2", 1, 5, 2, True),
            (5, retry, None, 1, 4, None, False),
            (6, retry, None, 1, 5, 2, False),
        ],
        "the stream after a reset dropping steps 4 and 5",
    )
    _same(await store.read_events("run-1"), {"status": b"x"}, "the events after a reset")


@_check
async def continue_run_keeps_events_and_streams(store: Store) -> None:
    """`continue_run` keeps the run's events and streams: the next generation's writes go
    on at the stream's next position."""
    lease = await _leased(store)
    event = _step("run-1", 1, kind=StepKind.EVENT, name="status")
    await store.publish(lease, EventWrite("status", b"gen1"), steps=[event], now=101.0)
    await store.publish(lease, StreamWrite("s", (b"one",), generation=1, seq=2), now=101.0)
    await store.continue_run(lease, b"\x80next", now=102.0)
    await store.publish(lease, StreamWrite("s", (b"two",), generation=2, seq=1), now=103.0)
    _same(await store.read_events("run-1"), {"status": b"gen1"}, "events after continue_run")
    value = EntryKind.VALUE
    _same(
        await _stream(store, "s"),
        [(1, value, b"one", 1, 2, None, False), (2, value, b"two", 2, 1, None, False)],
        "the stream across generations",
    )


@_check
async def delete_and_prune_remove_events_and_streams(store: Store) -> None:
    """`delete_run` and `prune` delete a finished run's events and streams with it: a new
    run under the same id starts with none."""
    for run_id in ("deleted", "pruned", "kept"):
        lease = await _leased(store, run_id, now=100.0)
        event = _step(run_id, 1, kind=StepKind.EVENT, name="status")
        await store.publish(lease, EventWrite("status", b"x"), steps=[event], now=100.0)
        await store.publish(lease, StreamWrite("s", (b"v",), seq=2, attempt=1), now=100.0)
        if run_id != "kept":
            update = RunUpdate(RunStatus.COMPLETED, result=b"r", release=True)
            await store.commit(lease, update=update, now=100.0)
    _same(await store.delete_run("deleted"), True, "delete_run of a completed run")
    _same(await store.prune(before=1_000.0, limit=10), 1, "runs pruned")
    for run_id in ("deleted", "pruned"):
        _same(await store.read_events(run_id), {}, f"events of the {run_id} run")
        _same(await _stream(store, "s", run_id), [], f"stream of the {run_id} run")
    _same(await store.read_events("kept"), {"status": b"x"}, "events of an unfinished run")
    _same(len(await _stream(store, "s", "kept")), 1, "stream of an unfinished run")
    lease = await _leased(store, "deleted", now=2_000.0, owner=A)
    await store.publish(lease, StreamWrite("s", (b"new",), seq=1, attempt=1), now=2_000.0)
    _same(
        [e.position for e in await store.read_stream("deleted", "s", after=0, limit=10)],
        [1],
        "positions of a new run under a deleted run's id",
    )
